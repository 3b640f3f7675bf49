package segmentstorage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/storage/segmentstorage/internal/kvlog"
	"github.com/flowtrace/flowtrace/storage/segmentstorage/internal/metadata"
)

// segmentStorage hands each component a client on its own directory.
type segmentStorage struct {
	cfg     *Config
	logger  *zap.Logger
	dropped metric.Int64Counter // bytes of damaged records cut off at open

	mu      sync.Mutex
	clients map[string]*client // by directory
}

var _ storage.Extension = (*segmentStorage)(nil)

func newExtension(cfg *Config, set extension.Settings) (*segmentStorage, error) {
	dropped, err := set.MeterProvider.Meter(metadata.ScopeName).Int64Counter("flowtrace.segment_storage.dropped",
		metric.WithUnit("By"),
		metric.WithDescription("Bytes of stored records found damaged (torn by a crash, or corrupt) and cut off."))
	if err != nil {
		return nil, err
	}
	return &segmentStorage{cfg: cfg, logger: set.Logger, dropped: dropped, clients: map[string]*client{}}, nil
}

func (s *segmentStorage) Start(context.Context, component.Host) error { return nil }

// Shutdown closes the clients their owners left open.
func (s *segmentStorage) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	clients := make([]*client, 0, len(s.clients))
	for _, c := range s.clients {
		clients = append(clients, c)
	}
	s.mu.Unlock()
	var err error
	for _, c := range clients {
		err = errors.Join(err, c.Close(ctx))
	}
	return err
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

// GetClient opens the store of one component's named storage.
func (s *segmentStorage) GetClient(ctx context.Context, kind component.Kind, id component.ID, name string) (storage.Client, error) {
	parts := []string{strings.ToLower(kind.String()), id.Type().String(), id.Name(), name}
	dir := filepath.Join(s.cfg.Directory, unsafeChars.ReplaceAllString(strings.Join(parts, "_"), "~"))

	s.mu.Lock()
	defer s.mu.Unlock()
	if _, open := s.clients[dir]; open {
		return nil, fmt.Errorf("segment_storage: %s is already open", dir)
	}
	log, recovery, err := kvlog.Open(dir, kvlog.Options{
		SegmentSize: s.cfg.SegmentSize,
		Sync:        s.cfg.FSync,
		OnError: func(err error) {
			s.logger.Warn("Segment upkeep failed; retried at the next segment", zap.String("directory", dir), zap.Error(err))
		},
	})
	if err != nil {
		return nil, fmt.Errorf("segment_storage: %w", err)
	}
	if recovery.Dropped > 0 {
		s.logger.Error("Damaged records cut off (torn by a crash, or corrupt); what they held is lost",
			zap.String("directory", dir), zap.Strings("segments", recovery.Segments), zap.Int64("bytes", recovery.Dropped))
		s.dropped.Add(ctx, recovery.Dropped)
	}
	c := &client{log: log, release: func() {
		s.mu.Lock()
		delete(s.clients, dir)
		s.mu.Unlock()
	}}
	s.clients[dir] = c
	return c, nil
}

// client is one component's store.
type client struct {
	log     *kvlog.Log
	once    sync.Once
	release func()
}

var _ storage.Client = (*client)(nil)

func (c *client) Get(ctx context.Context, key string) ([]byte, error) {
	op := storage.GetOperation(key)
	err := c.Batch(ctx, op)
	return op.Value, err
}

func (c *client) Set(ctx context.Context, key string, value []byte) error {
	return c.Batch(ctx, storage.SetOperation(key, value))
}

func (c *client) Delete(ctx context.Context, key string) error {
	return c.Batch(ctx, storage.DeleteOperation(key))
}

// Batch applies ops in order, in one write; gets see the batch's own sets.
func (c *client) Batch(ctx context.Context, ops ...*storage.Operation) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	batch := make([]kvlog.Op, len(ops))
	for i, op := range ops {
		batch[i] = kvlog.Op{Key: op.Key, Value: op.Value}
		switch op.Type {
		case storage.Get:
			batch[i].Type = kvlog.Get
		case storage.Set:
			batch[i].Type = kvlog.Set
		case storage.Delete:
			batch[i].Type = kvlog.Delete
		default:
			return fmt.Errorf("segment_storage: unknown operation type %d", op.Type)
		}
	}
	if err := c.log.Batch(batch); err != nil {
		return fmt.Errorf("segment_storage: %w", err)
	}
	for i, op := range ops {
		if op.Type == storage.Get {
			op.Value = batch[i].Value
		}
	}
	return nil
}

func (c *client) Close(context.Context) error {
	var err error
	c.once.Do(func() {
		err = c.log.Close()
		c.release()
	})
	return err
}
