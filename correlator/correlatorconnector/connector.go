package correlatorconnector

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/correlatorconnector/internal/wal"
	"github.com/flowtrace/flowtrace/correlator/records"
	"github.com/flowtrace/flowtrace/correlator/spanevent"
	"github.com/flowtrace/flowtrace/model"
)

// core is one engine shared by the connector's logs and metrics routes of
// the same component id. mu guards the engine, the adapter and the
// aggregator: it is taken once per batch of spans, never per event.
type core struct {
	cfg    *Config
	logger *zap.Logger
	clock  func() time.Time // processing time; time.Now outside tests

	mu     sync.Mutex
	engine engine
	conv   *spanevent.Converter
	agg    *aggregator
	wal    *wal.Log      // nil without checkpoints
	batch  []model.Event // scratch for the events of one batch of spans

	// Set while the routes are created, before Start.
	logs    consumer.Logs
	metrics consumer.Metrics

	lifecycle sync.Mutex
	routes    int    // routes created and not yet shut down
	release   func() // forgets the core once its last route shuts down
	started   int    // routes started
	stop      chan struct{}
	done      sync.WaitGroup
}

// engine is a correlator.Engine, or a correlator.Sharded of several.
type engine interface {
	Add(now time.Time, ev *model.Event)
	Advance(now time.Time)
	Flush() correlator.Changes
	Stats() correlator.Stats
	Checkpoint(w io.Writer) error
	Restore(r io.Reader) error
}

func newEngine(cfg *Config) (engine, error) {
	if cfg.Workers > 1 {
		return correlator.NewSharded(cfg.Config, cfg.Workers)
	}
	return correlator.New(cfg.Config)
}

// closeEngine stops a sharded engine's workers.
func closeEngine(e engine) {
	if s, ok := e.(*correlator.Sharded); ok {
		s.Close()
	}
}

func newCore(cfg *Config, logger *zap.Logger) (*core, error) {
	engine, err := newEngine(cfg)
	if err != nil {
		return nil, err
	}
	return &core{
		cfg:    cfg,
		logger: logger,
		clock:  time.Now,
		engine: engine,
		conv:   spanevent.New(cfg.Spans),
		agg:    newAggregator(cfg.MaxLabelValues, time.Now()),
	}, nil
}

// start runs the timers once, whichever route starts first.
func (c *core) start() error {
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	c.started++
	if c.started > 1 {
		return nil
	}
	if err := c.restore(); err != nil {
		return err
	}
	c.stop = make(chan struct{})
	c.done.Add(1)
	go c.run()
	return nil
}

// shutdown stops the timers when the last started route stops, flushing
// what is left and writing a last checkpoint; the last route to go, started
// or not, releases the core from the factory.
func (c *core) shutdown(ctx context.Context, started bool) error {
	c.lifecycle.Lock()
	c.routes--
	last := c.routes == 0
	stop := false
	if started {
		c.started--
		stop = c.started == 0
	}
	c.lifecycle.Unlock()
	if last {
		// Deferred, so the engine outlives the last flush below; and outside
		// lifecycle, as the factory takes its own lock, then ours.
		defer func() {
			closeEngine(c.engine)
			if c.release != nil {
				c.release()
			}
		}()
	}
	if !stop {
		return nil
	}
	close(c.stop)
	c.done.Wait()
	now := c.clock()
	err := errors.Join(c.tick(ctx, now), c.emitMetrics(ctx, now), c.checkpoint())
	if c.wal != nil {
		err = errors.Join(err, c.wal.Close())
	}
	return err
}

