package tap

import (
	"context"
	"fmt"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"
)

// Telemetry is a tap's own counters, the same for every tap and told apart
// by the attribute tap (docs/METRICS.md):
//
//	flowtrace.tap.decode_errors  frames or records the tap could not read, by reason
//	flowtrace.tap.gaps           times the tap lost its broker connection
//	flowtrace.tap.gap_seconds    how long it was away, in all
//	flowtrace.tap.observations   observations turned into spans
//	flowtrace.tap.connected      1 while the tap has its broker, else 0
type Telemetry struct {
	logger       *zap.Logger
	tap          attribute.KeyValue
	decodeErrors metric.Int64Counter
	gaps         metric.Int64Counter
	gapSeconds   metric.Float64Counter
	observations metric.Int64Counter
	connected    metric.Int64Gauge
}

// NewTelemetry creates the counters of the named tap.
func NewTelemetry(set component.TelemetrySettings, tap, scope string) (*Telemetry, error) {
	meter := set.MeterProvider.Meter(scope)
	t := &Telemetry{logger: set.Logger, tap: attribute.String("tap", tap)}
	var err error
	if t.decodeErrors, err = meter.Int64Counter("flowtrace.tap.decode_errors",
		metric.WithDescription("Broker frames or records the tap could not read, by reason."), metric.WithUnit("{error}")); err != nil {
		return nil, err
	}
	if t.gaps, err = meter.Int64Counter("flowtrace.tap.gaps",
		metric.WithDescription("Times the tap lost its broker connection."), metric.WithUnit("{gap}")); err != nil {
		return nil, err
	}
	if t.gapSeconds, err = meter.Float64Counter("flowtrace.tap.gap_seconds",
		metric.WithDescription("Time the tap was without its broker connection."), metric.WithUnit("s")); err != nil {
		return nil, err
	}
	if t.observations, err = meter.Int64Counter("flowtrace.tap.observations",
		metric.WithDescription("Broker observations the tap turned into spans."), metric.WithUnit("{observation}")); err != nil {
		return nil, err
	}
	if t.connected, err = meter.Int64Gauge("flowtrace.tap.connected",
		metric.WithDescription("1 while the tap is connected to its broker, else 0.")); err != nil {
		return nil, err
	}
	return t, nil
}

// Connected records whether the tap has its broker.
func (t *Telemetry) Connected(ctx context.Context, up bool) {
	var v int64
	if up {
		v = 1
	}
	t.connected.Record(ctx, v, metric.WithAttributes(t.tap))
}

// DecodeError counts one thing the tap could not read. reason is a short
// fixed word (e.g. "headers", "body", "traceparent"), never broker data.
func (t *Telemetry) DecodeError(ctx context.Context, reason string, err error) {
	t.decodeErrors.Add(ctx, 1, metric.WithAttributes(t.tap, attribute.String("reason", reason)))
	t.logger.Debug("tap could not decode", zap.String("reason", reason), zap.Error(err))
}

// Observed counts observations turned into spans.
func (t *Telemetry) Observed(ctx context.Context, n int) {
	t.observations.Add(ctx, int64(n), metric.WithAttributes(t.tap))
}

// Gap counts a time without the broker and logs it.
func (t *Telemetry) Gap(ctx context.Context, d time.Duration, cause error) {
	t.gaps.Add(ctx, 1, metric.WithAttributes(t.tap))
	t.gapSeconds.Add(ctx, d.Seconds(), metric.WithAttributes(t.tap))
	t.logger.Warn("tap was disconnected from its broker; reconnected",
		zap.Duration("gap", d), zap.String("cause", fmt.Sprint(cause)))
}
