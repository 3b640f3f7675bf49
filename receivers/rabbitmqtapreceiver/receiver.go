package rabbitmqtapreceiver

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver/internal/metadata"
)

// transport names how the tap reads its broker, as receiver metrics
// label it.
const transport = "firehose"

// rabbitTap is one tap: a firehose session kept alive by tap.Run and a
// management API poller. The tracker and the replay cache are owned by the
// session's consumer loop (one goroutine at a time, across reconnections);
// the poller owns its HTTP client and the dead-letter bindings it made.
// They share two small sets behind their own locks (the queues with
// pending deliveries, the delay and retry queues); drains go from the
// poller to the tracker through the broker: markers in the tap's queue, in
// order with the frames.
type rabbitTap struct {
	cfg     *Config
	logger  *zap.Logger
	tel     *tap.Telemetry
	emitter *tap.Emitter

	tracker *tracker
	replay  *replayCache
	api     *managementAPI

	// markerToken is in the drain markers of this tap, random: a marker
	// without it is not the tap's.
	markerToken string

	// now is the clock; time.Now outside tests.
	now func() time.Time

	// switchedOn are the vhosts whose tracing the tap switched on, to
	// switch off at shutdown.
	switchedMu sync.Mutex
	switchedOn map[string]bool

	lifecycle sync.Mutex
	cancel    context.CancelFunc
	done      sync.WaitGroup
}

var _ tap.Receiver = (*rabbitTap)(nil)

func newRabbitTap(cfg *Config, set receiver.Settings) (*rabbitTap, error) {
	tel, err := tap.NewTelemetry(set.TelemetrySettings, systemRabbitMQ, metadata.ScopeName)
	if err != nil {
		return nil, fmt.Errorf("tap telemetry: %w", err)
	}
	emitter, err := tap.NewEmitter(set, transport, tel)
	if err != nil {
		return nil, fmt.Errorf("receiver telemetry: %w", err)
	}
	t := &rabbitTap{
		cfg:     cfg,
		logger:  set.Logger,
		tel:     tel,
		emitter: emitter,
		replay:  newReplayCache(4 * cfg.Prefetch * len(cfg.VHosts)),
		now:     time.Now,

		markerToken: rand.Text(),
	}
	t.tracker = newTracker(cfg.Queue, cfg.IncludeCeleryControl, cfg.MaxTrackedMessages, func(err error) {
		t.tel.DecodeError(context.Background(), reasonOf(err), err)
	})
	t.tracker.acksLate = cfg.Celery.AcksLate

	if cfg.Management.Endpoint != "" {
		t.api = &managementAPI{
			endpoint: strings.TrimRight(cfg.Management.Endpoint, "/"),
			username: cfg.Management.Username,
			password: string(cfg.Management.Password),
			client:   &http.Client{Timeout: cfg.Management.Timeout},
		}
	}
	return t, nil
}

// Emitter hands the tap's spans and gauges to its pipelines.
func (t *rabbitTap) Emitter() *tap.Emitter { return t.emitter }

// Start connects in the background and returns at once.
func (t *rabbitTap) Start(_ context.Context, _ component.Host) error {
	t.lifecycle.Lock()
	defer t.lifecycle.Unlock()
	if t.cancel != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.logger.Info("rabbitmq tap starting", zap.String("endpoint", t.cfg.Endpoint),
		zap.Strings("vhosts", t.cfg.VHosts), zap.String("queue", t.cfg.Queue),
		zap.Bool("management", t.api != nil))
	if t.emitter.HasTraces() {
		t.done.Add(1)
		go func() {
			defer t.done.Done()
			tap.Run(ctx, t.logger, t.tel, t.cfg.Reconnect, t.session)
		}()
	}
	if t.api != nil {
		t.done.Add(1)
		go func() {
			defer t.done.Done()
			t.poll(ctx)
		}()
	}
	return nil
}

// Shutdown stops the tap; it is safe without Start and when called twice.
// Frames not yet acked stay in the tap's queue for the next start.
func (t *rabbitTap) Shutdown(ctx context.Context) error {
	t.lifecycle.Lock()
	cancel := t.cancel
	t.lifecycle.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	stopped := make(chan struct{})
	go func() {
		t.done.Wait()
		if t.api != nil {
			t.api.client.CloseIdleConnections()
		}
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		return ctx.Err()
	}
	return t.switchTracingOff(ctx)
}

// tracingSwitched records that the tap switched the vhost's tracing on.
func (t *rabbitTap) tracingSwitched(vhost string) {
	t.switchedMu.Lock()
	defer t.switchedMu.Unlock()
	if t.switchedOn == nil {
		t.switchedOn = map[string]bool{}
	}
	t.switchedOn[vhost] = true
}

// switchTracingOff switches tracing off where the tap switched it on: the
// firehose costs the broker, and frames nobody reads would pile up.
func (t *rabbitTap) switchTracingOff(ctx context.Context) error {
	t.switchedMu.Lock()
	vhosts := t.switchedOn
	t.switchedOn = nil
	t.switchedMu.Unlock()
	var errs []error
	for vhost := range vhosts {
		if _, err := t.api.setTracing(ctx, vhost, false); err != nil {
			errs = append(errs, fmt.Errorf("switch tracing off on vhost %q: %w", vhost, err))
		}
	}
	if t.api != nil {
		t.api.client.CloseIdleConnections()
	}
	return errors.Join(errs...)
}
