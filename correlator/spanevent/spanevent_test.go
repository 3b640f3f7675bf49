package spanevent

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var (
	traceID = pcommon.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	spanID  = pcommon.SpanID{0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	parent  = pcommon.SpanID{1, 2, 3, 4, 5, 6, 7, 8}
	start   = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
)

// oneSpan builds traces with one span of the given kind and attributes.
func oneSpan(kind ptrace.SpanKind, attrs map[string]any) (ptrace.Traces, ptrace.Span) {
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "billing")
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetName("orders process")
	span.SetKind(kind)
	span.SetTraceID(traceID)
	span.SetSpanID(spanID)
	span.SetParentSpanID(parent)
	span.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
	span.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(40 * time.Millisecond)))
	if err := span.Attributes().FromRaw(attrs); err != nil {
		panic(err)
	}
	return td, span
}

func convert(t *testing.T, cfg Config, td ptrace.Traces) ([]model.Event, Stats) {
	t.Helper()
	var events []model.Event
	stats := New(cfg).Convert(td, func(ev *model.Event) {
		copied := *ev
		copied.Links = append([]model.SpanRef(nil), ev.Links...)
		copied.Keys = append([]model.Key(nil), ev.Keys...)
		events = append(events, copied)
	})
	return events, stats
}

func TestKinds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		kind  ptrace.SpanKind
		attrs map[string]any
		want  model.EventKind
	}{
		{"create", ptrace.SpanKindProducer, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "create"}, model.EventPublish},
		{"send", ptrace.SpanKindProducer, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "send"}, model.EventPublish},
		{"receive", ptrace.SpanKindConsumer, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "receive"}, model.EventDeliver},
		{"process", ptrace.SpanKindConsumer, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "process"}, model.EventProcess},
		{"settle", ptrace.SpanKindClient, map[string]any{"messaging.system": "kafka", "messaging.operation.type": "settle"}, model.EventSettle},
		{"old publish", ptrace.SpanKindProducer, map[string]any{"messaging.system": "rabbitmq", "messaging.operation": "publish"}, model.EventPublish},
		{"old receive", ptrace.SpanKindConsumer, map[string]any{"messaging.system": "rabbitmq", "messaging.operation": "receive"}, model.EventDeliver},
		{"old deliver", ptrace.SpanKindConsumer, map[string]any{"messaging.system": "rabbitmq", "messaging.operation": "deliver"}, model.EventProcess},
		{"old process", ptrace.SpanKindConsumer, map[string]any{"messaging.system": "rabbitmq", "messaging.operation": "process"}, model.EventProcess},
		{"producer kind only", ptrace.SpanKindProducer, map[string]any{"messaging.system": "nats"}, model.EventPublish},
		{"consumer kind only", ptrace.SpanKindConsumer, map[string]any{"messaging.system": "nats"}, model.EventProcess},
		{"flowtrace event", ptrace.SpanKindInternal, map[string]any{"messaging.system": "rabbitmq", "flowtrace.event": "dead_letter"}, model.EventDeadLetter},
		{"broadcast", ptrace.SpanKindProducer, map[string]any{"messaging.system": "redis", "messaging.operation.type": "send", "flowtrace.event": "broadcast"}, model.EventBroadcast},
		{"callback request", ptrace.SpanKindServer, map[string]any{"flowtrace.callback.id": "cb-1", "http.response.status_code": 202}, model.EventCallbackRequest},
		{"callback receive", ptrace.SpanKindServer, map[string]any{"flowtrace.callback.id": "cb-1", "http.status_code": 200}, model.EventCallbackReceive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			td, _ := oneSpan(tc.kind, tc.attrs)
			events, stats := convert(t, Config{}, td)
			require.Len(t, events, 1)
			assert.Equal(t, tc.want, events[0].Kind)
			assert.Equal(t, Stats{Spans: 1, Events: 1}, stats)
		})
	}
}

