package correlator

import (
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// Changes are the new versions of hops and flows since the last Flush.
// A row with Deleted set retires an id that no longer stands (a flow merged
// into another, a message whose identity became known).
type Changes struct {
	Hops  []model.Hop
	Flows []model.Flow
	// Finished indexes the Flows that finished for the first time.
	Finished []int
}

// Stats are the engine's counters and gauges.
type Stats struct {
	EventsAdded   uint64 // events folded in
	EventsIgnored uint64 // events with an unknown kind or no identity
	FlowsReopened uint64 // finished flows that a late event reopened
	FlowsReleased uint64 // finished flows forgotten after retain
	// Evicted counts in-flight flows with unsettled hops forced out, by
	// the limit that did it.
	EvictedByHops  uint64
	EvictedByFlows uint64
	// FinishedEarly counts in-flight flows whose hops had all settled,
	// finished before flow_idle to keep within the limits.
	FinishedEarly uint64
	// Migrations counts flows Sharded moved between workers when an event
	// joined flows held by different ones.
	Migrations    uint64
	InFlightHops  int // hops held, finished flows' included
	InFlightFlows int // flows held, finished ones included
	StuckFlows    int // quiet flows with stuck hops
}

// Engine correlates events into hops and flows. It is not safe for
// concurrent use: one goroutine owns it and all of its state.
type Engine struct {
	cfg Config
	identifier

	syms    symbols
	aliases map[uint64]*message // identity hash → a member of the message's set
	keys    map[uint64]*flow    // flow key hash → a member of the flow's set
	lists   [flowReleased]flowList

	dirty []*flow
	out   Changes
	// releasedAnchors are the anchors of flows released since Sharded last
	// collected them, so it forgets their routes; kept only for Sharded.
	trackReleases   bool
	releasedAnchors []uint64
	now             int64  // processing time, ns, never decreasing
	version         uint64 // last version handed out

	hops  int // hops held
	flows int // flows held
	// swept is the size of the maps after the last sweep: they are swept of
	// released flows' entries whenever they have doubled since.
	swept int
	// symbolsKept is the size of the symbol table after its last
	// compaction: a sweep compacts it whenever it has doubled since.
	symbolsKept int
	stats       Stats

	rootScratch []*message
}

// New returns an Engine, or the configuration's error.
func New(cfg Config) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Engine{
		cfg:        cfg.withDefaults(),
		identifier: newIdentifier(cfg),
		syms:       newSymbols(),
		aliases:    make(map[uint64]*message),
		keys:       make(map[uint64]*flow),
	}
	return e, nil
}

// Stats returns the engine's counters and gauges.
func (e *Engine) Stats() Stats {
	s := e.stats
	s.InFlightHops, s.InFlightFlows = e.hops, e.flows
	return s
}

func (e *Engine) setNow(now time.Time) {
	e.now = max(e.now, now.UnixNano())
}

func (e *Engine) nextVersion() uint64 {
	e.version = max(e.version+1, uint64(max(e.now, 0)))
	return e.version
}

// Add folds one event in, at processing time now. It keeps nothing of ev:
// the caller may reuse the event and its slices.
func (e *Engine) Add(now time.Time, ev *model.Event) {
	e.setNow(now)
	kind, dest, attempt := e.normalize(ev)
	if kind == "" {
		e.stats.EventsIgnored++
		return
	}
	if isBatch(ev, kind) {
		// A batch: the event happened to each linked message on its own.
		for _, link := range ev.Links {
			aliases := append(e.scratch[:0], e.hash.strings(tagRef, link.TraceID, link.SpanID))
			e.addTo(ev, kind, dest, attempt, aliases, link.TraceID, link.SpanID)
		}
		return
	}
	aliases, refTrace, refSpan := e.identity(ev, consumerSide(kind))
	if len(aliases) == 0 {
		e.stats.EventsIgnored++
		return
	}
	e.addTo(ev, kind, dest, attempt, aliases, refTrace, refSpan)
}

// addTo folds the event into the message its aliases name. refTrace and
// refSpan are its smallest span reference, a candidate identity.
func (e *Engine) addTo(ev *model.Event, kind model.EventKind, dest string, attempt uint16, aliases []uint64, refTrace, refSpan string) {
	e.stats.EventsAdded++
	m := e.resolve(aliases)
	ref := ""
	if ev.MessageID == "" && m.brokerID == "" && refTrace != "" {
		ref = refTrace + "-" + refSpan
	}
	system := e.syms.intern(ev.System)
	if hasRows(m) && identityWouldChange(m, ev.MessageID, ref, system) {
		e.retireRows(m)
	}
	m.setIdentity(ev.MessageID, ref, system, &e.syms)
	e.observe(m, ev, kind, dest, attempt)
	e.joinFlow(m, ev, aliases[0])
}

