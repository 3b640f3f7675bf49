package tap_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/internal/taptest"
)

const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func TestParseTraceParent(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{traceParent, true},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", true}, // later versions may add fields
		{"", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", false}, // version 00 has none
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},       // reserved version
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", false},       // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", false},       // zero span id
		{"00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01", false},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", false},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", false},
	} {
		traceID, spanID, ok := tap.ParseTraceParent(tc.in)
		assert.Equal(t, tc.ok, ok, tc.in)
		if ok {
			assert.Equal(t, "4bf92f3577b34da6a3ce929d0e0e4736", traceID.String(), tc.in)
			assert.Equal(t, "00f067aa0ba902b7", spanID.String(), tc.in)
		}
	}
}

func FuzzParseTraceParent(f *testing.F) {
	f.Add(traceParent)
	f.Add("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		traceID, spanID, ok := tap.ParseTraceParent(s)
		if !ok {
			return
		}
		if traceID.IsEmpty() || spanID.IsEmpty() {
			t.Fatalf("%q: accepted an empty id", s)
		}
		if !strings.EqualFold(s[3:35], traceID.String()) || !strings.EqualFold(s[36:52], spanID.String()) {
			t.Fatalf("%q: read %s %s", s, traceID, spanID)
		}
	})
}

func rabbit(kind tap.Kind, at time.Duration) tap.Observation {
	o := tap.Observation{Kind: kind, Time: t0.Add(at), System: "rabbitmq", Destination: "orders", MessageID: "m-1"}
	if kind != tap.Publish {
		o.ConsumerGroup = "orders"
	}
	return o
}

func spans(t *testing.T, obs ...tap.Observation) ptrace.Traces {
	t.Helper()
	s := tap.NewSpans("test", "scope")
	for i := range obs {
		require.NoError(t, s.Add(&obs[i]))
	}
	require.Equal(t, len(obs), s.Len())
	return s.Take()
}

func TestObservationsBecomeOneHop(t *testing.T) {
	settle := rabbit(tap.Settle, 3*time.Second)
	settle.Outcome, settle.Inferred = tap.Ack, true
	got := taptest.Correlate(t, correlator.Config{},
		spans(t, rabbit(tap.Publish, 0), rabbit(tap.Deliver, time.Second), settle))

	require.Len(t, got.Flows, 1)
	require.Len(t, got.Hops, 1)
	hop := got.Hops[0]
	assert.Equal(t, model.HopAcked, hop.Outcome)
	assert.Equal(t, "orders", hop.ConsumerGroup)
	assert.Equal(t, "m-1", hop.MessageID)
	assert.Equal(t, uint16(1), hop.Attempts)
	assert.Equal(t, time.Second, hop.QueueWait)
	assert.Equal(t, t0.Add(3*time.Second), hop.SettleTime)
	assert.Equal(t, model.FlowCompleted, got.Flows[0].Status)
}

func TestRedeliveryAndDeadLetter(t *testing.T) {
	again := rabbit(tap.Deliver, 2*time.Second)
	again.Attempt = 2
	dead := rabbit(tap.DeadLetter, 3*time.Second)
	dead.Reason = "rejected"
	got := taptest.Correlate(t, correlator.Config{},
		spans(t, rabbit(tap.Publish, 0), rabbit(tap.Deliver, time.Second), again, dead))

	require.Len(t, got.Hops, 1)
	assert.Equal(t, model.HopDeadLettered, got.Hops[0].Outcome)
	assert.Equal(t, "rejected", got.Hops[0].Reason)
	assert.Equal(t, uint16(2), got.Hops[0].Attempts)
	require.Len(t, got.Flows, 1)
	assert.Equal(t, 1, int(got.Flows[0].Retries))
	assert.Equal(t, model.FlowDeadLettered, got.Flows[0].Status)
}

// An application producer span and the tap's view of the same message,
// joined by the traceparent that travelled in the message's headers.
func TestTraceParentJoinsTheApplicationSpan(t *testing.T) {
	traceID, spanID, ok := tap.ParseTraceParent(traceParent)
	require.True(t, ok)
	app := ptrace.NewTraces()
	rs := app.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetTraceID(traceID)
	span.SetSpanID(spanID)
	span.SetKind(ptrace.SpanKindProducer)
	span.SetStartTimestamp(pcommon.NewTimestampFromTime(t0.Add(-time.Millisecond)))
	span.Attributes().PutStr("messaging.system", "rabbitmq")
	span.Attributes().PutStr("messaging.destination.name", "orders")

	publish, deliver := rabbit(tap.Publish, 0), rabbit(tap.Deliver, time.Second)
	publish.TraceParent, deliver.TraceParent = traceParent, traceParent
	got := taptest.Correlate(t, correlator.Config{}, app, spans(t, publish, deliver))

	require.Len(t, got.Hops, 1, "the tap and the application saw one message")
	assert.Equal(t, "checkout", got.Hops[0].Producer)
	assert.Equal(t, "orders", got.Hops[0].ConsumerGroup)
}

