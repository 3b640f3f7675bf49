package flowsim

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/model"
)

// readSpan reads a span back into an event by "Spans into events" in
// README.md, for the attributes Spans writes.
func readSpan(resource pcommon.Map, span ptrace.Span) model.Event {
	attrs := span.Attributes()
	str := func(key string) string {
		if v, ok := attrs.Get(key); ok {
			return v.Str()
		}
		return ""
	}
	integer := func(key string) (int64, bool) {
		if v, ok := attrs.Get(key); ok {
			return v.Int(), true
		}
		return 0, false
	}
	ev := model.Event{
		Time:          span.StartTimestamp().AsTime(),
		System:        str("messaging.system"),
		Destination:   str("messaging.destination.name"),
		Partition:     str("messaging.destination.partition.id"),
		MessageID:     str("messaging.message.id"),
		Operation:     str("flowtrace.operation"),
		ConsumerGroup: str("messaging.consumer.group.name"),
		TraceID:       span.TraceID().String(),
		SpanID:        span.SpanID().String(),
		ParentSpanID:  span.ParentSpanID().String(),
		Outcome:       str("flowtrace.settle.outcome"),
		Reason:        str("flowtrace.dead_letter.reason"),
		FlowName:      str(FlowNameAttribute),
	}
	if v, ok := resource.Get("service.name"); ok {
		ev.Service = v.Str()
	}
	ev.Kind = model.EventKind(str("flowtrace.event"))
	if ev.Kind == "" {
		ev.Kind = map[string]model.EventKind{
			"create": model.EventPublish, "send": model.EventPublish, "receive": model.EventDeliver,
			"process": model.EventProcess, "settle": model.EventSettle,
		}[str("messaging.operation.type")]
	}
	if ev.Operation == "" {
		ev.Operation = span.Name()
	}
	if id := str("flowtrace.callback.id"); id != "" {
		ev.MessageID = id
	}
	if offset, ok := integer("messaging.kafka.offset"); ok && ev.MessageID == "" {
		ev.MessageID = ev.Destination + "/" + ev.Partition + "/" + strconv.FormatInt(offset, 10)
	}
	if attempt, ok := integer("flowtrace.delivery.attempt"); ok {
		ev.Attempt = uint16(attempt)
	}
	if size, ok := integer("messaging.message.body.size"); ok {
		ev.BodySize = uint64(size)
	}
	if span.Status().Code() == ptrace.StatusCodeError {
		if ev.Kind == model.EventProcess {
			ev.Outcome = "error"
		}
		if ev.Reason == "" {
			ev.Reason = span.Status().Message()
		}
	}
	if ev.Kind == model.EventProcess || ev.Kind == model.EventCallbackReceive {
		ev.Duration = span.EndTimestamp().AsTime().Sub(ev.Time)
	}
	for _, link := range span.Links().All() {
		ev.Links = append(ev.Links, model.SpanRef{TraceID: link.TraceID().String(), SpanID: link.SpanID().String()})
	}
	configured := KeyAttributes()
	for key, v := range attrs.All() {
		if kind, ok := strings.CutPrefix(key, "flowtrace.key."); ok {
			ev.Keys = append(ev.Keys, model.Key{Kind: kind, Value: v.Str()})
		}
		if kind, ok := configured[key]; ok {
			ev.Keys = append(ev.Keys, model.Key{Kind: kind, Value: v.Str()})
		}
		if key == "messaging.message.conversation_id" {
			ev.Keys = append(ev.Keys, model.Key{Kind: "correlation_id", Value: v.Str()})
		}
	}
	return ev
}

// readBatches reads every span of the batches, in order.
func readBatches(batches []SpanBatch) []model.Event {
	var out []model.Event
	for _, b := range batches {
		for _, rs := range b.Traces.ResourceSpans().All() {
			for _, ss := range rs.ScopeSpans().All() {
				for _, span := range ss.Spans().All() {
					out = append(out, readSpan(rs.Resource().Attributes(), span))
				}
			}
		}
	}
	return out
}

func TestSpansRoundTrip(t *testing.T) {
	w := Generate(Config{Seed: 4})
	batches := w.Spans(64)
	require.Len(t, batches, (len(w.Events)+63)/64)
	for i, b := range batches {
		last := min((i+1)*64, len(w.Events)) - 1
		assert.Equal(t, w.Arrivals[last], b.Arrival)
		assert.Equal(t, last-i*64+1, b.Traces.SpanCount())
	}
	got := readBatches(batches)
	require.Len(t, got, len(w.Events))
	for i := range got {
		want := w.Events[i]
		want.Time = want.Time.UTC()
		got[i].Time = got[i].Time.UTC()
		require.Equal(t, want, got[i], "event %d", i)
	}

	assert.Len(t, w.Spans(0), (len(w.Events)+DefaultBatchSize-1)/DefaultBatchSize)
}

