package natstapreceiver

import (
	"sort"
	"strings"
	"sync"
	"time"
)

// Acks are core NATS messages: those sent while the tap is away are lost,
// an AckAll consumer settles many messages with one ack, and an AckNone
// consumer sends none. A durable consumer's ack floor tells what the tap
// missed: every message at or below it is settled. settleTracker keeps,
// per stream, the messages the tap read and, per durable consumer, what it
// saw settled, and infers an ack for each message of the consumer that
// went below the floor without being seen acked, terminated or dead
// lettered.
//
// The floor also passes terminated and dead-lettered messages, whose
// advisories arrive on subscriptions of their own. So a message that went
// below the floor is only taken as acked at a later poll, at least
// inferGrace after, if by then no terminate or dead letter was seen for it.
type settleTracker struct {
	mu sync.Mutex
	// read holds the messages the tap read from the stream, by sequence:
	// at most maxTracked, the oldest dropped first.
	read      []readMsg
	consumers map[string]*consumerTrack
}

// readMsg is a stored message the tap read.
type readMsg struct {
	seq     uint64
	subject string
	stored  time.Time
}

// consumerTrack is what the tap knows about one durable consumer's
// settlements.
type consumerTrack struct {
	// floor is the ack floor's stream sequence at the last poll, polled
	// its time.
	floor  uint64
	polled time.Time
	// low is the floor before the last move: what was seen above it still
	// matters, for the messages due.
	low uint64
	// settled has a bit for each message above low seen settled for good
	// (acked, terminated, dead lettered); attempts has the delivery attempt
	// of messages above low seen delivered more than once.
	settled  seqSet
	attempts map[uint64]int
	// blind: a settlement up to this sequence may have been seen and not
	// kept (too far above the floor); nothing is inferred up to it.
	blind uint64
	// due went below the floor at a poll without a settlement seen.
	due []inferredAck
}

// seqSet is a set of sequences from base on, as bits.
type seqSet struct {
	base  uint64 // a multiple of 64
	words []uint64
}

// maxSetBits bounds how far above base a seqSet reaches: 128 KiB.
const maxSetBits = 1 << 20

// add puts seq in the set; false when it is too far above base.
func (b *seqSet) add(seq uint64) bool {
	if seq < b.base {
		return true
	}
	i := seq - b.base
	if i >= maxSetBits {
		return false
	}
	for uint64(len(b.words)) <= i/64 {
		b.words = append(b.words, 0)
	}
	b.words[i/64] |= 1 << (i % 64)
	return true
}

func (b *seqSet) has(seq uint64) bool {
	if seq < b.base {
		return false
	}
	i := seq - b.base
	return i/64 < uint64(len(b.words)) && b.words[i/64]&(1<<(i%64)) != 0
}

// dropBelow forgets the sequences below seq (some just below may stay).
func (b *seqSet) dropBelow(seq uint64) {
	base := seq &^ 63
	if base <= b.base {
		return
	}
	n := (base - b.base) / 64
	if n >= uint64(len(b.words)) {
		b.words = b.words[:0]
	} else {
		b.words = append(b.words[:0], b.words[n:]...)
	}
	b.base = base
}

// inferredAck is a settlement the tap infers.
type inferredAck struct {
	seq     uint64
	at      time.Time
	attempt int
	// dueAt is when the message was found below the floor.
	dueAt time.Time
}

const (
	// maxTracked bounds the messages remembered per stream, and the
	// redelivered ones per consumer.
	maxTracked = 1 << 16
	// inferGrace is how long a message below the floor waits for a
	// terminate or a dead letter before it is taken as acked.
	inferGrace = 2 * time.Second
)

func newSettleTracker() *settleTracker {
	return &settleTracker{consumers: map[string]*consumerTrack{}}
}

// readStored records a stored message the tap read; sequences come in
// order.
func (x *settleTracker) readStored(seq uint64, subject string, stored time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if n := len(x.read); n > 0 && x.read[n-1].seq >= seq {
		return
	}
	if len(x.read) >= maxTracked {
		x.read = append(x.read[:0], x.read[maxTracked/4:]...)
	}
	x.read = append(x.read, readMsg{seq: seq, subject: subject, stored: stored})
}

// saw records what the tap saw consumer do with a message: a delivery
// (final false) or a settlement for good.
func (x *settleTracker) saw(consumer string, seq uint64, attempt int, final bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.consumers[consumer]
	if c == nil {
		// Not polled yet (created after the tap started, say): what it
		// settles is kept for its first poll, which keeps what lies above
		// the floor it finds.
		c = &consumerTrack{attempts: map[uint64]int{}}
		x.consumers[consumer] = c
	}
	if seq <= c.low {
		return // below low nothing is due any more
	}
	if final {
		if c.polled.IsZero() && len(c.settled.words) == 0 {
			c.settled.dropBelow(seq) // not polled: the set starts where the consumer is
		}
		if !c.settled.add(seq) {
			c.blind = max(c.blind, seq)
		}
		return
	}
	if attempt > 1 && attempt > c.attempts[seq] && (len(c.attempts) < maxTracked || c.attempts[seq] > 0) {
		c.attempts[seq] = attempt
	}
}

