// Package spanevent turns OpenTelemetry spans into correlator events: the
// messaging semantic conventions, current and deprecated names alike, plus
// flowtrace's own attributes for what the conventions lack. The mapping is
// documented in ../README.md ("Spans into events").
package spanevent

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/model"
)

// Attribute names read from spans.
const (
	attrServiceName = "service.name"

	attrSystem             = "messaging.system"
	attrOperationType      = "messaging.operation.type"
	attrOperation          = "messaging.operation" // deprecated
	attrDestination        = "messaging.destination.name"
	attrDestinationOld     = "messaging.destination" // deprecated
	attrSourceName         = "messaging.source.name" // deprecated: a consumer's destination (semconv 1.17–1.20)
	attrMessageID          = "messaging.message.id"
	attrConversationID     = "messaging.message.conversation_id"
	attrConsumerGroup      = "messaging.consumer.group.name"
	attrKafkaConsumerGroup = "messaging.kafka.consumer.group" // deprecated
	attrKafkaOffset        = "messaging.kafka.offset"
	attrKafkaMessageOffset = "messaging.kafka.message.offset" // deprecated
	attrPartition          = "messaging.destination.partition.id"
	attrKafkaPartition     = "messaging.kafka.destination.partition" // deprecated
	attrKafkaSourcePart    = "messaging.kafka.source.partition"      // deprecated: a consumer's partition
	attrRoutingKey         = "messaging.rabbitmq.destination.routing_key"
	attrBodySize           = "messaging.message.body.size"
	attrHTTPStatus         = "http.response.status_code"
	attrHTTPStatusOld      = "http.status_code" // deprecated

	attrEvent      = "flowtrace.event"
	attrAttempt    = "flowtrace.delivery.attempt"
	attrOutcome    = "flowtrace.settle.outcome"
	attrReason     = "flowtrace.dead_letter.reason"
	attrOp         = "flowtrace.operation"
	attrFlowName   = "flowtrace.flow.name"
	attrKeyPrefix  = "flowtrace.key."
	attrCallbackID = "flowtrace.callback.id"
)

// Config says which extra attributes the adapter reads.
type Config struct {
	// CallbackIDAttributes name the attributes that carry an async HTTP
	// callback id. Default [flowtrace.callback.id].
	CallbackIDAttributes []string `mapstructure:"callback_id_attributes"`
	// KeyAttributes map a span attribute to the flow key kind its value is,
	// e.g. {"app.order_id": "order_id"}. Default none.
	KeyAttributes map[string]string `mapstructure:"key_attributes"`
	// FlowNameAttributes name attributes whose value, where present, names
	// the flow, in order of preference. Default [flowtrace.flow.name].
	FlowNameAttributes []string `mapstructure:"flow_name_attributes"`
}

// Validate checks the configuration; errors name the key.
func (c Config) Validate() error {
	var errs []error
	for i, a := range c.CallbackIDAttributes {
		if a == "" {
			errs = append(errs, fmt.Errorf("callback_id_attributes[%d]: must not be empty", i))
		}
	}
	for attr, kind := range c.KeyAttributes {
		if attr == "" || kind == "" {
			errs = append(errs, fmt.Errorf("key_attributes: %q: attribute and key kind must not be empty", attr))
		}
	}
	for i, a := range c.FlowNameAttributes {
		if a == "" {
			errs = append(errs, fmt.Errorf("flow_name_attributes[%d]: must not be empty", i))
		}
	}
	return errors.Join(errs...)
}

// Stats count what Convert saw.
type Stats struct {
	Spans     int // spans read
	Events    int // events produced
	Malformed int // attribute values of the wrong form (the event is still produced without them)
}

// Converter turns spans into events. It is not safe for concurrent use: it
// reuses one event and its slices between calls to the callback.
type Converter struct {
	callbackIDs map[string]bool
	keyAttrs    map[string]string
	nameAttrs   map[string]int // attribute → preference, lower wins

	event model.Event
	span  spanAttrs
}

// New returns a Converter for the configuration.
func New(cfg Config) *Converter {
	callbackIDs := cfg.CallbackIDAttributes
	if len(callbackIDs) == 0 {
		callbackIDs = []string{attrCallbackID}
	}
	nameAttrs := cfg.FlowNameAttributes
	if len(nameAttrs) == 0 {
		nameAttrs = []string{attrFlowName}
	}
	c := &Converter{callbackIDs: map[string]bool{}, keyAttrs: cfg.KeyAttributes, nameAttrs: map[string]int{}}
	for _, a := range callbackIDs {
		c.callbackIDs[a] = true
	}
	for i, a := range nameAttrs {
		if _, ok := c.nameAttrs[a]; !ok {
			c.nameAttrs[a] = i
		}
	}
	return c
}

