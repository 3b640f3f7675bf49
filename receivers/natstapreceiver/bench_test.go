package natstapreceiver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/natstapreceiver/internal/metadata"
)

// BenchmarkDecodeFrames decodes the captured acks and advisories: the
// decoders alone.
func BenchmarkDecodeFrames(b *testing.B) {
	frames := loadFrames(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, f := range frames {
			if strings.HasPrefix(f.Subject, "$JS.ACK.") {
				_, _ = parseAckSubject(f.Subject)
				_, _, _ = parseAckBody([]byte(f.Data))
			} else {
				_, _ = decodeAdvisory([]byte(f.Data))
			}
		}
	}
	b.ReportMetric(float64(b.N*len(frames))/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkFramesToSpans runs the captured frames through the tap's
// handlers into batches of spans, as they arrive from the server: decode,
// observation, span, batch hand-off. "acks" is the frames a busy stream is
// mostly made of; "all" adds the advisories and ack metrics.
func BenchmarkFramesToSpans(b *testing.B) {
	frames := loadFrames(b)
	var all, acks []*nats.Msg
	for _, f := range frames {
		m := &nats.Msg{Subject: f.Subject, Data: []byte(f.Data)}
		all = append(all, m)
		if strings.HasPrefix(f.Subject, "$JS.ACK.") {
			acks = append(acks, m)
		}
	}
	for _, bc := range []struct {
		name string
		msgs []*nats.Msg
	}{{"acks", acks}, {"all", all}} {
		b.Run(bc.name, func(b *testing.B) {
			set := receivertest.NewNopSettings(metadata.Type)
			set.TelemetrySettings = componenttest.NewNopTelemetrySettings()
			cfg := createDefaultConfig()
			cfg.Streams = []StreamConfig{{Name: "CAPTURE"}}
			tr, err := NewFactory().CreateTraces(context.Background(), set, cfg, consumertest.NewNop())
			require.NoError(b, err)
			nt := tr.(*tap.Handle[*natsTap]).Tap
			st := nt.streams[0]
			ctx := context.Background()
			now := time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, m := range bc.msgs {
					if strings.HasPrefix(m.Subject, "$JS.ACK.") {
						nt.onAck(ctx, st, false, m, now)
					} else {
						nt.onAdvisory(ctx, st, m)
					}
				}
			}
			b.ReportMetric(float64(b.N*len(bc.msgs))/b.Elapsed().Seconds(), "events/s")
		})
	}
}
