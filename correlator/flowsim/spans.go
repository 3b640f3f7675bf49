package flowsim

import (
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/model"
)

// DefaultBatchSize is the number of spans per batch when Spans is given none.
const DefaultBatchSize = 100

// scopeName is the instrumentation scope of the generated spans.
const scopeName = "github.com/flowtrace/flowtrace/correlator/flowsim"

// SpanBatch is a batch of spans and when it reaches the engine.
type SpanBatch struct {
	Traces ptrace.Traces
	// Arrival is the processing time of the batch's last event.
	Arrival time.Time
}

// Spans renders the events as OpenTelemetry spans, one span per event, in
// delivery order, batchSize (default DefaultBatchSize) spans to a batch.
// Consecutive spans of one service share a ResourceSpans, so a batch keeps
// the order of its events. The attributes follow "Spans into events" in
// correlator/README.md; flow-name hints are in FlowNameAttribute, and a
// Celery task's root and parent ids in the attributes of KeyAttributes.
func (w Workload) Spans(batchSize int) []SpanBatch {
	if batchSize <= 0 {
		batchSize = DefaultBatchSize
	}
	var out []SpanBatch
	for start := 0; start < len(w.Events); start += batchSize {
		end := min(start+batchSize, len(w.Events))
		td := ptrace.NewTraces()
		var spans ptrace.SpanSlice
		for i, ev := range w.Events[start:end] {
			if i == 0 || ev.Service != w.Events[start+i-1].Service {
				rs := td.ResourceSpans().AppendEmpty()
				if ev.Service != "" {
					rs.Resource().Attributes().PutStr("service.name", ev.Service)
				}
				ss := rs.ScopeSpans().AppendEmpty()
				ss.Scope().SetName(scopeName)
				spans = ss.Spans()
			}
			fillSpan(spans.AppendEmpty(), ev)
		}
		out = append(out, SpanBatch{Traces: td, Arrival: w.Arrivals[end-1]})
	}
	return out
}

// spanName is the name of the span an event comes from: "send orders",
// "run/tasks.charge" for Celery, the operation for HTTP.
func spanName(ev model.Event) string {
	switch ev.System {
	case "celery":
		switch ev.Kind {
		case model.EventPublish:
			return "apply_async/" + ev.Operation
		case model.EventProcess:
			return "run/" + ev.Operation
		}
		return string(ev.Kind) + "/" + ev.Operation
	case "http":
		return ev.Operation
	}
	switch ev.Kind {
	case model.EventPublish:
		return "send " + ev.Destination
	case model.EventDeliver:
		return "receive " + ev.Destination
	case model.EventSettle:
		return ev.Outcome + " " + ev.Destination
	}
	return string(ev.Kind) + " " + ev.Destination
}

// operationTypes are the messaging.operation.type values of the kinds that
// have one.
var operationTypes = map[model.EventKind]string{
	model.EventPublish: "send",
	model.EventDeliver: "receive",
	model.EventProcess: "process",
	model.EventSettle:  "settle",
}

