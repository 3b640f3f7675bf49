package correlatorconnector

import (
	"context"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/connector/spanmetricsconnector"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/connector/connectortest"
	"go.opentelemetry.io/collector/consumer/consumertest"

	"github.com/flowtrace/flowtrace/correlator/correlatorconnector/internal/metadata"
	"github.com/flowtrace/flowtrace/correlator/flowsim"
)

// benchBatches is a simulated workload of every scenario (about 10,000
// flows) as OTLP span batches of 1,000 spans.
func benchBatches(b *testing.B) ([]flowsim.SpanBatch, int) {
	b.Helper()
	w := flowsim.Generate(flowsim.Config{Seed: 1, Flows: 1200})
	return w.Spans(1000), len(w.Events)
}

func runBenchmark(b *testing.B, create func() connector.Traces) {
	batches, spans := benchBatches(b)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		c := create()
		if err := c.Start(context.Background(), componenttest.NewNopHost()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		for _, batch := range batches {
			if err := c.ConsumeTraces(context.Background(), batch.Traces); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if err := c.Shutdown(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(spans)*float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkCorrelatorConnector: pdata spans in, hop and flow records and
// metrics out.
//
//	go test -run '^$' -bench 'Connector' -cpu 1 ./correlator/correlatorconnector
func BenchmarkCorrelatorConnector(b *testing.B) {
	runBenchmark(b, func() connector.Traces {
		f := NewFactory()
		set := connectortest.NewNopSettings(metadata.Type)
		cfg := simConfig()
		cfg.TickInterval, cfg.MetricsFlushInterval = time.Hour, time.Hour
		logs, err := f.CreateTracesToLogs(context.Background(), set, cfg, consumertest.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		return logs
	})
}

// BenchmarkSpanmetricsConnector runs the same spans through the contrib
// spanmetrics connector with its defaults: the price of plain per-span
// metrics, to compare with stitching flows.
func BenchmarkSpanmetricsConnector(b *testing.B) {
	runBenchmark(b, func() connector.Traces {
		f := spanmetricsconnector.NewFactory()
		set := connectortest.NewNopSettings(component.MustNewType("spanmetrics"))
		c, err := f.CreateTracesToMetrics(context.Background(), set, f.CreateDefaultConfig(), consumertest.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		return c
	})
}
