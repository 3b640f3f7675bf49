package flowsim

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// TruthFlow is a flow as the engine should report it once every flow has
// finished (quiet for flow_idle after its last event).
type TruthFlow struct {
	// Scenario is the scenario that generated the flow.
	Scenario Scenario
	// Name is the smallest flow-name hint of the flow's events, else
	// "<producer> <destination>" of its root hop's publish side: the
	// earliest published message with no parent.
	Name string
	// Status is completed, dead_lettered, failed or stuck.
	Status model.FlowStatus
	// Start is the earliest publish; End the latest event, a process or
	// callback_receive counting its end.
	Start, End time.Time
	// Retries is the sum of the hops' Attempts − 1; DeadLetters the number of
	// dead-lettered hops.
	Retries     uint32
	DeadLetters uint32
	// Hops are ordered by message, then consumer group.
	Hops []TruthHop
}

// TruthHop is one hop of a TruthFlow: one consumer group's side of a message,
// or the pending hop of a message nobody received.
type TruthHop struct {
	System string
	// MessageID is the message's canonical identity: the broker's message id,
	// else the smallest span reference of the message, as SpanRef.String.
	MessageID string
	// ConsumerGroup is the group, or the consumer's service where the group
	// is empty; "" for a pending hop.
	ConsumerGroup string
	Producer      string
	Consumer      string
	// Destination is where the consumer received from, else where the
	// message was published.
	Destination string
	QueueWait   time.Duration
	Processing  time.Duration
	// Attempts is the highest delivery attempt, 0 for a pending hop.
	Attempts uint16
	Outcome  model.HopOutcome
}

// HopKey identifies a hop across the truth and the engine's output.
type HopKey struct {
	System        string
	MessageID     string
	ConsumerGroup string
}

// Key is the hop's identity.
func (h TruthHop) Key() HopKey {
	return HopKey{System: h.System, MessageID: h.MessageID, ConsumerGroup: h.ConsumerGroup}
}

func (k HopKey) String() string {
	group := k.ConsumerGroup
	if group == "" {
		group = "(pending)"
	}
	return k.System + " " + k.MessageID + " " + group
}

// normalize reads retry and dead-letter destinations by RetryPattern and
// DeadLetterPattern: a delivery from "t.retry.n" is attempt n+1 on "t", a
// publish to "t.dlq" a dead_letter on "t".
func normalize(ev model.Event) (model.EventKind, string, uint16) {
	kind, dest, attempt := ev.Kind, ev.Destination, ev.Attempt
	if i := strings.LastIndex(dest, ".retry."); i > 0 {
		if n, err := strconv.ParseUint(dest[i+len(".retry."):], 10, 16); err == nil && n < 1<<16-1 {
			dest, attempt = dest[:i], max(attempt, uint16(n+1))
		}
	}
	if kind == model.EventPublish {
		if base, ok := strings.CutSuffix(dest, ".dlq"); ok && base != "" {
			kind, dest = model.EventDeadLetter, base
		}
	}
	return kind, dest, attempt
}

func consumerSide(kind model.EventKind) bool {
	switch kind {
	case model.EventDeliver, model.EventProcess, model.EventSettle, model.EventCallbackReceive:
		return true
	}
	return false
}

// isBatch reports whether a consumer-side event applies to several messages,
// each on its own.
func isBatch(ev model.Event) bool {
	return consumerSide(ev.Kind) && ev.MessageID == "" && len(ev.Links) > 1
}

// eventEnd is when an event ends: a process or callback_receive lasts its
// Duration.
func eventEnd(ev model.Event) time.Time {
	if ev.Kind == model.EventProcess || ev.Kind == model.EventCallbackReceive {
		return ev.Time.Add(ev.Duration)
	}
	return ev.Time
}