// fillSpan renders one event.
func fillSpan(span ptrace.Span, ev model.Event) {
	name := spanName(ev)
	span.SetName(name)
	span.SetTraceID(traceID(ev.TraceID))
	span.SetSpanID(spanID(ev.SpanID))
	if ev.ParentSpanID != "" {
		span.SetParentSpanID(spanID(ev.ParentSpanID))
	}
	span.SetStartTimestamp(pcommon.NewTimestampFromTime(ev.Time))
	span.SetEndTimestamp(pcommon.NewTimestampFromTime(ev.Time.Add(ev.Duration)))
	for _, ref := range ev.Links {
		link := span.Links().AppendEmpty()
		link.SetTraceID(traceID(ref.TraceID))
		link.SetSpanID(spanID(ref.SpanID))
	}

	attrs := span.Attributes()
	attrs.PutStr("messaging.system", ev.System)
	if op, ok := operationTypes[ev.Kind]; ok {
		attrs.PutStr("messaging.operation.type", op)
	} else {
		attrs.PutStr("flowtrace.event", string(ev.Kind))
	}
	switch ev.Kind {
	case model.EventPublish:
		span.SetKind(ptrace.SpanKindProducer)
	case model.EventDeliver, model.EventProcess:
		span.SetKind(ptrace.SpanKindConsumer)
	case model.EventSettle:
		span.SetKind(ptrace.SpanKindClient)
	case model.EventCallbackRequest, model.EventCallbackReceive:
		span.SetKind(ptrace.SpanKindServer)
	default:
		span.SetKind(ptrace.SpanKindInternal)
	}

	if ev.Destination != "" {
		attrs.PutStr("messaging.destination.name", ev.Destination)
	}
	if ev.Partition != "" {
		attrs.PutStr("messaging.destination.partition.id", ev.Partition)
	}
	switch {
	case ev.Kind == model.EventCallbackRequest || ev.Kind == model.EventCallbackReceive:
		attrs.PutStr("flowtrace.callback.id", ev.MessageID)
		attrs.PutStr("http.request.method", "POST")
		attrs.PutStr("http.route", ev.Destination)
		status := int64(200)
		if ev.Kind == model.EventCallbackRequest {
			status = 202
		}
		attrs.PutInt("http.response.status_code", status)
	case ev.MessageID != "":
		if offset, ok := kafkaOffset(ev); ok {
			attrs.PutInt("messaging.kafka.offset", offset)
		} else {
			attrs.PutStr("messaging.message.id", ev.MessageID)
		}
	}
	if ev.ConsumerGroup != "" {
		attrs.PutStr("messaging.consumer.group.name", ev.ConsumerGroup)
	}
	if ev.Operation != "" && ev.Operation != name {
		attrs.PutStr("flowtrace.operation", ev.Operation)
	}
	if ev.Attempt != 0 {
		attrs.PutInt("flowtrace.delivery.attempt", int64(ev.Attempt))
	}
	switch {
	case ev.Kind == model.EventSettle:
		attrs.PutStr("flowtrace.settle.outcome", ev.Outcome)
	case ev.Outcome == "error":
		span.Status().SetCode(ptrace.StatusCodeError)
		span.Status().SetMessage(ev.Reason)
	}
	if ev.Reason != "" && ev.Outcome != "error" {
		attrs.PutStr("flowtrace.dead_letter.reason", ev.Reason)
	}
	if ev.BodySize != 0 {
		attrs.PutInt("messaging.message.body.size", int64(ev.BodySize))
	}
	putKeys(attrs, ev.Keys)
	if ev.FlowName != "" {
		attrs.PutStr(FlowNameAttribute, ev.FlowName)
	}
}

// extraKeyAttributes name the attributes that carry the second and later
// values of a key kind: a Celery task's events carry its own id, its root's
// and its parent's, all task_id keys.
var extraKeyAttributes = map[string][]string{
	"task_id": {"celery.root_id", "celery.parent_id"},
}

// KeyAttributes are the attributes Spans writes keys to beyond
// flowtrace.key.<kind> and messaging.message.conversation_id, with the key
// kind each carries. An adapter reading the spans is configured with them
// (spanevent's key_attributes).
func KeyAttributes() map[string]string {
	out := make(map[string]string)
	for kind, attrs := range extraKeyAttributes {
		for _, attr := range attrs {
			out[attr] = kind
		}
	}
	return out
}

// putKeys renders keys: a correlation id as messaging.message.conversation_id,
// the first value of another kind as flowtrace.key.<kind>, later values of a
// kind in extraKeyAttributes, in order.
func putKeys(attrs pcommon.Map, keys []model.Key) {
	seen := make(map[string]int)
	for _, k := range keys {
		n := seen[k.Kind]
		seen[k.Kind]++
		switch {
		case k.Kind == "correlation_id" && n == 0:
			attrs.PutStr("messaging.message.conversation_id", k.Value)
		case n == 0:
			attrs.PutStr("flowtrace.key."+k.Kind, k.Value)
		case n <= len(extraKeyAttributes[k.Kind]):
			attrs.PutStr(extraKeyAttributes[k.Kind][n-1], k.Value)
		default:
			panic("flowsim: no attribute for another " + k.Kind + " key")
		}
	}
}

// kafkaOffset is the offset of a Kafka message whose id is
// <topic>/<partition>/<offset>, as spans give it: by offset, with no id.
func kafkaOffset(ev model.Event) (int64, bool) {
	if ev.System != "kafka" {
		return 0, false
	}
	rest, ok := strings.CutPrefix(ev.MessageID, ev.Destination+"/"+ev.Partition+"/")
	if !ok {
		return 0, false
	}
	offset, err := strconv.ParseInt(rest, 10, 64)
	return offset, err == nil
}

func traceID(s string) pcommon.TraceID {
	var id pcommon.TraceID
	mustDecode(id[:], s)
	return id
}

func spanID(s string) pcommon.SpanID {
	var id pcommon.SpanID
	mustDecode(id[:], s)
	return id
}

// mustDecode decodes an id the generator made.
func mustDecode(dst []byte, s string) {
	if n, err := hex.Decode(dst, []byte(s)); err != nil || n != len(dst) {
		panic("flowsim: bad hex id " + strconv.Quote(s))
	}
}
