package natstapreceiver

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nuid"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"
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
	// finalFlushTimeout bounds the wait for a refusing pipeline at shutdown.
	finalFlushTimeout = 5 * time.Second
)

// natsTap is one tap: one connection to NATS feeding the traces and the
// metrics pipeline of one component id.
type natsTap struct {
	cfg     *Config
	logger  *zap.Logger
	tel     *tap.Telemetry
	emitter *tap.Emitter
	batch   *batcher

	streams []*streamState
	// links remembers the trace context of recently published stream
	// messages, so the consumer side's spans can link to it.
	links *linkCache
	// runID and coreSeq name core messages without a Nats-Msg-Id.
	runID   string
	coreSeq atomic.Uint64
	// attaches numbers the stream readers the tap made.
	attaches atomic.Uint64

	// dial opens the network connection to a server; tests replace it to
	// cut connections.
	dial func(ctx context.Context, network, address string) (net.Conn, error)
	// connectTimeout bounds connecting, the handshake included.
	connectTimeout time.Duration
	// onConnected, when set, is called each time a connection is working:
	// tests wait on it.
	onConnected func()

	// handlers counts the message handlers running; once stopped is set no
	// new one starts, so the last batch is sent after the last of them.
	handlersMu sync.Mutex
	stopped    bool
	handlers   sync.WaitGroup

	cancel context.CancelFunc
	done   chan struct{}
}

func newTap(cfg *Config, set receiver.Settings) (*natsTap, error) {
	tel, err := tap.NewTelemetry(set.TelemetrySettings, system, metadata.ScopeName)
	if err != nil {
		return nil, err
	}
	em, err := tap.NewEmitter(set, transport, tel)
	if err != nil {
		return nil, err
	}
	t := &natsTap{
		cfg:     cfg,
		logger:  set.Logger,
		tel:     tel,
		emitter: em,
		batch:   newBatcher(em),
		links:   newLinkCache(linkCacheSize),
		runID:   nuid.Next(),
		dial:    (&net.Dialer{}).DialContext,

		connectTimeout: connectTimeout,
	}
	for _, s := range cfg.Streams {
		t.streams = append(t.streams, newStreamState(s.Name, s.FilterSubject))
	}
	return t, nil
}

// Emitter is the tap's way to its pipelines.
func (t *natsTap) Emitter() *tap.Emitter { return t.emitter }

// Start connects in the background: it never blocks on the broker.
func (t *natsTap) Start(_ context.Context, _ component.Host) error {
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.done = make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tap.Run(ctx, t.logger, t.tel, t.cfg.Reconnect, t.session)
	}()
	go func() {
		defer wg.Done()
		t.batch.flushLoop(ctx)
	}()
	go func() {
		wg.Wait()
		close(t.done)
	}()
	t.logger.Info("NATS tap started", zap.Int("streams", len(t.streams)), zap.Int("subjects", len(t.cfg.Subjects)))
	return nil
}

// Shutdown stops the tap and sends on what it still holds. Spans the
// pipeline keeps refusing are given up when ctx ends.
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
	// The connection is closed; a handler that was running then ends
	// before the last batch goes.
	t.handlersMu.Lock()
	t.stopped = true
	t.handlersMu.Unlock()
	idle := make(chan struct{})
	go func() {
		t.handlers.Wait()
		close(idle)
	}()
	select {
	case <-idle:
	case <-ctx.Done():
		return ctx.Err()
	}
	fctx, cancel := context.WithTimeout(ctx, finalFlushTimeout)
	defer cancel()
	if err := t.batch.flush(fctx); err != nil {
		t.logger.Warn("NATS tap stopped with spans the pipeline did not take", zap.Error(err))
	}
	return nil
}

// handle wraps a message handler so Shutdown knows when it has ended.
func handle[M any](t *natsTap, h func(M)) func(M) {
	return func(m M) {
		t.handlersMu.Lock()
		if t.stopped {
			t.handlersMu.Unlock()
			return
		}
		t.handlers.Add(1)
		t.handlersMu.Unlock()
		defer t.handlers.Done()
		h(m)
	}
}

// observe turns one observation into a span (when there is a traces
// pipeline).
func (t *natsTap) observe(ctx context.Context, o *tap.Observation) {
	if !t.emitter.HasTraces() {
		return
	}
	err := t.batch.add(o)
	switch {
	case errors.Is(err, tap.ErrBadTraceParent):
		t.tel.DecodeError(ctx, "traceparent", err)
	case errors.Is(err, tap.ErrNoIdentity):
		t.tel.DecodeError(ctx, "identity", err)
	}
	if t.batch.full() {
		_ = t.batch.flush(ctx)
	}
}

// batcher gathers observations from the subscription goroutines into
// batches of spans. mu guards spans; send serialises the flushes and is
// held across the hand-off to the pipeline, so a flush returns only once
// everything gathered before it was delivered (or given up), and while the
// pipeline refuses, the handlers that fill the next batch wait: the tap
// stops reading.
type batcher struct {
	emitter *tap.Emitter

	mu    sync.Mutex
	spans *tap.Spans

	send sync.Mutex
	out  *tap.Spans // the batch being sent; owned by the holder of send
}

func newBatcher(em *tap.Emitter) *batcher {
	return &batcher{
		emitter: em,
		spans:   tap.NewSpans(system, metadata.ScopeName),
		out:     tap.NewSpans(system, metadata.ScopeName),
	}
}

func (b *batcher) add(o *tap.Observation) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spans.Add(o)
}

func (b *batcher) full() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.spans.Len() >= maxBatch
}

func (b *batcher) flushLoop(ctx context.Context) {
	ticker := time.NewTicker(flushEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			_ = b.flush(ctx)
		}
	}
}

// flush sends what was gathered. A refusal that is not permanent is
// retried until ctx ends (tap.Emitter.Traces).
func (b *batcher) flush(ctx context.Context) error {
	b.send.Lock()
	defer b.send.Unlock()
	b.mu.Lock()
	if b.spans.Len() == 0 {
		b.mu.Unlock()
		return nil
	}
	b.spans, b.out = b.out, b.spans
	b.mu.Unlock()
	return b.emitter.Traces(ctx, b.out)
}
