package clickhouseexporter

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator/records"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/model/modelcodec"
)

// Spans and batch records are queued still encoded, and decode, when
// written or cut, to the rows decoding them at once gives.
func TestSectionsQueueAsRows(t *testing.T) {
	ctx := context.Background()
	e, err := newExporter(createDefaultConfig(), componenttest.NewNopTelemetrySettings())
	require.NoError(t, err)
	ld, versions := benchRecords(3)
	wantHops, wantFlows, err := records.DecodeBatch(ld.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords().At(0), nil, nil)
	require.NoError(t, err)
	traces, _ := e.eventRows(ctx, benchSpans(2))
	require.Len(t, traces.sections, 1)
	require.NoError(t, traces.gather())
	wantEvents := traces.events
	require.Len(t, wantEvents, 12, "six spans a flow")

	fresh := func() *rows {
		r, bad := e.recordRows(ctx, ld)
		require.Empty(t, bad)
		require.Len(t, r.sections, 2, "hops and flows, still encoded")
		assert.Equal(t, versions, r.ItemsCount())
		spans, _ := e.eventRows(ctx, benchSpans(2))
		_, err := r.MergeSplit(ctx, 0, exporterhelper.RequestSizerTypeItems, spans)
		require.NoError(t, err)
		return r
	}

	// Through the queue's storage.
	encoded, err := rowsEncoding{}.Marshal(ctx, fresh())
	require.NoError(t, err)
	_, queued, err := rowsEncoding{}.Unmarshal(encoded)
	require.NoError(t, err)
	assert.Equal(t, wantEvents, queued.(*rows).events)
	assert.Equal(t, wantHops, queued.(*rows).hops)
	assert.Equal(t, wantFlows, queued.(*rows).flows)

	// In memory, as the push reads them.
	r := fresh()
	require.NoError(t, r.gather())
	assert.Equal(t, wantEvents, r.events)
	assert.Equal(t, wantHops, r.hops)
	assert.Equal(t, wantFlows, r.flows)
	assert.Empty(t, r.sections)

	// Cut into parts: every row in exactly one.
	parts, err := fresh().MergeSplit(ctx, 7, exporterhelper.RequestSizerTypeItems, nil)
	require.NoError(t, err)
	var events []model.Event
	var hops []model.Hop
	for _, p := range parts {
		assert.LessOrEqual(t, p.ItemsCount(), 7)
		events, hops = append(events, p.(*rows).events...), append(hops, p.(*rows).hops...)
	}
	assert.Equal(t, wantEvents, events)
	assert.Equal(t, wantHops, hops)

	broken := &rows{sections: []section{{kind: hopRows, count: 1, data: []byte{1}}}}
	assert.ErrorIs(t, broken.gather(), modelcodec.ErrCorrupt, "a section that does not decode is an error, not a panic")
}

// BenchmarkQueueing is what the exporter does to data before the sending
// queue stores it: spans read into events, or a correlator batch record
// read, then either encoded for the queue; and after: queued requests read
// back and merged into a batch, decoded for the write. Per span or record
// version:
//
//	go test -run '^$' -bench Queueing -cpu 1 ./exporters/clickhouseexporter
func BenchmarkQueueing(b *testing.B) {
	e, err := newExporter(createDefaultConfig(), componenttest.NewNopTelemetrySettings())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.Run("spans", func(b *testing.B) {
		td := benchSpans(200)
		b.ReportAllocs()
		for b.Loop() {
			r, _ := e.eventRows(ctx, td)
			if _, err := (rowsEncoding{}).Marshal(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*td.SpanCount())/b.Elapsed().Seconds(), "spans/s")
	})
	b.Run("from the queue", func(b *testing.B) {
		// A batch as the push gets it: queued requests of 1,200 spans read
		// back from the queue's storage, merged up to 100,000 rows, decoded.
		r, _ := e.eventRows(ctx, benchSpans(200))
		queued, err := rowsEncoding{}.Marshal(ctx, r)
		if err != nil {
			b.Fatal(err)
		}
		const requests = 100_000 / 1_200
		b.ReportAllocs()
		for b.Loop() {
			batch := &rows{}
			for range requests {
				_, req, err := rowsEncoding{}.Unmarshal(queued)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := batch.MergeSplit(ctx, 100_000, exporterhelper.RequestSizerTypeItems, req); err != nil {
					b.Fatal(err)
				}
			}
			if err := batch.gather(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*requests*1_200)/b.Elapsed().Seconds(), "spans/s")
	})
	b.Run("records", func(b *testing.B) {
		ld, versions := benchRecords(1000)
		b.ReportAllocs()
		for b.Loop() {
			r, bad := e.recordRows(ctx, ld)
			if len(bad) > 0 {
				b.Fatal(bad[0])
			}
			if _, err := (rowsEncoding{}).Marshal(ctx, r); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*versions)/b.Elapsed().Seconds(), "versions/s")
	})
}

