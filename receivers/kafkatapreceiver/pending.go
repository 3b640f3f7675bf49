package kafkatapreceiver

import (
	"sort"
	"strconv"
	"time"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// maxGroups bounds consumer_groups: a pending record keeps one bit per group.
const maxGroups = 64

// pendingRecord is a tapped record some watched group may not have
// committed past yet.
type pendingRecord struct {
	offset      int64
	published   time.Time
	messageID   string
	traceParent string
	attempt     int
	// copy marks a dead-letter copy: it counts towards lag but is not a
	// delivery of its message to settle.
	copy    bool
	settled uint64 // bit i: group i has committed past it
}

// partitionState is what the tap holds for one partition: the records
// not yet committed past by every group consuming it, and each group's last
// commit. Owned by the tap's run goroutine.
type partitionState struct {
	topic     string
	partition int32
	label     string          // partition as a string, for spans and metrics
	records   []pendingRecord // by offset; records[head:] are live
	head      int
	committed [maxGroups]int64     // per group: last commit seen, -1 none
	polledAt  [maxGroups]time.Time // per group: when committed was read
}

func newPartitionState(topic string, partition int32) *partitionState {
	ps := &partitionState{topic: topic, partition: partition, label: strconv.FormatInt(int64(partition), 10)}
	for i := range ps.committed {
		ps.committed[i] = -1
	}
	return ps
}

func (ps *partitionState) live() []pendingRecord { return ps.records[ps.head:] }

// consumers is the set of groups that have committed on the partition.
func (ps *partitionState) consumers(groups int) uint64 {
	var set uint64
	for i := range groups {
		if ps.committed[i] >= 0 {
			set |= 1 << i
		}
	}
	return set
}

// add appends a tapped record; full (the tap holds as many as it may), it
// forgets the partition's oldest instead, or, with none, does not keep r.
// It returns how many records the partition holds more (0 or 1), and
// whether the record forgotten was still unsettled for a consuming group.
// A group that had already committed past the record settles it at its
// next poll.
func (ps *partitionState) add(r pendingRecord, full bool, groups int) (added int, evicted bool) {
	if full {
		if len(ps.live()) == 0 {
			return 0, !r.copy && ps.consumers(groups) != 0
		}
		old := ps.records[ps.head]
		evicted = !old.copy && old.settled&ps.consumers(groups) != ps.consumers(groups)
		ps.records[ps.head] = pendingRecord{}
		ps.head++
		added--
	}
	if ps.head > 0 && ps.head >= len(ps.records)/2 {
		n := copy(ps.records, ps.records[ps.head:])
		clear(ps.records[n:])
		ps.records = ps.records[:n]
		ps.head = 0
	}
	ps.records = append(ps.records, r)
	return added + 1, evicted
}

// settle applies group's commit at offset committed, read at now: every
// tapped record below it that the group had not settled is settled, at a
// time spread between the group's previous poll and now. It returns the
// observations appended to obs.
func (ps *partitionState) settle(obs []tap.Observation, group int, name string, committed int64, now, started time.Time) []tap.Observation {
	prev, prevAt := ps.committed[group], ps.polledAt[group]
	if prevAt.IsZero() {
		prevAt = started
	}
	live := ps.live()
	from := prev
	if from < 0 || from > committed {
		// First commit seen, or the group went back: spread from the
		// first record it had not settled.
		from = committed
		for i := range live {
			if live[i].settled&(1<<group) == 0 {
				from = min(from, live[i].offset)
				break
			}
		}
	}
	bit := uint64(1) << group
	for i := range live {
		r := &live[i]
		if r.offset >= committed {
			break
		}
		if r.settled&bit != 0 {
			continue
		}
		r.settled |= bit
		if r.copy {
			continue
		}
		var at time.Time
		if r.offset < prev {
			// Committed past before the previous poll; tapped since.
			at = later(prevAt, r.published)
		} else {
			at = settleTime(prevAt, now, from, committed, r.offset, r.published)
		}
		obs = append(obs, tap.Observation{
			Kind: tap.Settle, Time: at, System: system,
			Destination: ps.topic, Partition: ps.label, MessageID: r.messageID,
			ConsumerGroup: name, Outcome: tap.Ack, Inferred: true,
			Attempt: r.attempt, TraceParent: r.traceParent,
		})
	}
	ps.committed[group], ps.polledAt[group] = committed, now
	return obs
}

// fail records that group gave up on the record at offset (it copied it
// to a retry or dead-letter topic): when its commit passes the record, no
// success is reported. A commit seen before the copy has been reported.
func (ps *partitionState) fail(group int, offset int64) {
	live := ps.live()
	i := sort.Search(len(live), func(i int) bool { return live[i].offset >= offset })
	if i < len(live) && live[i].offset == offset {
		live[i].settled |= 1 << group
	}
}

// prune forgets the records every consuming group has committed past —
// or, while no watched group consumes the partition, those published before
// idleBefore — and returns how many.
func (ps *partitionState) prune(groups int, idleBefore time.Time) int {
	consumers := ps.consumers(groups)
	done := func(r *pendingRecord) bool {
		if consumers == 0 {
			return r.published.Before(idleBefore)
		}
		return r.settled&consumers == consumers
	}
	n := 0
	for ps.head < len(ps.records) && done(&ps.records[ps.head]) {
		ps.records[ps.head] = pendingRecord{}
		ps.head++
		n++
	}
	if ps.head == len(ps.records) {
		ps.records, ps.head = ps.records[:0], 0
	}
	return n
}

// lagSeconds is the age at now of the oldest tapped record at or after
// committed, and whether there is one.
func (ps *partitionState) lagSeconds(committed int64, now time.Time) (float64, bool) {
	for _, r := range ps.live() {
		if r.offset >= committed {
			return max(now.Sub(r.published).Seconds(), 0), true
		}
	}
	return 0, false
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// groupLag sums a group's lag over a topic's partitions.
type groupLag struct {
	messages int64
	seconds  float64
	known    bool // some partition's lag in seconds is known
}

func (g *groupLag) add(messages int64, seconds float64, known bool) {
	g.messages += messages
	if known {
		g.seconds = max(g.seconds, seconds)
		g.known = true
	}
}

// emit adds the aggregate points of a group on a topic.
func (g *groupLag) emit(b *tap.Backlog, at time.Time, d tap.Destination) {
	b.Int(model.MetricBacklogLag, at, d, g.messages)
	if g.known || g.messages == 0 {
		b.Float(model.MetricBacklogLagSeconds, at, d, g.seconds)
	}
}
