package redistapreceiver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/redistapreceiver/internal/metadata"
)

const (
	systemRedis   = "redis"
	systemSidekiq = "sidekiq"
	transport     = "redis"
)

// redisTap is one tap: a session of Redis connections kept alive by
// tap.Run. The stream and Sidekiq state is owned by the session's main
// loop (one goroutine at a time, across reconnections); the pub/sub loop
// owns only its sequence counter.
type redisTap struct {
	cfg    *Config
	logger *zap.Logger
	tel    *tap.Telemetry
	// emitter hands spans and backlog points to the pipelines the tap
	// sits in.
	emitter *tap.Emitter

	streams *streamsState
	sidekiq *sidekiqState
	// pubsubRun names this run of the tap in pub/sub message ids.
	pubsubRun string
	pubsubSeq uint64
	// pingAfter and pongWait watch the pub/sub connection: pubsubPingAfter
	// and pubsubPongWait outside tests.
	pingAfter, pongWait time.Duration

	// now is the clock; time.Now outside tests.
	now func() time.Time

	lifecycle sync.Mutex
	// life ends when the tap stops; set by Start, before the loops run.
	life   context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

var _ tap.Receiver = (*redisTap)(nil)

func newRedisTap(cfg *Config, set receiver.Settings) (*redisTap, error) {
	tel, err := tap.NewTelemetry(set.TelemetrySettings, systemRedis, metadata.ScopeName)
	if err != nil {
		return nil, fmt.Errorf("tap telemetry: %w", err)
	}
	emitter, err := tap.NewEmitter(set, transport, tel)
	if err != nil {
		return nil, fmt.Errorf("receiver telemetry: %w", err)
	}
	now := time.Now
	return &redisTap{
		cfg:       cfg,
		logger:    set.Logger,
		tel:       tel,
		emitter:   emitter,
		streams:   newStreamsState(&cfg.Streams),
		sidekiq:   newSidekiqState(&cfg.Sidekiq),
		pubsubRun: strconv.FormatInt(now().UnixNano(), 36),
		pingAfter: pubsubPingAfter,
		pongWait:  pubsubPongWait,
		now:       now,
	}, nil
}

// Emitter is where the factory connects the tap's pipelines.
func (t *redisTap) Emitter() *tap.Emitter { return t.emitter }

// Start connects in the background and returns at once.
func (t *redisTap) Start(_ context.Context, _ component.Host) error {
	t.lifecycle.Lock()
	defer t.lifecycle.Unlock()
	if t.cancel != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel, t.life = cancel, ctx
	t.done = make(chan struct{})
	t.logger.Info("redis tap starting", zap.String("endpoint", t.cfg.Endpoint),
		zap.Int("streams", len(t.cfg.Streams.Names)), zap.Int("pubsub_patterns", len(t.cfg.PubSub.Patterns)),
		zap.Bool("sidekiq", t.cfg.Sidekiq.Enabled))
	go func() {
		defer close(t.done)
		tap.Run(ctx, t.logger, t.tel, t.cfg.Reconnect, t.session)
	}()
	return nil
}

// Shutdown stops the tap; it is safe without Start and when called twice.
func (t *redisTap) Shutdown(ctx context.Context) error {
	t.lifecycle.Lock()
	cancel, done := t.cancel, t.done
	t.lifecycle.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (t *redisTap) newClient() *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr:     t.cfg.Endpoint,
		Username: t.cfg.Username,
		Password: string(t.cfg.Password),
		DB:       t.cfg.DB,
		// A lost connection ends the session, so tap.Run counts the gap
		// and the session resumes from what it had read.
		MaxRetries:   -1,
		DialTimeout:  5 * time.Second,
		ReadTimeout:  10 * time.Second,
		WriteTimeout: 10 * time.Second,
		PoolSize:     2,
		// The tap's polls are plain commands; it does not follow
		// maintenance notifications.
		DisableIdentity: true,
	})
}

