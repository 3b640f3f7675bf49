package tap

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strconv"

	"github.com/cespare/xxhash/v2"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// Span attribute names: the messaging conventions and flowtrace's own, as
// the correlator's span adapter reads them.
const (
	AttrSystem        = "messaging.system"
	AttrOperationType = "messaging.operation.type"
	AttrDestination   = "messaging.destination.name"
	AttrPartition     = "messaging.destination.partition.id"
	AttrMessageID     = "messaging.message.id"
	AttrConsumerGroup = "messaging.consumer.group.name"
	AttrBodySize      = "messaging.message.body.size"
	AttrEvent         = "flowtrace.event"
	AttrAttempt       = "flowtrace.delivery.attempt"
	AttrOutcome       = "flowtrace.settle.outcome"
	AttrInferred      = "flowtrace.settle.inferred"
	AttrReason        = "flowtrace.dead_letter.reason"
	AttrOperation     = "flowtrace.operation"
	AttrKeyPrefix     = "flowtrace.key."
	// AttrTap names the tap on the resource of the spans it emits.
	AttrTap = "flowtrace.tap"
)

// ErrNoIdentity refuses an observation with neither a message id nor a
// traceparent: nothing could join it to the rest of its message.
var ErrNoIdentity = errors.New("observation has no message id")

// ErrBadTraceParent reports a traceparent that is not W3C trace context;
// the observation is kept without it.
var ErrBadTraceParent = errors.New("malformed traceparent")

// Spans gathers observations into one ptrace.Traces, a resource per
// service. Span ids are derived from the message and the observation, so an
// observation emitted twice (after a reconnect, say) is the same span.
type Spans struct {
	tap       string
	scope     string
	td        ptrace.Traces
	byService map[string]ptrace.SpanSlice
	n         int
}

// NewSpans returns an empty batch for the named tap (e.g. "rabbitmq") whose
// spans carry the instrumentation scope name scope.
func NewSpans(tap, scope string) *Spans {
	s := &Spans{tap: tap, scope: scope}
	s.reset()
	return s
}

func (s *Spans) reset() {
	s.td = ptrace.NewTraces()
	s.byService = map[string]ptrace.SpanSlice{}
	s.n = 0
}

// Len is the number of spans gathered.
func (s *Spans) Len() int { return s.n }

// Take returns the gathered spans and starts a new batch.
func (s *Spans) Take() ptrace.Traces {
	td := s.td
	s.reset()
	return td
}

func (s *Spans) slice(service string) ptrace.SpanSlice {
	if spans, ok := s.byService[service]; ok {
		return spans
	}
	rs := s.td.ResourceSpans().AppendEmpty()
	attrs := rs.Resource().Attributes()
	if service != "" {
		attrs.PutStr("service.name", service)
	}
	attrs.PutStr(AttrTap, s.tap)
	ss := rs.ScopeSpans().AppendEmpty()
	ss.Scope().SetName(s.scope)
	spans := ss.Spans()
	s.byService[service] = spans
	return spans
}

