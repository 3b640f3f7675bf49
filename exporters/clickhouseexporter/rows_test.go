package clickhouseexporter

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"

	"github.com/flowtrace/flowtrace/model"
)

func sampleRows(n int) *rows {
	at := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	r := &rows{}
	for i := range n {
		id := fmt.Sprint(i)
		r.events = append(r.events, model.Event{Time: at, Kind: model.EventPublish, System: "kafka", Destination: "orders",
			MessageID: "m" + id, Keys: []model.Key{{Kind: "order_id", Value: id}}, Links: []model.SpanRef{{TraceID: "t", SpanID: id}}})
		r.hops = append(r.hops, model.Hop{FlowID: "f" + id, HopID: "h" + id, Version: 1, FirstSeen: at, Outcome: model.HopAcked})
		r.flows = append(r.flows, model.Flow{ID: "f" + id, Version: 1, FirstSeen: at, Status: model.FlowRunning, CriticalPath: []string{"h" + id}})
		r.backlog = append(r.backlog, model.BacklogSample{Time: at, System: "kafka", Destination: "orders", Depth: int64(i), LagSeconds: 0.5})
	}
	return r
}

func TestRowsRoundTripThroughTheQueueEncoding(t *testing.T) {
	r := sampleRows(3)
	b, err := rowsEncoding{}.Marshal(context.Background(), r)
	require.NoError(t, err)
	assert.InDelta(t, len(b), r.BytesSize(), float64(len(b)), "the size estimate is of the right order")
	ctx, got, err := rowsEncoding{}.Unmarshal(b)
	require.NoError(t, err)
	require.NotNil(t, ctx)
	assert.Equal(t, r.events, got.(*rows).events)
	assert.Equal(t, r.hops, got.(*rows).hops)
	assert.Equal(t, r.flows, got.(*rows).flows)
	assert.Equal(t, r.backlog, got.(*rows).backlog)

	for name, bad := range map[string][]byte{
		"empty":          nil,
		"unknown format": append([]byte{9}, b[1:]...),
		"truncated":      b[:len(b)-1],
		"trailing bytes": append(append([]byte(nil), b...), 0),
		"huge counts":    {rowsFormat, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0},
	} {
		_, _, err := rowsEncoding{}.Unmarshal(bad)
		assert.Error(t, err, name)
	}
}

func TestMergeSplitByRows(t *testing.T) {
	ctx := context.Background()
	a, b := sampleRows(2), sampleRows(3) // 8 and 12 rows
	wantEvents := append(slices.Clone(a.events), b.events...)
	wantFlows := append(slices.Clone(a.flows), b.flows...)
	parts, err := a.MergeSplit(ctx, 0, exporterhelper.RequestSizerTypeItems, b)
	require.NoError(t, err)
	require.Len(t, parts, 1, "no limit, no split")
	assert.Equal(t, 20, parts[0].ItemsCount())
	// Queued as it is, merged rows and all, it reads back whole and in order.
	encoded, err := rowsEncoding{}.Marshal(ctx, parts[0])
	require.NoError(t, err)
	_, decoded, err := rowsEncoding{}.Unmarshal(encoded)
	require.NoError(t, err)
	assert.Equal(t, wantEvents, decoded.(*rows).events)
	assert.Equal(t, wantFlows, decoded.(*rows).flows)
	assert.Equal(t, 20, decoded.ItemsCount())

	// A batch merged into another brings the requests it had merged.
	inner, outer := sampleRows(2), sampleRows(1)
	_, err = inner.MergeSplit(ctx, 0, exporterhelper.RequestSizerTypeItems, sampleRows(3))
	require.NoError(t, err)
	_, err = outer.MergeSplit(ctx, 0, exporterhelper.RequestSizerTypeItems, inner)
	require.NoError(t, err)
	assert.Equal(t, 24, outer.ItemsCount())
	require.NoError(t, outer.gather())
	assert.Equal(t, append(append(sampleRows(1).flows, sampleRows(2).flows...), sampleRows(3).flows...), outer.flows, "every row once, in order")

	parts, err = sampleRows(5).MergeSplit(ctx, 6, exporterhelper.RequestSizerTypeItems, sampleRows(1))
	require.NoError(t, err)
	var sizes []int
	var events, hops, flows, backlog int
	for _, p := range parts {
		sizes = append(sizes, p.ItemsCount())
		r := p.(*rows)
		events, hops, flows, backlog = events+len(r.events), hops+len(r.hops), flows+len(r.flows), backlog+len(r.backlog)
	}
	assert.Equal(t, []int{6, 6, 6, 6}, sizes)
	assert.Equal(t, []int{6, 6, 6, 6}, []int{events, hops, flows, backlog}, "every row in exactly one part")

	parts, err = sampleRows(1).MergeSplit(ctx, 3, exporterhelper.RequestSizerTypeItems, nil)
	require.NoError(t, err)
	assert.Equal(t, 1, parts[len(parts)-1].ItemsCount(), "the last part is the smallest")

	_, err = sampleRows(1).MergeSplit(ctx, 3, exporterhelper.RequestSizerTypeBytes, nil)
	assert.ErrorContains(t, err, "sized in items")
	_, err = sampleRows(1).MergeSplit(ctx, 3, exporterhelper.RequestSizerTypeItems, otherRequest{})
	assert.ErrorContains(t, err, "cannot merge")
}

