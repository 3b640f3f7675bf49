package chstore

import (
	"context"
	"fmt"
	"io/fs"
	"sync/atomic"

	"github.com/flowtrace/flowtrace/storage"
)

// store is the storage.Store over any Conn.
type store struct {
	conn   Conn
	schema Schema
	src    fs.FS
	closed atomic.Bool
}

var _ storage.Store = (*store)(nil)

// New returns a Store that runs its SQL through conn. It does not touch the
// schema; call Migrate.
func New(conn Conn, schema Schema) (storage.Store, error) {
	return newStore(conn, schema, SchemaFS())
}

func newStore(conn Conn, schema Schema, src fs.FS) (*store, error) {
	if err := schema.Validate(); err != nil {
		return nil, fmt.Errorf("storage schema: %w", err)
	}
	return &store{conn: conn, schema: schema, src: src}, nil
}

func (s *store) Migrate(ctx context.Context) error {
	if s.closed.Load() {
		return storage.ErrClosed
	}
	if err := s.migrate(ctx); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

func (s *store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.conn.Close()
}

func (s *store) query(ctx context.Context, query string, params Params) ([]byte, error) {
	if s.closed.Load() {
		return nil, storage.ErrClosed
	}
	return s.conn.Query(ctx, query, params)
}

func (s *store) EngineVersion(ctx context.Context) (string, error) {
	type versionRow struct {
		Version string `json:"version"`
	}
	versions, err := selectRows(ctx, s, "SELECT version() AS version", nil, func(r *versionRow) string { return r.Version })
	if err != nil {
		return "", fmt.Errorf("engine version: %w", err)
	}
	if len(versions) != 1 {
		return "", fmt.Errorf("engine version: %d rows", len(versions))
	}
	return versions[0], nil
}
