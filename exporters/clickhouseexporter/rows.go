package clickhouseexporter

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cespare/xxhash/v2"
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

	// sections are rows still in modelcodec's encoding, as spans were read
	// or batch records came: the queue stores them as they are, and they
	// are decoded only to be written. They follow the rows above.
	sections []section

	// merged are the requests a batch gathered and has not copied into the
	// slices above yet: each row is copied once, when the batch is written
	// or cut, into slices of the batch's final size. Growing the slices
	// request by request instead allocated a fifth of all bytes under load.
	merged      []*rows
	mergedItems int // the rows of merged

	// item is a hash of the bytes the sending queue held these rows in,
	// zero for rows that are not one queued item as it was: it is how a
	// replay after a restart knows an item it wrote already. items are
	// those of the parts of a batch, kept for its retries.
	item  uint64
	items []uint64
}

// section is count rows of one kind in modelcodec's encoding, one after
// another.
type section struct {
	kind  rowKind
	count int
	data  []byte
}

type rowKind uint8

const (
	eventRows rowKind = iota
	hopRows
	flowRows
	backlogRows
)

var _ xexporterhelper.Request = (*rows)(nil)

func (r *rows) ItemsCount() int {
	n := r.mergedItems
	for kind := range backlogRows + 1 {
		n += r.count(kind)
	}
	return n
}

// BytesSize estimates the encoded size: the strings, and a bound on the rest.
func (r *rows) BytesSize() int {
	if r.bytes == 0 {
		r.bytes = r.countBytes()
		for _, s := range r.sections {
			r.bytes += len(s.data)
		}
		for _, m := range r.merged {
			r.bytes += m.BytesSize()
		}
	}
	return r.bytes
}

// addSection adds a section of rows, if it has any.
func (r *rows) addSection(s section) {
	if s.count > 0 {
		r.sections = append(r.sections, s)
		r.bytes = 0
	}
}

// parts are r and the requests merged into it, in order.
func (r *rows) parts() []*rows {
	return append([]*rows{r}, r.merged...)
}

// gather copies the merged requests' rows into r's own slices and decodes
// every section, each row once, into slices of the final size. An error
// means a section that does not decode: rows are checked as they are read,
// so it is a defect, not bad input.
func (r *rows) gather() error {
	if len(r.merged) == 0 && len(r.sections) == 0 {
		return nil
	}
	parts := r.parts()
	events, err1 := gatherKind(parts, eventRows, eventsOf, (*modelcodec.Decoder).Event)
	hops, err2 := gatherKind(parts, hopRows, hopsOf, (*modelcodec.Decoder).Hop)
	flows, err3 := gatherKind(parts, flowRows, flowsOf, (*modelcodec.Decoder).Flow)
	backlog, err4 := gatherKind(parts, backlogRows, backlogOf, (*modelcodec.Decoder).BacklogSample)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return err
	}
	r.events, r.hops, r.flows, r.backlog = events, hops, flows, backlog
	if len(r.merged) > 0 {
		r.item = 0 // no longer one item
	}
	clear(r.merged)
	r.merged, r.mergedItems, r.sections = nil, 0, nil
	return nil
}

// itemHashes are the items of r's parts, as the sending queue held them.
func (r *rows) itemHashes() []uint64 {
	items := []uint64{}
	for _, p := range r.parts() {
		if p.item != 0 {
			items = append(items, p.item)
		}
	}
	return items
}

// without is r less the parts that are queued items drop names: r itself
// when it drops none.
func (r *rows) without(drop func(item uint64) bool) *rows {
	parts := r.parts()
	var kept []*rows
	for _, p := range parts {
		if p.item == 0 || !drop(p.item) {
			kept = append(kept, p)
		}
	}
	switch len(kept) {
	case len(parts):
		return r
	case 0:
		return &rows{}
	}
	head := *kept[0]
	head.merged, head.mergedItems, head.bytes = kept[1:], 0, 0
	for _, p := range kept[1:] {
		head.mergedItems += p.ItemsCount()
	}
	return &head
}

// gatherKind puts the rows of one kind of every part together: each part's
// own rows, then its sections' rows decoded.
func gatherKind[T any](parts []*rows, kind rowKind, own func(*rows) []T, decode func(*modelcodec.Decoder, *T)) ([]T, error) {
	first := own(parts[0])
	n := total(parts, kind)
	if n == len(first) {
		return first, nil
	}
	all := slices.Grow(first, n-len(first))
	for i, p := range parts {
		if i > 0 {
			all = append(all, own(p)...)
		}
		for _, s := range p.sections {
			if s.kind != kind {
				continue
			}
			d := modelcodec.NewDecoder(s.data)
			for range s.count {
				var zero T
				all = append(all, zero)
				decode(d, &all[len(all)-1])
			}
			if d.Err() != nil || d.Len() != 0 {
				return first, fmt.Errorf("clickhouse exporter: a section of %d rows: %w", s.count, modelcodec.ErrCorrupt)
			}
		}
	}
	return all, nil
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
		// o's parts join r's as they are: their sections are decoded
		// once, into the batch's final slices, when it is written or cut.
		r.mergedItems += o.ItemsCount()
		r.merged = append(append(r.merged, o), o.merged...)
		o.merged, o.mergedItems, o.bytes = nil, 0, 0
		r.bytes = 0
	}
	if maxSize <= 0 || r.ItemsCount() <= maxSize {
		return []xexporterhelper.Request{r}, nil
	}
	if err := r.gather(); err != nil {
		return nil, err
	}
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
	// Rows in the order gather puts them; sections are copied as they are.
	parts := r.parts()
	buf := make([]byte, 0, r.BytesSize())
	buf = append(buf, rowsFormat)
	for kind := range backlogRows + 1 {
		buf = modelcodec.AppendUvarint(buf, uint64(total(parts, kind)))
	}
	buf = appendKind(buf, parts, eventRows, eventsOf, modelcodec.AppendEvent)
	buf = appendKind(buf, parts, hopRows, hopsOf, modelcodec.AppendHop)
	buf = appendKind(buf, parts, flowRows, flowsOf, modelcodec.AppendFlow)
	buf = appendKind(buf, parts, backlogRows, backlogOf, modelcodec.AppendBacklogSample)
	return buf, nil
}

// The decoded rows of each kind that a request holds itself.
func eventsOf(r *rows) []model.Event          { return r.events }
func hopsOf(r *rows) []model.Hop              { return r.hops }
func flowsOf(r *rows) []model.Flow            { return r.flows }
func backlogOf(r *rows) []model.BacklogSample { return r.backlog }

// total is the number of rows of one kind in all parts.
func total(parts []*rows, kind rowKind) int {
	n := 0
	for _, p := range parts {
		n += p.count(kind)
	}
	return n
}

// count is the number of rows of one kind r holds itself, sections
// included.
func (r *rows) count(kind rowKind) int {
	n := [...]int{len(r.events), len(r.hops), len(r.flows), len(r.backlog)}[kind]
	for _, s := range r.sections {
		if s.kind == kind {
			n += s.count
		}
	}
	return n
}

// appendKind encodes the rows of one kind of every part: each part's own
// rows, then its sections' bytes.
func appendKind[T any](buf []byte, parts []*rows, kind rowKind, own func(*rows) []T, encode func([]byte, *T) []byte) []byte {
	for _, p := range parts {
		rows := own(p)
		for i := range rows {
			buf = encode(buf, &rows[i])
		}
		for _, s := range p.sections {
			if s.kind == kind {
				buf = append(buf, s.data...)
			}
		}
	}
	return buf
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
	r.item = xxhash.Sum64(b)
	return ctx, r, nil
}