// spanAttrs holds what one pass over a span's attributes found.
type spanAttrs struct {
	system, opType, opOld, destination, destinationOld, sourceName, messageID, conversationID string
	group, kafkaGroup, partition, kafkaPartition, sourcePartition, routingKey, offset         string
	event, outcome, reason, operation, callbackID, flowName                                   string
	flowNameRank                                                                              int
	attempt, bodySize, httpStatus                                                             int64
	malformed                                                                                 int
	keys                                                                                      []model.Key
}

// Convert calls fn with the event each messaging span stands for. The event
// is reused after fn returns: fn must copy what it keeps (strings may be
// kept as they are).
func (c *Converter) Convert(td ptrace.Traces, fn func(*model.Event)) Stats {
	var stats Stats
	rss := td.ResourceSpans()
	for i := 0; i < rss.Len(); i++ {
		rs := rss.At(i)
		service := ""
		if v, ok := rs.Resource().Attributes().Get(attrServiceName); ok {
			service = v.AsString()
		}
		sss := rs.ScopeSpans()
		for j := 0; j < sss.Len(); j++ {
			spans := sss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				stats.Spans++
				if c.convertSpan(spans.At(k), service) {
					stats.Events++
					fn(&c.event)
				}
				stats.Malformed += c.span.malformed
			}
		}
	}
	return stats
}

// convertSpan fills c.event from a span and reports whether it is one.
func (c *Converter) convertSpan(span ptrace.Span, service string) bool {
	a := &c.span
	c.readAttributes(span.Attributes())
	kind := c.kind(span)
	if kind == "" {
		return false
	}
	ev := &c.event
	*ev = model.Event{Links: ev.Links[:0], Keys: a.keys}
	ev.Kind = kind
	ev.System = a.system
	ev.Destination = first(a.destination, a.destinationOld, a.sourceName)
	if ev.Destination == "" && a.system == "rabbitmq" {
		ev.Destination = a.routingKey
	}
	ev.Partition = first(a.partition, a.kafkaPartition, a.sourcePartition)
	ev.MessageID = a.messageID
	if ev.MessageID == "" && a.offset != "" && ev.Destination != "" {
		ev.MessageID = ev.Destination + "/" + ev.Partition + "/" + a.offset
	}
	if kind == model.EventCallbackRequest || kind == model.EventCallbackReceive {
		if ev.System == "" {
			ev.System = "http"
		}
		ev.MessageID = a.callbackID
		if ev.Destination == "" {
			ev.Destination = span.Name()
		}
	}
	ev.ConsumerGroup = first(a.group, a.kafkaGroup)
	ev.Operation = a.operation
	if a.attempt > 0 {
		ev.Attempt = uint16(min(a.attempt, 1<<16-1))
	}
	ev.Service = service
	ev.Reason = a.reason
	status := span.Status()
	if ev.Reason == "" && status.Code() == ptrace.StatusCodeError {
		ev.Reason = status.Message()
	}
	switch kind {
	case model.EventSettle:
		ev.Outcome = a.outcome
	case model.EventProcess, model.EventCallbackReceive:
		if status.Code() == ptrace.StatusCodeError {
			ev.Outcome = "error"
		}
	}
	if a.bodySize > 0 {
		ev.BodySize = uint64(a.bodySize)
	}
	if a.conversationID != "" {
		ev.Keys = append(ev.Keys, model.Key{Kind: "correlation_id", Value: a.conversationID})
	}
	ev.FlowName = a.flowName
	start, end := span.StartTimestamp(), span.EndTimestamp()
	ev.Time = start.AsTime()
	if end > start {
		ev.Duration = time.Duration(end - start)
	}
	ev.TraceID = hexTraceID(span.TraceID())
	ev.SpanID = hexSpanID(span.SpanID())
	ev.ParentSpanID = hexSpanID(span.ParentSpanID())
	links := span.Links()
	for i := 0; i < links.Len(); i++ {
		l := links.At(i)
		if l.TraceID().IsEmpty() || l.SpanID().IsEmpty() {
			continue
		}
		ev.Links = append(ev.Links, model.SpanRef{TraceID: hexTraceID(l.TraceID()), SpanID: hexSpanID(l.SpanID())})
	}
	return true
}

