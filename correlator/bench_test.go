package correlator

import (
	"bytes"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// benchWorkload makes flows of hopsPerFlow hops chained through their
// traces, in time order: publish, deliver, process per hop, and for every
// tenth hop a failed first attempt before the one that succeeds.
func benchWorkload(flows, hopsPerFlow int) []model.Event {
	return benchFlows(0, flows, hopsPerFlow)
}

// benchFlows makes flows [from, to) of benchWorkload.
func benchFlows(from, to, hopsPerFlow int) []model.Event {
	services := []string{"api", "billing", "shipping", "mailer", "audit"}
	events := make([]model.Event, 0, (to-from)*hopsPerFlow*4)
	for f := from; f < to; f++ {
		start := t0.Add(time.Duration(f) * time.Millisecond)
		for h := range hopsPerFlow {
			trace := fmt.Sprintf("%016x%016x", f, h)
			next := fmt.Sprintf("%016x%016x", f, h+1)
			msg := strconv.Itoa(f*hopsPerFlow + h)
			dest := "queue-" + strconv.Itoa(h)
			producer, consumer := services[h%len(services)], services[(h+1)%len(services)]
			pub := start.Add(time.Duration(h) * 10 * time.Millisecond)
			events = append(events,
				model.Event{Time: pub, Kind: model.EventPublish, System: "kafka", Destination: dest, MessageID: msg, Service: producer, TraceID: trace, SpanID: "a"},
				model.Event{Time: pub.Add(time.Millisecond), Kind: model.EventDeliver, System: "kafka", Destination: dest, MessageID: msg, Service: consumer, ConsumerGroup: consumer, TraceID: next, SpanID: "b", Attempt: 1},
			)
			attempt := uint16(1)
			if (f*hopsPerFlow+h)%10 == 0 {
				events = append(events,
					model.Event{Time: pub.Add(2 * time.Millisecond), Kind: model.EventProcess, System: "kafka", Destination: dest, MessageID: msg, Service: consumer, ConsumerGroup: consumer, TraceID: next, SpanID: "c", Attempt: 1, Outcome: "error", Duration: time.Millisecond},
					model.Event{Time: pub.Add(3 * time.Millisecond), Kind: model.EventDeliver, System: "kafka", Destination: dest, MessageID: msg, Service: consumer, ConsumerGroup: consumer, TraceID: next, SpanID: "d", Attempt: 2},
				)
				attempt = 2
			}
			events = append(events, model.Event{Time: pub.Add(4 * time.Millisecond), Kind: model.EventProcess, System: "kafka", Destination: dest, MessageID: msg, Service: consumer, ConsumerGroup: consumer, TraceID: next, SpanID: "e", Attempt: attempt, Duration: 2 * time.Millisecond})
		}
	}
	return events
}

// BenchmarkEngine reports events per second through one engine: 100,000
// flows of 4 hops, 10% of hops retried, flushed every 1,000 events.
//
//	go test -run '^$' -bench Engine -cpu 1 ./correlator
func BenchmarkEngine(b *testing.B) {
	events := benchWorkload(100_000, 4)
	b.ResetTimer()
	for range b.N {
		e, _ := New(Config{})
		now := t0
		for i := range events {
			if i%1000 == 0 {
				now = events[i].Time
				e.Flush()
			}
			e.Add(now, &events[i])
		}
		e.Flush()
	}
	b.ReportMetric(float64(len(events))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// TestMemoryPerHopAndFlow measures the heap the engine holds once 100,000
// flows of 4 hops are in flight, after a GC. Events are made as they are
// added, so the strings the engine keeps count and the rest do not. It logs
// the total per hop and per flow; docs/BENCHMARKS.md splits it by
// allocation site from a heap profile. Run with -v.
func TestMemoryPerHopAndFlow(t *testing.T) {
	if testing.Short() {
		t.Skip("measures a large workload")
	}
	const flows, hopsPerFlow, chunk = 100_000, 4, 1000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e, _ := New(Config{})
	for from := 0; from < flows; from += chunk {
		events := benchFlows(from, from+chunk, hopsPerFlow)
		for i := range events {
			e.Add(t0, &events[i])
		}
		e.Flush()
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := float64(after.HeapAlloc - before.HeapAlloc)
	stats := e.Stats()
	t.Logf("heap held: %.1f MiB for %d flows, %d hops: %.0f B per hop, all state included",
		held/(1<<20), stats.InFlightFlows, stats.InFlightHops, held/float64(stats.InFlightHops))
	runtime.KeepAlive(e)
}

// BenchmarkSharded is BenchmarkEngine through a Sharded of 2 workers, fed by
// one goroutine.
//
//	go test -run '^$' -bench Sharded ./correlator
func BenchmarkSharded(b *testing.B) {
	events := benchWorkload(100_000, 4)
	b.ResetTimer()
	for range b.N {
		s, _ := NewSharded(Config{}, 2)
		now := t0
		for i := range events {
			if i%1000 == 0 {
				now = events[i].Time
				s.Flush()
			}
			s.Add(now, &events[i])
		}
		s.Flush()
		s.Close()
	}
	b.ReportMetric(float64(len(events))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkCheckpoint reports what a checkpoint of 100,000 two-hop flows in
// flight costs while the connector holds the engine (spans wait meanwhile):
// the snapshot, encoded as it is taken, and its size.
//
//	go test -run '^$' -bench Checkpoint -cpu 1 ./correlator
func BenchmarkCheckpoint(b *testing.B) {
	e, _ := New(Config{})
	events := benchWorkload(100_000, 2)
	for i := range events {
		e.Add(t0, &events[i])
	}
	e.Flush()
	var size int
	b.ResetTimer()
	for range b.N {
		var buf bytes.Buffer
		if err := e.Snapshot().Encode(&buf); err != nil {
			b.Fatal(err)
		}
		size = buf.Len()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/checkpoint")
	b.ReportMetric(float64(size)/100_000, "bytes/flow")
}
