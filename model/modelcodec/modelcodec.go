// Package modelcodec is a compact binary encoding of events, hops, flows
// and backlog samples, for flowtrace's own files and queues (the correlator's write-ahead
// log, the exporter's sending queue). Fields are written in declaration
// order: strings and slices length-prefixed (uvarint), integers as varints,
// times as Unix nanoseconds with 0 for the zero time. It has no version
// byte: a change of layout is a change of the files' format, which their
// owners version.
package modelcodec

import (
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// ErrCorrupt means bytes that no encoder wrote.
var ErrCorrupt = errors.New("modelcodec: corrupt encoding")

// AppendUvarint and AppendString are the codec's primitives, for framing
// around its values.
func AppendUvarint(buf []byte, v uint64) []byte { return binary.AppendUvarint(buf, v) }

// AppendString appends s, length first.
func AppendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

func appendTime(buf []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(buf, 0)
	}
	return binary.AppendVarint(buf, t.UnixNano())
}

func appendBool(buf []byte, b bool) []byte {
	if b {
		return append(buf, 1)
	}
	return append(buf, 0)
}

func appendKeys(buf []byte, keys []model.Key) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(keys)))
	for _, k := range keys {
		buf = AppendString(AppendString(buf, k.Kind), k.Value)
	}
	return buf
}

// AppendEvent appends every field of e.
func AppendEvent(buf []byte, e *model.Event) []byte {
	buf = appendTime(buf, e.Time)
	for _, s := range []string{string(e.Kind), e.System, e.Destination, e.Partition, e.MessageID, e.Operation,
		e.Service, e.ConsumerGroup, e.TraceID, e.SpanID, e.ParentSpanID, e.Outcome, e.Reason, e.FlowName} {
		buf = AppendString(buf, s)
	}
	buf = binary.AppendUvarint(buf, uint64(e.Attempt))
	buf = binary.AppendUvarint(buf, e.BodySize)
	buf = binary.AppendVarint(buf, int64(e.Duration))
	buf = binary.AppendUvarint(buf, uint64(len(e.Links)))
	for _, l := range e.Links {
		buf = AppendString(AppendString(buf, l.TraceID), l.SpanID)
	}
	return appendKeys(buf, e.Keys)
}

// AppendHop appends every field of h.
func AppendHop(buf []byte, h *model.Hop) []byte {
	for _, s := range []string{h.FlowID, h.HopID} {
		buf = AppendString(buf, s)
	}
	buf = binary.AppendUvarint(buf, h.Version)
	buf = appendTime(buf, h.FirstSeen)
	buf = appendBool(buf, h.Deleted)
	for _, s := range []string{h.ParentHopID, h.System, h.Producer, h.Destination, h.Consumer, h.ConsumerGroup,
		h.Operation, h.MessageID, h.TraceID} {
		buf = AppendString(buf, s)
	}
	for _, t := range []time.Time{h.PublishTime, h.DeliverTime, h.SettleTime} {
		buf = appendTime(buf, t)
	}
	buf = binary.AppendVarint(buf, int64(h.QueueWait))
	buf = binary.AppendVarint(buf, int64(h.Processing))
	buf = binary.AppendUvarint(buf, uint64(h.Attempts))
	buf = AppendString(buf, string(h.Outcome))
	buf = AppendString(buf, h.Reason)
	return appendBool(buf, h.Counted)
}

// AppendFlow appends every field of f.
func AppendFlow(buf []byte, f *model.Flow) []byte {
	buf = AppendString(buf, f.ID)
	buf = binary.AppendUvarint(buf, f.Version)
	buf = appendTime(buf, f.FirstSeen)
	buf = appendBool(buf, f.Deleted)
	buf = AppendString(buf, f.Name)
	buf = AppendString(buf, string(f.Status))
	buf = appendTime(buf, f.Start)
	buf = appendTime(buf, f.End)
	for _, n := range []uint32{f.HopCount, f.Retries, f.DeadLetters} {
		buf = binary.AppendUvarint(buf, uint64(n))
	}
	buf = appendKeys(buf, f.Keys)
	buf = binary.AppendUvarint(buf, uint64(len(f.CriticalPath)))
	for _, id := range f.CriticalPath {
		buf = AppendString(buf, id)
	}
	return buf
}

// AppendBacklogSample appends every field of b.
func AppendBacklogSample(buf []byte, b *model.BacklogSample) []byte {
	buf = appendTime(buf, b.Time)
	for _, s := range []string{b.System, b.Broker, b.Destination, b.ConsumerGroup} {
		buf = AppendString(buf, s)
	}
	for _, n := range []int64{b.Depth, b.Unacked, b.LagMessages, b.Consumers} {
		buf = binary.AppendVarint(buf, n)
	}
	for _, f := range []float64{b.LagSeconds, b.PublishRate, b.DeliverRate} {
		buf = binary.LittleEndian.AppendUint64(buf, math.Float64bits(f))
	}
	return buf
}

// Decoder reads what the Append functions wrote, in the same order. The
// first problem sticks: later reads return zero values, and Err reports it.
type Decoder struct {
	buf   []byte
	err   error
	check bool // strings are skipped, not copied: see NewChecker
}

// NewDecoder reads b.
func NewDecoder(b []byte) *Decoder { return &Decoder{buf: b} }

// NewChecker reads b only to check that it decodes: every string it reads
// is empty, and nothing is allocated for it. Decoding into the same value
// again and again, it finds every corruption a Decoder finds, at a fraction
// of the cost.
func NewChecker(b []byte) *Decoder { return &Decoder{buf: b, check: true} }

// Err is the first problem met, if any.
func (d *Decoder) Err() error { return d.err }

