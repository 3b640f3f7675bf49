package correlator

import "github.com/flowtrace/flowtrace/model"

// message is everything known about one message: its publish side and one
// hop per consumer group. Every field is an order-independent aggregate of
// the message's events (a minimum, a maximum, an OR of flags), so the same
// events in any order, or twice, give the same message.
//
// Messages joined by a shared identity form a union-find set; parent is nil
// at the set's root, which holds the merged state.
//
// The layout is kept to 96 bytes (and a hop to 48): a million in-flight hops
// should cost well under 200 MB. What most messages lack lives in extra.
type message struct {
	parent *message
	flow   *flow // at a root: its flow (resolve with root)

	brokerID string // the broker's message id, the identity when known
	system   sym

	// Publish side, from the publish with the lowest attempt (then the
	// earliest, then the smallest producer).
	producer   sym
	pubDest    sym
	pubAttempt uint16
	flags      msgFlags
	pubTrace   uint32 // hash of the publishing span's trace, to find the parent hop
	// emittedParent is the hash of the parent hop id last emitted, to rewrite
	// the hops when it changes.
	emittedParent uint32
	publish       int64

	extra *messageExtra
	hops  []hop // one per consumer group; none while nobody received it
}

// messageExtra holds what few messages have.
type messageExtra struct {
	minRef    string // smallest span reference "<trace>-<span>", the identity without a broker id
	operation sym    // smallest operation (task name)
	flowName  sym    // smallest flow-name hint
	// Dead-letter and expire events that named no group: the latest time and
	// the smallest reason.
	groupless       int64
	grouplessReason sym
	reasons         []hopReason // per group: the smallest dead-letter, reject or error reason
}

type hopReason struct {
	group, reason sym
}

type msgFlags uint8

const (
	msgDeadLettered   msgFlags = 1 << iota // a dead-letter event named no group
	msgExpired                             // an expire event named no group
	msgDirty                               // changed since the last flush
	msgPendingEmitted                      // the pending hop (no consumer yet) was emitted
	msgPendingStuck                        // the pending hop is stuck
	msgBroadcast                           // published to subscribers of the moment: the publish settles it
	msgPendingCounted                      // the pending hop was counted, dead-lettered or expired before any delivery
)

// hop is one consumer group's side of a message.
type hop struct {
	group        sym
	consumer     sym
	dest         sym
	trace        uint32 // hash of the consumer side's trace at its highest attempt (the smallest, on ties)
	attempts     uint16
	procAttempt  uint16
	traceAttempt uint16
	flags        hopFlags
	deliver      int64 // earliest delivery or process start, 0 = not observed
	settle       int64 // latest settlement
	processing   int64 // duration of the process with the highest attempt
}

type hopFlags uint8

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

func (m *message) ext() *messageExtra {
	if m.extra == nil {
		m.extra = &messageExtra{}
	}
	return m.extra
}

