package correlator

import "github.com/flowtrace/flowtrace/model"

// message is everything known about one message: its publish side and one
// hop per consumer group. Every field is an order-independent aggregate of
// the message's events (a minimum, a maximum, an OR of flags), so the same
// events in any order, or twice, give the same message.
//
// Messages joined by a shared identity form a union-find set; parent is nil
// at the set's root, which holds the merged state.
type message struct {
	parent *message
	flow   *flow // at a root: its flow (resolve with root)

	// Identity: the broker's message id, else the smallest span reference
	// ("<trace>-<span>"), kept only while no broker id is known.
	brokerID string
	minRef   string
	system   sym

	// Publish side, from the publish with the lowest attempt (then the
	// earliest, then the smallest producer).
	producer   sym
	pubDest    sym
	pubAttempt uint16
	flags      msgFlags
	operation  sym // smallest operation (task name)
	flowName   sym // smallest flow-name hint
	publish    int64
	pubTrace   uint64 // hash of the publishing span's trace, to find the parent hop

	minTime   int64 // earliest event time
	maxTime   int64 // latest event time (process ends included)
	firstSeen int64 // processing time the message was first seen

	hops []hop // one per consumer group; none while nobody received it

	// Hashes of what was last emitted, to retire rows whose ids changed and
	// to rewrite hops whose parent changed.
	emittedKey    uint64
	emittedFlow   uint64
	emittedParent uint64

	// groupless holds dead-letter and expire events that named no group.
	groupless *grouplessEnd
}

type grouplessEnd struct {
	time   int64
	reason sym
}

type msgFlags uint8

const (
	msgDeadLettered   msgFlags = 1 << iota // a dead-letter event named no group
	msgExpired                             // an expire event named no group
	msgDirty                               // changed since the last flush
	msgPendingEmitted                      // the pending hop (no consumer yet) was emitted
	msgPendingStuck                        // the pending hop is stuck
)

// hop is one consumer group's side of a message.
type hop struct {
	group        sym
	consumer     sym
	dest         sym
	reason       sym
	deliver      int64  // earliest delivery, 0 = not observed
	processStart int64  // earliest process start, 0 = not observed
	settle       int64  // latest settlement
	processing   int64  // duration of the process with the highest attempt
	trace        uint64 // smallest hash of the consumer side's traces
	attempts     uint16
	procAttempt  uint16
	flags        hopFlags
}

type hopFlags uint16

const (
	hopAcked hopFlags = 1 << iota
	hopRejected
	hopRetrying
	hopDeadLettered
	hopExpired
	hopStuck
	hopCounted // the version with a final outcome was emitted
	hopEmitted
)

func (m *message) root() *message {
	r := m
	for r.parent != nil {
		r = r.parent
	}
	for m.parent != nil && m.parent != r {
		m.parent, m = r, m.parent
	}
	return r
}

// canonicalID is the message's identity as Hop.MessageID shows it: the
// broker's id, else the smallest span reference.
func (m *message) canonicalID() string {
	if m.brokerID != "" {
		return m.brokerID
	}
	return m.minRef
}

func (m *message) hopFor(group sym) *hop {
	for i := range m.hops {
		if m.hops[i].group == group {
			return &m.hops[i]
		}
	}
	if m.hops == nil {
		m.hops = make([]hop, 0, 1)
	}
	m.hops = append(m.hops, hop{group: group})
	return &m.hops[len(m.hops)-1]
}

// hopCount is how many hops the message stands for: a pending one until a
// consumer group receives it.
func (m *message) hopCount() int {
	return max(len(m.hops), 1)
}

// setIdentity records identities deterministically: the smallest wins, and
// a broker id makes span references moot.
func (m *message) setIdentity(brokerID, ref string, system sym) {
	if brokerID != "" && (m.brokerID == "" || brokerID < m.brokerID) {
		m.brokerID = brokerID
	}
	if m.brokerID != "" {
		m.minRef = ""
	} else if ref != "" && (m.minRef == "" || ref < m.minRef) {
		m.minRef = ref
	}
	if m.system == 0 {
		m.system = system
	}
}

// observePublish folds a publish in; see the message's doc for which wins.
func (m *message) observePublish(time int64, attempt uint16, producer, dest sym, trace uint64, syms *symbols) {
	better := m.publish == 0 ||
		attempt < m.pubAttempt ||
		attempt == m.pubAttempt && time < m.publish ||
		attempt == m.pubAttempt && time == m.publish && syms.name(producer) < syms.name(m.producer)
	if better {
		m.publish, m.pubAttempt, m.producer, m.pubDest, m.pubTrace = time, attempt, producer, dest, trace
	}
}