// hopState aggregates one group's events of a message.
type hopState struct {
	group        string
	consumer     string
	dest         string
	deliver      time.Time
	processStart time.Time
	attempts     uint16
	procAttempt  uint16
	processing   time.Duration
	hasProcess   bool
	acked        bool
	rejected     bool
	retrying     bool
	deadLettered bool
	expired      bool
}

// messageTruth is a message's side of the truth.
type messageTruth struct {
	id          string
	publishTime time.Time
	producer    string
	pubDest     string // the publish side's destination
	hops        []TruthHop
}

// truth computes the flow as README.md defines it, from the events the
// generator knows belong to each message.
func (f *flowBuilder) truth() TruthFlow {
	out := TruthFlow{Scenario: f.scenario}
	msgs := make([]messageTruth, len(f.msgs))
	for i := range f.msgs {
		msgs[i] = f.messageTruth(i)
	}

	for _, ev := range f.events {
		if kind, _, _ := normalize(ev.Event); kind == model.EventPublish || kind == model.EventCallbackRequest {
			if out.Start.IsZero() || ev.Time.Before(out.Start) {
				out.Start = ev.Time
			}
		}
		if end := eventEnd(ev.Event); end.After(out.End) {
			out.End = end
		}
		if ev.FlowName != "" && (out.Name == "" || ev.FlowName < out.Name) {
			out.Name = ev.FlowName
		}
	}

	root := -1
	for i, m := range f.msgs {
		if m.parent < 0 && (root < 0 || msgs[i].publishTime.Before(msgs[root].publishTime)) {
			root = i
		}
	}
	for i, m := range msgs {
		if i != root && f.msgs[i].parent < 0 && m.publishTime.Equal(msgs[root].publishTime) {
			panic("flowsim: two root messages published at the same time")
		}
	}
	if out.Name == "" {
		// The root hop's producer and destination are its publish side's, so
		// the name stands from the first publish on and is one for all the
		// root message's hops.
		out.Name = msgs[root].producer + " " + msgs[root].pubDest
	}

	status := model.FlowCompleted
	for _, m := range msgs {
		for _, h := range m.hops {
			out.Retries += uint32(max(h.Attempts, 1) - 1)
			switch h.Outcome {
			case model.HopDeadLettered:
				out.DeadLetters++
				status = model.FlowDeadLettered
			case model.HopRejected, model.HopExpired:
				if status != model.FlowDeadLettered {
					status = model.FlowFailed
				}
			case model.HopStuck:
				if status == model.FlowCompleted {
					status = model.FlowStuck
				}
			}
			out.Hops = append(out.Hops, h)
		}
	}
	out.Status = status
	return out
}

