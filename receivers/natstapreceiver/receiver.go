package natstapreceiver

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nuid"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/natstapreceiver/internal/metadata"
)

const (
	system = "nats"
	// transport names the tap's data in the receiver's own metrics.
	transport = "nats"
	// flushEvery and maxBatch bound how long an observation waits before it
	// is sent on, and how many spans go in one batch.
	flushEvery = 200 * time.Millisecond
	maxBatch   = 4096
)

// natsTap is one tap: one connection to NATS feeding the traces and the
// metrics pipeline of one component id.
type natsTap struct {
	cfg    *Config
	logger *zap.Logger
	tel    *tap.Telemetry

	// Set by the factory before Start, read-only afterwards; nil when the
	// signal has no pipeline.
	traces  consumer.Traces
	metrics consumer.Metrics

	obsTraces, obsMetrics *receiverhelper.ObsReport
	emit                  *emitter

	streams []*streamState
	// links remembers the traceparent of recently published stream
	// messages, so the consumer side's spans can link to it.
	links *linkCache
	// runID and coreSeq name core messages without a Nats-Msg-Id.
	runID   string
	coreSeq atomic.Uint64

	// onConnected, when set, is called each time a connection is working:
	// tests wait on it.
	onConnected func()

	cancel context.CancelFunc
	done   chan struct{}
}

func newTap(cfg *Config, set receiver.Settings) (*natsTap, error) {
	tel, err := tap.NewTelemetry(set.TelemetrySettings, system, metadata.ScopeName)
	if err != nil {
		return nil, err
	}
	obsTraces, err := receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
		ReceiverID: set.ID, Transport: transport, LongLivedCtx: true, ReceiverCreateSettings: set})
	if err != nil {
		return nil, err
	}
	obsMetrics, err := receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{
		ReceiverID: set.ID, Transport: transport, LongLivedCtx: true, ReceiverCreateSettings: set})
	if err != nil {
		return nil, err
	}
	t := &natsTap{
		cfg:        cfg,
		logger:     set.Logger,
		tel:        tel,
		obsTraces:  obsTraces,
		obsMetrics: obsMetrics,
		links:      newLinkCache(linkCacheSize),
		runID:      nuid.Next(),
	}
	for _, s := range cfg.Streams {
		t.streams = append(t.streams, &streamState{name: s.Name, filter: s.FilterSubject})
	}
	return t, nil
}

// Start connects in the background: it never blocks on the broker.
func (t *natsTap) Start(_ context.Context, _ component.Host) error {
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.done = make(chan struct{})
	t.emit = &emitter{tap: t, spans: tap.NewSpans(system, metadata.ScopeName)}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tap.Run(ctx, t.logger, t.tel, t.cfg.Reconnect, t.session)
	}()
	go func() {
		defer wg.Done()
		t.emit.flushLoop(ctx)
	}()
	go func() {
		wg.Wait()
		close(t.done)
	}()
	t.logger.Info("NATS tap started", zap.Int("streams", len(t.streams)), zap.Int("subjects", len(t.cfg.Subjects)))
	return nil
}

// Shutdown stops the tap and sends on what it still holds.
func (t *natsTap) Shutdown(ctx context.Context) error {
	if t.cancel == nil {
		return nil
	}
	t.cancel()
	select {
	case <-t.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	t.emit.flush(context.Background())
	return nil
}

// observe turns one observation into a span (when there is a traces
// pipeline).
func (t *natsTap) observe(ctx context.Context, o *tap.Observation) {
	if t.traces == nil {
		return
	}
	t.emit.add(ctx, o)
}

// sendMetrics hands backlog gauges to the metrics pipeline.
func (t *natsTap) sendMetrics(ctx context.Context, md pmetric.Metrics, points int) {
	ctx = t.obsMetrics.StartMetricsOp(ctx)
	err := t.metrics.ConsumeMetrics(ctx, md)
	t.obsMetrics.EndMetricsOp(ctx, transport, points, err)
	if err != nil {
		t.logger.Debug("backlog gauges refused", zap.Error(err))
	}
}

// emitter gathers observations from the subscription goroutines into
// batches of spans. mu guards spans; ConsumeTraces runs outside it.
type emitter struct {
	tap   *natsTap
	mu    sync.Mutex
	spans *tap.Spans
}

func (e *emitter) add(ctx context.Context, o *tap.Observation) {
	e.mu.Lock()
	err := e.spans.Add(o)
	full := e.spans.Len() >= maxBatch
	e.mu.Unlock()
	switch {
	case errors.Is(err, tap.ErrBadTraceParent):
		e.tap.tel.DecodeError(ctx, "traceparent", err)
	case err != nil:
		e.tap.tel.DecodeError(ctx, "identity", err)
	}
	if full {
		e.flush(ctx)
	}
}

func (e *emitter) flushLoop(ctx context.Context) {
	ticker := time.NewTicker(flushEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			e.flush(ctx)
		}
	}
}

func (e *emitter) flush(ctx context.Context) {
	e.mu.Lock()
	n := e.spans.Len()
	if n == 0 {
		e.mu.Unlock()
		return
	}
	td := e.spans.Take()
	e.mu.Unlock()
	t := e.tap
	t.tel.Observed(ctx, n)
	ctx = t.obsTraces.StartTracesOp(ctx)
	err := t.traces.ConsumeTraces(ctx, td)
	t.obsTraces.EndTracesOp(ctx, transport, n, err)
	if err != nil {
		t.logger.Debug("spans refused", zap.Int("spans", n), zap.Error(err))
	}
}
