package tap

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
)

// Shared hands the traces and the metrics receiver of one component the
// same tap, so one broker connection feeds both pipelines. It is keyed by
// the component's id and its configuration, which the collector hands both
// receivers: after a reload (new configurations) a tap that was never shut
// down — its pipelines failed to build — is not handed out again.
type Shared[T component.Component] struct {
	mu   sync.Mutex
	taps map[sharedKey]*Handle[T]
}

type sharedKey struct {
	id  component.ID
	cfg component.Config
}

// Handle is the receiver the collector holds: it starts its tap once and
// stops it once, however many pipelines use it.
type Handle[T component.Component] struct {
	Tap      T
	start    sync.Once
	startErr error
	stop     sync.Once
	release  func()
}

// Get returns the handle of the component id with configuration cfg,
// creating its tap with create the first time.
func (s *Shared[T]) Get(id component.ID, cfg component.Config, create func() (T, error)) (*Handle[T], error) {
	key := sharedKey{id, cfg}
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.taps[key]; ok {
		return h, nil
	}
	t, err := create()
	if err != nil {
		return nil, err
	}
	if s.taps == nil {
		s.taps = map[sharedKey]*Handle[T]{}
	}
	h := &Handle[T]{Tap: t}
	h.release = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.taps, key)
	}
	s.taps[key] = h
	return h, nil
}

// Start starts the tap, the first time only.
func (h *Handle[T]) Start(ctx context.Context, host component.Host) error {
	h.start.Do(func() { h.startErr = h.Tap.Start(ctx, host) })
	return h.startErr
}

// Shutdown stops the tap, the first time only, and forgets it.
func (h *Handle[T]) Shutdown(ctx context.Context) error {
	var err error
	h.stop.Do(func() {
		h.release()
		err = h.Tap.Shutdown(ctx)
	})
	return err
}
