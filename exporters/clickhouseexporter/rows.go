package clickhouseexporter

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/model/modelcodec"
)

// rows is what the exporter queues: spans, records and metrics already read
// into the rows storage takes. The sending queue stores them in modelcodec's
// compact encoding rather than as OTLP, and batches them by row count.
type rows struct {
	events  []model.Event
	hops    []model.Hop
	flows   []model.Flow
	backlog []model.BacklogSample
	bytes   int // estimated encoded size; 0 until counted

	// merged are the requests a batch gathered and has not copied into the
	// slices above yet: each row is copied once, when the batch is written
	// or cut, into slices of the batch's final size. Growing the slices
	// request by request instead allocated a fifth of all bytes under load.
	merged      []*rows
	mergedItems int // the rows of merged
}

var _ xexporterhelper.Request = (*rows)(nil)

func (r *rows) ItemsCount() int {
	return len(r.events) + len(r.hops) + len(r.flows) + len(r.backlog) + r.mergedItems
}

// BytesSize estimates the encoded size: the strings, and a bound on the rest.
func (r *rows) BytesSize() int {
	if r.bytes == 0 {
		r.bytes = r.countBytes()
		for _, m := range r.merged {
			r.bytes += m.BytesSize()
		}
	}
	return r.bytes
}

// gather copies the merged requests' rows into r's own slices.
func (r *rows) gather() {
	if len(r.merged) == 0 {
		return
	}
	events, hops, flows, backlog := len(r.events), len(r.hops), len(r.flows), len(r.backlog)
	for _, m := range r.merged {
		events, hops, flows, backlog = events+len(m.events), hops+len(m.hops), flows+len(m.flows), backlog+len(m.backlog)
	}
	r.events = slices.Grow(r.events, events-len(r.events))
	r.hops = slices.Grow(r.hops, hops-len(r.hops))
	r.flows = slices.Grow(r.flows, flows-len(r.flows))
	r.backlog = slices.Grow(r.backlog, backlog-len(r.backlog))
	for _, m := range r.merged {
		r.events = append(r.events, m.events...)
		r.hops = append(r.hops, m.hops...)
		r.flows = append(r.flows, m.flows...)
		r.backlog = append(r.backlog, m.backlog...)
	}
	clear(r.merged)
	r.merged, r.mergedItems = nil, 0
}

func (r *rows) countBytes() int {
	n := 8
	for i := range r.events {
		e := &r.events[i]
		n += 48 + len(e.Kind) + len(e.System) + len(e.Destination) + len(e.Partition) + len(e.MessageID) +
			len(e.Operation) + len(e.Service) + len(e.ConsumerGroup) + len(e.TraceID) + len(e.SpanID) +
			len(e.ParentSpanID) + len(e.Outcome) + len(e.Reason) + len(e.FlowName) + keyBytes(e.Keys)
		for _, l := range e.Links {
			n += 2 + len(l.TraceID) + len(l.SpanID)
		}
	}
	for i := range r.hops {
		h := &r.hops[i]
		n += 64 + len(h.FlowID) + len(h.HopID) + len(h.ParentHopID) + len(h.System) + len(h.Producer) +
			len(h.Destination) + len(h.Consumer) + len(h.ConsumerGroup) + len(h.Operation) + len(h.MessageID) +
			len(h.TraceID) + len(h.Outcome) + len(h.Reason)
	}
	for i := range r.flows {
		f := &r.flows[i]
		n += 48 + len(f.ID) + len(f.Name) + len(f.Status) + keyBytes(f.Keys)
		for _, id := range f.CriticalPath {
			n += 1 + len(id)
		}
	}
	for i := range r.backlog {
		b := &r.backlog[i]
		n += 64 + len(b.System) + len(b.Broker) + len(b.Destination) + len(b.ConsumerGroup)
	}
	return n
}

func keyBytes(keys []model.Key) int {
	n := 1
	for _, k := range keys {
		n += 2 + len(k.Kind) + len(k.Value)
	}
	return n
}

