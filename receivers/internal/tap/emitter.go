package tap

import (
	"context"
	"time"

	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.uber.org/zap"
)

// Emitter hands a tap's spans and backlog points to its pipelines, counted
// as every receiver's are (otelcol_receiver_accepted_spans, ..._refused_...).
type Emitter struct {
	transport  string
	logger     *zap.Logger
	tel        *Telemetry
	traces     consumer.Traces
	metrics    consumer.Metrics
	obsTraces  *receiverhelper.ObsReport
	obsMetrics *receiverhelper.ObsReport
	// retry bounds the waits while the traces pipeline refuses spans.
	retry Backoff
}

// NewEmitter returns the emitter of the receiver set; transport names how
// the tap reads its broker (e.g. "firehose"), as receiver metrics label it.
func NewEmitter(set receiver.Settings, transport string, tel *Telemetry) (*Emitter, error) {
	obs := func() (*receiverhelper.ObsReport, error) {
		return receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
			ReceiverID: set.ID, Transport: transport, LongLivedCtx: true, ReceiverCreateSettings: set,
		})
	}
	e := &Emitter{transport: transport, logger: set.Logger, tel: tel, retry: Backoff{Initial: 100 * time.Millisecond, Max: 5 * time.Second}}
	var err error
	if e.obsTraces, err = obs(); err != nil {
		return nil, err
	}
	if e.obsMetrics, err = obs(); err != nil {
		return nil, err
	}
	return e, nil
}

// HasTraces and HasMetrics report whether the tap sits in a pipeline of
// that signal: a tap need not gather what nobody takes.
func (e *Emitter) HasTraces() bool  { return e.traces != nil }
func (e *Emitter) HasMetrics() bool { return e.metrics != nil }

// Traces sends the gathered spans. A refusal that is not permanent (a full
// queue, the memory limiter) is retried with backoff until the spans are
// taken or ctx ends, so the tap stops reading meanwhile and a broker that
// keeps its messages keeps them for it. It returns nil once the spans were
// taken, else the permanent refusal or ctx's error; either way the spans
// are counted as refused.
func (e *Emitter) Traces(ctx context.Context, s *Spans) error {
	n := s.Len()
	if n == 0 || e.traces == nil {
		s.Take()
		return nil
	}
	td := s.Take()
	wait := e.retry.Initial
	for {
		opCtx := e.obsTraces.StartTracesOp(ctx)
		err := e.traces.ConsumeTraces(opCtx, td)
		e.obsTraces.EndTracesOp(opCtx, e.transport, n, err)
		if err == nil {
			e.tel.Observed(ctx, n)
			return nil
		}
		if consumererror.IsPermanent(err) {
			e.logger.Error("Spans refused for good downstream; dropped", zap.Int("spans", n), zap.Error(err))
			return err
		}
		e.logger.Debug("Spans refused downstream; retrying", zap.Int("spans", n), zap.Error(err), zap.Duration("retry_in", wait))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, e.retry.Max)
	}
}

// Metrics sends the gathered backlog points once: a refused poll is not
// retried, the next one is fresher.
func (e *Emitter) Metrics(ctx context.Context, b *Backlog) error {
	n := b.Len()
	if n == 0 || e.metrics == nil {
		b.Take()
		return nil
	}
	opCtx := e.obsMetrics.StartMetricsOp(ctx)
	err := e.metrics.ConsumeMetrics(opCtx, b.Take())
	e.obsMetrics.EndMetricsOp(opCtx, e.transport, n, err)
	if err != nil {
		e.logger.Warn("Backlog points refused downstream", zap.Int("points", n), zap.Error(err))
	}
	return err
}
