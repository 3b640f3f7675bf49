package clickhouseexporter

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exporterhelper/xexporterhelper"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/exporters/clickhouseexporter/internal/metadata"
)

// NewFactory returns the ClickHouse exporter's factory.
func NewFactory() exporter.Factory {
	return exporter.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		exporter.WithTraces(createTraces, metadata.TracesStability),
		exporter.WithLogs(createLogs, metadata.LogsStability),
		exporter.WithMetrics(createMetrics, metadata.MetricsStability),
	)
}

// Each signal's exporter reads its data into rows before the sending queue,
// which stores and batches rows; the push writes them.
//
// The exporter helper declares that it mutates data whenever its queue
// batches, and then every fanout ahead of it copies each request for it
// (under load, a fourteenth of all the bytes allocated). The batches here
// are of rows the exporter made; the data it is given is only read, so each
// exporter declares so.
var readsOnly = consumer.Capabilities{MutatesData: false}

func options(cfg *Config, e *chExporter) []exporterhelper.Option {
	return []exporterhelper.Option{
		exporterhelper.WithStart(e.start),
		exporterhelper.WithShutdown(e.shutdown),
		exporterhelper.WithTimeout(cfg.TimeoutConfig),
		xexporterhelper.WithQueueBatch(cfg.QueueConfig, xexporterhelper.QueueBatchSettings{Encoding: rowsEncoding{}}),
		exporterhelper.WithRetry(cfg.BackOffConfig),
	}
}

type tracesExporter struct {
	exporter.Traces
	e *chExporter
}

func (tracesExporter) Capabilities() consumer.Capabilities { return readsOnly }

func (x tracesExporter) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	r, bad := x.e.eventRows(ctx, td)
	return x.e.enqueue(ctx, r, bad, func(ctx context.Context) error { return x.Traces.ConsumeTraces(ctx, td) })
}

func createTraces(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Traces, error) {
	c := cfg.(*Config)
	e, err := newExporter(c, set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	e.id, e.signal = set.ID, "traces"
	inner, err := xexporterhelper.NewTracesRequest(ctx, set, queued[ptrace.Traces], e.push, options(c, e)...)
	return tracesExporter{Traces: inner, e: e}, err
}

type logsExporter struct {
	exporter.Logs
	e *chExporter
}

func (logsExporter) Capabilities() consumer.Capabilities { return readsOnly }

func (x logsExporter) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	r, bad := x.e.recordRows(ctx, ld)
	return x.e.enqueue(ctx, r, bad, func(ctx context.Context) error { return x.Logs.ConsumeLogs(ctx, ld) })
}

func createLogs(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Logs, error) {
	c := cfg.(*Config)
	e, err := newExporter(c, set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	e.id, e.signal = set.ID, "logs"
	inner, err := xexporterhelper.NewLogsRequest(ctx, set, queued[plog.Logs], e.push, options(c, e)...)
	return logsExporter{Logs: inner, e: e}, err
}

type metricsExporter struct {
	exporter.Metrics
	e *chExporter
}

func (metricsExporter) Capabilities() consumer.Capabilities { return readsOnly }

func (x metricsExporter) ConsumeMetrics(ctx context.Context, md pmetric.Metrics) error {
	r, bad := x.e.backlogRows(ctx, md)
	return x.e.enqueue(ctx, r, bad, func(ctx context.Context) error { return x.Metrics.ConsumeMetrics(ctx, md) })
}

func createMetrics(ctx context.Context, set exporter.Settings, cfg component.Config) (exporter.Metrics, error) {
	c := cfg.(*Config)
	e, err := newExporter(c, set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	e.id, e.signal = set.ID, "metrics"
	inner, err := xexporterhelper.NewMetricsRequest(ctx, set, queued[pmetric.Metrics], e.push, options(c, e)...)
	return metricsExporter{Metrics: inner, e: e}, err
}