func (m *message) observeTimes(start, end int64) {
	m.minTime = minNonZero(m.minTime, start)
	m.maxTime = max(m.maxTime, end)
}

func (m *message) observeGroupless(flag msgFlags, time int64, reason sym, syms *symbols) {
	m.flags |= flag
	if m.groupless == nil {
		m.groupless = &grouplessEnd{}
	}
	m.groupless.time = max(m.groupless.time, time)
	m.groupless.reason = smallerSym(m.groupless.reason, reason, syms)
}

// absorb merges other (a root being joined to m) into m.
func (m *message) absorb(other *message, syms *symbols) {
	m.setIdentity(other.brokerID, other.minRef, other.system)
	if other.publish != 0 {
		m.observePublish(other.publish, other.pubAttempt, other.producer, other.pubDest, other.pubTrace, syms)
	}
	m.flowName = smallerSym(m.flowName, other.flowName, syms)
	m.operation = smallerSym(m.operation, other.operation, syms)
	m.observeTimes(other.minTime, other.maxTime)
	m.firstSeen = minNonZero(m.firstSeen, other.firstSeen)
	if g := other.groupless; g != nil {
		m.observeGroupless(other.flags&(msgDeadLettered|msgExpired), g.time, g.reason, syms)
	}
	m.flags |= other.flags & msgPendingStuck
	for i := range other.hops {
		m.hopFor(other.hops[i].group).absorb(&other.hops[i], syms)
	}
	other.hops = nil
	other.parent = m
}

func minNonZero(a, b int64) int64 {
	if a == 0 || b != 0 && b < a {
		return b
	}
	return a
}

func minNonZeroHash(a, b uint64) uint64 {
	if a == 0 || b != 0 && b < a {
		return b
	}
	return a
}

func smallerSym(a, b sym, syms *symbols) sym {
	if a == 0 || b != 0 && syms.name(b) < syms.name(a) {
		return b
	}
	return a
}

func (h *hop) observeConsumer(consumer, dest sym, trace uint64, syms *symbols) {
	h.consumer = smallerSym(h.consumer, consumer, syms)
	h.dest = smallerSym(h.dest, dest, syms)
	h.trace = minNonZeroHash(h.trace, trace)
}

func (h *hop) observeAttempt(attempt uint16) {
	h.attempts = max(h.attempts, attempt, 1)
}

func (h *hop) observeProcess(start, duration int64, attempt uint16) {
	h.processStart = minNonZero(h.processStart, start)
	if attempt > h.procAttempt || attempt == h.procAttempt && duration > h.processing {
		h.procAttempt, h.processing = attempt, duration
	}
}

func (h *hop) observeReason(reason sym, syms *symbols) {
	h.reason = smallerSym(h.reason, reason, syms)
}

func (h *hop) absorb(other *hop, syms *symbols) {
	h.observeConsumer(other.consumer, other.dest, other.trace, syms)
	h.observeReason(other.reason, syms)
	h.deliver = minNonZero(h.deliver, other.deliver)
	h.settle = max(h.settle, other.settle)
	h.attempts = max(h.attempts, other.attempts)
	if other.procAttempt != 0 || other.processStart != 0 {
		h.observeProcess(other.processStart, other.processing, other.procAttempt)
	}
	h.flags |= other.flags
}

// deliverTime is the first delivery, else the first process start.
func (h *hop) deliverTime() int64 {
	if h.deliver != 0 {
		return h.deliver
	}
	return h.processStart
}

// outcome applies the README's precedence. msgFlags carry dead-letter and
// expire events that named no group.
func (h *hop) outcome(mf msgFlags) model.HopOutcome {
	switch {
	case h.flags&hopDeadLettered != 0, mf&msgDeadLettered != 0 && h.flags&hopAcked == 0:
		return model.HopDeadLettered
	case h.flags&hopExpired != 0, mf&msgExpired != 0 && h.flags&hopAcked == 0:
		return model.HopExpired
	case h.flags&hopAcked != 0:
		return model.HopAcked
	case h.flags&hopRejected != 0:
		return model.HopRejected
	case h.flags&hopStuck != 0:
		return model.HopStuck
	case h.flags&hopRetrying != 0:
		return model.HopRetried
	}
	return model.HopInFlight
}

// settled reports whether an outcome is final.
func settled(o model.HopOutcome) bool {
	switch o {
	case model.HopAcked, model.HopDeadLettered, model.HopExpired, model.HopRejected:
		return true
	}
	return false
}
