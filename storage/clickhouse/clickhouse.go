// Package clickhouse is the server storage engine: a ClickHouse server or
// cluster reached over the native protocol with
// github.com/ClickHouse/clickhouse-go/v2. It runs exactly the SQL the embedded
// engine runs (storage/chstore); this package only moves it.
package clickhouse

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"time"

	ch "github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/flowtrace/flowtrace/storage/chstore"
)

// Options say how to reach the server.
type Options struct {
	Addrs       []string // host:port of the native protocol, one or more
	Username    string
	Password    string
	TLS         *tls.Config // nil for plain TCP
	DialTimeout time.Duration
}

// conn is a chstore.Conn over a clickhouse-go connection pool, which is safe
// for concurrent use.
type conn struct {
	pool driver.Conn
}

var _ chstore.Conn = (*conn)(nil)

// Open connects and pings the server.
func Open(ctx context.Context, opts Options) (chstore.Conn, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("clickhouse: no address")
	}
	pool, err := ch.Open(&ch.Options{
		Addr:        opts.Addrs,
		Auth:        ch.Auth{Username: opts.Username, Password: opts.Password},
		TLS:         opts.TLS,
		DialTimeout: opts.DialTimeout,
		// The same session settings as the embedded engine: UTC times, JSON
		// numbers as numbers.
		Settings: ch.Settings{
			"session_timezone":                        "UTC",
			"output_format_json_quote_64bit_integers": 0,
		},
		Compression: &ch.Compression{Method: ch.CompressionLZ4},
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", strings.Join(opts.Addrs, ","), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("clickhouse %s: ping: %w", strings.Join(opts.Addrs, ","), err)
	}
	return &conn{pool: pool}, nil
}

func withParams(ctx context.Context, params chstore.Params) context.Context {
	if len(params) == 0 {
		return ctx
	}
	return ch.Context(ctx, ch.WithParameters(ch.Parameters(params)))
}

func (c *conn) Exec(ctx context.Context, query string, params chstore.Params) error {
	return c.pool.Exec(withParams(ctx, params), query)
}

// Query wraps the statement so the server formats each row as JSONEachRow,
// the form chstore decodes.
func (c *conn) Query(ctx context.Context, query string, params chstore.Params) ([]byte, error) {
	rows, err := c.pool.Query(withParams(ctx, params), wrapJSONEachRow(query))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []byte
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return nil, err
		}
		out = append(out, line...)
	}
	return out, rows.Err()
}

// Insert sends the block's columns through clickhouse-go's batch API, which
// speaks the native protocol's own block format.
func (c *conn) Insert(ctx context.Context, insert *chstore.Insert) error {
	settings := ch.Settings{}
	for _, s := range insert.Settings {
		settings[s.Name] = s.Value
	}
	ctx = ch.Context(ctx, ch.WithSettings(settings))
	batch, err := c.pool.PrepareBatch(ctx, "INSERT INTO "+insert.Table+" ("+insert.Block.Names()+")")
	if err != nil {
		return err
	}
	defer batch.Abort()
	for i, column := range insert.Block.Columns {
		if err := batch.Column(i).Append(columnData(column)); err != nil {
			return fmt.Errorf("column %s: %w", column.Name, err)
		}
	}
	return batch.Send()
}

// columnData adapts a column to what clickhouse-go appends: it reads int64
// DateTime64 values as milliseconds, so times go as time.Time.
func columnData(column chstore.Column) any {
	if !column.IsTime() {
		return column.Data
	}
	nanos := column.Data.([]int64)
	times := make([]time.Time, len(nanos))
	for i, ns := range nanos {
		times[i] = time.Unix(0, ns).UTC()
	}
	return times
}

func wrapJSONEachRow(query string) string {
	return "SELECT formatRow('JSONEachRow', *) FROM (" + query + ")"
}

func (c *conn) Close() error {
	return c.pool.Close()
}
