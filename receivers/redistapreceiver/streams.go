package redistapreceiver

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// streamsState is what the tap knows of its streams. The session's main
// loop owns it; it outlives connections, so a new session resumes where
// the last one stopped.
type streamsState struct {
	cfg *StreamsConfig
	// all are the tapped streams, then their dead-letter streams; tapped
	// are the tapped streams alone.
	all    []*stream
	tapped []*stream
	// keys is the XREAD argument: stream names, then the ids to read after.
	keys     []string
	lastPoll time.Time
	// refused are the streams Redis refused to read (a key of another
	// type): skipped until they read again.
	refused keyErrors
	// groupLag: the server reports a group's lag (Redis 7 on). Before, the
	// field is missing and the client reads it as 0.
	groupLag bool
}

// stream is one stream's state.
type stream struct {
	name string
	// original, on a dead-letter stream, is the stream whose entries it
	// names.
	original *stream
	// lastID is the last entry read; empty until the first session.
	lastID string
	// skipped is a key Redis refuses to read as a stream.
	skipped bool
	// entries are the newest entries read, ascending: max_tracked_entries,
	// and up to a quarter more before they are trimmed.
	entries []entry
	groups  map[string]*group
	// deadLettered are the entries named by the dead-letter stream, in
	// the order read (order), at most max_tracked_entries.
	deadLettered map[entryID]deadLetterEntry
	order        []entryID
}

// group is one consumer group's state as of the last poll.
type group struct {
	name string
	// label is the name as spans carry it (tap.CleanText); dirty when it
	// differs.
	label         string
	dirty         bool
	known         bool // polled before: lastDelivered is meaningful
	lastDelivered entryID
	pending       map[entryID]pendingEntry
	// deadLetterSent are the entries already reported dead-lettered for
	// the group.
	deadLetterSent map[entryID]bool
}

type pendingEntry struct {
	attempt     int
	deliveredAt time.Time
}

func newStreamsState(cfg *StreamsConfig) *streamsState {
	s := &streamsState{cfg: cfg, refused: keyErrors{}}
	for _, name := range cfg.Names {
		st := &stream{name: name, groups: map[string]*group{}, deadLettered: map[entryID]deadLetterEntry{}}
		s.all = append(s.all, st)
		s.tapped = append(s.tapped, st)
	}
	for _, st := range s.tapped {
		if name := cfg.deadLetterStream(st.name); name != "" {
			s.all = append(s.all, &stream{name: name, original: st})
		}
	}
	return s
}

func (s *streamsState) empty() bool { return len(s.all) == 0 }

// resume finds where to start reading streams never read before: after
// their last entry, so the tap reports what is added from now on. A key of
// another type is skipped; should it become a stream, it is read from its
// start.
func (s *streamsState) resume(ctx context.Context, client *redis.Client, out *batch) error {
	// Read at each session: the server may have been upgraded meanwhile.
	// INFO refused (an ACL, say): the lag is counted from what the tap read.
	info, _ := client.Info(ctx, "server").Result()
	s.groupLag = reportsGroupLag(info)
	for _, st := range s.all {
		if st.lastID != "" {
			continue
		}
		last, err := client.XRevRangeN(ctx, st.name, "+", "-", 1).Result()
		if err != nil && !isReply(err) {
			return fmt.Errorf("xrevrange %s: %w", st.name, err)
		}
		if !s.refused.check(st.name, err, out) {
			st.lastID, st.skipped = "0-0", true
			continue
		}
		st.lastID = "0-0"
		if len(last) == 1 {
			st.lastID = last[0].ID
		}
	}
	return nil
}