// poll takes in a consumer's ack floor read at now (lastAck: when it last
// moved, if the server says) and returns the acks inferred. filters are the
// consumer's subject filters, none for every subject. settled says whether
// the settlements the tap saw are all in (no advisory waiting to be
// handled); if not, nothing is inferred at this poll.
func (x *settleTracker) poll(consumer string, filters []string, floor uint64, lastAck *time.Time, now time.Time, settled bool) []inferredAck {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.consumers[consumer]
	if c == nil || c.polled.IsZero() || floor < c.floor {
		// First polled, or its floor went back (a new consumer of the
		// same name): what is below its floor now was settled before the
		// tap knew of it. What the tap saw settled above it before this
		// first poll is kept.
		fresh := &consumerTrack{floor: floor, low: floor, polled: now, attempts: map[uint64]int{}}
		if c != nil && c.polled.IsZero() {
			fresh.settled, fresh.attempts, fresh.blind = c.settled, c.attempts, c.blind
			for seq := range fresh.attempts {
				if seq <= floor {
					delete(fresh.attempts, seq)
				}
			}
		}
		fresh.settled.dropBelow(floor + 1)
		x.consumers[consumer] = fresh
		return nil
	}
	var out []inferredAck
	if settled {
		keep := c.due[:0]
		for _, d := range c.due {
			switch {
			case c.settled.has(d.seq):
			case now.Sub(d.dueAt) < inferGrace:
				keep = append(keep, d)
			default:
				d.attempt = max(c.attempts[d.seq], 1)
				out = append(out, d)
			}
		}
		c.due = keep
	}
	// The floor is taken no further than the stream reader has read: the
	// messages it passes and the reader has not read yet (it waits while
	// the pipeline refuses spans) are inferred at a poll after they are.
	reached := floor
	if n := len(x.read); n == 0 {
		reached = c.floor
	} else {
		reached = min(floor, max(x.read[n-1].seq, c.floor))
	}
	if reached > c.floor {
		end := now
		if lastAck != nil && lastAck.After(c.polled) && lastAck.Before(now) {
			end = *lastAck
		}
		i := sort.Search(len(x.read), func(i int) bool { return x.read[i].seq > c.floor })
		for ; i < len(x.read) && x.read[i].seq <= reached; i++ {
			r := x.read[i]
			if r.seq <= c.blind || c.settled.has(r.seq) || !matchesAny(filters, r.subject) {
				continue
			}
			at := interpolate(c.polled, end, c.floor, floor, r.seq)
			if at.Before(r.stored) {
				at = r.stored
			}
			c.due = append(c.due, inferredAck{seq: r.seq, at: at, dueAt: now})
		}
		c.floor = reached
	}
	// What was seen matters while its message may still be due.
	c.low = c.floor
	for _, d := range c.due {
		c.low = min(c.low, d.seq-1)
	}
	c.settled.dropBelow(c.low + 1)
	for seq := range c.attempts {
		if seq <= c.low {
			delete(c.attempts, seq)
		}
	}
	c.polled = now
	return out
}

// forget drops the consumers not in present.
func (x *settleTracker) forget(present map[string]bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for name := range x.consumers {
		if !present[name] {
			delete(x.consumers, name)
		}
	}
}

// interpolate spreads the settlements of the sequences from (f0, f1]
// evenly over (t0, t1].
func interpolate(t0, t1 time.Time, f0, f1, seq uint64) time.Time {
	if t0.IsZero() || !t1.After(t0) || f1 <= f0 {
		return t1
	}
	frac := float64(seq-f0) / float64(f1-f0)
	return t0.Add(time.Duration(frac * float64(t1.Sub(t0))))
}

// matchesAny reports whether subject matches one of filters, or filters is
// empty.
func matchesAny(filters []string, subject string) bool {
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if matchSubject(f, subject) {
			return true
		}
	}
	return false
}

// matchSubject reports whether subject matches filter, with '*' matching
// one token and a last '>' one or more.
func matchSubject(filter, subject string) bool {
	for {
		ft, frest, fmore := strings.Cut(filter, ".")
		if ft == ">" && !fmore {
			return subject != ""
		}
		st, srest, smore := strings.Cut(subject, ".")
		if ft != "*" && ft != st {
			return false
		}
		if !fmore || !smore {
			return fmore == smore
		}
		filter, subject = frest, srest
	}
}
