package kafkatapreceiver

import (
	"encoding/binary"
	"errors"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flowtrace/flowtrace/correlator/destpattern"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

const system = "kafka"

// Span attributes of the Kafka messaging conventions.
const (
	attrOffset     = "messaging.kafka.offset"
	attrMessageKey = "messaging.kafka.message.key"
)

// Bounds on what a header may carry into a span; key header values,
// record keys and reasons are bounded by tap.MaxText.
const (
	maxGroupLen  = 255
	maxOriginIDs = 1 << 16 // retry records whose origin is remembered
)

// Decode error reasons: short fixed words, never broker data.
const (
	reasonKey         = "key"
	reasonHeader      = "header"
	reasonTraceparent = "traceparent"
	reasonOrigin      = "original_headers"
	reasonGroup       = "original_group"
	reasonReason      = "reason"
)

var (
	errNotUTF8      = errors.New("not UTF-8")
	errNotText      = errors.New("not UTF-8, control characters or too long")
	errBadTopic     = errors.New("not a topic name")
	errBadNumber    = errors.New("not a non-negative number")
	errMissingCoord = errors.New("topic without partition or offset")
)

// recordKind is what a record stands for.
type recordKind uint8

const (
	recordPublish    recordKind = iota // a message published to its topic
	recordRetry                        // a copy of a message on a retry topic
	recordDeadLetter                   // a copy of a message on a dead-letter topic
)

// decoded is what a record said that the tap keeps after the record is
// gone: enough to settle it for a group later, and, for a copy, which
// record a group failed.
type decoded struct {
	kind        recordKind
	messageID   string
	traceParent string
	attempt     int

	// failedGroup, when set, gave up on the record at failedTopic,
	// failedPartition, failedOffset and copied it into this one.
	failedGroup     string
	failedTopic     string
	failedPartition int32
	failedOffset    int64
}

// originHeaders are one set of original-record headers.
type originHeaders struct {
	topic, partition, offset, group []byte
}

func (o originHeaders) present() bool {
	return o.topic != nil || o.partition != nil || o.offset != nil
}

// firstOf keeps the first value seen of a repeated header.
func firstOf(seen, value []byte) []byte {
	if seen != nil {
		return seen
	}
	return nonNil(value)
}

// nonNil tells a header present with an empty value from an absent one.
func nonNil(value []byte) []byte {
	if value == nil {
		return []byte{}
	}
	return value
}

// decoder turns Kafka records into observations. It remembers which
// message each retry record carries on, so a later copy of the retry record
// (on the next retry topic, or the dead-letter topic) joins the first.
// Owned by the tap's run goroutine.
type decoder struct {
	keyHeaders        map[string]string
	recordKey         bool
	traceparentHeader string
	orig              OriginalHeaders
	retry             []destpattern.Pattern
	deadLetter        []destpattern.Pattern

	origins     map[string]string // retry record id → id of the message it carries on
	originOrder []string          // origins' keys, oldest first, as a ring
	originNext  int

	keys []model.Key // scratch, valid until the next decode
	id   []byte      // scratch
}

func newDecoder(cfg *Config) *decoder {
	d := &decoder{
		keyHeaders:        cfg.KeyHeaders,
		recordKey:         cfg.RecordKey,
		traceparentHeader: cfg.TraceparentHeader,
		orig:              cfg.OriginalHeaders,
		origins:           map[string]string{},
	}
	for _, p := range cfg.RetryTopics {
		compiled, _ := destpattern.Compile(p, true)
		d.retry = append(d.retry, compiled)
	}
	for _, p := range cfg.DeadLetterTopics {
		compiled, _ := destpattern.Compile(p, false)
		d.deadLetter = append(d.deadLetter, compiled)
	}
	return d
}

// classify says what a topic's records stand for, and of which base topic.
func (d *decoder) classify(topic string) (recordKind, string, int) {
	for _, p := range d.deadLetter {
		if base, _, ok := p.Match(topic); ok {
			return recordDeadLetter, base, 0
		}
	}
	for _, p := range d.retry {
		if base, retry, ok := p.Match(topic); ok {
			return recordRetry, base, retry + 1
		}
	}
	return recordPublish, topic, 0
}

// decode reads r into observations, appended to obs, and reports what it
// could not read (reason is a fixed word). The observations' Keys are
// scratch, valid until the next call. Nothing of the record's value is
// kept but its size.
func (d *decoder) decode(r *kgo.Record, obs []tap.Observation, report func(reason string, err error)) ([]tap.Observation, decoded) {
	kind, base, attempt := d.classify(r.Topic)
	own := d.recordID(r.Topic, r.Partition, r.Offset)
	out := decoded{kind: kind, messageID: own, attempt: attempt}
	d.keys = d.keys[:0]

	// Original-record headers come in sets, appended by each copy: the
	// first set names the first record, the last the record copied now.
	var first, last originHeaders
	var reason []byte
	for i := range r.Headers {
		h := &r.Headers[i]
		switch {
		case h.Key == d.traceparentHeader:
			if out.traceParent != "" {
				continue
			}
			tp := string(h.Value)
			if _, _, ok := tap.ParseTraceParent(tp); !ok {
				report(reasonTraceparent, tap.ErrBadTraceParent)
				continue
			}
			out.traceParent = tp
		case kind != recordPublish && h.Key != "" && h.Key == d.orig.Topic:
			first.topic = firstOf(first.topic, h.Value)
			last.topic = nonNil(h.Value)
		case kind != recordPublish && h.Key != "" && h.Key == d.orig.Partition:
			first.partition = firstOf(first.partition, h.Value)
			last.partition = nonNil(h.Value)
		case kind != recordPublish && h.Key != "" && h.Key == d.orig.Offset:
			first.offset = firstOf(first.offset, h.Value)
			last.offset = nonNil(h.Value)
		case kind != recordPublish && h.Key != "" && h.Key == d.orig.ConsumerGroup:
			last.group = nonNil(h.Value)
		case kind != recordPublish && h.Key != "" && h.Key == d.orig.Reason:
			reason = h.Value
		default:
			keyKind, ok := d.keyHeaders[h.Key]
			if !ok || len(h.Value) == 0 {
				continue
			}
			// A flow key joins only when exact: one that needs cleaning
			// is dropped, not altered.
			value, ok := tap.CleanText(string(h.Value), tap.MaxText)
			if !ok {
				report(reasonHeader, errNotText)
				continue
			}
			d.keys = append(d.keys, model.Key{Kind: keyKind, Value: value})
		}
	}

	// A copy is the message of the record it copies: the record copied now,
	// followed back to the first record through the retry records seen,
	// else the first record the headers name.
	if last.present() {
		topic, partition, offset, err := parseOrigin(last.topic, last.partition, last.offset)
		if err != nil {
			report(reasonOrigin, err)
		} else {
			copied := d.recordID(topic, partition, offset)
			out.messageID = copied
			if id, ok := d.origins[copied]; ok {
				out.messageID = id
			} else if fTopic, fPartition, fOffset, err := parseOrigin(first.topic, first.partition, first.offset); err == nil {
				out.messageID = d.resolve(d.recordID(fTopic, fPartition, fOffset))
			}
			out.failedTopic, out.failedPartition, out.failedOffset = topic, partition, offset
			if kind == recordRetry {
				d.remember(own, out.messageID)
			}
			if last.group != nil {
				if group, ok := tap.CleanText(string(last.group), maxGroupLen); !ok {
					report(reasonGroup, errNotText)
				} else {
					out.failedGroup = group
				}
			}
		}
	}
	// A reason only informs: it is kept cleaned; one that is not text is
	// bad input.
	var reasonText string
	if reason != nil {
		if !utf8.Valid(reason) {
			report(reasonReason, errNotUTF8)
		}
		reasonText, _ = tap.CleanText(string(reason), tap.MaxText)
	}

	var attrs []tap.Attr
	if d.recordKey && r.Key != nil {
		// A key that is not UTF-8 (a binary key) is not shown at all.
		if !utf8.Valid(r.Key) {
			report(reasonKey, errNotUTF8)
		} else {
			key, _ := tap.CleanText(string(r.Key), tap.MaxText)
			attrs = append(attrs, tap.String(attrMessageKey, key))
		}
	}
	at := r.Timestamp
	partition := strconv.FormatInt(int64(r.Partition), 10)

	switch kind {
	case recordPublish, recordRetry:
		obs = append(obs, tap.Observation{
			Kind: tap.Publish, Time: at, System: system,
			Destination: r.Topic, Partition: partition, MessageID: out.messageID,
			Attempt: attempt, BodySize: int64(len(r.Value)),
			Keys: d.keys, TraceParent: out.traceParent,
			Attrs: append(attrs, tap.Int(attrOffset, r.Offset)),
		})
		if kind == recordRetry && out.failedGroup != "" {
			// The group gave up on the record copied now, to try again.
			obs = append(obs, d.failure(&out, tap.Nack, at, reasonText))
		}
	case recordDeadLetter:
		if out.failedGroup != "" {
			// The group gave up on the record copied now, for good.
			obs = append(obs, d.failure(&out, tap.Reject, at, reasonText))
		}
		obs = append(obs, tap.Observation{
			Kind: tap.DeadLetter, Time: at, System: system,
			Destination: base, MessageID: out.messageID, ConsumerGroup: out.failedGroup,
			Reason: reasonText, Keys: d.keys, TraceParent: out.traceParent, Attrs: attrs,
		})
	}
	return obs, out
}

// failure is the failed group's settlement of the copied record, at the
// delivery attempt that record stood for.
func (d *decoder) failure(out *decoded, outcome string, at time.Time, reason string) tap.Observation {
	kind, _, attempt := d.classify(out.failedTopic)
	if kind != recordRetry {
		attempt = 1
	}
	return tap.Observation{
		Kind: tap.Settle, Time: at, System: system,
		Destination: out.failedTopic, Partition: strconv.FormatInt(int64(out.failedPartition), 10),
		MessageID: out.messageID, ConsumerGroup: out.failedGroup,
		Outcome: outcome, Inferred: true, Attempt: attempt, Reason: reason,
		TraceParent: out.traceParent,
	}
}

// recordID is a record's identity, "<topic>/<partition>/<offset>", as the
// correlator derives it for application Kafka spans.
func (d *decoder) recordID(topic string, partition int32, offset int64) string {
	b := append(d.id[:0], topic...)
	b = append(b, '/')
	b = strconv.AppendInt(b, int64(partition), 10)
	b = append(b, '/')
	b = strconv.AppendInt(b, offset, 10)
	d.id = b
	return string(b)
}

// resolve follows a retry record's id to the message it carries on.
func (d *decoder) resolve(id string) string {
	if first, ok := d.origins[id]; ok {
		return first
	}
	return id
}

// remember records that the retry record own carries on message first,
// forgetting the oldest such record past maxOriginIDs.
func (d *decoder) remember(own, first string) {
	if own == first {
		return
	}
	if _, ok := d.origins[own]; ok {
		d.origins[own] = first
		return
	}
	if len(d.originOrder) < maxOriginIDs {
		d.originOrder = append(d.originOrder, own)
	} else {
		delete(d.origins, d.originOrder[d.originNext])
		d.originOrder[d.originNext] = own
		d.originNext = (d.originNext + 1) % maxOriginIDs
	}
	d.origins[own] = first
}

// parseOrigin reads the original-record headers.
func parseOrigin(topic, partition, offset []byte) (string, int32, int64, error) {
	if partition == nil || offset == nil || topic == nil {
		return "", 0, 0, errMissingCoord
	}
	if !validTopic(string(topic)) {
		return "", 0, 0, errBadTopic
	}
	p, err := parseNumber(partition, 4)
	if err != nil || p > 1<<31-1 {
		return "", 0, 0, errBadNumber
	}
	o, err := parseNumber(offset, 8)
	if err != nil {
		return "", 0, 0, err
	}
	return string(topic), int32(p), o, nil
}

// parseNumber reads a non-negative integer written as decimal text or, when
// not all digits, as a big-endian integer of width bytes (how Java's
// ByteBuffer writes an int or a long). A binary partition or offset made
// only of ASCII digits would be beyond any real one, so the two readings
// never clash.
func parseNumber(b []byte, width int) (int64, error) {
	digits := len(b) > 0 && len(b) <= 19
	for _, c := range b {
		digits = digits && c >= '0' && c <= '9'
	}
	var v int64
	switch {
	case digits:
		n, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			return 0, errBadNumber
		}
		v = n
	case len(b) == width && width == 4:
		v = int64(int32(binary.BigEndian.Uint32(b)))
	case len(b) == width && width == 8:
		v = int64(binary.BigEndian.Uint64(b))
	default:
		return 0, errBadNumber
	}
	if v < 0 {
		return 0, errBadNumber
	}
	return v, nil
}

// settleTime spreads the settlements a poll found between the previous poll
// and this one, by offset: a record nearer the new commit was settled later.
// It is never before the record was published nor after now.
func settleTime(prev, now time.Time, from, to, offset int64, published time.Time) time.Time {
	t := now
	if span := to - from; span > 0 && now.After(prev) {
		frac := float64(offset-from+1) / float64(span)
		t = prev.Add(time.Duration(frac * float64(now.Sub(prev))))
	}
	if t.Before(published) {
		t = published
	}
	if t.After(now) {
		t = now
	}
	return t
}
