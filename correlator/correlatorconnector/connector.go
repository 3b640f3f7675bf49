package correlatorconnector

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
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
	wal    *wal.Log        // nil without checkpoints
	batch  []model.Event   // scratch for the events of one batch of spans
	keys   []model.Key     // and for their keys and links: the engine keeps
	links  []model.SpanRef // none of these slices

	// Set while the routes are created, before Start.
	logs    consumer.Logs
	metrics consumer.Metrics

	// sendMu orders sends of records; unsent holds the newest version of
	// every record whose sending failed, sent again before anything newer.
	sendMu sync.Mutex
	unsent unsentRecords

	lifecycle sync.Mutex
	routes    int    // routes created and not yet shut down
	release   func() // forgets the core once its last route shuts down
	running   bool   // the processing route started the timers
	stop      chan struct{}
	done      sync.WaitGroup
}

// maxUnsentRecords bounds the records kept for sending again while the
// next consumer refuses them; newer versions of kept records still replace
// older ones, new records beyond it are dropped and counted.
const maxUnsentRecords = 1 << 18

// unsentRecords are record versions waiting to be sent again, newest per id.
type unsentRecords struct {
	hops  map[[2]string]model.Hop // by flow id and hop id
	flows map[string]model.Flow
}

// add keeps the records of c and returns how many it had to drop.
func (u *unsentRecords) add(c correlator.Changes) (dropped uint64) {
	if u.hops == nil {
		u.hops, u.flows = map[[2]string]model.Hop{}, map[string]model.Flow{}
	}
	full := func() bool { return len(u.hops)+len(u.flows) >= maxUnsentRecords }
	for _, h := range c.Hops {
		key := [2]string{h.FlowID, h.HopID}
		old, ok := u.hops[key]
		switch {
		case !ok && full():
			dropped++
		case !ok || h.Version > old.Version:
			u.hops[key] = h
		}
	}
	for _, f := range c.Flows {
		old, ok := u.flows[f.ID]
		switch {
		case !ok && full():
			dropped++
		case !ok || f.Version > old.Version:
			u.flows[f.ID] = f
		}
	}
	return dropped
}

// take returns the waiting records ahead of changes, and forgets them.
func (u *unsentRecords) take(c correlator.Changes) correlator.Changes {
	if len(u.hops)+len(u.flows) == 0 {
		return c
	}
	out := correlator.Changes{Hops: make([]model.Hop, 0, len(u.hops)+len(c.Hops)), Flows: make([]model.Flow, 0, len(u.flows)+len(c.Flows))}
	for _, h := range u.hops {
		out.Hops = append(out.Hops, h)
	}
	for _, f := range u.flows {
		out.Flows = append(out.Flows, f)
	}
	out.Hops = append(out.Hops, c.Hops...)
	out.Flows = append(out.Flows, c.Flows...)
	u.hops, u.flows = nil, nil
	return out
}

// engine is a correlator.Engine, or a correlator.Sharded of several.
type engine interface {
	Add(now time.Time, ev *model.Event)
	Advance(now time.Time)
	Flush() correlator.Changes
	Stats() correlator.Stats
	Snapshot() correlator.Snapshot
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

// start restores the state and runs the timers; the processing route calls
// it, so the timers live exactly as long as the route that sends records.
func (c *core) start() error {
	c.lifecycle.Lock()
	defer c.lifecycle.Unlock()
	if c.running {
		return nil
	}
	if err := c.restore(); err != nil {
		return err
	}
	c.stop = make(chan struct{})
	c.done.Add(1)
	go c.run()
	c.running = true
	return nil
}

// stopTimers stops the timers, sends what is left and writes a last
// checkpoint; the processing route calls it at its shutdown, before the
// collector shuts down the exporters it feeds.
func (c *core) stopTimers(ctx context.Context) error {
	c.lifecycle.Lock()
	running := c.running
	c.running = false
	c.lifecycle.Unlock()
	if !running {
		return nil
	}
	close(c.stop)
	c.done.Wait()
	err := errors.Join(c.tick(ctx, c.clock()), c.checkpoint())
	c.sendMu.Lock()
	if n := len(c.unsent.hops) + len(c.unsent.flows); n > 0 {
		if c.cfg.Checkpoint.Path != "" {
			c.logger.Warn("Hop and flow records still refused at shutdown are kept in the checkpoint, to be sent after the start", zap.Int("records", n))
		} else {
			c.logger.Error("Hop and flow records still refused at shutdown are lost (no checkpoint)", zap.Int("records", n))
			c.countDropped(uint64(n))
		}
	}
	c.sendMu.Unlock()
	if c.wal != nil {
		err = errors.Join(err, c.wal.Close())
	}
	return err
}

// detach forgets one route; the last one releases the core.
func (c *core) detach() {
	c.lifecycle.Lock()
	c.routes--
	last := c.routes == 0
	c.lifecycle.Unlock()
	if last {
		closeEngine(c.engine)
		if c.release != nil {
			c.release() // outside lifecycle: the factory takes its lock, then ours
		}
	}
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
		batch, keys, links := c.batch[:0], c.keys[:0], c.links[:0]
		stats = c.conv.Convert(td, func(ev *model.Event) {
			copied := *ev
			copied.Keys, keys = appendShared(keys, ev.Keys)
			copied.Links, links = appendShared(links, ev.Links)
			batch = append(batch, copied)
		})
		err := c.wal.Append(now, batch)
		if err == nil {
			for i := range batch {
				c.engine.Add(now, &batch[i])
			}
		}
		clear(batch) // drop the strings, keep the arrays
		clear(keys)
		clear(links)
		c.batch, c.keys, c.links = batch[:0], keys[:0], links[:0]
		if err != nil {
			c.mu.Unlock()
			if errors.Is(err, wal.ErrTooLarge) {
				return consumererror.NewPermanent(err) // sending it again cannot help
			}
			return err // retryable: the client sends the spans again
		}
	}
	c.agg.malformed += uint64(stats.Malformed)
	changes := c.engine.Flush()
	c.agg.observe(changes)
	c.mu.Unlock()
	// The spans are in: a failed send is retried with the next records, not
	// by the client, whose resend would duplicate raw events.
	if err := c.sendRecords(ctx, changes, now); err != nil {
		c.logger.Warn("Sending hop and flow records failed; they are sent again with the next ones", zap.Error(err))
	}
	return nil
}