func TestNotAboutMessages(t *testing.T) {
	for name, attrs := range map[string]map[string]any{
		"plain http":                   {"http.request.method": "GET", "http.response.status_code": 200, "url.path": "/orders"},
		"messaging, no kind":           {"messaging.system": "kafka"},
		"callback id on a client span": {"flowtrace.callback.id": "x"},
	} {
		t.Run(name, func(t *testing.T) {
			td, _ := oneSpan(ptrace.SpanKindClient, attrs)
			events, stats := convert(t, Config{}, td)
			assert.Empty(t, events)
			assert.Equal(t, Stats{Spans: 1}, stats)
		})
	}
}

func TestNonMessagingSpansCostNoAllocations(t *testing.T) {
	td, _ := oneSpan(ptrace.SpanKindServer, map[string]any{
		"http.request.method": "GET", "http.response.status_code": 200, "url.path": "/orders", "server.address": "api",
	})
	c := New(Config{})
	allocs := testing.AllocsPerRun(100, func() {
		c.Convert(td, func(*model.Event) { t.Fatal("not a messaging span") })
	})
	assert.Zero(t, allocs)
}

func TestFields(t *testing.T) {
	td, span := oneSpan(ptrace.SpanKindConsumer, map[string]any{
		"messaging.system":                      "kafka",
		"messaging.operation.type":              "process",
		"messaging.destination.name":            "orders",
		"messaging.kafka.destination.partition": "3",
		"messaging.kafka.message.offset":        42,
		"messaging.kafka.consumer.group":        "billing",
		"messaging.message.conversation_id":     "conv-1",
		"messaging.message.body.size":           512,
		"flowtrace.delivery.attempt":            2,
		"flowtrace.operation":                   "charge",
		"flowtrace.key.order_id":                "o-1",
		"app.tenant":                            "acme",
		"flowtrace.flow.name":                   "checkout",
	})
	span.Status().SetCode(ptrace.StatusCodeError)
	span.Status().SetMessage("card declined")
	link := span.Links().AppendEmpty()
	link.SetTraceID(pcommon.TraceID{1})
	link.SetSpanID(pcommon.SpanID{2})
	events, _ := convert(t, Config{KeyAttributes: map[string]string{"app.tenant": "tenant"}}, td)
	require.Len(t, events, 1)
	ev := events[0]
	assert.Equal(t, model.Event{
		Time: start, Kind: model.EventProcess, System: "kafka", Destination: "orders", Partition: "3",
		MessageID: "orders/3/42", Operation: "charge", Attempt: 2, Service: "billing", ConsumerGroup: "billing",
		TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "00f067aa0ba902b7", ParentSpanID: "0102030405060708",
		Links:   []model.SpanRef{{TraceID: "01000000000000000000000000000000", SpanID: "0200000000000000"}},
		Keys:    ev.Keys,
		Outcome: "error", Reason: "card declined", BodySize: 512, Duration: 40 * time.Millisecond, FlowName: "checkout",
	}, ev)
	assert.ElementsMatch(t, []model.Key{{Kind: "order_id", Value: "o-1"}, {Kind: "tenant", Value: "acme"}, {Kind: "correlation_id", Value: "conv-1"}}, ev.Keys)
}

func TestCurrentNamesWinOverDeprecated(t *testing.T) {
	td, _ := oneSpan(ptrace.SpanKindConsumer, map[string]any{
		"messaging.system": "kafka", "messaging.operation.type": "receive", "messaging.operation": "process",
		"messaging.destination.name": "new", "messaging.destination": "old",
		"messaging.consumer.group.name": "g-new", "messaging.kafka.consumer.group": "g-old",
		"messaging.destination.partition.id": "1", "messaging.kafka.destination.partition": "9",
		"messaging.kafka.offset": "7",
	})
	events, _ := convert(t, Config{}, td)
	require.Len(t, events, 1)
	ev := events[0]
	assert.Equal(t, model.EventDeliver, ev.Kind)
	assert.Equal(t, "new", ev.Destination)
	assert.Equal(t, "g-new", ev.ConsumerGroup)
	assert.Equal(t, "new/1/7", ev.MessageID)
}