// read reads what was added to the streams since the last read, blocking
// up to block (not at all when negative).
func (s *streamsState) read(ctx context.Context, client *redis.Client, block time.Duration, out *batch) error {
	s.keys = s.keys[:0]
	for _, st := range s.all {
		if !st.skipped {
			s.keys = append(s.keys, st.name)
		}
	}
	n := len(s.keys)
	for _, st := range s.all {
		if !st.skipped {
			s.keys = append(s.keys, st.lastID)
		}
	}
	if n == 0 { // every stream skipped
		if block > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(block):
			}
		}
		return nil
	}
	res, err := client.XRead(ctx, &redis.XReadArgs{Streams: s.keys, Count: s.cfg.ReadCount, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if isReply(err) {
		// One key's problem, most likely: find it, and skip it.
		return s.probe(ctx, client, err, out)
	}
	if err != nil {
		return fmt.Errorf("xread: %w", err)
	}
	for _, r := range res {
		st := s.byName(r.Stream)
		if st == nil {
			continue
		}
		for _, msg := range r.Messages {
			st.lastID = msg.ID
			s.observe(st, msg, out)
		}
		st.trim(s.cfg.MaxTrackedEntries)
	}
	return nil
}

// probe finds the streams Redis refuses to read, after an XREAD of them all
// was refused (err), and skips them; when it finds none, err stands. A
// stream skipped before that reads again is no longer skipped.
func (s *streamsState) probe(ctx context.Context, client *redis.Client, err error, out *batch) error {
	pipe := client.Pipeline()
	lens := make([]*redis.IntCmd, len(s.all))
	for i, st := range s.all {
		if err != nil || st.skipped {
			lens[i] = pipe.XLen(ctx, st.name)
		}
	}
	if perr := execPipeline(ctx, pipe); perr != nil {
		return fmt.Errorf("xlen: %w", perr)
	}
	found := false
	for i, st := range s.all {
		if lens[i] == nil {
			continue
		}
		ok := s.refused.check(st.name, lens[i].Err(), out)
		found = found || (!ok && !st.skipped)
		st.skipped = !ok
	}
	if err != nil && !found {
		return fmt.Errorf("xread: %w", err)
	}
	return nil
}

func (s *streamsState) byName(name string) *stream {
	for _, st := range s.all {
		if st.name == name {
			return st
		}
	}
	return nil
}

// observe turns one entry into observations: a publish on a tapped
// stream, dead letters on a dead-letter stream.
func (s *streamsState) observe(st *stream, msg redis.XMessage, out *batch) {
	e, badTraceParent, err := decodeEntry(s.cfg, msg.ID, msg.Values)
	if err != nil {
		out.decodeError(err)
		return
	}
	if badTraceParent {
		out.decodeError(&decodeError{reasonTraceParent, tap.ErrBadTraceParent})
	}
	if e.cleaned {
		out.decodeError(&decodeError{reasonText, errText})
	}
	if st.original != nil {
		dl, err := decodeDeadLetter(&s.cfg.DeadLetter, e.id, msg.Values)
		if err != nil {
			out.decodeError(err)
			return
		}
		if dl.cleaned {
			out.decodeError(&decodeError{reasonText, errText})
		}
		st.original.deadLetter(dl, out, s.cfg.MaxTrackedEntries)
		return
	}
	if n := len(st.entries); n > 0 && !st.entries[n-1].id.less(e.id) {
		return // read again after a reconnect
	}
	st.entries = append(st.entries, e)
	out.add(&tap.Observation{
		Kind:        tap.Publish,
		Time:        e.id.time(),
		System:      systemRedis,
		Destination: st.name,
		MessageID:   st.name + "/" + msg.ID,
		BodySize:    e.size,
		Keys:        e.keys,
		TraceParent: e.traceParent,
	})
}

// trim keeps the newest max entries, copying only once a quarter more have
// gathered.
func (st *stream) trim(limit int) {
	if len(st.entries) > limit+limit/4 {
		st.entries = append([]entry(nil), st.entries[len(st.entries)-limit:]...)
	}
}

// find returns the remembered entry id, if any.
func (st *stream) find(id entryID) (entry, bool) {
	i := sort.Search(len(st.entries), func(i int) bool { return !st.entries[i].id.less(id) })
	if i < len(st.entries) && st.entries[i].id == id {
		return st.entries[i], true
	}
	return entry{id: id}, false
}

// deadLetter records that dl names an entry of st, and reports it for the
// groups that have the entry pending or named it; the others report it
// when they settle the entry.
func (st *stream) deadLetter(dl deadLetterEntry, out *batch, limit int) {
	if _, ok := st.deadLettered[dl.original]; !ok {
		st.order = append(st.order, dl.original)
		if len(st.order) > limit {
			delete(st.deadLettered, st.order[0])
			st.order = st.order[1:]
		}
	}
	st.deadLettered[dl.original] = dl
	if dl.group != "" {
		g := st.group(dl.group)
		st.reportDeadLetter(g, dl, g.pending[dl.original].attempt, out)
		return
	}
	for _, g := range st.groups {
		if p, ok := g.pending[dl.original]; ok {
			st.reportDeadLetter(g, dl, p.attempt, out)
		}
	}
}

func (st *stream) group(name string) *group {
	g, ok := st.groups[name]
	if !ok {
		g = &group{name: name, pending: map[entryID]pendingEntry{}, deadLetterSent: map[entryID]bool{}}
		g.label = cleanText(name, &g.dirty)
		st.groups[name] = g
	}
	return g
}

func (st *stream) reportDeadLetter(g *group, dl deadLetterEntry, attempt int, out *batch) {
	if g.deadLetterSent[dl.original] {
		return
	}
	g.deadLetterSent[dl.original] = true
	e, _ := st.find(dl.original)
	out.add(&tap.Observation{
		Kind:          tap.DeadLetter,
		Time:          dl.at,
		System:        systemRedis,
		Destination:   st.name,
		MessageID:     st.name + "/" + dl.original.String(),
		ConsumerGroup: g.label,
		Attempt:       attempt,
		Reason:        dl.reason,
		TraceParent:   e.traceParent,
	})
}

// groupPoll is what one poll read of one consumer group.
type groupPoll struct {
	info        redis.XInfoGroup
	lagReported bool // info.Lag is the server's figure
	pending     *redis.XPendingExtCmd
	undelivered *redis.XMessageSliceCmd
}

// poll reads the consumer groups of the tapped streams: deliveries from
// their pending entries lists, settlements inferred from entries leaving
// them, and backlog gauges.
func (s *streamsState) poll(ctx context.Context, client *redis.Client, now time.Time, backlog *tap.Backlog, out *batch) error {
	if len(s.tapped) == 0 {
		return nil
	}
	for _, st := range s.all {
		if st.skipped { // does it read again?
			if err := s.probe(ctx, client, nil, out); err != nil {
				return err
			}
			break
		}
	}
	pipe := client.Pipeline()
	infos := make([]*redis.XInfoGroupsCmd, len(s.tapped))
	for i, st := range s.tapped {
		infos[i] = pipe.XInfoGroups(ctx, st.name)
	}
	if err := execPipeline(ctx, pipe); err != nil {
		return fmt.Errorf("xinfo groups: %w", err)
	}

	polls := make([][]groupPoll, len(s.tapped))
	pipe = client.Pipeline()
	for i, st := range s.tapped {
		if infos[i].Err() != nil { // a stream that does not exist yet
			continue
		}
		for _, info := range infos[i].Val() {
			p := groupPoll{info: info, lagReported: s.groupLag}
			p.pending = pipe.XPendingExt(ctx, &redis.XPendingExtArgs{Stream: st.name, Group: info.Name, Start: "-", End: "+", Count: s.cfg.PendingScan})
			p.undelivered = pipe.XRangeN(ctx, st.name, "("+info.LastDeliveredID, "+", 1)
			polls[i] = append(polls[i], p)
		}
	}
	if err := execPipeline(ctx, pipe); err != nil {
		return fmt.Errorf("xpending: %w", err)
	}
	// Read what was added up to now, after the pending lists were read:
	// an entry dead-lettered and then acked is known dead-lettered before
	// its ack is seen.
	if err := s.read(ctx, client, -1, out); err != nil {
		return err
	}

	lastPoll := s.lastPoll
	s.lastPoll = now
	for i, st := range s.tapped {
		present := make(map[string]bool, len(polls[i]))
		for _, p := range polls[i] {
			present[p.info.Name] = true
			st.pollGroup(p, lastPoll, now, s.cfg.PendingScan, out, backlog)
		}
		// Forget groups that were destroyed, or only named by a dead letter.
		for name := range st.groups {
			if !present[name] {
				delete(st.groups, name)
			}
		}
	}
	return nil
}

// execPipeline runs pipe; only a failure of the connection is an error,
// replies that are errors stay with their commands.
func execPipeline(ctx context.Context, pipe redis.Pipeliner) error {
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	for _, cmd := range cmds {
		var reply redis.Error
		if cerr := cmd.Err(); cerr != nil && !errors.Is(cerr, redis.Nil) && !errors.As(cerr, &reply) {
			return cerr
		}
	}
	return nil
}

// pollGroup compares one group's pending entries with the last poll's.
func (st *stream) pollGroup(p groupPoll, lastPoll, now time.Time, scan int64, out *batch, backlog *tap.Backlog) {
	g := st.group(p.info.Name)
	if g.dirty && !g.known {
		out.decodeError(&decodeError{reasonText, errText})
	}
	lastDelivered, err := parseEntryID(p.info.LastDeliveredID)
	if err != nil {
		out.decodeError(&decodeError{reasonEntryID, err})
		return
	}
	pending, err := p.pending.Result()
	if err != nil {
		return // the group went away since XINFO GROUPS
	}

	current := make(map[entryID]pendingEntry, len(pending))
	var viewEnd entryID // the last id of a partial view of the pending list
	partial := int64(len(pending)) >= scan && p.info.Pending > scan
	for _, pe := range pending {
		id, err := parseEntryID(pe.ID)
		if err != nil {
			out.decodeError(&decodeError{reasonEntryID, err})
			continue
		}
		viewEnd = id
		attempt := int(min(pe.RetryCount, 1<<15))
		prev, seen := g.pending[id]
		if seen && attempt <= prev.attempt {
			current[id] = prev
			continue
		}
		e, _ := st.find(id)
		at := now.Add(-pe.Idle)
		if at.Before(id.time()) {
			at = id.time()
		}
		current[id] = pendingEntry{attempt: attempt, deliveredAt: at}
		var dirty bool
		consumer := cleanText(pe.Consumer, &dirty)
		if dirty {
			out.decodeError(&decodeError{reasonText, errText})
		}
		out.add(st.consumerSide(tap.Deliver, e, g.label, attempt, at, consumer))
	}

	// Entries that left the pending list were acked (or dead-lettered).
	for id, prev := range g.pending {
		if _, ok := current[id]; ok {
			continue
		}
		if partial && viewEnd.less(id) {
			current[id] = prev // beyond what this poll read
			continue
		}
		at := midpoint(lastPoll, now, prev.deliveredAt)
		st.settled(g, id, prev.attempt, at, out)
	}

	// Entries delivered and acked between two polls: up to the group's
	// last delivered id, never seen pending. Those the tap has not read yet
	// wait for a later poll.
	// With a partial view of the pending list, entries beyond it may be
	// pending: they wait too.
	upTo := lastDelivered
	if n := len(st.entries); g.known && n > 0 && st.entries[n-1].id.less(upTo) {
		upTo = st.entries[n-1].id
	}
	if partial && viewEnd.less(upTo) {
		upTo = viewEnd
	}
	if upTo.less(g.lastDelivered) {
		upTo = g.lastDelivered
	}
	if !g.known {
		upTo = lastDelivered
	}
	if g.known && g.lastDelivered.less(upTo) {
		i := sort.Search(len(st.entries), func(i int) bool { return g.lastDelivered.less(st.entries[i].id) })
		for ; i < len(st.entries) && !upTo.less(st.entries[i].id); i++ {
			e := st.entries[i]
			if _, ok := current[e.id]; ok {
				continue
			}
			if _, ok := g.pending[e.id]; ok {
				continue
			}
			at := midpoint(lastPoll, now, e.id.time())
			out.add(st.consumerSide(tap.Deliver, e, g.label, 1, at, ""))
			st.settled(g, e.id, 1, at, out)
		}
	}
	g.known = true
	g.lastDelivered = upTo
	g.pending = current
	if len(g.deadLetterSent) > len(current)+len(st.deadLettered) {
		for id := range g.deadLetterSent {
			if _, ok := current[id]; !ok {
				delete(g.deadLetterSent, id)
			}
		}
	}

	dest := tap.Destination{System: systemRedis, Destination: st.name, ConsumerGroup: g.label}
	if lag, ok := st.lag(p.info, p.lagReported, lastDelivered); ok {
		// What is ready for the group is what it has not been delivered.
		backlog.Int(model.MetricBacklogDepth, now, dest, lag)
		backlog.Int(model.MetricBacklogLag, now, dest, lag)
	}
	backlog.Int(model.MetricBacklogUnacked, now, dest, p.info.Pending)
	backlog.Int(model.MetricBacklogConsumers, now, dest, p.info.Consumers)
	// Lag in seconds: the age of the oldest entry not yet delivered or
	// not yet acked.
	var oldest time.Time
	if undelivered, err := p.undelivered.Result(); err == nil && len(undelivered) > 0 {
		if id, err := parseEntryID(undelivered[0].ID); err == nil {
			oldest = id.time()
		}
	}
	if len(pending) > 0 {
		if id, err := parseEntryID(pending[0].ID); err == nil && (oldest.IsZero() || id.time().Before(oldest)) {
			oldest = id.time()
		}
	}
	lagSeconds := 0.0
	if !oldest.IsZero() {
		lagSeconds = now.Sub(oldest).Seconds()
	}
	backlog.Float(model.MetricBacklogLagSeconds, now, dest, lagSeconds)
}

// lag is the number of entries the group has not been delivered: Redis's
// own count, else, when Redis cannot tell (entries were deleted), the
// entries the tap remembers after the last delivered one, if it remembers
// that far back.
func (st *stream) lag(info redis.XInfoGroup, reported bool, lastDelivered entryID) (int64, bool) {
	if reported && info.Lag >= 0 {
		return info.Lag, true
	}
	if len(st.entries) == 0 || lastDelivered.less(st.entries[0].id) {
		return 0, false
	}
	i := sort.Search(len(st.entries), func(i int) bool { return lastDelivered.less(st.entries[i].id) })
	return int64(len(st.entries) - i), true
}

// reportsGroupLag says whether the server whose INFO server section this
// is reports consumer groups' lag: Redis 7 and later.
func reportsGroupLag(info string) bool {
	for line := range strings.SplitSeq(info, "\n") {
		if version, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			major, _, _ := strings.Cut(version, ".")
			n, err := strconv.Atoi(major)
			return err == nil && n >= 7
		}
	}
	return false
}