// messageTruth aggregates message i's events into its identity, publish side
// and hops.
func (f *flowBuilder) messageTruth(i int) messageTruth {
	m := f.msgs[i]
	out := messageTruth{id: m.id}
	minRef := func(traceID, spanID string) {
		if traceID == "" || spanID == "" || m.id != "" {
			return
		}
		if ref := (model.SpanRef{TraceID: traceID, SpanID: spanID}).String(); out.id == "" || ref < out.id {
			out.id = ref
		}
	}

	var (
		pubAttempt uint16
		groupless  struct{ deadLettered, expired bool }
		hops       []*hopState
	)
	hopOf := func(group string) *hopState {
		for _, h := range hops {
			if h.group == group {
				return h
			}
		}
		hops = append(hops, &hopState{group: group})
		return hops[len(hops)-1]
	}

	for _, ge := range f.events {
		if !slices.Contains(ge.msgs, i) {
			continue
		}
		ev := ge.Event
		kind, dest, attempt := normalize(ev)
		if !isBatch(ev) {
			minRef(ev.TraceID, ev.SpanID)
			if consumerSide(kind) {
				for _, link := range ev.Links {
					minRef(link.TraceID, link.SpanID)
				}
				if ev.MessageID == "" && len(ev.Links) == 0 {
					minRef(ev.TraceID, ev.ParentSpanID)
				}
			}
		}
		switch kind {
		case model.EventPublish, model.EventCallbackRequest:
			attempt = max(attempt, 1)
			if out.publishTime.IsZero() || attempt < pubAttempt || attempt == pubAttempt && ev.Time.Before(out.publishTime) {
				out.publishTime, pubAttempt, out.producer, out.pubDest = ev.Time, attempt, ev.Service, dest
			}
			continue
		case model.EventDeadLetter, model.EventExpire:
			if ev.ConsumerGroup == "" {
				groupless.deadLettered = groupless.deadLettered || kind == model.EventDeadLetter
				groupless.expired = groupless.expired || kind == model.EventExpire
				continue
			}
			h := hopOf(ev.ConsumerGroup)
			h.deadLettered = h.deadLettered || kind == model.EventDeadLetter
			h.expired = h.expired || kind == model.EventExpire
			continue
		}

		group := cmp.Or(ev.ConsumerGroup, ev.Service)
		h := hopOf(group)
		if ev.Service != "" && (h.consumer == "" || ev.Service < h.consumer) {
			h.consumer = ev.Service
		}
		if dest != "" && (h.dest == "" || dest < h.dest) {
			h.dest = dest
		}
		h.attempts = max(h.attempts, attempt, 1)
		switch kind {
		case model.EventDeliver:
			h.deliver = earliest(h.deliver, ev.Time)
		case model.EventProcess, model.EventCallbackReceive:
			if kind == model.EventCallbackReceive {
				h.deliver = earliest(h.deliver, ev.Time)
			}
			h.processStart = earliest(h.processStart, ev.Time)
			attempt = max(attempt, 1)
			if !h.hasProcess || attempt > h.procAttempt || attempt == h.procAttempt && ev.Duration > h.processing {
				h.hasProcess, h.procAttempt, h.processing = true, attempt, ev.Duration
			}
			if ev.Outcome == "error" {
				h.retrying = true
			} else {
				h.acked = true
			}
		case model.EventSettle:
			switch ev.Outcome {
			case "ack":
				h.acked = true
			case "nack":
				h.retrying = true
			case "reject", "term":
				h.rejected = true
			}
		}
	}

	if len(hops) == 0 {
		outcome := model.HopStuck
		switch {
		case groupless.deadLettered:
			outcome = model.HopDeadLettered
		case groupless.expired:
			outcome = model.HopExpired
		}
		out.hops = []TruthHop{{System: m.system, MessageID: out.id, Producer: out.producer, Destination: out.pubDest, Outcome: outcome}}
		return out
	}
	slices.SortFunc(hops, func(a, b *hopState) int { return cmp.Compare(a.group, b.group) })
	for _, h := range hops {
		th := TruthHop{
			System:        m.system,
			MessageID:     out.id,
			ConsumerGroup: h.group,
			Producer:      out.producer,
			Consumer:      h.consumer,
			Destination:   cmp.Or(h.dest, out.pubDest),
			Processing:    h.processing,
			Attempts:      h.attempts,
		}
		deliver := h.deliver
		if deliver.IsZero() {
			deliver = h.processStart
		}
		if !deliver.IsZero() && !out.publishTime.IsZero() {
			th.QueueWait = deliver.Sub(out.publishTime)
		}
		switch {
		case h.deadLettered || groupless.deadLettered && !h.acked:
			th.Outcome = model.HopDeadLettered
		case h.expired || groupless.expired && !h.acked:
			th.Outcome = model.HopExpired
		case h.acked:
			th.Outcome = model.HopAcked
		case h.rejected:
			th.Outcome = model.HopRejected
		default:
			// Retried or in flight, and nothing more came: once every flow
			// has finished, the hop is stuck.
			th.Outcome = model.HopStuck
		}
		out.hops = append(out.hops, th)
	}
	return out
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || b.Before(a) {
		return b
	}
	return a
}
