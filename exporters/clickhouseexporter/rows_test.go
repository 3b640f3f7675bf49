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
	parts, err := a.MergeSplit(ctx, 0, exporterhelper.RequestSizerTypeItems, b)
	require.NoError(t, err)
	require.Len(t, parts, 1, "no limit, no split")
	assert.Equal(t, 20, parts[0].ItemsCount())

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

func TestAppendRowsGrowsTowardsTheBatch(t *testing.T) {
	small := appendRows([]int(nil), []int{1, 2}, 100_000)
	assert.Equal(t, []int{1, 2}, small)
	assert.LessOrEqual(t, cap(small), 16, "a few rows stay small")

	big := appendRows(make([]int, 20_000), make([]int, 1_000), 100_000)
	assert.Len(t, big, 21_000)
	assert.GreaterOrEqual(t, cap(big), 100_000, "grown to the batch at once")
	assert.Less(t, cap(big), 110_000, "and not far past it")
	again := appendRows(big, make([]int, 1_000), 100_000)
	assert.Equal(t, &big[0], &again[0], "no copy while there is room")

	unbounded := appendRows(make([]int, 10), make([]int, 10), 0)
	assert.GreaterOrEqual(t, cap(unbounded), 20)
}

// BenchmarkMergeSplit gathers a batch as the sending queue does: requests of
// 1,200 spans' rows merged one by one up to 100,000.
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
	}
	b.ReportMetric(float64(b.N*len(parts)*request)/b.Elapsed().Seconds(), "rows/s")
}
