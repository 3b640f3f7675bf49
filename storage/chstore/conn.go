// Package chstore is the storage.Store that every ClickHouse engine shares:
// the schema and its migrations, the row encoding of batched writes and every
// read query. An engine only has to run SQL; see Conn.
package chstore

import "context"

// Conn runs SQL on one ClickHouse engine. storage/chdb (embedded) and
// storage/clickhouse (server or cluster) implement it.
type Conn interface {
	// Exec runs a statement that returns no rows. An INSERT may carry its data
	// inline after "FORMAT TabSeparated\n".
	Exec(ctx context.Context, query string, params Params) error
	// Query runs a SELECT and returns its rows in JSONEachRow format.
	Query(ctx context.Context, query string, params Params) ([]byte, error)
	// Close releases the connection. It is safe to call twice.
	Close() error
}

// Params fill the {name:Type} placeholders of a query. Values are in the
// text form ClickHouse parses for the placeholder's type (a String as is, an
// Array(String) as ['a','b'], a number as digits); the engine escapes them for
// transport.
type Params map[string]string