// benchSpans makes the spans of n two-hop flows, as the load test sends
// them: send, receive and process of each hop.
func benchSpans(n int) ptrace.Traces {
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	td := ptrace.NewTraces()
	spans := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans()
	for f := range n {
		for _, dest := range []string{"orders", "invoices"} {
			msg := fmt.Sprintf("%s-%d", dest, f)
			for i, op := range []string{"send", "receive", "process"} {
				span := spans.AppendEmpty()
				span.SetTraceID(pcommon.TraceID{byte(f), byte(f >> 8), 1})
				span.SetSpanID(pcommon.SpanID{byte(f), byte(f >> 8), byte(i)})
				span.SetKind(ptrace.SpanKindConsumer)
				if op == "send" {
					span.SetKind(ptrace.SpanKindProducer)
				}
				span.SetStartTimestamp(pcommon.NewTimestampFromTime(at))
				span.SetEndTimestamp(pcommon.NewTimestampFromTime(at.Add(time.Millisecond)))
				a := span.Attributes()
				a.PutStr("messaging.system", "kafka")
				a.PutStr("messaging.operation.type", op)
				a.PutStr("messaging.destination.name", dest)
				a.PutStr("messaging.message.id", msg)
			}
		}
	}
	return td
}

// benchRecords makes one batch record of n flows of two hops, a version
// each, and returns it with its number of versions.
func benchRecords(n int) (plog.Logs, int) {
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	var hops []model.Hop
	var flows []model.Flow
	for f := range n {
		id := fmt.Sprintf("%016x", f)
		trace := fmt.Sprintf("%032x", f)
		for h, dest := range []string{"orders", "invoices"} {
			hops = append(hops, model.Hop{
				FlowID: id, HopID: fmt.Sprintf("%016x", 2*f+h), Version: 1, FirstSeen: at, System: "kafka",
				Producer: "checkout", Destination: dest, Consumer: "billing", ConsumerGroup: "billing",
				MessageID: fmt.Sprintf("%s-%d", dest, f), TraceID: trace, PublishTime: at, DeliverTime: at,
				SettleTime: at, QueueWait: time.Millisecond, Processing: 2 * time.Millisecond, Attempts: 1,
				Outcome: model.HopAcked, Counted: true,
			})
		}
		flows = append(flows, model.Flow{
			ID: id, Version: 1, FirstSeen: at, Name: "checkout orders", Status: model.FlowRunning, Start: at, End: at,
			HopCount: 2, Keys: []model.Key{{Kind: "trace_id", Value: trace}, {Kind: "message_id", Value: "orders-" + id},
				{Kind: "message_id", Value: "invoices-" + id}},
			CriticalPath: []string{hops[len(hops)-2].HopID, hops[len(hops)-1].HopID},
		})
	}
	ld := plog.NewLogs()
	records.AppendBatch(ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords(), hops, flows, at)
	return ld, len(hops) + len(flows)
}
