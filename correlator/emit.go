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
	case m.flags&msgPendingStuck != 0:
		return model.HopStuck
	}
	return model.HopInFlight
}

func hopID(messageKey string, group string) string {
	return hashID("hop", messageKey, group)
}

// retireMessageRows emits tombstones for every hop row the message emitted,
// before its identity or flow changes.
func (e *Engine) retireMessageRows(m *message) {
	if m.emittedKey == "" {
		return
	}
	tombstone := func(group string) {
		e.out.Hops = append(e.out.Hops, model.Hop{
			FlowID: m.emittedFlow, HopID: hopID(m.emittedKey, group), Version: e.nextVersion(),
			FirstSeen: fromNanos(m.firstSeen), Deleted: true,
		})
	}
	if m.flags&msgPendingEmitted != 0 {
		tombstone("")
		m.flags &^= msgPendingEmitted
	}
	for i := range m.hops {
		if m.hops[i].flags&hopEmitted != 0 {
			tombstone(e.syms.name(m.hops[i].group))
			m.hops[i].flags &^= hopEmitted
		}
	}
	m.emittedKey, m.emittedFlow = "", ""
}

// retireFlowRow emits a tombstone for the flow's last emitted id.
func (e *Engine) retireFlowRow(f *flow) {
	if f.emittedID == "" {
		return
	}
	e.out.Flows = append(e.out.Flows, model.Flow{
		ID: f.emittedID, Version: e.nextVersion(), FirstSeen: fromNanos(f.firstSeen), Deleted: true,
	})
	f.emittedID = ""
}

// flowSummary accumulates a flow's fields over its hops.
type flowSummary struct {
	start, end                          int64
	hops, retries, deadLetters          uint32
	anyRejected, anyUnsettled, anyStuck bool
}

// emitFlow writes the flow's new version and the new versions of its
// changed hops (all of them when its id changed).
func (e *Engine) emitFlow(f *flow) {
	f.flags &^= flowDirty
	messages := e.liveMessages(f)
	if len(messages) == 0 {
		return
	}
	parents := e.parentMessages(f, messages)
	root := rootMessage(messages, parents, &e.syms)
	id := hashID("flow", root.canonicalKey(&e.syms))
	if f.emittedID != "" && f.emittedID != id {
		e.retireFlowRow(f)
		f.flags |= flowRekeyed
	}
	rekeyed := f.flags&flowRekeyed != 0
	f.flags &^= flowRekeyed

	var sum flowSummary
	for _, m := range messages {
		e.emitMessage(m, id, parents[m], rekeyed, &sum)
	}

	name := ""
	for _, m := range messages {
		if n := e.syms.name(m.flowName); n != "" && (name == "" || n < name) {
			name = n
		}
	}
	if name == "" {
		name = e.rootName(root)
	}
	out := model.Flow{
		ID:           id,
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
		CriticalPath: e.criticalPath(messages, parents),
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
		if m.parent == nil && rootFlow(m) == f && !contains(live, m) {
			live = append(live, m)
		}
	}
	clear(f.messages[len(live):])
	f.messages = live
	return live
}

func contains(messages []*message, m *message) bool {
	for _, x := range messages {
		if x == m {
			return true
		}
	}
	return false
}

// parentMessages maps each message to the message whose processing
// published it, where the publishing span's parent is known.
func (e *Engine) parentMessages(f *flow, messages []*message) map[*message]*message {
	parents := make(map[*message]*message, len(messages))
	for _, m := range messages {
		if m.pubParent == "" {
			continue
		}
		if p, ok := e.aliases[m.pubParent]; ok {
			if p = p.root(); p != m && rootFlow(p) == f {
				parents[m] = p
			}
		}
	}
	return parents
}

// rootMessage is the earliest published message without a parent (any
// message, if every one has a parent), ties broken by identity.
func rootMessage(messages []*message, parents map[*message]*message, syms *symbols) *message {
	var best *message
	for pass := 0; pass < 2 && best == nil; pass++ {
		for _, m := range messages {
			if pass == 0 && parents[m] != nil {
				continue
			}
			if best == nil || earlier(m, best, syms) {
				best = m
			}
		}
	}
	return best
}

func startOf(m *message) int64 {
	if m.publish != 0 {
		return m.publish
	}
	return m.minTime
}

func earlier(a, b *message, syms *symbols) bool {
	sa, sb := startOf(a), startOf(b)
	if sa != sb {
		return sa < sb
	}
	return a.canonicalKey(syms) < b.canonicalKey(syms)
}

// rootName names a flow after its root hop: "<producer> <destination>".
func (e *Engine) rootName(root *message) string {
	producer := e.syms.name(root.producer)
	dest := e.syms.name(root.pubDest)
	if dest == "" && len(root.hops) > 0 {
		dest = e.syms.name(root.hops[0].dest)
	}
	switch {
	case producer == "":
		return dest
	case dest == "":
		return producer
	}
	return producer + " " + dest
}

