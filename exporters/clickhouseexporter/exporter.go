package clickhouseexporter

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/correlator/records"
	"github.com/flowtrace/flowtrace/correlator/spanevent"
	"github.com/flowtrace/flowtrace/exporters/clickhouseexporter/internal/metadata"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/flowstorage"
)

// chExporter writes to the storage backend found at Start. The queue calls its
// push functions from several goroutines; each call works on its own data.
type chExporter struct {
	cfg    *Config
	logger *zap.Logger
	store  storage.Store

	// converters reuse span adapters across pushes.
	converters sync.Pool

	rejected metric.Int64Counter // records and samples refused as malformed
}

func newExporter(cfg *Config, set component.TelemetrySettings) (*chExporter, error) {
	e := &chExporter{cfg: cfg, logger: set.Logger}
	e.converters.New = func() any { return spanevent.New(cfg.Spans) }
	meter := set.MeterProvider.Meter(metadata.ScopeName)
	var err error
	e.rejected, err = meter.Int64Counter("flowtrace.exporter.rejected",
		metric.WithUnit("{item}"),
		metric.WithDescription("Records, spans and samples the ClickHouse exporter refused as malformed; never retried."))
	if err != nil {
		return nil, err
	}
	return e, nil
}

func (e *chExporter) start(_ context.Context, host component.Host) error {
	store, err := flowstorage.GetStore(host, e.cfg.Backend)
	if err != nil {
		return fmt.Errorf("clickhouse exporter: %w", err)
	}
	e.store = store
	return nil
}

// pushTraces writes messaging spans as events; other spans are skipped.
func (e *chExporter) pushTraces(ctx context.Context, td ptrace.Traces) error {
	conv := e.converters.Get().(*spanevent.Converter)
	defer e.converters.Put(conv)
	events := make([]model.Event, 0, td.SpanCount())
	stats := conv.Convert(td, func(ev *model.Event) {
		copied := *ev
		copied.Links = append([]model.SpanRef(nil), ev.Links...)
		copied.Keys = append([]model.Key(nil), ev.Keys...)
		events = append(events, copied)
	})
	if stats.Malformed > 0 {
		e.rejected.Add(ctx, int64(stats.Malformed))
	}
	if len(events) == 0 {
		return nil
	}
	return e.store.WriteEvents(ctx, events)
}

// pushLogs writes hop and flow records. A malformed record is refused for
// good (a permanent error, counted); the well-formed ones are written.
func (e *chExporter) pushLogs(ctx context.Context, ld plog.Logs) error {
	var hops []model.Hop
	var flows []model.Flow
	var bad []error
	rls := ld.ResourceLogs()
	for i := 0; i < rls.Len(); i++ {
		sls := rls.At(i).ScopeLogs()
		for j := 0; j < sls.Len(); j++ {
			lrs := sls.At(j).LogRecords()
			for k := 0; k < lrs.Len(); k++ {
				r := lrs.At(k)
				switch records.Type(r) {
				case records.TypeHop:
					h, err := records.DecodeHop(r)
					if err != nil {
						bad = append(bad, err)
						continue
					}
					hops = append(hops, h)
				case records.TypeFlow:
					f, err := records.DecodeFlow(r)
					if err != nil {
						bad = append(bad, err)
						continue
					}
					flows = append(flows, f)
				default:
					bad = append(bad, records.ErrNotARecord)
				}
			}
		}
	}
	if len(hops) > 0 {
		if err := e.store.WriteHops(ctx, hops); err != nil {
			return err
		}
	}
	if len(flows) > 0 {
		if err := e.store.WriteFlows(ctx, flows); err != nil {
			return err
		}
	}
	return e.refuse(ctx, bad)
}

// pushMetrics writes backlog samples from the flowtrace.backlog.* metrics;
// other metrics are skipped.
func (e *chExporter) pushMetrics(ctx context.Context, md pmetric.Metrics) error {
	samples, bad := backlogSamples(md)
	if len(samples) > 0 {
		if err := e.store.WriteBacklog(ctx, samples); err != nil {
			return err
		}
	}
	return e.refuse(ctx, bad)
}

// refuse counts malformed items and reports them as a permanent error, so
// the queue neither retries them nor drops them silently.
func (e *chExporter) refuse(ctx context.Context, bad []error) error {
	if len(bad) == 0 {
		return nil
	}
	e.rejected.Add(ctx, int64(len(bad)))
	e.logger.Warn("Refused malformed items", zap.Int("count", len(bad)), zap.Error(bad[0]))
	return consumererror.NewPermanent(fmt.Errorf("%d malformed, the first: %w", len(bad), bad[0]))
}