// MergeSplit adds other's rows to r, then cuts the whole into requests of
// at most maxSize rows (none when maxSize is 0), the last the smallest.
func (r *rows) MergeSplit(_ context.Context, maxSize int, sizer exporterhelper.RequestSizerType, other xexporterhelper.Request) ([]xexporterhelper.Request, error) {
	if sizer != exporterhelper.RequestSizerTypeItems {
		return nil, fmt.Errorf("clickhouse exporter: batches are sized in items, not %s", sizer.String())
	}
	if other != nil {
		o, ok := other.(*rows)
		if !ok {
			return nil, fmt.Errorf("clickhouse exporter: cannot merge a %T", other)
		}
		o.gather()
		r.merged = append(r.merged, o)
		r.mergedItems += o.ItemsCount()
		r.bytes = 0
	}
	if maxSize <= 0 || r.ItemsCount() <= maxSize {
		return []xexporterhelper.Request{r}, nil
	}
	r.gather()
	var parts []xexporterhelper.Request
	rest := *r
	for rest.ItemsCount() > 0 {
		part, room := &rows{}, maxSize
		part.events, rest.events = cut(rest.events, &room)
		part.hops, rest.hops = cut(rest.hops, &room)
		part.flows, rest.flows = cut(rest.flows, &room)
		part.backlog, rest.backlog = cut(rest.backlog, &room)
		parts = append(parts, part)
	}
	return parts, nil
}

// cut takes up to *room elements off the front of s.
func cut[T any](s []T, room *int) (head, tail []T) {
	n := min(len(s), *room)
	*room -= n
	if n == 0 {
		return nil, s
	}
	return s[:n:n], s[n:]
}

// rowsEncoding stores rows in the sending queue: a format version, the four
// counts, then each row in modelcodec's encoding.
type rowsEncoding struct{}

const rowsFormat = 1

var _ exporterhelper.QueueBatchEncoding[xexporterhelper.Request] = rowsEncoding{}

func (rowsEncoding) Marshal(_ context.Context, req xexporterhelper.Request) ([]byte, error) {
	r, ok := req.(*rows)
	if !ok {
		return nil, fmt.Errorf("clickhouse exporter: cannot queue a %T", req)
	}
	r.gather()
	buf := make([]byte, 0, r.BytesSize())
	buf = append(buf, rowsFormat)
	for _, n := range []int{len(r.events), len(r.hops), len(r.flows), len(r.backlog)} {
		buf = modelcodec.AppendUvarint(buf, uint64(n))
	}
	for i := range r.events {
		buf = modelcodec.AppendEvent(buf, &r.events[i])
	}
	for i := range r.hops {
		buf = modelcodec.AppendHop(buf, &r.hops[i])
	}
	for i := range r.flows {
		buf = modelcodec.AppendFlow(buf, &r.flows[i])
	}
	for i := range r.backlog {
		buf = modelcodec.AppendBacklogSample(buf, &r.backlog[i])
	}
	return buf, nil
}

var errUnknownFormat = errors.New("clickhouse exporter: queued rows of an unknown format")

func (rowsEncoding) Unmarshal(b []byte) (context.Context, xexporterhelper.Request, error) {
	ctx := context.Background()
	if len(b) == 0 || b[0] != rowsFormat {
		return ctx, nil, errUnknownFormat
	}
	d := modelcodec.NewDecoder(b[1:])
	r := &rows{}
	nEvents, nHops, nFlows, nBacklog := d.Count(), d.Count(), d.Count(), d.Count()
	if nEvents+nHops+nFlows+nBacklog > d.Len() {
		return ctx, nil, modelcodec.ErrCorrupt
	}
	r.events = make([]model.Event, nEvents)
	for i := range r.events {
		d.Event(&r.events[i])
	}
	r.hops = make([]model.Hop, nHops)
	for i := range r.hops {
		d.Hop(&r.hops[i])
	}
	r.flows = make([]model.Flow, nFlows)
	for i := range r.flows {
		d.Flow(&r.flows[i])
	}
	r.backlog = make([]model.BacklogSample, nBacklog)
	for i := range r.backlog {
		d.BacklogSample(&r.backlog[i])
	}
	if d.Err() != nil || d.Len() != 0 {
		return ctx, nil, modelcodec.ErrCorrupt
	}
	return ctx, r, nil
}