// Len is the number of bytes not yet read.
func (d *Decoder) Len() int { return len(d.buf) }

func (d *Decoder) fail() { d.err = ErrCorrupt }

// Uvarint reads an unsigned varint.
func (d *Decoder) Uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// Varint reads a signed varint.
func (d *Decoder) Varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

// String reads a length-prefixed string.
func (d *Decoder) String() string {
	n := d.Uvarint()
	if d.err != nil || n > uint64(len(d.buf)) {
		d.fail()
		return ""
	}
	var s string
	if !d.check {
		s = string(d.buf[:n])
	}
	d.buf = d.buf[n:]
	return s
}

// Count reads a number of elements to follow, each at least one byte: one
// past the bytes left is corruption, not a reason to allocate.
func (d *Decoder) Count() int {
	n := d.Uvarint()
	if n > uint64(len(d.buf)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *Decoder) time() time.Time {
	if t := d.Varint(); t != 0 {
		return time.Unix(0, t).UTC()
	}
	return time.Time{}
}

func (d *Decoder) bool() bool {
	if d.err != nil {
		return false
	}
	if len(d.buf) == 0 || d.buf[0] > 1 {
		d.fail()
		return false
	}
	b := d.buf[0] == 1
	d.buf = d.buf[1:]
	return b
}

func (d *Decoder) uint16() uint16 {
	v := d.Uvarint()
	if v > 1<<16-1 {
		d.fail()
		return 0
	}
	return uint16(v)
}

func (d *Decoder) uint32() uint32 {
	v := d.Uvarint()
	if v > 1<<32-1 {
		d.fail()
		return 0
	}
	return uint32(v)
}

// keys reads keys into keys[:0], nil for none.
func (d *Decoder) keys(keys []model.Key) []model.Key {
	keys = keys[:0]
	for range d.Count() {
		keys = append(keys, model.Key{Kind: d.String(), Value: d.String()})
	}
	if len(keys) == 0 {
		return nil
	}
	return keys
}

// Event reads an event into e, reusing e's Links and Keys arrays: a caller
// that keeps events decodes each into a fresh one.
func (d *Decoder) Event(e *model.Event) {
	links, keys := e.Links[:0], e.Keys
	*e = model.Event{Time: d.time()}
	e.Kind = model.EventKind(d.String())
	e.System, e.Destination, e.Partition, e.MessageID = d.String(), d.String(), d.String(), d.String()
	e.Operation, e.Service, e.ConsumerGroup = d.String(), d.String(), d.String()
	e.TraceID, e.SpanID, e.ParentSpanID = d.String(), d.String(), d.String()
	e.Outcome, e.Reason, e.FlowName = d.String(), d.String(), d.String()
	e.Attempt = d.uint16()
	e.BodySize = d.Uvarint()
	e.Duration = time.Duration(d.Varint())
	for range d.Count() {
		links = append(links, model.SpanRef{TraceID: d.String(), SpanID: d.String()})
	}
	if len(links) > 0 {
		e.Links = links
	}
	e.Keys = d.keys(keys)
}

// Hop reads a hop into h.
func (d *Decoder) Hop(h *model.Hop) {
	*h = model.Hop{FlowID: d.String(), HopID: d.String(), Version: d.Uvarint(), FirstSeen: d.time(), Deleted: d.bool()}
	h.ParentHopID, h.System, h.Producer, h.Destination = d.String(), d.String(), d.String(), d.String()
	h.Consumer, h.ConsumerGroup, h.Operation, h.MessageID, h.TraceID = d.String(), d.String(), d.String(), d.String(), d.String()
	h.PublishTime, h.DeliverTime, h.SettleTime = d.time(), d.time(), d.time()
	h.QueueWait, h.Processing = time.Duration(d.Varint()), time.Duration(d.Varint())
	h.Attempts = d.uint16()
	h.Outcome = model.HopOutcome(d.String())
	h.Reason = d.String()
	h.Counted = d.bool()
}

func (d *Decoder) float64() float64 {
	if d.err != nil {
		return 0
	}
	if len(d.buf) < 8 {
		d.fail()
		return 0
	}
	f := math.Float64frombits(binary.LittleEndian.Uint64(d.buf))
	d.buf = d.buf[8:]
	return f
}

// BacklogSample reads a backlog sample into b.
func (d *Decoder) BacklogSample(b *model.BacklogSample) {
	*b = model.BacklogSample{Time: d.time(), System: d.String(), Broker: d.String(), Destination: d.String(), ConsumerGroup: d.String()}
	b.Depth, b.Unacked, b.LagMessages, b.Consumers = d.Varint(), d.Varint(), d.Varint(), d.Varint()
	b.LagSeconds, b.PublishRate, b.DeliverRate = d.float64(), d.float64(), d.float64()
}

// Flow reads a flow into f, reusing f's Keys and CriticalPath arrays: a
// caller that keeps flows decodes each into a fresh one.
func (d *Decoder) Flow(f *model.Flow) {
	keys, path := f.Keys, f.CriticalPath[:0]
	*f = model.Flow{ID: d.String(), Version: d.Uvarint(), FirstSeen: d.time(), Deleted: d.bool(), Name: d.String()}
	f.Status = model.FlowStatus(d.String())
	f.Start, f.End = d.time(), d.time()
	f.HopCount, f.Retries, f.DeadLetters = d.uint32(), d.uint32(), d.uint32()
	f.Keys = d.keys(keys)
	if n := d.Count(); n > 0 {
		path = slices.Grow(path, n)
		for range n {
			path = append(path, d.String())
		}
		f.CriticalPath = path
	}
}