// Messages of one workflow (a Celery chain) share a trace through their
// TraceKey, so the second hop's parent is the first.
func TestTraceKeyFindsTheParentHop(t *testing.T) {
	first, firstDeliver := rabbit(tap.Publish, 0), rabbit(tap.Deliver, time.Second)
	second, secondDeliver := rabbit(tap.Publish, 2*time.Second), rabbit(tap.Deliver, 3*time.Second)
	second.MessageID, secondDeliver.MessageID = "m-2", "m-2"
	for _, o := range []*tap.Observation{&first, &firstDeliver, &second, &secondDeliver} {
		o.TraceKey = "root-1"
	}
	got := taptest.Correlate(t, correlator.Config{}, spans(t, first, firstDeliver, second, secondDeliver))

	require.Len(t, got.Flows, 1)
	require.Len(t, got.Hops, 2)
	hops := map[string]model.Hop{}
	for _, h := range got.Hops {
		hops[h.MessageID] = h
	}
	assert.Equal(t, hops["m-1"].HopID, hops["m-2"].ParentHopID)
}

func TestSpanIdentity(t *testing.T) {
	s := tap.NewSpans("test", "scope")
	noID := rabbit(tap.Publish, 0)
	noID.MessageID = ""
	assert.ErrorIs(t, s.Add(&noID), tap.ErrNoIdentity)
	assert.Equal(t, 0, s.Len())

	bad := rabbit(tap.Publish, 0)
	bad.TraceParent = "00-nonsense"
	assert.ErrorIs(t, s.Add(&bad), tap.ErrBadTraceParent, "reported")
	assert.Equal(t, 1, s.Len(), "and the span kept")

	// The same observation twice is the same span; another attempt, or the
	// same seen at another time, is not.
	deliver, again := rabbit(tap.Deliver, time.Second), rabbit(tap.Deliver, time.Second)
	redelivered := rabbit(tap.Deliver, time.Second)
	redelivered.Attempt = 2
	later := rabbit(tap.Deliver, 2*time.Second)
	td := spans(t, deliver, again, redelivered, later)
	got := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	assert.Equal(t, got.At(0).SpanID(), got.At(1).SpanID())
	assert.NotEqual(t, got.At(0).SpanID(), got.At(2).SpanID())
	assert.NotEqual(t, got.At(0).SpanID(), got.At(3).SpanID())
	assert.Equal(t, got.At(0).TraceID(), got.At(2).TraceID(), "one message, one trace")
}

func TestSpanAttributes(t *testing.T) {
	o := rabbit(tap.Settle, time.Second)
	o.Outcome, o.Inferred, o.Attempt, o.Operation, o.BodySize = tap.Nack, true, 2, "tasks.charge", 512
	o.Service = "billing"
	o.Keys = []model.Key{{Kind: "task_id", Value: "t-1"}, {Kind: "", Value: "dropped"}}
	o.Attrs = []tap.Attr{tap.String("messaging.rabbitmq.destination.routing_key", "orders.eu"), tap.Int("messaging.kafka.offset", 7), tap.Bool("flowtrace.rabbitmq.unroutable", true)}
	td := spans(t, o)
	rs := td.ResourceSpans().At(0)
	assert.Equal(t, map[string]any{"service.name": "billing", tap.AttrTap: "test"}, rs.Resource().Attributes().AsRaw())
	span := rs.ScopeSpans().At(0).Spans().At(0)
	assert.Equal(t, "settle orders", span.Name())
	assert.Equal(t, ptrace.SpanKindConsumer, span.Kind())
	assert.Equal(t, map[string]any{
		"messaging.system":                           "rabbitmq",
		"messaging.destination.name":                 "orders",
		"messaging.message.id":                       "m-1",
		"messaging.consumer.group.name":              "orders",
		"messaging.operation.type":                   "settle",
		"messaging.message.body.size":                int64(512),
		"flowtrace.settle.outcome":                   "nack",
		"flowtrace.settle.inferred":                  true,
		"flowtrace.delivery.attempt":                 int64(2),
		"flowtrace.operation":                        "tasks.charge",
		"flowtrace.key.task_id":                      "t-1",
		"messaging.rabbitmq.destination.routing_key": "orders.eu",
		"messaging.kafka.offset":                     int64(7),
		"flowtrace.rabbitmq.unroutable":              true,
	}, span.Attributes().AsRaw())
}

// A pub/sub publish nobody reports receiving is settled, not stuck.
func TestBroadcastIsNotStuck(t *testing.T) {
	o := rabbit(tap.Broadcast, 0)
	o.System = "redis"
	td := spans(t, o)
	span := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
	assert.Equal(t, ptrace.SpanKindProducer, span.Kind())
	event, _ := span.Attributes().Get(tap.AttrEvent)
	assert.Equal(t, "broadcast", event.Str())

	got := taptest.Correlate(t, correlator.Config{}, td)
	require.Len(t, got.Flows, 1)
	assert.Equal(t, model.FlowCompleted, got.Flows[0].Status)
	require.Len(t, got.Hops, 1)
	assert.Equal(t, model.HopAcked, got.Hops[0].Outcome)
}

// Span and trace ids are stable across versions: a replayed observation
// after an upgrade is still the same span.
func TestIDsAreStable(t *testing.T) {
	o := rabbit(tap.Deliver, time.Second)
	o.Attempt = 2
	span := spans(t, o).ResourceSpans().At(0).ScopeSpans().At(0).Spans().At(0)
	assert.Equal(t, "0c8b12100e455ee3", span.SpanID().String())
	assert.Equal(t, "7f5e01491851b69ceda23bc1087c97e7", span.TraceID().String())
}

func BenchmarkSpansAdd(b *testing.B) {
	s := tap.NewSpans("test", "scope")
	o := rabbit(tap.Deliver, time.Second)
	o.Attempt = 2
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Add(&o); err != nil {
			b.Fatal(err)
		}
		if s.Len() == 1000 {
			s.Take()
		}
	}
}