// run drives time: stuck and idle flows each tick, metrics and checkpoints
// on their own intervals. It is the only goroutine the connector starts.
func (c *core) run() {
	defer c.done.Done()
	ticks := time.NewTicker(c.cfg.TickInterval)
	defer ticks.Stop()
	metrics := time.NewTicker(c.cfg.MetricsFlushInterval)
	defer metrics.Stop()
	var checkpoints <-chan time.Time
	if c.cfg.Checkpoint.Path != "" {
		t := time.NewTicker(c.cfg.Checkpoint.Interval)
		defer t.Stop()
		checkpoints = t.C
	}
	ctx := context.Background()
	for {
		select {
		case <-c.stop:
			return
		case <-ticks.C:
			if err := c.tick(ctx, c.clock()); err != nil {
				c.logger.Warn("Sending hop and flow records failed", zap.Error(err))
			}
		case <-metrics.C:
			if err := c.emitMetrics(ctx, c.clock()); err != nil {
				c.logger.Warn("Sending correlator metrics failed", zap.Error(err))
			}
		case <-checkpoints:
			if err := c.checkpoint(); err != nil {
				c.logger.Warn("Writing the correlator checkpoint failed", zap.Error(err))
			}
		}
	}
}

// consume folds a batch of spans into the engine and sends the new hop and
// flow versions on.
func (c *core) consume(ctx context.Context, td ptrace.Traces) error {
	now := c.clock()
	c.mu.Lock()
	var stats spanevent.Stats
	if c.wal == nil {
		stats = c.conv.Convert(td, func(ev *model.Event) { c.engine.Add(now, ev) })
	} else {
		// Logged first: acknowledged spans survive a crash.
		batch := c.batch[:0]
		stats = c.conv.Convert(td, func(ev *model.Event) {
			copied := *ev
			copied.Links = append([]model.SpanRef(nil), ev.Links...)
			copied.Keys = append([]model.Key(nil), ev.Keys...)
			batch = append(batch, copied)
		})
		if err := c.wal.Append(now, batch); err != nil {
			c.mu.Unlock()
			return err // retryable: the client sends the spans again
		}
		for i := range batch {
			c.engine.Add(now, &batch[i])
		}
		clear(batch)
		c.batch = batch[:0]
	}
	c.agg.malformed += uint64(stats.Malformed)
	changes := c.engine.Flush()
	c.agg.observe(changes)
	c.mu.Unlock()
	return c.sendRecords(ctx, changes, now)
}

func (c *core) tick(ctx context.Context, now time.Time) error {
	c.mu.Lock()
	c.engine.Advance(now)
	changes := c.engine.Flush()
	c.agg.observe(changes)
	c.mu.Unlock()
	return c.sendRecords(ctx, changes, now)
}

func (c *core) sendRecords(ctx context.Context, changes correlator.Changes, now time.Time) error {
	if c.logs == nil || len(changes.Hops)+len(changes.Flows) == 0 {
		return nil
	}
	logs := plog.NewLogs()
	rl := logs.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", "flowtrace")
	logRecords := rl.ScopeLogs().AppendEmpty().LogRecords()
	logRecords.EnsureCapacity(len(changes.Hops) + len(changes.Flows))
	for _, h := range changes.Hops {
		records.AppendHop(logRecords, h, now)
	}
	for _, f := range changes.Flows {
		records.AppendFlow(logRecords, f, now)
	}
	return c.logs.ConsumeLogs(ctx, logs)
}

func (c *core) emitMetrics(ctx context.Context, now time.Time) error {
	if c.metrics == nil {
		return nil
	}
	c.mu.Lock()
	md := c.agg.build(now, c.engine.Stats())
	c.mu.Unlock()
	return c.metrics.ConsumeMetrics(ctx, md)
}

// route is one of the core's outputs as the collector sees it: a traces
// consumer with a lifecycle.
type route struct {
	core *core
	// mu guards the route's own lifecycle: Shutdown is safe twice and
	// without Start.
	mu      sync.Mutex
	started bool
	stopped bool
	// processes says whether this route feeds spans to the engine: the logs
	// route does when there is one, else the metrics route. Both routes of
	// a connector receive the same spans; the engine needs them once.
	processes func() bool
}

var _ component.Component = (*route)(nil)

func (r *route) Start(context.Context, component.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return nil
	}
	if err := r.core.start(); err != nil {
		return err
	}
	r.started = true
	return nil
}

func (r *route) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil
	}
	r.stopped = true
	return r.core.shutdown(ctx, r.started)
}

func (r *route) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (r *route) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if !r.processes() {
		return nil
	}
	return r.core.consume(ctx, td)
}