// resolve finds the message the aliases name, merging messages that turn
// out to be one, or starts a new one; it records every alias.
func (e *Engine) resolve(aliases []uint64) *message {
	roots := e.rootScratch[:0]
	for _, a := range aliases {
		m, ok := e.aliases[a]
		if !ok {
			continue
		}
		r := m.root()
		if r.flow != nil && r.flow.root().state == flowReleased {
			continue
		}
		found := false
		for _, seen := range roots {
			found = found || seen == r
		}
		if !found {
			roots = append(roots, r)
		}
	}
	var m *message
	if len(roots) == 0 {
		m = &message{}
		e.hops++
	} else {
		m = roots[0]
		for _, other := range roots[1:] {
			e.mergeMessages(m, other)
		}
	}
	e.rootScratch = roots[:0]
	for _, a := range aliases {
		if existing, ok := e.aliases[a]; !ok || existing.root() != m {
			e.aliases[a] = m
		}
	}
	return m
}

// mergeMessages folds the root other into the root m, retiring the rows
// other emitted under its old identity.
func (e *Engine) mergeMessages(m, other *message) {
	e.retireRows(m)
	e.retireRows(other)
	e.hops -= m.hopCount() + other.hopCount()
	m.absorb(other, &e.syms)
	e.hops += m.hopCount()
	m.flags |= msgDirty
	fm, fo := rootFlow(m), rootFlow(other)
	switch {
	case fo == nil:
	case fm == nil:
		e.attach(fo, m)
	case fm != fo:
		e.unionFlows(fm, fo)
	}
}

func rootFlow(m *message) *flow {
	if m.flow == nil {
		return nil
	}
	return m.flow.root()
}

// observe folds the event into the message and the hop it concerns.
func (e *Engine) observe(m *message, ev *model.Event, kind model.EventKind, dest string, attempt uint16) {
	t := nanos(ev.Time)
	end := t
	if kind == model.EventProcess || kind == model.EventCallbackReceive {
		end = t + int64(max(ev.Duration, 0))
	}
	m.observeOperation(e.syms.intern(ev.Operation), e.syms.intern(ev.FlowName), &e.syms)
	m.flags |= msgDirty
	service, destination := e.syms.intern(ev.Service), e.syms.intern(dest)
	var trace uint32
	if ev.TraceID != "" {
		trace = uint32(e.hash.strings(tagTrace, ev.TraceID, "")) | 1
	}

	if kind == model.EventBroadcast {
		m.flags |= msgBroadcast
	}
	if !consumerSide(kind) {
		m.observePublish(t, max(attempt, 1), service, destination, trace, &e.syms)
		return
	}
	if kind == model.EventDeadLetter || kind == model.EventExpire {
		reason := e.syms.intern(ev.Reason)
		if ev.ConsumerGroup == "" {
			flag := msgDeadLettered
			if kind == model.EventExpire {
				flag = msgExpired
			}
			m.observeGroupless(flag, t, reason, &e.syms)
			return
		}
		h := e.hopOf(m, e.syms.intern(ev.ConsumerGroup))
		flag := hopDeadLettered
		if kind == model.EventExpire {
			flag = hopExpired
		}
		h.flags |= flag
		h.settle = max(h.settle, t)
		m.observeReason(h.group, reason, &e.syms)
		return
	}

	group := ev.ConsumerGroup
	if group == "" {
		group = ev.Service
	}
	h := e.hopOf(m, e.syms.intern(group))
	h.observeConsumer(service, destination, trace, max(attempt, 1), &e.syms)
	h.observeAttempt(attempt)
	switch kind {
	case model.EventDeliver:
		h.deliver = minNonZero(h.deliver, t)
	case model.EventProcess, model.EventCallbackReceive:
		if kind == model.EventCallbackReceive {
			h.deliver = minNonZero(h.deliver, t)
		}
		h.observeProcess(t, end-t, max(attempt, 1))
		if ev.Outcome == "error" {
			h.flags |= hopRetrying
			m.observeReason(h.group, e.syms.intern(ev.Reason), &e.syms)
		} else {
			h.flags |= hopAcked
			h.settle = max(h.settle, end)
		}
	case model.EventSettle:
		h.settle = max(h.settle, t)
		switch ev.Outcome {
		case "nack", "requeue":
			h.flags |= hopRetrying
		case "reject", "term":
			h.flags |= hopRejected
			m.observeReason(h.group, e.syms.intern(ev.Reason), &e.syms)
		default:
			h.flags |= hopAcked
		}
	}
}

// hopOf returns the message's hop for a group, counting a new one.
func (e *Engine) hopOf(m *message, group sym) *hop {
	before := m.hopCount()
	h := m.hopFor(group)
	e.hops += m.hopCount() - before
	return h
}