// canonicalID is the message's identity as Hop.MessageID shows it: the
// broker's id, else the smallest span reference.
func (m *message) canonicalID() string {
	if m.brokerID != "" || m.extra == nil {
		return m.brokerID
	}
	return m.extra.minRef
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
func (m *message) setIdentity(brokerID, ref string, system sym, syms *symbols) {
	if brokerID != "" && (m.brokerID == "" || brokerID < m.brokerID) {
		m.brokerID = brokerID
	}
	switch {
	case m.brokerID != "":
		if m.extra != nil {
			m.extra.minRef = ""
		}
	case ref != "" && (m.extra == nil || m.extra.minRef == "" || ref < m.extra.minRef):
		m.ext().minRef = ref
	}
	m.system = smallerSym(m.system, system, syms)
}

// observePublish folds a publish in; see the message's doc for which wins.
func (m *message) observePublish(time int64, attempt uint16, producer, dest sym, trace uint32, syms *symbols) {
	better := m.publish == 0 ||
		attempt < m.pubAttempt ||
		attempt == m.pubAttempt && time < m.publish ||
		attempt == m.pubAttempt && time == m.publish && syms.name(producer) < syms.name(m.producer)
	if better {
		m.publish, m.pubAttempt, m.producer, m.pubDest, m.pubTrace = time, attempt, producer, dest, trace
	}
}

func (m *message) observeOperation(operation, flowName sym, syms *symbols) {
	if operation == 0 && flowName == 0 {
		return
	}
	x := m.ext()
	x.operation = smallerSym(x.operation, operation, syms)
	x.flowName = smallerSym(x.flowName, flowName, syms)
}

func (m *message) observeGroupless(flag msgFlags, time int64, reason sym, syms *symbols) {
	m.flags |= flag
	x := m.ext()
	x.groupless = max(x.groupless, time)
	x.grouplessReason = smallerSym(x.grouplessReason, reason, syms)
}

func (m *message) observeReason(group, reason sym, syms *symbols) {
	if reason == 0 {
		return
	}
	x := m.ext()
	for i := range x.reasons {
		if x.reasons[i].group == group {
			x.reasons[i].reason = smallerSym(x.reasons[i].reason, reason, syms)
			return
		}
	}
	x.reasons = append(x.reasons, hopReason{group: group, reason: reason})
}

func (m *message) reason(group sym) sym {
	if m.extra != nil {
		for _, r := range m.extra.reasons {
			if r.group == group {
				return r.reason
			}
		}
	}
	return 0
}

// grouplessEnd returns when and why a group-less dead-letter or expire
// event ended the message.
func (m *message) grouplessEnd() (int64, sym) {
	if m.extra == nil {
		return 0, 0
	}
	return m.extra.groupless, m.extra.grouplessReason
}

// start is when the message began: its publish, else its first delivery,
// else a group-less end.
func (m *message) start() int64 {
	if m.publish != 0 {
		return m.publish
	}
	var first int64
	for i := range m.hops {
		first = minNonZero(first, m.hops[i].deliver)
	}
	if first == 0 {
		first, _ = m.grouplessEnd()
	}
	return first
}

// end is the latest of its publish, deliveries, settlements and group-less
// end.
func (m *message) end() int64 {
	last, _ := m.grouplessEnd()
	last = max(last, m.publish)
	for i := range m.hops {
		last = max(last, m.hops[i].deliver, m.hops[i].settle)
	}
	return last
}

// absorb merges other (a root being joined to m) into m.
func (m *message) absorb(other *message, syms *symbols) {
	minRef := ""
	if other.extra != nil {
		minRef = other.extra.minRef
	}
	m.setIdentity(other.brokerID, minRef, other.system, syms)
	if other.publish != 0 {
		m.observePublish(other.publish, other.pubAttempt, other.producer, other.pubDest, other.pubTrace, syms)
	}
	m.flags |= other.flags & (msgDeadLettered | msgExpired | msgPendingStuck | msgBroadcast)
	if x := other.extra; x != nil {
		m.observeOperation(x.operation, x.flowName, syms)
		if other.flags&(msgDeadLettered|msgExpired) != 0 {
			m.observeGroupless(0, x.groupless, x.grouplessReason, syms)
		}
		for _, r := range x.reasons {
			m.observeReason(r.group, r.reason, syms)
		}
	}
	for i := range other.hops {
		m.hopFor(other.hops[i].group).absorb(&other.hops[i], syms)
	}
	other.hops, other.extra = nil, nil
	other.parent = m
}

func minNonZero(a, b int64) int64 {
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

// observeConsumer folds in a consumer-side event. The trace kept is the one
// the latest attempt ran in: a message published while a retried consumer
// worked was published from its successful attempt.
func (h *hop) observeConsumer(consumer, dest sym, trace uint32, attempt uint16, syms *symbols) {
	h.consumer = smallerSym(h.consumer, consumer, syms)
	h.dest = smallerSym(h.dest, dest, syms)
	if trace != 0 && (h.trace == 0 || attempt > h.traceAttempt || attempt == h.traceAttempt && trace < h.trace) {
		h.trace, h.traceAttempt = trace, attempt
	}
}

func (h *hop) observeAttempt(attempt uint16) {
	h.attempts = max(h.attempts, attempt, 1)
}

func (h *hop) observeProcess(start, duration int64, attempt uint16) {
	h.deliver = minNonZero(h.deliver, start)
	if attempt > h.procAttempt || attempt == h.procAttempt && duration > h.processing {
		h.procAttempt, h.processing = attempt, duration
	}
}

// absorb merges another hop of the same group.
func (h *hop) absorb(other *hop, syms *symbols) {
	h.observeConsumer(other.consumer, other.dest, other.trace, other.traceAttempt, syms)
	h.deliver = minNonZero(h.deliver, other.deliver)
	h.settle = max(h.settle, other.settle)
	h.attempts = max(h.attempts, other.attempts)
	if other.procAttempt > h.procAttempt || other.procAttempt == h.procAttempt && other.processing > h.processing {
		h.procAttempt, h.processing = other.procAttempt, other.processing
	}
	h.flags |= other.flags
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
