package flowstorage

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sort"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/chdb"
	"github.com/flowtrace/flowtrace/storage/chstore"
	"github.com/flowtrace/flowtrace/storage/clickhouse"
)

// ErrNoExtension means the collector runs no flowstorage extension.
var ErrNoExtension = errors.New("no flowstorage extension in the collector's extensions")

// StoreProvider is what the extension offers other components.
type StoreProvider interface {
	// Store returns the named backend, started.
	Store(name string) (storage.Store, error)
}

// GetStore finds the flowstorage extension among the host's extensions and
// returns its named backend ("" for DefaultBackend).
func GetStore(host component.Host, backend string) (storage.Store, error) {
	if backend == "" {
		backend = DefaultBackend
	}
	var found []component.ID
	var provider StoreProvider
	for id, ext := range host.GetExtensions() {
		if p, ok := ext.(StoreProvider); ok {
			found = append(found, id)
			provider = p
		}
	}
	switch len(found) {
	case 0:
		return nil, ErrNoExtension
	case 1:
	default:
		return nil, fmt.Errorf("%d storage extensions (%v): run one, with several backends", len(found), found)
	}
	st, err := provider.Store(backend)
	if err != nil {
		return nil, fmt.Errorf("extension %s: %w", found[0], err)
	}
	return st, nil
}

// flowStorage owns the backends: it opens and migrates them in Start and
// closes them in Shutdown. mu guards stores, which other components read
// after Start.
type flowStorage struct {
	config *Config
	logger *zap.Logger

	mu     sync.Mutex
	stores map[string]storage.Store
}

var (
	_ extension.Extension = (*flowStorage)(nil)
	_ StoreProvider       = (*flowStorage)(nil)
)

func newExtension(config *Config, set extension.Settings) *flowStorage {
	return &flowStorage{config: config, logger: set.Logger}
}

func (e *flowStorage) Start(ctx context.Context, _ component.Host) error {
	backends := e.config.backends()
	names := make([]string, 0, len(backends))
	for name := range backends {
		names = append(names, name)
	}
	sort.Strings(names)
	stores := make(map[string]storage.Store, len(backends))
	for _, name := range names {
		st, err := openBackend(ctx, backends[name])
		if err == nil {
			err = st.Migrate(ctx)
		}
		if err == nil {
			var version string
			version, err = st.EngineVersion(ctx)
			e.logger.Info("Storage backend ready", zap.String("backend", name), zap.String("engine", engineName(backends[name])),
				zap.String("clickhouse_version", version), zap.String("database", backends[name].Database))
		}
		if err != nil {
			if st != nil {
				_ = st.Close()
			}
			for _, opened := range stores {
				_ = opened.Close()
			}
			return fmt.Errorf("storage backend %q: %w", name, err)
		}
		stores[name] = st
	}
	e.mu.Lock()
	e.stores = stores
	e.mu.Unlock()
	return nil
}

func engineName(b BackendConfig) string {
	if b.ClickHouse != nil {
		return "clickhouse"
	}
	return "chdb"
}

func openBackend(ctx context.Context, b BackendConfig) (storage.Store, error) {
	var conn chstore.Conn
	var err error
	switch {
	case b.ClickHouse != nil:
		var tlsConfig *tls.Config
		if b.ClickHouse.TLS != nil {
			if tlsConfig, err = b.ClickHouse.TLS.LoadTLSConfig(ctx); err != nil {
				return nil, fmt.Errorf("tls: %w", err)
			}
		}
		conn, err = clickhouse.Open(ctx, clickhouse.Options{
			Addrs:       b.ClickHouse.Endpoints,
			Username:    b.ClickHouse.Username,
			Password:    string(b.ClickHouse.Password),
			TLS:         tlsConfig,
			DialTimeout: b.ClickHouse.DialTimeout,
		})
	default:
		conn, err = chdb.Open(b.Chdb.Path)
	}
	if err != nil {
		return nil, err
	}
	st, err := chstore.New(conn, b.schema())
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return st, nil
}

func (e *flowStorage) Shutdown(context.Context) error {
	e.mu.Lock()
	stores := e.stores
	e.stores = nil
	e.mu.Unlock()
	var errs []error
	for name, st := range stores {
		if err := st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close backend %q: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

func (e *flowStorage) Store(name string) (storage.Store, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stores == nil {
		return nil, errors.New("flowstorage is not started")
	}
	st, ok := e.stores[name]
	if !ok {
		return nil, fmt.Errorf("no storage backend named %q", name)
	}
	return st, nil
}