// joinFlow puts the message in the flow its keys name, merging flows that
// share a key, and marks the flow active.
func (e *Engine) joinFlow(m *message, ev *model.Event, anchor uint64) {
	f := rootFlow(m)
	join := func(kind, value string) {
		key := e.keyHash(kind, value)
		g, ok := e.keys[key]
		if ok {
			g = g.root()
			if g.state == flowReleased {
				ok = false
			}
		}
		switch {
		case !ok:
			if f == nil {
				f = e.newFlow(anchor)
				e.attach(f, m)
			}
			e.keys[key] = f
			f.keys = append(f.keys, flowKey{kind: e.syms.intern(kind), value: value})
		case f == nil:
			f = g
			e.attach(f, m)
		case g != f:
			f = e.unionFlows(f, g)
		}
	}
	if ev.TraceID != "" {
		join("trace_id", ev.TraceID)
	}
	for _, k := range ev.Keys {
		if k.Value != "" {
			join(k.Kind, k.Value)
		}
	}
	if f == nil {
		f = e.newFlow(anchor)
		e.attach(f, m)
	}
	e.touch(f)
}

func (e *Engine) newFlow(anchor uint64) *flow {
	f := &flow{firstSeen: e.now, lastActivity: e.now, state: flowActive, anchor: anchor}
	e.lists[flowActive].pushBack(f)
	e.flows++
	return f
}

func (e *Engine) attach(f *flow, m *message) {
	m.flow = f
	f.messages = append(f.messages, m)
	f.flags |= flowRekeyed
}

// unionFlows merges two root flows, keeping the larger, and returns it.
func (e *Engine) unionFlows(a, b *flow) *flow {
	if len(a.messages)+len(a.keys) < len(b.messages)+len(b.keys) {
		a, b = b, a
	}
	for _, m := range b.messages {
		if m.parent == nil {
			e.retireRowsIn(m, b)
		}
	}
	e.retireFlowRow(b)
	e.clearStuck(b)
	b.parent = a
	a.messages = append(a.messages, b.messages...)
	a.keys = append(a.keys, b.keys...)
	if a.emittedID == 0 {
		// Rows stand under the first_seen they were written with: it only
		// moves while nothing was written.
		a.firstSeen = min(a.firstSeen, b.firstSeen)
	}
	a.lastActivity = max(a.lastActivity, b.lastActivity)
	a.flags |= flowRekeyed | b.flags&flowFinishEmitted
	e.lists[b.state].remove(b)
	b.messages, b.keys = nil, nil
	e.flows--
	e.markDirty(a)
	return a
}

// touch records activity: the flow moves to the back of the active list,
// and stops being stuck or finished.
func (e *Engine) touch(f *flow) {
	f.lastActivity = e.now
	if f.state == flowFinished {
		e.stats.FlowsReopened++
	}
	e.clearStuck(f)
	e.lists[f.state].remove(f)
	f.state = flowActive
	e.lists[flowActive].pushBack(f)
	e.markDirty(f)
}

func (e *Engine) markDirty(f *flow) {
	if f.flags&flowDirty == 0 {
		f.flags |= flowDirty
		e.dirty = append(e.dirty, f)
	}
}

// Advance moves processing time to now: flows quiet for stuck_after get
// their unsettled hops marked stuck, flows quiet for flow_idle finish, and
// finished flows older than retain are forgotten.
func (e *Engine) Advance(now time.Time) {
	e.setNow(now)
	stuckAfter, idle, retain := int64(e.cfg.StuckAfter), int64(e.cfg.FlowIdle), int64(e.cfg.Retain)
	for f := e.lists[flowActive].head; f != nil && f.lastActivity+stuckAfter <= e.now; f = e.lists[flowActive].head {
		e.move(f, flowQuiet)
		e.markStuck(f)
	}
	for f := e.lists[flowQuiet].head; f != nil && f.lastActivity+idle <= e.now; f = e.lists[flowQuiet].head {
		e.move(f, flowFinished)
		e.markDirty(f)
	}
	for f := e.lists[flowFinished].head; f != nil && f.lastActivity+idle+retain <= e.now; f = e.lists[flowFinished].head {
		if f.flags&flowDirty != 0 {
			e.emitFlow(f) // finished and released in one step: emit it finished first
		}
		e.release(f)
		e.stats.FlowsReleased++
	}
	e.enforceLimits()
}

func (e *Engine) move(f *flow, state flowState) {
	e.lists[f.state].remove(f)
	f.state = state
	e.lists[state].pushBack(f)
}