// Add turns o into a span. It refuses an observation without an identity
// (ErrNoIdentity); a malformed traceparent is dropped from the span and
// reported as ErrBadTraceParent, the span is still added.
func (s *Spans) Add(o *Observation) error {
	var err error
	traceID, parentSpan, ok := ParseTraceParent(o.TraceParent)
	if !ok && o.TraceParent != "" {
		err = ErrBadTraceParent
	}
	if o.MessageID == "" && !ok {
		return ErrNoIdentity
	}
	ident := o.System + "\x00" + o.MessageID
	switch {
	case ok:
	case o.TraceKey != "":
		traceID = derivedTraceID(o.System + "\x00trace\x00" + o.TraceKey)
	default:
		traceID = derivedTraceID(ident)
	}

	span := s.slice(o.Service).AppendEmpty()
	s.n++
	span.SetTraceID(traceID)
	start := pcommon.NewTimestampFromTime(o.Time)
	span.SetStartTimestamp(start)
	span.SetEndTimestamp(start + pcommon.Timestamp(max(o.Duration, 0)))

	attrs := span.Attributes()
	attrs.EnsureCapacity(8 + len(o.Keys) + len(o.Attrs))
	attrs.PutStr(AttrSystem, o.System)
	if o.Destination != "" {
		attrs.PutStr(AttrDestination, o.Destination)
	}
	if o.Partition != "" {
		attrs.PutStr(AttrPartition, o.Partition)
	}
	if o.MessageID != "" {
		attrs.PutStr(AttrMessageID, o.MessageID)
	}

	if o.Kind == Publish || o.Kind == Broadcast {
		// A publish seen with a traceparent is the application's producer
		// span seen from the broker: it takes that span's identity, so the
		// correlator reads both as one message.
		if ok {
			span.SetSpanID(parentSpan)
		} else {
			span.SetSpanID(spanID(ident, o))
		}
		span.SetKind(ptrace.SpanKindProducer)
		span.SetName(spanName("send", o.Destination))
		attrs.PutStr(AttrOperationType, "send")
		if o.Kind == Broadcast {
			attrs.PutStr(AttrEvent, o.Kind.String())
		}
	} else {
		span.SetSpanID(spanID(ident, o))
		span.SetKind(ptrace.SpanKindConsumer)
		if ok {
			link := span.Links().AppendEmpty()
			link.SetTraceID(traceID)
			link.SetSpanID(parentSpan)
		}
		if o.ConsumerGroup != "" {
			attrs.PutStr(AttrConsumerGroup, o.ConsumerGroup)
		}
		switch o.Kind {
		case Deliver:
			span.SetName(spanName("receive", o.Destination))
			attrs.PutStr(AttrOperationType, "receive")
		case Process:
			span.SetName(spanName("process", o.Destination))
			attrs.PutStr(AttrOperationType, "process")
		case Settle:
			span.SetName(spanName("settle", o.Destination))
			attrs.PutStr(AttrOperationType, "settle")
			attrs.PutStr(AttrOutcome, o.Outcome)
		default:
			span.SetName(spanName(o.Kind.String(), o.Destination))
			attrs.PutStr(AttrEvent, o.Kind.String())
		}
		if o.Inferred {
			attrs.PutBool(AttrInferred, true)
		}
	}
	if o.Attempt > 0 {
		attrs.PutInt(AttrAttempt, int64(o.Attempt))
	}
	if o.Reason != "" {
		attrs.PutStr(AttrReason, o.Reason)
	}
	if o.Operation != "" {
		attrs.PutStr(AttrOperation, o.Operation)
	}
	if o.BodySize > 0 {
		attrs.PutInt(AttrBodySize, o.BodySize)
	}
	for _, k := range o.Keys {
		if k.Kind != "" && k.Value != "" {
			attrs.PutStr(AttrKeyPrefix+k.Kind, k.Value)
		}
	}
	for _, a := range o.Attrs {
		switch a.Type {
		case IntAttr:
			attrs.PutInt(a.Key, a.Int)
		case BoolAttr:
			attrs.PutBool(a.Key, a.Bool)
		default:
			attrs.PutStr(a.Key, a.Str)
		}
	}
	return err
}

func spanName(op, dest string) string {
	if dest == "" {
		return op
	}
	return op + " " + dest
}

// derivedTraceID is the trace a message without a traceparent gets,
// derived from its identity or its TraceKey.
func derivedTraceID(ident string) pcommon.TraceID {
	var id pcommon.TraceID
	binary.BigEndian.PutUint64(id[:8], xxhash.Sum64String(ident))
	binary.BigEndian.PutUint64(id[8:], xxhash.Sum64String("trace\x00"+ident))
	return id
}

// spanID derives a span id from the message and what was observed, when,
// so the same observation always gets the same id and two observations of
// one thing at different times (seen two ways) never share one.
func spanID(ident string, o *Observation) pcommon.SpanID {
	var d xxhash.Digest
	d.Reset()
	for _, s := range [...]string{ident, "\x00", o.Kind.String(), "\x00", o.ConsumerGroup, "\x00", o.Outcome, "\x00", o.Destination, "\x00"} {
		_, _ = d.WriteString(s)
	}
	var num [48]byte
	b := strconv.AppendInt(num[:0], int64(o.Attempt), 10)
	b = append(b, 0)
	_, _ = d.Write(strconv.AppendInt(b, o.Time.UnixNano(), 10))
	var id pcommon.SpanID
	binary.BigEndian.PutUint64(id[:], d.Sum64()|1) // never the invalid all-zero id
	return id
}

// ParseTraceParent reads a W3C traceparent header
// ("00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"). It refuses
// all-zero ids and the reserved version ff; versions above 00 may carry more
// fields after the flags.
func ParseTraceParent(s string) (pcommon.TraceID, pcommon.SpanID, bool) {
	var traceID pcommon.TraceID
	var spanID pcommon.SpanID
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || (len(s) > 55 && (s[:2] == "00" || s[55] != '-')) {
		return traceID, spanID, false
	}
	var version [1]byte
	var flags [1]byte
	if _, err := hex.Decode(version[:], []byte(s[:2])); err != nil || version[0] == 0xff {
		return traceID, spanID, false
	}
	if _, err := hex.Decode(traceID[:], []byte(s[3:35])); err != nil || traceID.IsEmpty() {
		return traceID, spanID, false
	}
	if _, err := hex.Decode(spanID[:], []byte(s[36:52])); err != nil || spanID.IsEmpty() {
		return traceID, spanID, false
	}
	if _, err := hex.Decode(flags[:], []byte(s[53:55])); err != nil {
		return traceID, spanID, false
	}
	return traceID, spanID, true
}
