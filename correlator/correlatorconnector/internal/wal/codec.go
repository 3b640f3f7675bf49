package wal

import (
	"encoding/binary"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
}

// appendEvent encodes every field of an event.
func appendEvent(buf []byte, e *model.Event) []byte {
	var t int64
	if !e.Time.IsZero() {
		t = e.Time.UnixNano()
	}
	buf = binary.AppendVarint(buf, t)
	for _, s := range []string{string(e.Kind), e.System, e.Destination, e.Partition, e.MessageID, e.Operation,
		e.Service, e.ConsumerGroup, e.TraceID, e.SpanID, e.ParentSpanID, e.Outcome, e.Reason, e.FlowName} {
		buf = appendString(buf, s)
	}
	buf = binary.AppendUvarint(buf, uint64(e.Attempt))
	buf = binary.AppendUvarint(buf, e.BodySize)
	buf = binary.AppendVarint(buf, int64(e.Duration))
	buf = binary.AppendUvarint(buf, uint64(len(e.Links)))
	for _, l := range e.Links {
		buf = appendString(appendString(buf, l.TraceID), l.SpanID)
	}
	buf = binary.AppendUvarint(buf, uint64(len(e.Keys)))
	for _, k := range e.Keys {
		buf = appendString(appendString(buf, k.Kind), k.Value)
	}
	return buf
}

// decoder reads what appendEvent wrote, remembering the first problem.
type decoder struct {
	buf []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.buf)
	if n <= 0 {
		d.err = ErrCorrupt
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.buf)
	if n <= 0 {
		d.err = ErrCorrupt
		return 0
	}
	d.buf = d.buf[n:]
	return v
}

func (d *decoder) string() string {
	n := d.uvarint()
	if d.err != nil || n > uint64(len(d.buf)) {
		d.err = ErrCorrupt
		return ""
	}
	s := string(d.buf[:n])
	d.buf = d.buf[n:]
	return s
}

func (d *decoder) event(e *model.Event) {
	links, keys := e.Links[:0], e.Keys[:0]
	*e = model.Event{}
	if t := d.varint(); t != 0 {
		e.Time = time.Unix(0, t).UTC()
	}
	e.Kind = model.EventKind(d.string())
	e.System, e.Destination, e.Partition, e.MessageID = d.string(), d.string(), d.string(), d.string()
	e.Operation, e.Service, e.ConsumerGroup = d.string(), d.string(), d.string()
	e.TraceID, e.SpanID, e.ParentSpanID = d.string(), d.string(), d.string()
	e.Outcome, e.Reason, e.FlowName = d.string(), d.string(), d.string()
	if a := d.uvarint(); a <= 1<<16-1 {
		e.Attempt = uint16(a)
	} else {
		d.err = ErrCorrupt
	}
	e.BodySize = d.uvarint()
	e.Duration = time.Duration(d.varint())
	n := d.uvarint()
	if n > uint64(len(d.buf)) {
		d.err = ErrCorrupt
		return
	}
	for range n {
		links = append(links, model.SpanRef{TraceID: d.string(), SpanID: d.string()})
	}
	n = d.uvarint()
	if n > uint64(len(d.buf)) {
		d.err = ErrCorrupt
		return
	}
	for range n {
		keys = append(keys, model.Key{Kind: d.string(), Value: d.string()})
	}
	e.Links, e.Keys = links, keys
	if len(e.Links) == 0 {
		e.Links = nil
	}
	if len(e.Keys) == 0 {
		e.Keys = nil
	}
}