// markStuck marks the unsettled hops of a quiet flow stuck.
func (e *Engine) markStuck(f *flow) {
	stuck := false
	for _, m := range f.messages {
		if m.parent != nil {
			continue
		}
		if len(m.hops) == 0 && !settled(pendingOutcome(m)) {
			m.flags |= msgPendingStuck | msgDirty
			stuck = true
		}
		for i := range m.hops {
			if !settled(m.hops[i].outcome(m.flags)) {
				m.hops[i].flags |= hopStuck
				m.flags |= msgDirty
				stuck = true
			}
		}
	}
	if stuck {
		f.flags |= flowHasStuck
		e.stats.StuckFlows++
		e.markDirty(f)
	}
}

// allSettled reports whether every hop of the flow has settled.
func allSettled(f *flow) bool {
	for _, m := range f.messages {
		if m.parent != nil {
			continue
		}
		if len(m.hops) == 0 && !settled(pendingOutcome(m)) {
			return false
		}
		for i := range m.hops {
			if !settled(m.hops[i].outcome(m.flags)) {
				return false
			}
		}
	}
	return true
}

func (e *Engine) clearStuck(f *flow) {
	if f.flags&flowHasStuck == 0 {
		return
	}
	f.flags &^= flowHasStuck
	e.stats.StuckFlows--
	for _, m := range f.messages {
		if m.parent != nil {
			continue
		}
		if m.flags&msgPendingStuck != 0 {
			m.flags = m.flags&^msgPendingStuck | msgDirty
		}
		for i := range m.hops {
			if m.hops[i].flags&hopStuck != 0 {
				m.hops[i].flags &^= hopStuck
				m.flags |= msgDirty
			}
		}
	}
}

// release forgets a finished or evicted flow. Map entries that point at it
// stay until a sweep.
func (e *Engine) release(f *flow) {
	if e.trackReleases {
		e.releasedAnchors = append(e.releasedAnchors, f.anchor)
	}
	e.forget(f)
	if size := len(e.aliases) + len(e.keys); size > 2*max(e.swept, 1024) {
		e.sweep()
	}
}

// sweep deletes the map entries of released flows.
func (e *Engine) sweep() {
	for key, m := range e.aliases {
		if f := rootFlow(m.root()); f == nil || f.state == flowReleased {
			delete(e.aliases, key)
		}
	}
	for key, f := range e.keys {
		if f.root().state == flowReleased {
			delete(e.keys, key)
		}
	}

	e.swept = len(e.aliases) + len(e.keys)
	if n := len(e.syms.names); n > 2*max(e.symbolsKept, minSymbolsCompacted) {
		e.compactSymbols()
		e.symbolsKept = len(e.syms.names)
	}
}

// minSymbolsCompacted is how many names the symbol table holds before a
// sweep compacts it: below, what it keeps costs less than a pass.
var minSymbolsCompacted = 1 << 16

// enforceLimits keeps the engine within max_in_flight_hops and
// max_in_flight_flows: finished flows go first, then the least recently
// active in-flight ones. Of those, a flow whose hops have all settled is
// finished early, with the status it would have finished with; only one
// still waiting on a hop is emitted as evicted.
func (e *Engine) enforceLimits() {
	for e.hops > e.cfg.MaxInFlightHops || e.flows > e.cfg.MaxInFlightFlows {
		if f := e.lists[flowFinished].head; f != nil {
			if f.flags&flowDirty != 0 {
				e.emitFlow(f)
			}
			e.release(f)
			e.stats.FlowsReleased++
			continue
		}
		f := e.lists[flowQuiet].head
		if f == nil {
			f = e.lists[flowActive].head
		}
		if f == nil {
			return
		}
		switch {
		case allSettled(f):
			e.stats.FinishedEarly++
		case e.hops > e.cfg.MaxInFlightHops:
			e.stats.EvictedByHops++
			f.flags |= flowEvicted
		default:
			e.stats.EvictedByFlows++
			f.flags |= flowEvicted
		}
		e.move(f, flowFinished)
		e.emitFlow(f)
		e.release(f)
	}
}

// Flush returns the new versions of everything that changed since the last
// Flush.
func (e *Engine) Flush() Changes {
	for _, f := range e.dirty {
		if f.parent != nil || f.flags&flowDirty == 0 || f.state == flowReleased {
			continue
		}
		e.emitFlow(f)
	}
	e.dirty = e.dirty[:0]
	out := e.out
	// The next flush is likely about as large as this one: sized as it,
	// its slices are allocated once instead of grown by copying.
	e.out = Changes{}
	if n := len(out.Hops); n > 0 {
		e.out.Hops = make([]model.Hop, 0, n)
	}
	if n := len(out.Flows); n > 0 {
		e.out.Flows = make([]model.Flow, 0, n)
	}
	return out
}

func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
