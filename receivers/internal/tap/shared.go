package tap

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
)

// Shared hands the traces and the metrics receiver of one component id the
// same tap, so one broker connection feeds both pipelines.
type Shared[T component.Component] struct {
	mu   sync.Mutex
	taps map[component.ID]*Handle[T]
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

// Get returns the handle of id, creating its tap with create the first time.
func (s *Shared[T]) Get(id component.ID, create func() (T, error)) (*Handle[T], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if h, ok := s.taps[id]; ok {
		return h, nil
	}
	t, err := create()
	if err != nil {
		return nil, err
	}
	if s.taps == nil {
		s.taps = map[component.ID]*Handle[T]{}
	}
	h := &Handle[T]{Tap: t}
	h.release = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.taps, id)
	}
	s.taps[id] = h
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