// readAttributes makes one pass over the attributes, keeping what the
// event needs. It allocates nothing for a span without any of them.
func (c *Converter) readAttributes(attrs pcommon.Map) {
	a := &c.span
	keys := a.keys[:0]
	*a = spanAttrs{keys: keys, flowNameRank: len(c.nameAttrs)}
	attrs.Range(func(k string, v pcommon.Value) bool {
		switch k {
		case attrSystem:
			a.system = v.AsString()
		case attrOperationType:
			a.opType = v.AsString()
		case attrOperation:
			a.opOld = v.AsString()
		case attrDestination:
			a.destination = v.AsString()
		case attrDestinationOld:
			a.destinationOld = v.AsString()
		case attrSourceName:
			a.sourceName = v.AsString()
		case attrMessageID:
			a.messageID = v.AsString()
		case attrConversationID:
			a.conversationID = v.AsString()
		case attrConsumerGroup:
			a.group = v.AsString()
		case attrKafkaConsumerGroup:
			a.kafkaGroup = v.AsString()
		case attrPartition:
			a.partition = v.AsString()
		case attrKafkaPartition:
			a.kafkaPartition = v.AsString()
		case attrKafkaSourcePart:
			a.sourcePartition = v.AsString()
		case attrRoutingKey:
			a.routingKey = v.AsString()
		case attrKafkaOffset, attrKafkaMessageOffset:
			a.offset = v.AsString()
		case attrBodySize:
			a.bodySize = a.intValue(v)
		case attrHTTPStatus, attrHTTPStatusOld:
			a.httpStatus = a.intValue(v)
		case attrEvent:
			a.event = v.AsString()
		case attrAttempt:
			a.attempt = a.intValue(v)
		case attrOutcome:
			a.outcome = v.AsString()
		case attrReason:
			a.reason = v.AsString()
		case attrOp:
			a.operation = v.AsString()
		default:
			c.readConfigured(k, v)
		}
		return true
	})
}

// readConfigured reads the attributes whose names are configured or
// prefixed rather than fixed.
func (c *Converter) readConfigured(k string, v pcommon.Value) {
	a := &c.span
	if c.callbackIDs[k] {
		a.callbackID = v.AsString()
	}
	if rank, ok := c.nameAttrs[k]; ok && rank < a.flowNameRank {
		a.flowName, a.flowNameRank = v.AsString(), rank
	}
	if kind, ok := c.keyAttrs[k]; ok {
		a.keys = append(a.keys, model.Key{Kind: kind, Value: v.AsString()})
	}
	if kind, ok := strings.CutPrefix(k, attrKeyPrefix); ok && kind != "" {
		a.keys = append(a.keys, model.Key{Kind: kind, Value: v.AsString()})
	}
}

// intValue reads an integer attribute, also from a string; a value of
// another form counts as malformed and reads as 0.
func (a *spanAttrs) intValue(v pcommon.Value) int64 {
	switch v.Type() {
	case pcommon.ValueTypeInt:
		return v.Int()
	case pcommon.ValueTypeDouble:
		return int64(v.Double())
	case pcommon.ValueTypeStr:
		if n, err := strconv.ParseInt(strings.TrimSpace(v.Str()), 10, 64); err == nil {
			return n
		}
	}
	a.malformed++
	return 0
}

// kind decides what the span observed, or "" when it is not about messages.
func (c *Converter) kind(span ptrace.Span) model.EventKind {
	a := &c.span
	if a.event != "" {
		if k := model.EventKind(a.event); k.Known() {
			return k
		}
		a.malformed++
	}
	if a.callbackID != "" && span.Kind() == ptrace.SpanKindServer {
		if a.httpStatus == 202 {
			return model.EventCallbackRequest
		}
		return model.EventCallbackReceive
	}
	if a.system == "" {
		return ""
	}
	switch a.opType {
	case "create", "send", "publish":
		return model.EventPublish
	case "receive":
		return model.EventDeliver
	case "process", "deliver":
		return model.EventProcess
	case "settle":
		return model.EventSettle
	}
	switch a.opOld {
	case "publish", "create":
		return model.EventPublish
	case "receive":
		return model.EventDeliver
	case "process", "deliver":
		return model.EventProcess
	case "settle":
		return model.EventSettle
	}
	switch span.Kind() {
	case ptrace.SpanKindProducer:
		return model.EventPublish
	case ptrace.SpanKindConsumer:
		return model.EventProcess
	}
	return ""
}

func first(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

func hexTraceID(id pcommon.TraceID) string {
	if id.IsEmpty() {
		return ""
	}
	return hex.EncodeToString(id[:])
}

func hexSpanID(id pcommon.SpanID) string {
	if id.IsEmpty() {
		return ""
	}
	return hex.EncodeToString(id[:])
}