// appendShared copies s to the end of shared and returns the copy, nil for
// none, and shared grown. Copies made before shared grew keep its old
// array, which nothing writes to again.
func appendShared[T any](shared, s []T) (copied, grown []T) {
	if len(s) == 0 {
		return nil, shared
	}
	start := len(shared)
	shared = append(shared, s...)
	return shared[start:len(shared):len(shared)], shared
}

func (c *core) tick(ctx context.Context, now time.Time) error {
	c.mu.Lock()
	c.engine.Advance(now)
	changes := c.engine.Flush()
	c.agg.observe(changes)
	c.mu.Unlock()
	return c.sendRecords(ctx, changes, now)
}

// countDropped adds to flowtrace.correlator.records_dropped.
func (c *core) countDropped(n uint64) {
	c.mu.Lock()
	c.agg.recordsDropped += n
	c.mu.Unlock()
}

// sendRecords sends record versions, with any whose sending failed before.
// What fails now waits for the next send, unless it was refused for good.
func (c *core) sendRecords(ctx context.Context, changes correlator.Changes, now time.Time) error {
	if c.logs == nil {
		return nil
	}
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	changes = c.unsent.take(changes)
	if len(changes.Hops)+len(changes.Flows) == 0 {
		return nil
	}
	logs := plog.NewLogs()
	rl := logs.ResourceLogs().AppendEmpty()
	rl.Resource().Attributes().PutStr("service.name", "flowtrace")
	logRecords := rl.ScopeLogs().AppendEmpty().LogRecords()
	if c.cfg.RecordEncoding == EncodingBatch {
		records.AppendBatch(logRecords, changes.Hops, changes.Flows, now)
	} else {
		logRecords.EnsureCapacity(len(changes.Hops) + len(changes.Flows))
		for _, h := range changes.Hops {
			records.AppendHop(logRecords, h, now)
		}
		for _, f := range changes.Flows {
			records.AppendFlow(logRecords, f, now)
		}
	}
	if err := c.logs.ConsumeLogs(ctx, logs); err != nil {
		if consumererror.IsPermanent(err) {
			// Refused for good: sending them again would be refused again.
			n := uint64(len(changes.Hops) + len(changes.Flows))
			c.logger.Error("The next consumer refused hop and flow records for good; they are not sent again",
				zap.Uint64("records", n), zap.Error(err))
			c.countDropped(n)
			return err
		}
		if dropped := c.unsent.add(changes); dropped > 0 {
			c.logger.Error("Too many hop and flow records wait to be sent again; dropping new ones",
				zap.Uint64("dropped", dropped), zap.Int("limit", maxUnsentRecords))
			c.countDropped(dropped)
		}
		return err
	}
	return nil
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
	// metrics marks the metrics route; the other one sends records.
	metrics bool
}

var _ component.Component = (*route)(nil)

// processes says whether this route feeds spans to the engine and drives
// its timers: the logs route when there is one, else the metrics route.
// Both routes of a connector receive the same spans; the engine needs them
// once.
func (r *route) processes() bool {
	return !r.metrics || r.core.logs == nil
}

func (r *route) Start(context.Context, component.Host) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return nil
	}
	if r.processes() {
		if err := r.core.start(); err != nil {
			return err
		}
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
	var err error
	if r.started && r.processes() {
		err = r.core.stopTimers(ctx)
	}
	if r.started && r.metrics {
		err = errors.Join(err, r.core.emitMetrics(ctx, r.core.clock()))
	}
	r.core.detach()
	return err
}

func (r *route) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (r *route) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if !r.processes() {
		return nil
	}
	return r.core.consume(ctx, td)
}
