package correlator

import (
	"cmp"
	"slices"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// pendingOutcome is the outcome of a message's pending hop, while no
// consumer group has received it.
func pendingOutcome(m *message) model.HopOutcome {
	switch {
	case m.flags&msgDeadLettered != 0:
		return model.HopDeadLettered
	case m.flags&msgExpired != 0:
		return model.HopExpired
	case m.flags&msgBroadcast != 0:
		return model.HopAcked
	case m.flags&msgPendingStuck != 0:
		return model.HopStuck
	}
	return model.HopInFlight
}

// identHash hashes a message's canonical identity, from which its hop ids
// and (for a root) its flow's id derive.
func (e *Engine) identHash(m *message) uint64 {
	return e.hash.strings(tagIdent, e.syms.name(m.system), m.canonicalID())
}

func (e *Engine) hopHash(ident uint64, group sym) uint64 {
	return e.hash.withNumber(tagHop, ident, e.syms.name(group))
}

// hasRows reports whether the message has emitted hop rows.
func hasRows(m *message) bool {
	if m.flags&msgPendingEmitted != 0 {
		return true
	}
	for i := range m.hops {
		if m.hops[i].flags&hopEmitted != 0 {
			return true
		}
	}
	return false
}

// identityWouldChange reports whether setIdentity with these values would
// change the message's canonical identity.
func identityWouldChange(m *message, brokerID, ref string, system sym) bool {
	if m.system == 0 && system != 0 {
		return true
	}
	if brokerID != "" {
		return m.brokerID == "" || brokerID < m.brokerID
	}
	return ref != "" && m.brokerID == "" && (m.extra == nil || m.extra.minRef == "" || ref < m.extra.minRef)
}

// retireRows emits tombstones for the hop rows the message emitted, before
// its identity or its flow changes. Rows stand under the message's current
// identity and its flow's last emitted id: every change of either retires
// them first.
func (e *Engine) retireRows(m *message) {
	if f := rootFlow(m); f != nil {
		e.retireRowsIn(m, f)
	}
}

func (e *Engine) retireRowsIn(m *message, f *flow) {
	if !hasRows(m) {
		return
	}
	ident, flowID := e.identHash(m), idString(f.emittedID)
	tombstone := func(group sym) {
		e.out.Hops = append(e.out.Hops, model.Hop{
			FlowID: flowID, HopID: idString(e.hopHash(ident, group)),
			Version: e.nextVersion(), FirstSeen: fromNanos(f.firstSeen), Deleted: true,
		})
	}
	if m.flags&msgPendingEmitted != 0 {
		tombstone(0)
		m.flags &^= msgPendingEmitted
	}
	for i := range m.hops {
		if m.hops[i].flags&hopEmitted != 0 {
			tombstone(m.hops[i].group)
			m.hops[i].flags &^= hopEmitted
		}
	}
	m.emittedParent = 0
	m.flags |= msgDirty
}

// retireFlowRow emits a tombstone for the flow's last emitted id.
func (e *Engine) retireFlowRow(f *flow) {
	if f.emittedID == 0 {
		return
	}
	e.out.Flows = append(e.out.Flows, model.Flow{
		ID: idString(f.emittedID), Version: e.nextVersion(), FirstSeen: fromNanos(f.firstSeen), Deleted: true,
	})
	f.emittedID = 0
}

// flowSummary accumulates a flow's fields over its hops.
type flowSummary struct {
	start, end                          int64
	hops, retries, deadLetters          uint32
	anyRejected, anyUnsettled, anyStuck bool
}

// parentHop is where a message was published from: a hop of another message.
type parentHop struct {
	message int // index into the flow's messages, -1 for none
	hop     int // index into that message's hops
}

// emitFlow writes the flow's new version and the new versions of its
// changed hops (all of them when its id changed).
func (e *Engine) emitFlow(f *flow) {
	f.flags &^= flowDirty
	messages := e.liveMessages(f)
	if len(messages) == 0 {
		return
	}
	idents := make([]uint64, len(messages))
	for i, m := range messages {
		idents[i] = e.identHash(m)
	}
	parents := e.parentHops(messages, idents)
	root := rootMessage(messages, idents, parents)
	id := e.hash.withNumber(tagFlow, idents[root], "")
	if f.emittedID != 0 && f.emittedID != id {
		for _, m := range messages {
			e.retireRowsIn(m, f)
		}
		e.retireFlowRow(f)
	}
	f.flags &^= flowRekeyed

	flowID := idString(id)
	var sum flowSummary
	name := ""
	for i, m := range messages {
		var parent uint64
		if p := parents[i]; p.message >= 0 {
			parent = e.hopHash(idents[p.message], messages[p.message].hops[p.hop].group)
		}
		e.emitMessage(m, f, idents[i], flowID, parent, &sum)
		if m.extra != nil {
			if n := e.syms.name(m.extra.flowName); n != "" && (name == "" || n < name) {
				name = n
			}
		}
	}
	if name == "" {
		name = e.rootName(messages[root])
	}
	out := model.Flow{
		ID:           flowID,
		Version:      e.nextVersion(),
		FirstSeen:    fromNanos(f.firstSeen),
		Name:         name,
		Status:       e.status(f, &sum),
		Start:        fromNanos(sum.start),
		End:          fromNanos(sum.end),
		HopCount:     sum.hops,
		Retries:      sum.retries,
		DeadLetters:  sum.deadLetters,
		Keys:         e.flowKeys(f, messages),
		CriticalPath: e.criticalPath(messages, idents, parents),
	}
	f.emittedID = id
	if f.state == flowFinished && f.flags&flowFinishEmitted == 0 {
		f.flags |= flowFinishEmitted
		e.out.Finished = append(e.out.Finished, len(e.out.Flows))
	}
	e.out.Flows = append(e.out.Flows, out)
}

// liveMessages compacts the flow's message list to the roots it still owns.
func (e *Engine) liveMessages(f *flow) []*message {
	live := f.messages[:0]
	for _, m := range f.messages {
		if m.parent == nil && rootFlow(m) == f && !slices.Contains(live, m) {
			live = append(live, m)
		}
	}
	clear(f.messages[len(live):])
	f.messages = live
	return live
}

// parentHops finds, for each message, the hop it was published from: a hop
// of another message of the flow, delivered before the message was
// published, whose consumer side ran in the trace the message was published
// in — preferring the hop its producer consumed, then the latest delivered,
// then the smallest identity.
func (e *Engine) parentHops(messages []*message, idents []uint64) []parentHop {
	parents := make([]parentHop, len(messages))
	// Large flows index their consumer hops by trace; small ones scan.
	var byTrace map[uint32][]parentHop
	if len(messages) > 16 {
		byTrace = make(map[uint32][]parentHop)
		for j, p := range messages {
			for k := range p.hops {
				if t := p.hops[k].trace; t != 0 {
					byTrace[t] = append(byTrace[t], parentHop{message: j, hop: k})
				}
			}
		}
	}
	for i, m := range messages {
		best := parentHop{message: -1}
		consider := func(c parentHop) {
			h := &messages[c.message].hops[c.hop]
			// A parent was delivered before its child was published.
			if c.message == i || h.trace != m.pubTrace || h.deliver == 0 || h.deliver > m.publish {
				return
			}
			if best.message < 0 || betterParent(m, h, idents[c.message], &messages[best.message].hops[best.hop], idents[best.message]) {
				best = c
			}
		}
		switch {
		case m.pubTrace == 0 || m.publish == 0:
		case byTrace != nil:
			for _, c := range byTrace[m.pubTrace] {
				consider(c)
			}
		default:
			for j, p := range messages {
				for k := range p.hops {
					consider(parentHop{message: j, hop: k})
				}
			}
		}
		parents[i] = best
	}
	return parents
}

func betterParent(child *message, h *hop, ident uint64, than *hop, thanIdent uint64) bool {
	matchA, matchB := h.consumer == child.producer, than.consumer == child.producer
	if matchA != matchB {
		return matchA
	}
	if h.deliver != than.deliver {
		return h.deliver > than.deliver
	}
	return ident < thanIdent
}

// rootMessage is the earliest published message without a parent (any
// message, if every one has a parent), ties broken by identity.
func rootMessage(messages []*message, idents []uint64, parents []parentHop) int {
	best := -1
	for pass := 0; pass < 2 && best < 0; pass++ {
		for i, m := range messages {
			if pass == 0 && parents[i].message >= 0 {
				continue
			}
			if best < 0 || m.start() < messages[best].start() ||
				m.start() == messages[best].start() && idents[i] < idents[best] {
				best = i
			}
		}
	}
	return best
}

// rootName names a flow after its root hop: "<producer> <destination>".
func (e *Engine) rootName(root *message) string {
	producer := e.syms.name(root.producer)
	dest := e.syms.name(root.pubDest)
	for i := range root.hops {
		if d := e.syms.name(root.hops[i].dest); dest == "" || root.pubDest == 0 && d < dest {
			dest = d
		}
	}
	switch {
	case producer == "":
		return dest
	case dest == "":
		return producer
	}
	return producer + " " + dest
}

// emitMessage emits the message's hops when they changed and adds them to
// the flow's summary.
func (e *Engine) emitMessage(m *message, f *flow, ident uint64, flowID string, parent uint64, sum *flowSummary) {
	parent32 := uint32(parent) | 1
	if parent == 0 {
		parent32 = 0
	}
	emit := m.flags&msgDirty != 0 || !hasRows(m) || m.emittedParent != parent32
	m.flags &^= msgDirty

	if s := m.start(); s != 0 && (sum.start == 0 || s < sum.start) {
		sum.start = s
	}
	sum.end = max(sum.end, m.end())

	var base model.Hop
	groupless, grouplessReason := m.grouplessEnd()
	if emit {
		base = model.Hop{
			FlowID:      flowID,
			FirstSeen:   fromNanos(f.firstSeen),
			System:      e.syms.name(m.system),
			Producer:    e.syms.name(m.producer),
			MessageID:   m.canonicalID(),
			PublishTime: fromNanos(m.publish),
		}
		if m.extra != nil {
			base.Operation = e.syms.name(m.extra.operation)
		}
		if parent != 0 {
			base.ParentHopID = idString(parent)
		}
	}
	if len(m.hops) == 0 {
		outcome := pendingOutcome(m)
		e.summarize(sum, outcome, 1)
		if emit {
			h := base
			h.HopID, h.Version = idString(e.hopHash(ident, 0)), e.nextVersion()
			h.Destination = e.syms.name(m.pubDest)
			h.Outcome, h.Reason = outcome, e.syms.name(grouplessReason)
			switch {
			case outcome == model.HopAcked: // a broadcast: settled when published
				h.SettleTime = h.PublishTime
			case settled(outcome):
				h.SettleTime = fromNanos(groupless)
			}
			// Dead-lettered or expired before anyone received it: counted
			// once, as a settled hop is. Not a broadcast: its subscribers'
			// hops may follow, and those count.
			if (outcome == model.HopDeadLettered || outcome == model.HopExpired) && m.flags&msgPendingCounted == 0 {
				h.Counted = true
				m.flags |= msgPendingCounted
			}
			e.out.Hops = append(e.out.Hops, h)
			m.flags |= msgPendingEmitted
		}
	} else if m.flags&msgPendingEmitted != 0 {
		// Someone received it: the pending hop gives way to the real ones.
		e.out.Hops = append(e.out.Hops, model.Hop{
			FlowID: flowID, HopID: idString(e.hopHash(ident, 0)),
			Version: e.nextVersion(), FirstSeen: fromNanos(f.firstSeen), Deleted: true,
		})
		m.flags &^= msgPendingEmitted
	}
	for i := range m.hops {
		h := &m.hops[i]
		outcome := h.outcome(m.flags)
		e.summarize(sum, outcome, h.attempts)
		if !emit {
			continue
		}
		row := base
		row.HopID, row.Version = idString(e.hopHash(ident, h.group)), e.nextVersion()
		row.Destination = e.syms.name(h.dest)
		if row.Destination == "" {
			row.Destination = e.syms.name(m.pubDest)
		}
		row.Consumer, row.ConsumerGroup = e.syms.name(h.consumer), e.syms.name(h.group)
		row.DeliverTime = fromNanos(h.deliver)
		settle := h.settle
		if outcome == model.HopDeadLettered || outcome == model.HopExpired {
			settle = max(settle, groupless)
		}
		row.SettleTime = fromNanos(settle)
		if h.deliver != 0 && m.publish != 0 {
			row.QueueWait = time.Duration(h.deliver - m.publish)
		}
		row.Processing = time.Duration(h.processing)
		row.Attempts = h.attempts
		row.Outcome = outcome
		row.Reason = e.syms.name(m.reason(h.group))
		if row.Reason == "" && (outcome == model.HopDeadLettered || outcome == model.HopExpired) {
			row.Reason = e.syms.name(grouplessReason)
		}
		if settled(outcome) && h.flags&hopCounted == 0 {
			row.Counted = true
			h.flags |= hopCounted
		}
		h.flags |= hopEmitted
		e.out.Hops = append(e.out.Hops, row)
	}
	if emit {
		m.emittedParent = parent32
	}
}

func (e *Engine) summarize(sum *flowSummary, outcome model.HopOutcome, attempts uint16) {
	sum.hops++
	if attempts > 1 {
		sum.retries += uint32(attempts - 1)
	}
	switch outcome {
	case model.HopDeadLettered:
		sum.deadLetters++
	case model.HopRejected, model.HopExpired:
		sum.anyRejected = true
	case model.HopStuck:
		sum.anyStuck = true
	}
	if !settled(outcome) {
		sum.anyUnsettled = true
	}
}

// status applies the README's rules for a flow's status.
func (e *Engine) status(f *flow, sum *flowSummary) model.FlowStatus {
	switch {
	case f.flags&flowEvicted != 0:
		return model.FlowEvicted
	case f.state == flowFinished && sum.deadLetters > 0:
		return model.FlowDeadLettered
	case f.state == flowFinished && sum.anyRejected:
		return model.FlowFailed
	case f.state == flowFinished && sum.anyUnsettled:
		return model.FlowStuck
	case f.state == flowFinished:
		return model.FlowCompleted
	case sum.anyStuck:
		return model.FlowStuck
	}
	return model.FlowRunning
}

// flowKeys lists the flow's keys and its messages' broker ids, sorted.
func (e *Engine) flowKeys(f *flow, messages []*message) []model.Key {
	keys := make([]model.Key, 0, len(f.keys)+len(messages))
	for _, k := range f.keys {
		keys = append(keys, model.Key{Kind: e.syms.name(k.kind), Value: k.value})
	}
	for _, m := range messages {
		if m.brokerID != "" {
			keys = append(keys, model.Key{Kind: "message_id", Value: m.brokerID})
		}
	}
	slices.SortFunc(keys, func(a, b model.Key) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Value, b.Value))
	})
	return slices.Compact(keys)
}

// criticalPath is the chain of hops from the flow's root to the hop that
// ended last, following parent hops.
func (e *Engine) criticalPath(messages []*message, idents []uint64, parents []parentHop) []string {
	last := 0
	lastEnd := messages[0].end()
	for i, m := range messages {
		if end := m.end(); end > lastEnd || end == lastEnd && idents[i] < idents[last] {
			last, lastEnd = i, end
		}
	}
	group := sym(0)
	if hops := messages[last].hops; len(hops) > 0 {
		best := 0
		for i := range hops {
			if hops[i].settle > hops[best].settle ||
				hops[i].settle == hops[best].settle && e.syms.name(hops[i].group) < e.syms.name(hops[best].group) {
				best = i
			}
		}
		group = hops[best].group
	}
	path := []string{idString(e.hopHash(idents[last], group))}
	for i, steps := last, 0; parents[i].message >= 0 && steps < len(messages); steps++ {
		p := parents[i]
		i = p.message
		path = append(path, idString(e.hopHash(idents[i], messages[i].hops[p.hop].group)))
	}
	slices.Reverse(path)
	return path
}