// parentHopID is the id of the parent message's hop that published m: the
// one consumed by m's producer, else the first by group.
func (e *Engine) parentHopID(m, parent *message) string {
	if parent == nil {
		return ""
	}
	key := parent.canonicalKey(&e.syms)
	if len(parent.hops) == 0 {
		return hopID(key, "")
	}
	best := -1
	for i := range parent.hops {
		h := &parent.hops[i]
		match := h.consumer == m.producer
		if best < 0 || match && parent.hops[best].consumer != m.producer ||
			match == (parent.hops[best].consumer == m.producer) && e.syms.name(h.group) < e.syms.name(parent.hops[best].group) {
			best = i
		}
	}
	return hopID(key, e.syms.name(parent.hops[best].group))
}

// emitMessage emits the message's hops when they changed and adds them to
// the flow's summary.
func (e *Engine) emitMessage(m *message, flowID string, parent *message, rekeyed bool, sum *flowSummary) {
	key := m.canonicalKey(&e.syms)
	if m.emittedKey != "" && (m.emittedKey != key || m.emittedFlow != flowID) {
		e.retireMessageRows(m)
		rekeyed = true
	}
	emit := rekeyed || m.flags&msgDirty != 0 || m.emittedKey == ""
	m.flags &^= msgDirty

	if s := startOf(m); s != 0 && (sum.start == 0 || s < sum.start) {
		sum.start = s
	}
	sum.end = max(sum.end, m.maxTime)

	base := model.Hop{
		FlowID:      flowID,
		FirstSeen:   fromNanos(m.firstSeen),
		ParentHopID: e.parentHopID(m, parent),
		System:      e.syms.name(m.system),
		Producer:    e.syms.name(m.producer),
		Operation:   e.syms.name(m.operation),
		MessageID:   m.canonicalID(),
		PublishTime: fromNanos(m.publish),
	}
	if len(m.hops) == 0 {
		outcome := pendingOutcome(m)
		e.summarize(sum, outcome, 1)
		if emit {
			h := base
			h.HopID, h.Version = hopID(key, ""), e.nextVersion()
			h.Destination = e.syms.name(m.pubDest)
			h.Outcome, h.Reason = outcome, e.syms.name(m.grouplessReason)
			if settled(outcome) {
				h.SettleTime = fromNanos(m.groupless)
			}
			e.out.Hops = append(e.out.Hops, h)
			m.flags |= msgPendingEmitted
		}
	} else if m.flags&msgPendingEmitted != 0 {
		// Someone received it: the pending hop gives way to the real ones.
		e.out.Hops = append(e.out.Hops, model.Hop{FlowID: m.emittedFlow, HopID: hopID(m.emittedKey, ""),
			Version: e.nextVersion(), FirstSeen: fromNanos(m.firstSeen), Deleted: true})
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
		group := e.syms.name(h.group)
		row.HopID, row.Version = hopID(key, group), e.nextVersion()
		row.Destination = e.syms.name(h.dest)
		if row.Destination == "" {
			row.Destination = e.syms.name(m.pubDest)
		}
		row.Consumer, row.ConsumerGroup = e.syms.name(h.consumer), group
		row.DeliverTime = fromNanos(h.deliverTime())
		settle := h.settle
		if h.flags&(hopDeadLettered|hopExpired|hopAcked) == 0 && m.flags&(msgDeadLettered|msgExpired) != 0 {
			settle = max(settle, m.groupless)
		}
		row.SettleTime = fromNanos(settle)
		if d := h.deliverTime(); d != 0 && m.publish != 0 {
			row.QueueWait = fromNanos(d).Sub(fromNanos(m.publish))
		}
		row.Processing = time.Duration(h.processing)
		row.Attempts = h.attempts
		row.Outcome = outcome
		row.Reason = e.syms.name(h.reason)
		if row.Reason == "" && (outcome == model.HopDeadLettered || outcome == model.HopExpired) {
			row.Reason = e.syms.name(m.grouplessReason)
		}
		if settled(outcome) && h.flags&hopCounted == 0 {
			row.Counted = true
			h.flags |= hopCounted
		}
		h.flags |= hopEmitted
		e.out.Hops = append(e.out.Hops, row)
	}
	if emit {
		m.emittedKey, m.emittedFlow = key, flowID
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
	keys := slices.Clone(f.keys)
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

// criticalPath is the chain of hops from the flow's root to the message
// that ended last, following parent messages.
func (e *Engine) criticalPath(messages []*message, parents map[*message]*message) []string {
	var last *message
	for _, m := range messages {
		if last == nil || m.maxTime > last.maxTime ||
			m.maxTime == last.maxTime && m.canonicalKey(&e.syms) < last.canonicalKey(&e.syms) {
			last = m
		}
	}
	leafGroup := ""
	var latest int64 = -1
	for i := range last.hops {
		h := &last.hops[i]
		if g := e.syms.name(h.group); h.settle > latest || h.settle == latest && g < leafGroup {
			latest, leafGroup = h.settle, g
		}
	}
	path := []string{hopID(last.canonicalKey(&e.syms), leafGroup)}
	for m, steps := last, 0; parents[m] != nil && steps < len(messages); m, steps = parents[m], steps+1 {
		path = append(path, e.parentHopID(m, parents[m]))
	}
	slices.Reverse(path)
	return path
}
