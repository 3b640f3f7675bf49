// Package storage defines how flowtrace persists and reads events, hops,
// flows and backlog samples. The SQL implementation shared by every ClickHouse
// engine lives in storage/chstore; the engines in storage/chdb (embedded) and
// storage/clickhouse (server or cluster); the collector extension that owns
// named backends in storage/flowstorage.
package storage

import (
	"context"
	"errors"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// Errors returned by a Store.
var (
	// ErrNotFound means the requested flow does not exist (or was merged away).
	ErrNotFound = errors.New("not found")
	// ErrBadCursor means a pagination cursor was not one this store issued.
	ErrBadCursor = errors.New("bad cursor")
	// ErrClosed means the store was used after Close.
	ErrClosed = errors.New("storage closed")
)

// Store is a storage backend: schema management, batched writes and reads.
type Store interface {
	Writer
	Reader
	// Migrate creates the schema or brings it up to date. It is idempotent and
	// applies each migration once.
	Migrate(ctx context.Context) error
	// Close releases the backend. It is safe to call twice.
	Close() error
}

// Writer writes batches. Every write is idempotent: writing the same batch
// again (a retry after a timeout, a replay after a crash) leaves one copy.
type Writer interface {
	WriteEvents(ctx context.Context, events []model.Event) error
	WriteHops(ctx context.Context, hops []model.Hop) error
	// WriteFlows writes flow versions and indexes their keys.
	WriteFlows(ctx context.Context, flows []model.Flow) error
	WriteBacklog(ctx context.Context, samples []model.BacklogSample) error
}

// Reader serves the queries of the web API.
type Reader interface {
	// FindFlows lists flows matching q, newest first, one page at a time.
	FindFlows(ctx context.Context, q FlowQuery) (FlowPage, error)
	// GetFlow returns one flow with its hops and events, or ErrNotFound.
	GetFlow(ctx context.Context, id string) (FlowDetail, error)
	// FlowIDsByKey returns the ids of the flows that carry the key value, of
	// any kind.
	FlowIDsByKey(ctx context.Context, key string, limit int) ([]string, error)
	// Topology returns per-edge statistics over [from, to).
	Topology(ctx context.Context, from, to time.Time) ([]model.EdgeStats, error)
	// EdgeSeries returns an edge's statistics per step over [from, to).
	EdgeSeries(ctx context.Context, q SeriesQuery) ([]model.EdgePoint, error)
	// BacklogSeries returns backlog samples of a destination over [from, to).
	BacklogSeries(ctx context.Context, q BacklogQuery) ([]model.BacklogSample, error)
	// EngineVersion is the ClickHouse version behind the store.
	EngineVersion(ctx context.Context) (string, error)
}

// FlowQuery selects flows. Zero fields do not filter.
type FlowQuery struct {
	Key         string // any key of the flow: trace id, message id, task id, correlation id, business key
	Name        string
	Statuses    []model.FlowStatus
	From, To    time.Time // flow start in [From, To)
	MinDuration time.Duration
	Limit       int    // default DefaultLimit, at most MaxLimit
	Cursor      string // from a previous FlowPage
}

// Page sizes of FindFlows.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// FlowPage is one page of FindFlows.
type FlowPage struct {
	Flows      []model.Flow
	NextCursor string // empty on the last page
}

// FlowDetail is a flow with what it is made of.
type FlowDetail struct {
	Flow   model.Flow
	Hops   []model.Hop
	Events []model.Event
}

// SeriesQuery selects an edge's time series.
type SeriesQuery struct {
	Edge     model.Edge
	From, To time.Time
	Step     time.Duration // rounded to whole minutes, at least one
}

// BacklogQuery selects backlog samples. Empty strings do not filter.
type BacklogQuery struct {
	System        string
	Destination   string
	ConsumerGroup string
	From, To      time.Time
}