// session runs until the connection is lost or ctx ends: a main loop for
// streams, consumer groups and Sidekiq, and a pub/sub loop on its own
// connection.
func (t *redisTap) session(ctx context.Context, connected tap.Connected) error {
	client := t.newClient()
	defer client.Close()
	if err := client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Closing the client wakes a blocked XREAD when the session ends.
	defer context.AfterFunc(ctx, func() { _ = client.Close() })()

	var loops []func() error
	if len(t.cfg.PubSub.Patterns) > 0 {
		ps := client.PSubscribe(ctx, t.cfg.PubSub.Patterns...)
		defer ps.Close()
		// The first reply confirms the subscription.
		if _, err := ps.Receive(ctx); err != nil {
			return fmt.Errorf("psubscribe: %w", err)
		}
		loops = append(loops, func() error { return t.runPubSub(ctx, ps) })
	}
	if len(t.cfg.Streams.Names) > 0 || t.cfg.Sidekiq.Enabled {
		if err := t.streams.resume(ctx, client, t.newBatch(ctx)); err != nil {
			return err
		}
		loops = append(loops, func() error { return t.runMain(ctx, client) })
	}
	connected()

	errc := make(chan error, len(loops))
	for _, loop := range loops {
		go func() { errc <- loop() }()
	}
	err := <-errc
	cancel()
	for range len(loops) - 1 {
		<-errc
	}
	return err
}

// runMain reads the streams, blocking at most until the next poll, and
// polls consumer groups, Sidekiq and the backlog every poll interval.
func (t *redisTap) runMain(ctx context.Context, client *redis.Client) error {
	var nextPoll time.Time
	for ctx.Err() == nil {
		if now := t.now(); !now.Before(nextPoll) {
			if err := t.poll(ctx, client); err != nil {
				return err
			}
			nextPoll = now.Add(t.cfg.PollInterval)
		}
		wait := max(time.Until(nextPoll), time.Millisecond)
		if t.streams.empty() {
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			continue
		}
		out := t.newBatch(ctx)
		err := t.streams.read(ctx, client, wait, out)
		t.flush(out)
		if err != nil {
			return err
		}
	}
	return ctx.Err()
}

// poll takes one look at consumer groups, Sidekiq and the backlog.
func (t *redisTap) poll(ctx context.Context, client *redis.Client) error {
	now := t.now()
	backlog := tap.NewBacklog(systemRedis, metadata.ScopeName)
	out := t.newBatch(ctx)
	defer t.flush(out)
	if !t.streams.empty() {
		if err := t.streams.poll(ctx, client, now, backlog, out); err != nil {
			return err
		}
	}
	if t.cfg.Sidekiq.Enabled {
		if err := t.sidekiq.poll(ctx, client, now, backlog, out); err != nil {
			return err
		}
	}
	t.sendBacklog(backlog)
	return nil
}

// batch turns observations into spans as they are made.
type batch struct {
	ctx    context.Context
	tel    *tap.Telemetry
	logger *zap.Logger
	spans  *tap.Spans
}

func (t *redisTap) newBatch(ctx context.Context) *batch {
	return &batch{ctx: ctx, tel: t.tel, logger: t.logger, spans: tap.NewSpans(systemRedis, metadata.ScopeName)}
}

func (b *batch) add(o *tap.Observation) {
	switch err := b.spans.Add(o); {
	case errors.Is(err, tap.ErrNoIdentity):
		b.tel.DecodeError(b.ctx, reasonIdentity, err)
	case errors.Is(err, tap.ErrBadTraceParent):
		b.tel.DecodeError(b.ctx, reasonTraceParent, err)
	}
}

// decodeError counts input the tap could not read.
func (b *batch) decodeError(err error) {
	reason := "unknown"
	var de *decodeError
	if errors.As(err, &de) {
		reason = de.reason
	}
	b.tel.DecodeError(b.ctx, reason, err)
}

// flush hands the batch's spans on. While the pipeline refuses them for
// now, it retries and the loop that made them waits: the tap reads nothing
// more meanwhile, and what it has not read stays in Redis. It gives up
// when the tap stops (not when only the session ends: the spans were
// made, the other loop's loss of its connection does not undo them).
func (t *redisTap) flush(b *batch) {
	_ = t.emitter.Traces(t.life, b.spans)
}

func (t *redisTap) sendBacklog(backlog *tap.Backlog) {
	_ = t.emitter.Metrics(t.life, backlog)
}
