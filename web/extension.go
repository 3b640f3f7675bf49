package web

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componentstatus"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/extensioncapabilities"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/storage/flowstorage"
)

// webExtension serves the API. Start finds the store and starts the server
// goroutine; Shutdown stops it. mu guards server and done.
type webExtension struct {
	cfg      *Config
	settings component.TelemetrySettings

	mu     sync.Mutex
	server *http.Server
	done   chan struct{}
}

func newExtension(cfg *Config, set extension.Settings) *webExtension {
	return &webExtension{cfg: cfg, settings: set.TelemetrySettings}
}

func (w *webExtension) Start(ctx context.Context, host component.Host) error {
	store, err := flowstorage.GetStore(host, w.cfg.Backend)
	if err != nil {
		return fmt.Errorf("flowtrace_web: %w", err)
	}
	listener, err := w.cfg.ToListener(ctx)
	if err != nil {
		return fmt.Errorf("flowtrace_web: listen on %s: %w", w.cfg.NetAddr.Endpoint, err)
	}
	handler := newHostGuard(listener.Addr(), w.cfg.AllowedHosts, newAPI(store, w.settings.Logger))
	server, err := w.cfg.ToServer(ctx, host.GetExtensions(), w.settings, handler)
	if err != nil {
		listener.Close()
		return fmt.Errorf("flowtrace_web: %w", err)
	}
	w.mu.Lock()
	w.server, w.done = server, make(chan struct{})
	w.mu.Unlock()
	w.settings.Logger.Info("Flow explorer and API listening", zap.String("endpoint", listener.Addr().String()))
	go func() {
		defer close(w.done)
		if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			componentstatus.ReportStatus(host, componentstatus.NewFatalErrorEvent(err))
		}
	}()
	return nil
}

// Dependencies makes the collector start the storage extension first.
func (w *webExtension) Dependencies() []component.ID {
	return []component.ID{w.cfg.Storage}
}

var _ extensioncapabilities.Dependent = (*webExtension)(nil)

func (w *webExtension) Shutdown(ctx context.Context) error {
	w.mu.Lock()
	server, done := w.server, w.done
	w.server = nil
	w.mu.Unlock()
	if server == nil {
		return nil
	}
	err := server.Shutdown(ctx)
	<-done
	return err
}