// settled reports an entry a group no longer has pending: dead-lettered
// when the dead-letter stream named it, else acked (inferred).
func (st *stream) settled(g *group, id entryID, attempt int, at time.Time, out *batch) {
	if dl, ok := st.deadLettered[id]; ok && (dl.group == "" || dl.group == g.name) {
		st.reportDeadLetter(g, dl, attempt, out)
		delete(g.deadLetterSent, id)
		return
	}
	e, _ := st.find(id)
	o := st.consumerSide(tap.Settle, e, g.label, attempt, at, "")
	o.Outcome = tap.Ack
	o.Inferred = true
	out.add(o)
}

func (st *stream) consumerSide(kind tap.Kind, e entry, groupName string, attempt int, at time.Time, consumer string) *tap.Observation {
	o := &tap.Observation{
		Kind:          kind,
		Time:          at,
		System:        systemRedis,
		Destination:   st.name,
		MessageID:     st.name + "/" + e.id.String(),
		ConsumerGroup: groupName,
		Attempt:       attempt,
		TraceParent:   e.traceParent,
	}
	if consumer != "" {
		o.Attrs = []tap.Attr{tap.String("messaging.client.id", consumer)}
	}
	return o
}

// midpoint is halfway between the last poll and now, but not before
// notBefore: the time of something seen between two polls.
func midpoint(lastPoll, now, notBefore time.Time) time.Time {
	lo := lastPoll
	if lo.Before(notBefore) {
		lo = notBefore
	}
	if lo.IsZero() {
		return now
	}
	if lo.After(now) {
		return lo
	}
	return lo.Add(now.Sub(lo) / 2)
}