// TestSpanAttributes checks a sample span of each kind of event.
func TestSpanAttributes(t *testing.T) {
	w := Generate(Config{Seed: 4})
	type sample struct {
		name     string
		match    func(model.Event) bool
		kind     ptrace.SpanKind
		attrs    []string // present
		absent   []string
		check    func(t *testing.T, span ptrace.Span)
		resource bool // has service.name
	}
	samples := []sample{
		{
			name:  "publish",
			match: func(ev model.Event) bool { return ev.Kind == model.EventPublish && ev.System == "rabbitmq" },
			kind:  ptrace.SpanKindProducer,
			attrs: []string{"messaging.system", "messaging.operation.type", "messaging.destination.name", "messaging.message.id", "messaging.message.body.size"},
			check: func(t *testing.T, span ptrace.Span) {
				assert.Equal(t, "send", attr(span, "messaging.operation.type"))
				assert.True(t, strings.HasPrefix(span.Name(), "send "))
			},
			resource: true,
		},
		{
			name:  "deliver with attempt",
			match: func(ev model.Event) bool { return ev.Kind == model.EventDeliver && ev.Attempt == 2 },
			kind:  ptrace.SpanKindConsumer,
			attrs: []string{"messaging.operation.type", "flowtrace.delivery.attempt", "messaging.message.id"},
			check: func(t *testing.T, span ptrace.Span) {
				assert.Equal(t, "receive", attr(span, "messaging.operation.type"))
				assert.False(t, span.ParentSpanID().IsEmpty() && span.Links().Len() == 0)
			},
			resource: true,
		},
		{
			name:  "failed process",
			match: func(ev model.Event) bool { return ev.Kind == model.EventProcess && ev.Outcome == "error" },
			kind:  ptrace.SpanKindConsumer,
			check: func(t *testing.T, span ptrace.Span) {
				assert.Equal(t, ptrace.StatusCodeError, span.Status().Code())
				assert.NotEmpty(t, span.Status().Message())
				assert.Greater(t, span.EndTimestamp(), span.StartTimestamp())
			},
			resource: true,
		},
		{
			name:     "settle",
			match:    func(ev model.Event) bool { return ev.Kind == model.EventSettle && ev.Outcome == "nack" },
			kind:     ptrace.SpanKindClient,
			attrs:    []string{"flowtrace.settle.outcome"},
			check:    func(t *testing.T, span ptrace.Span) { assert.Equal(t, "nack", attr(span, "flowtrace.settle.outcome")) },
			resource: true,
		},
		{
			name:   "broker dead letter",
			match:  func(ev model.Event) bool { return ev.Kind == model.EventDeadLetter && ev.Service == "" },
			kind:   ptrace.SpanKindInternal,
			attrs:  []string{"flowtrace.event", "flowtrace.dead_letter.reason", "messaging.message.id"},
			absent: []string{"messaging.operation.type"},
			check:  func(t *testing.T, span ptrace.Span) { assert.Equal(t, "dead_letter", attr(span, "flowtrace.event")) },
		},
		{
			name:  "expire",
			match: func(ev model.Event) bool { return ev.Kind == model.EventExpire },
			kind:  ptrace.SpanKindInternal,
			attrs: []string{"flowtrace.event", "flowtrace.dead_letter.reason"},
			check: func(t *testing.T, span ptrace.Span) { assert.Equal(t, "expire", attr(span, "flowtrace.event")) },
		},
		{
			name:     "kafka dlq publish",
			match:    func(ev model.Event) bool { return strings.HasSuffix(ev.Destination, ".dlq") },
			kind:     ptrace.SpanKindProducer,
			attrs:    []string{"messaging.consumer.group.name", "flowtrace.dead_letter.reason", "messaging.message.id", "messaging.destination.partition.id"},
			resource: true,
		},
		{
			name:     "kafka offset",
			match:    func(ev model.Event) bool { _, ok := kafkaOffset(ev); return ok && ev.Kind == model.EventProcess },
			kind:     ptrace.SpanKindConsumer,
			attrs:    []string{"messaging.kafka.offset", "messaging.destination.partition.id", "messaging.consumer.group.name"},
			absent:   []string{"messaging.message.id"},
			resource: true,
		},
		{
			name:   "callback request",
			match:  func(ev model.Event) bool { return ev.Kind == model.EventCallbackRequest },
			kind:   ptrace.SpanKindServer,
			attrs:  []string{"flowtrace.event", "flowtrace.callback.id", "http.route", "http.request.method", "messaging.destination.name"},
			absent: []string{"messaging.message.id"},
			check: func(t *testing.T, span ptrace.Span) {
				code, _ := span.Attributes().Get("http.response.status_code")
				assert.Equal(t, int64(202), code.Int())
				assert.Equal(t, "callback_request", attr(span, "flowtrace.event"))
			},
			resource: true,
		},
		{
			name:  "callback receive",
			match: func(ev model.Event) bool { return ev.Kind == model.EventCallbackReceive },
			kind:  ptrace.SpanKindServer,
			attrs: []string{"flowtrace.event", "flowtrace.callback.id"},
			check: func(t *testing.T, span ptrace.Span) {
				code, _ := span.Attributes().Get("http.response.status_code")
				assert.Equal(t, int64(200), code.Int())
				assert.Greater(t, span.EndTimestamp(), span.StartTimestamp())
			},
			resource: true,
		},
		{
			name:  "celery task",
			match: func(ev model.Event) bool { return ev.System == "celery" && len(ev.Keys) == 3 },
			attrs: []string{"flowtrace.operation", "flowtrace.key.task_id", "celery.root_id", "celery.parent_id", "messaging.message.id"},
			check: func(t *testing.T, span ptrace.Span) {
				assert.Equal(t, attr(span, "messaging.message.id"), attr(span, "flowtrace.key.task_id"))
				assert.NotEqual(t, span.Name(), attr(span, "flowtrace.operation"))
			},
			resource: true,
		},
		{
			name:     "correlation id",
			match:    func(ev model.Event) bool { return len(ev.Keys) == 1 && ev.Keys[0].Kind == "correlation_id" },
			attrs:    []string{"messaging.message.conversation_id"},
			resource: true,
		},
		{
			name:     "order id",
			match:    func(ev model.Event) bool { return len(ev.Keys) == 1 && ev.Keys[0].Kind == "order_id" },
			attrs:    []string{"flowtrace.key.order_id"},
			resource: true,
		},
		{
			name:     "flow name hint",
			match:    func(ev model.Event) bool { return ev.FlowName != "" },
			attrs:    []string{FlowNameAttribute},
			resource: true,
		},
		{
			name:   "batch",
			match:  isBatch,
			kind:   ptrace.SpanKindConsumer,
			absent: []string{"messaging.message.id"},
			check: func(t *testing.T, span ptrace.Span) {
				assert.GreaterOrEqual(t, span.Links().Len(), 2)
				assert.True(t, span.ParentSpanID().IsEmpty())
			},
			resource: true,
		},
	}
	for _, s := range samples {
		t.Run(s.name, func(t *testing.T) {
			i := -1
			for j, ev := range w.Events {
				if s.match(ev) {
					i = j
					break
				}
			}
			require.GreaterOrEqual(t, i, 0, "no such event")
			ev := w.Events[i]
			one := Workload{Events: []model.Event{ev}, Arrivals: []time.Time{w.Arrivals[i]}}
			rs := one.Spans(1)[0].Traces.ResourceSpans().At(0)
			span := rs.ScopeSpans().At(0).Spans().At(0)

			name, ok := rs.Resource().Attributes().Get("service.name")
			assert.Equal(t, s.resource, ok)
			if ok {
				assert.Equal(t, ev.Service, name.Str())
			}
			if s.kind != ptrace.SpanKindUnspecified {
				assert.Equal(t, s.kind, span.Kind())
			}
			assert.Equal(t, ev.TraceID, span.TraceID().String())
			assert.Equal(t, ev.SpanID, span.SpanID().String())
			assert.Equal(t, ev.System, attr(span, "messaging.system"))
			for _, key := range s.attrs {
				_, ok := span.Attributes().Get(key)
				assert.True(t, ok, "attribute %s", key)
			}
			for _, key := range s.absent {
				_, ok := span.Attributes().Get(key)
				assert.False(t, ok, "attribute %s", key)
			}
			if s.check != nil {
				s.check(t, span)
			}
		})
	}
}

func attr(span ptrace.Span, key string) string {
	v, _ := span.Attributes().Get(key)
	return v.AsString()
}
