package rabbitmqtapreceiver

import (
	"testing"
	"time"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// BenchmarkDecodeFrame decodes the captured frames.
func BenchmarkDecodeFrame(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := &frames[i%len(frames)]
		if _, err := decodeFrame(d.RoutingKey, d.Headers, d.Body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

// BenchmarkFramesToSpans is the tap's whole path for one frame, without
// the broker: decode, track, and build the spans, in batches of 1000.
func BenchmarkFramesToSpans(b *testing.B) {
	frames := loadFrames(b)
	tr := newTracker("own", false, 100000, func(error) {})
	spans := tap.NewSpans(systemRabbitMQ, "bench")
	now := time.Unix(1795000000, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := &frames[i%len(frames)]
		f, err := decodeFrame(d.RoutingKey, d.Headers, d.Body)
		if err != nil {
			b.Fatal(err)
		}
		_ = tr.frame("/", &f, now)
		for _, o := range tr.take() {
			_ = spans.Add(&o)
		}
		if spans.Len() >= 1000 {
			spans.Take()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}
