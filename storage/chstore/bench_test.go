package chstore_test

import (
	"context"
	"fmt"
	"slices"
	"syscall"
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

// BenchmarkWriteSecond writes what one second of the end-to-end load test
// stores at 40,000 spans/s (two-hop flows, six spans each): the events, a
// version of each hop and of each flow, with their keys. It reports the CPU
// the whole process spent (ClickHouse's threads included) and the time spent
// writing each table, per span. Run on one core, merges included, with:
//
//	taskset -c 0 go test -run '^$' -bench WriteSecond -cpu 1 -benchtime 30x ./storage/chstore
func BenchmarkWriteSecond(b *testing.B) {
	const spans = 40_000
	schema := chstore.Schema{Database: "bench_second"}
	st, err := chstore.New(engine, schema)
	require.NoError(b, err)
	require.NoError(b, st.Migrate(context.Background()))
	b.Cleanup(func() { _ = engine.Exec(context.Background(), "DROP DATABASE IF EXISTS "+schema.Database, nil) })
	type second struct {
		events []model.Event
		hops   []model.Hop
		flows  []model.Flow
	}
	seconds := make([]second, b.N)
	for i := range seconds {
		seconds[i].events = benchEvents(spans, i)
		seconds[i].hops, seconds[i].flows = benchFlows(spans/6, i)
	}
	tables := map[string]time.Duration{}
	timed := func(table string, write func() error) {
		start := time.Now()
		if err := write(); err != nil {
			b.Fatal(err)
		}
		tables[table] += time.Since(start)
	}
	cpu := processCPU(b)
	b.ResetTimer()
	for _, s := range seconds {
		timed("events", func() error { return st.WriteEvents(context.Background(), s.events) })
		timed("hops", func() error { return st.WriteHops(context.Background(), s.hops) })
		timed("flows", func() error { return st.WriteFlows(context.Background(), s.flows) })
	}
	b.StopTimer()
	perSpan := func(d time.Duration) float64 { return d.Seconds() / float64(b.N*spans) * 1e6 }
	b.ReportMetric(perSpan(processCPU(b)-cpu), "cpu-µs/span")
	for table, d := range tables {
		b.ReportMetric(perSpan(d), "µs/span-"+table)
	}
}

// BenchmarkSmallInsert reports what an insert costs the whole process in
// CPU before its rows do: 100 flows' hops (200 rows, the edges_1m view
// included) and then the 100 flows, each insert a part of its own. The
// engine's directory follows TMPDIR, so the same run on two filesystems
// shows what creating a part's files costs on each:
//
//	TMPDIR=/mnt/other taskset -c 0 go test -run '^$' -bench SmallInsert -benchtime 100x ./storage/chstore
func BenchmarkSmallInsert(b *testing.B) {
	ctx := context.Background()
	schema := chstore.Schema{Database: "bench_small_insert"}
	st, err := chstore.New(engine, schema)
	require.NoError(b, err)
	require.NoError(b, st.Migrate(ctx))
	b.Cleanup(func() { _ = engine.Exec(ctx, "DROP DATABASE IF EXISTS "+schema.Database, nil) })
	inserts := make([]struct {
		hops  []model.Hop
		flows []model.Flow
	}, b.N)
	for i := range inserts {
		inserts[i].hops, inserts[i].flows = benchFlows(100, i)
	}
	totals := map[string]time.Duration{}
	b.ResetTimer()
	for _, in := range inserts {
		timedCPU(b, totals, "hops", func() error { return st.WriteHops(ctx, in.hops) })
		timedCPU(b, totals, "flows", func() error { return st.WriteFlows(ctx, in.flows) })
	}
	for table, d := range totals {
		b.ReportMetric(d.Seconds()*1e3/float64(b.N), "cpu-ms/insert-"+table)
	}
}

// benchFlows makes n two-hop flows, a version each, of second i.
func benchFlows(n, i int) ([]model.Hop, []model.Flow) {
	at := t0.Add(time.Duration(i) * time.Second)
	hops := make([]model.Hop, 0, 2*n)
	flows := make([]model.Flow, 0, n)
	for f := range n {
		id := fmt.Sprintf("%d-%d", i, f)
		trace := fmt.Sprintf("%032x", i*n+f)
		for h, dest := range []string{"orders", "invoices"} {
			hops = append(hops, model.Hop{
				FlowID: "f" + id, HopID: fmt.Sprintf("h%s-%d", id, h), Version: 1, FirstSeen: at, System: "kafka",
				Producer: "checkout", Destination: dest, Consumer: "billing", ConsumerGroup: "billing",
				MessageID: dest + "-" + id, TraceID: trace, PublishTime: at, DeliverTime: at,
				SettleTime: at, QueueWait: time.Millisecond, Processing: 2 * time.Millisecond, Attempts: 1,
				Outcome: model.HopAcked, Counted: true,
			})
		}
		flows = append(flows, model.Flow{
			ID: "f" + id, Version: 1, FirstSeen: at, Name: "checkout orders", Status: model.FlowRunning,
			Start: at, End: at, HopCount: 2, Keys: []model.Key{{Kind: "trace_id", Value: trace},
				{Kind: "message_id", Value: "orders-" + id}, {Kind: "message_id", Value: "invoices-" + id}},
		})
	}
	return hops, flows
}

// processCPU is the CPU time the whole process has used, every thread.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInsertAndMerge reports what each table costs the whole process
// in CPU, background merges stopped: inserting one second of the end-to-end
// load at 40,000 spans/s (40,000 events, 13,334 hops, 13,334 flow versions:
// each flow twice, as it starts and as it finishes), then merging ten such
// seconds into one part per table. Run with:
//
//	go test -run '^$' -bench InsertAndMerge -benchtime 3x ./storage/chstore
func BenchmarkInsertAndMerge(b *testing.B) {
	const seconds = 10
	insert, merge := insertAndMerge(b, 1, seconds)
	for _, table := range mergedTables {
		if d, ok := insert[table]; ok {
			b.ReportMetric(float64(d.Milliseconds())/float64(b.N*seconds), "ms-insert-"+table)
		}
		b.ReportMetric(float64(merge[table].Milliseconds())/float64(b.N), "ms-merge10-"+table)
	}
}

// BenchmarkMergeLevels reports what merging ten parts costs per second of
// the same load, once for parts of one second each (the first merge after
// inserts) and once for parts of ten seconds each (the second, merging what
// the first made): whether a row costs as much at every level it is
// rewritten. Run with:
//
//	go test -run '^$' -bench MergeLevels -benchtime 1x ./storage/chstore
func BenchmarkMergeLevels(b *testing.B) {
	for level, seconds := range []int{1, 10} {
		b.Run(fmt.Sprintf("level=%d", level+1), func(b *testing.B) {
			_, merge := insertAndMerge(b, seconds, 10)
			for _, table := range mergedTables {
				b.ReportMetric(float64(merge[table].Milliseconds())/float64(b.N*10*seconds), "ms-merge-per-s-"+table)
			}
		})
	}
}

// mergedTables are the tables insertAndMerge times, edges_1m filled by its
// view on hops.
var mergedTables = []string{"events", "hops", "flows", "edges_1m"}

// insertAndMerge inserts, b.N times into a fresh database with background
// merges stopped, parts parts of the load at 40,000 spans/s, each holding
// seconds of it, then merges each table's parts into one. It returns the
// process CPU each table took to insert and to merge.
func insertAndMerge(b *testing.B, seconds, parts int) (insert, merge map[string]time.Duration) {
	const spans = 40_000
	ctx := context.Background()
	insert, merge = map[string]time.Duration{}, map[string]time.Duration{}
	for n := range b.N {
		schema := chstore.Schema{Database: fmt.Sprintf("bench_insert_merge_%d", n)}
		st, err := chstore.New(engine, schema)
		require.NoError(b, err)
		require.NoError(b, st.Migrate(ctx))
		for _, table := range mergedTables {
			require.NoError(b, engine.Exec(ctx, "SYSTEM STOP MERGES "+schema.Database+"."+table, nil))
		}
		for i := range parts {
			events := benchEvents(seconds*spans, i)
			hops, flows := benchFlows(seconds*spans/6, i)
			finished := slices.Clone(flows)
			for j := range finished {
				finished[j].Version, finished[j].Status = 2, model.FlowCompleted
			}
			flows = append(flows, finished...)
			timedCPU(b, insert, "events", func() error { return st.WriteEvents(ctx, events) })
			timedCPU(b, insert, "hops", func() error { return st.WriteHops(ctx, hops) }) // edges_1m's view included
			timedCPU(b, insert, "flows", func() error { return st.WriteFlows(ctx, flows) })
		}
		for _, table := range mergedTables {
			name := schema.Database + "." + table
			require.NoError(b, engine.Exec(ctx, "SYSTEM START MERGES "+name, nil))
			timedCPU(b, merge, table, func() error { return engine.Exec(ctx, "OPTIMIZE TABLE "+name+" FINAL", nil) })
		}
		require.NoError(b, engine.Exec(ctx, "DROP DATABASE "+schema.Database, nil))
	}
	return insert, merge
}

// timedCPU adds the process CPU that do took to totals[name].
func timedCPU(b *testing.B, totals map[string]time.Duration, name string, do func() error) {
	b.Helper()
	before := processCPU(b)
	require.NoError(b, do())
	totals[name] += processCPU(b) - before
}
