package correlator

// flow is a set of messages joined by shared keys. Flows joined by a key form
// a union-find set; parent is nil at the root, which holds the merged state.
type flow struct {
	parent   *flow
	messages []*message // may hold messages since merged into others: skip non-roots
	keys     []flowKey

	firstSeen    int64 // processing time first seen
	lastActivity int64 // processing time of the last event

	// The flow sits on exactly one of the engine's lists, by state.
	state      flowState
	prev, next *flow

	flags     flowFlags
	emittedID uint64 // id hash of the last emitted version, 0 before the first
	// anchor is an identity hash of the flow's first message: Sharded knows
	// the flow by it.
	anchor uint64
}

// flowKey is one of a flow's keys: a trace id, a correlation id, a
// business key.
type flowKey struct {
	kind  sym
	value string
}

type flowState uint8

const (
	flowActive   flowState = iota // events arrived within stuck_after
	flowQuiet                     // quiet for stuck_after: unsettled hops are stuck
	flowFinished                  // quiet for flow_idle: final status, kept for retain
	flowReleased                  // forgotten; map entries pointing here are stale
)

type flowFlags uint8

const (
	flowDirty         flowFlags = 1 << iota // changed since the last flush
	flowEvicted                             // forced out by the state limits
	flowFinishEmitted                       // the finished version was emitted once
	flowRekeyed                             // its id may have changed: re-emit every hop
	flowHasStuck                            // quiet, with stuck hops
)

func (f *flow) root() *flow {
	r := f
	for r.parent != nil {
		r = r.parent
	}
	for f.parent != nil && f.parent != r {
		f.parent, f = r, f.parent
	}
	return r
}

// flowList is an intrusive doubly linked list of flows in the order they
// were last active: the front is the least recently active.
type flowList struct {
	head, tail *flow
	len        int
}

func (l *flowList) pushBack(f *flow) {
	f.prev, f.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = f
	} else {
		l.head = f
	}
	l.tail = f
	l.len++
}

// insertByActivity inserts a flow where its last activity puts it; flows
// that arrive from elsewhere (a checkpoint, another shard) may be older than
// the list's tail.
func (l *flowList) insertByActivity(f *flow) {
	after := l.tail
	for after != nil && after.lastActivity > f.lastActivity {
		after = after.prev
	}
	if after == l.tail {
		l.pushBack(f)
		return
	}
	f.prev = after
	if after == nil {
		f.next = l.head
		l.head.prev = f
		l.head = f
	} else {
		f.next = after.next
		after.next.prev = f
		after.next = f
	}
	l.len++
}

func (l *flowList) remove(f *flow) {
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		l.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		l.tail = f.prev
	}
	f.prev, f.next = nil, nil
	l.len--
}