// TestSemconv118Consumer: consumer spans of semconv 1.17–1.20 (franz-go's
// kotel, among others) name the topic and partition as the source.
func TestSemconv118Consumer(t *testing.T) {
	td, _ := oneSpan(ptrace.SpanKindConsumer, map[string]any{
		"messaging.system": "kafka", "messaging.operation": "receive", "messaging.source.name": "orders",
		"messaging.source.kind": "topic", "messaging.kafka.source.partition": 2, "messaging.kafka.message.offset": 17,
		"messaging.kafka.consumer.group": "billing",
	})
	events, _ := convert(t, Config{}, td)
	require.Len(t, events, 1)
	assert.Equal(t, "orders", events[0].Destination)
	assert.Equal(t, "2", events[0].Partition)
	assert.Equal(t, "orders/2/17", events[0].MessageID)
	assert.Equal(t, "billing", events[0].ConsumerGroup)
}

func TestRabbitMQDefaultExchangeUsesTheRoutingKey(t *testing.T) {
	td, _ := oneSpan(ptrace.SpanKindProducer, map[string]any{
		"messaging.system": "rabbitmq", "messaging.operation.type": "send", "messaging.destination.name": "",
		"messaging.rabbitmq.destination.routing_key": "orders", "messaging.message.id": "m-1",
	})
	events, _ := convert(t, Config{}, td)
	require.Len(t, events, 1)
	assert.Equal(t, "orders", events[0].Destination)
	assert.Equal(t, "m-1", events[0].MessageID)
}

func TestSettleOutcomeAndMalformedAttempt(t *testing.T) {
	td, _ := oneSpan(ptrace.SpanKindClient, map[string]any{
		"messaging.system": "rabbitmq", "messaging.operation.type": "settle", "flowtrace.settle.outcome": "nack",
		"flowtrace.delivery.attempt": "not a number",
	})
	events, stats := convert(t, Config{}, td)
	require.Len(t, events, 1)
	assert.Equal(t, "nack", events[0].Outcome)
	assert.Zero(t, events[0].Attempt)
	assert.Equal(t, 1, stats.Malformed)
}

func TestCallbackIDAttributeIsConfigurable(t *testing.T) {
	td, _ := oneSpan(ptrace.SpanKindServer, map[string]any{"app.job_id": "job-9", "http.response.status_code": 202})
	events, _ := convert(t, Config{CallbackIDAttributes: []string{"app.job_id"}}, td)
	require.Len(t, events, 1)
	assert.Equal(t, model.EventCallbackRequest, events[0].Kind)
	assert.Equal(t, "http", events[0].System)
	assert.Equal(t, "job-9", events[0].MessageID)
}

func TestValidate(t *testing.T) {
	assert.NoError(t, Config{}.Validate())
	err := Config{CallbackIDAttributes: []string{""}, KeyAttributes: map[string]string{"a": ""}, FlowNameAttributes: []string{""}}.Validate()
	assert.ErrorContains(t, err, "callback_id_attributes[0]")
	assert.ErrorContains(t, err, "key_attributes")
	assert.ErrorContains(t, err, "flow_name_attributes[0]")
}

// FuzzConvert feeds arbitrary OTLP/JSON through the adapter: it must never
// panic, whatever the attributes hold.
func FuzzConvert(f *testing.F) {
	td, _ := oneSpan(ptrace.SpanKindConsumer, map[string]any{
		"messaging.system": "kafka", "messaging.operation.type": "process", "flowtrace.delivery.attempt": 3,
		"flowtrace.key.order_id": "o", "flowtrace.callback.id": "c", "messaging.kafka.offset": []any{1, 2},
	})
	seed, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
	require.NoError(f, err)
	f.Add(seed)
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":5,"attributes":[{"key":"flowtrace.event","value":{"stringValue":"nonsense"}}]}]}]}]}`))
	c := New(Config{KeyAttributes: map[string]string{"x": "y"}})
	f.Fuzz(func(t *testing.T, data []byte) {
		td, err := (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(data)
		if err != nil {
			return
		}
		c.Convert(td, func(ev *model.Event) {
			if ev.Kind == "" {
				t.Fatal("event without a kind")
			}
		})
	})
}