type otherRequest struct{ xexporterhelper.Request }

// FuzzUnmarshalRows: whatever the queue's storage hands back, decoding it
// fails cleanly or yields rows that encode back to the same bytes.
func FuzzUnmarshalRows(f *testing.F) {
	b, err := rowsEncoding{}.Marshal(context.Background(), sampleRows(2))
	require.NoError(f, err)
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, req, err := rowsEncoding{}.Unmarshal(data)
		if err != nil {
			return
		}
		again, err := rowsEncoding{}.Marshal(context.Background(), req)
		require.NoError(t, err)
		_, req2, err := rowsEncoding{}.Unmarshal(again)
		require.NoError(t, err)
		assert.Equal(t, req.ItemsCount(), req2.ItemsCount())
	})
}

// BenchmarkMergeSplit gathers a batch as the sending queue does: requests of
// 1,200 spans' rows merged one by one up to 100,000, then copied together
// as the push does.
func BenchmarkMergeSplit(b *testing.B) {
	const request, batch = 1_200, 100_000
	parts := make([]*rows, batch/request)
	for i := range parts {
		parts[i] = &rows{events: sampleRows(1).events[:1:1]}
		parts[i].events = slices.Repeat(parts[i].events, request)
	}
	b.ReportAllocs()
	for b.Loop() {
		acc := &rows{}
		for _, p := range parts {
			if _, err := acc.MergeSplit(context.Background(), batch, exporterhelper.RequestSizerTypeItems, p); err != nil {
				b.Fatal(err)
			}
		}
		acc.gather()
	}
	b.ReportMetric(float64(b.N*len(parts)*request)/b.Elapsed().Seconds(), "rows/s")
}

// queuedItem is sampleRows(n) as the sending queue hands it back: read
// from its bytes, so it knows its item.
func queuedItem(t *testing.T, n int) *rows {
	t.Helper()
	b, err := rowsEncoding{}.Marshal(context.Background(), sampleRows(n))
	require.NoError(t, err)
	_, r, err := rowsEncoding{}.Unmarshal(b)
	require.NoError(t, err)
	return r.(*rows)
}

// queuedBatch is the queued items sampleRows(n) for each of ns, merged into
// a batch as the sending queue's batcher does.
func queuedBatch(t *testing.T, ns ...int) *rows {
	t.Helper()
	var head xexporterhelper.Request = queuedItem(t, ns[0])
	for _, n := range ns[1:] {
		merged, err := head.MergeSplit(context.Background(), 0, exporterhelper.RequestSizerTypeItems, queuedItem(t, n))
		require.NoError(t, err)
		head = merged[0]
	}
	return head.(*rows)
}

// TestWithoutLeavesOutQueuedItems: a batch of three queued items, less the
// ones a replay has written already, whichever part of the batch they are.
func TestWithoutLeavesOutQueuedItems(t *testing.T) {
	batch := func() *rows { return queuedBatch(t, 1, 2, 3) } // 1, 2 and 3 of each kind
	r := batch()
	items := r.itemHashes()
	require.Len(t, items, 3)
	assert.Same(t, r, r.without(func(uint64) bool { return false }))
	for dropped, want := range map[int]int{0: 4 * 5, 1: 4 * 4, 2: 4 * 3} {
		r := batch()
		rest := r.without(func(item uint64) bool { return item == items[dropped] })
		assert.Equal(t, want, rest.ItemsCount(), "without item %d", dropped)
		require.NoError(t, rest.gather())
		assert.Equal(t, 6*4, r.ItemsCount(), "the batch itself is left as it was")
	}
	assert.Zero(t, batch().without(func(uint64) bool { return true }).ItemsCount())
}

// TestDropDoneLeavesOutRepeats: a request the client sent again, not told
// the first was taken, is in the queue twice; the batch holding both
// writes it once, and neither when it was written before the restart.
func TestDropDoneLeavesOutRepeats(t *testing.T) {
	batch := func() *rows { return queuedBatch(t, 1, 2, 1) } // the first again
	g := &replayGuard{doneSet: map[uint64]struct{}{}}
	assert.Equal(t, 4*(1+2), g.dropDone(batch()).ItemsCount(), "the repeat left out")
	g.markDone(queuedItem(t, 1).item)
	assert.Equal(t, 4*2, g.dropDone(batch()).ItemsCount(), "both copies written before")
}
