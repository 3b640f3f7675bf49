package chstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

// benchEvents makes n realistic events: publish/deliver/process/settle of
// n/4 messages over a handful of destinations and services.
func benchEvents(n int, batch int) []model.Event {
	kinds := []model.EventKind{model.EventPublish, model.EventDeliver, model.EventProcess, model.EventSettle}
	events := make([]model.Event, n)
	for i := range events {
		msg := (batch*n + i) / 4
		events[i] = model.Event{
			Time:          t0.Add(time.Duration(batch*n+i) * time.Millisecond),
			Kind:          kinds[i%4],
			System:        "kafka",
			Destination:   fmt.Sprintf("orders-%d", msg%8),
			Partition:     fmt.Sprint(msg % 6),
			MessageID:     fmt.Sprintf("orders-%d/%d/%d", msg%8, msg%6, msg),
			Attempt:       1,
			Service:       fmt.Sprintf("svc-%d", msg%5),
			ConsumerGroup: "billing",
			TraceID:       fmt.Sprintf("%032x", msg),
			SpanID:        fmt.Sprintf("%016x", i),
			Keys:          []model.Key{{Kind: "order_id", Value: fmt.Sprintf("order-%d", msg)}},
			BodySize:      512,
			Duration:      time.Duration(i%1000) * time.Microsecond,
		}
	}
	return events
}

// BenchmarkWriteEvents reports events inserted per second into the embedded
// engine, per batch size. Run on one core with:
//
//	taskset -c 0 go test -run '^$' -bench WriteEvents -cpu 1 ./storage/chstore
func BenchmarkWriteEvents(b *testing.B) {
	for _, size := range []int{1_000, 10_000, 100_000} {
		b.Run(fmt.Sprintf("batch=%d", size), func(b *testing.B) {
			schema := chstore.Schema{Database: fmt.Sprintf("bench_events_%d", size)}
			st, err := chstore.New(engine, schema)
			require.NoError(b, err)
			require.NoError(b, st.Migrate(context.Background()))
			b.Cleanup(func() { _ = engine.Exec(context.Background(), "DROP DATABASE IF EXISTS "+schema.Database, nil) })
			// Distinct batches, made before timing, so deduplication never
			// skips one.
			batches := make([][]model.Event, 8)
			for i := range batches {
				batches[i] = benchEvents(size, i)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				batch := batches[i%len(batches)]
				if i >= len(batches) {
					// Shift times so the batch is new content.
					for j := range batch {
						batch[j].Time = batch[j].Time.Add(time.Hour)
					}
				}
				if err := st.WriteEvents(context.Background(), batch); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(size)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
