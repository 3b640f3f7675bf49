// Package chstore is the storage.Store that every ClickHouse engine shares:
// the schema and its migrations, the column layout of batched writes and
// every read query. An engine only has to move SQL and blocks; see Conn.
package chstore

import "context"

// Conn runs SQL on one ClickHouse engine. storage/chdb (embedded) and
// storage/clickhouse (server or cluster) implement it.
type Conn interface {
	// Exec runs a statement that returns no rows.
	Exec(ctx context.Context, query string, params Params) error
	// Query runs a SELECT and returns its rows in JSONEachRow format.
	Query(ctx context.Context, query string, params Params) ([]byte, error)
	// Insert writes a block into a table in one INSERT.
	Insert(ctx context.Context, insert *Insert) error
	// Close releases the connection. It is safe to call twice.
	Close() error
}

// Insert is one INSERT of a block.
type Insert struct {
	// Table is the qualified, quoted table name.
	Table string
	Block *Block
	// Native is Block in ClickHouse's Native format, for engines that send
	// bytes rather than columns. It is reused once Insert returns.
	Native []byte
	// Settings are the INSERT's query settings (deduplication token and the
	// like), with unquoted values.
	Settings []Setting
}

// Setting is one query setting.
type Setting struct {
	Name  string
	Value string
}

// Params fill the {name:Type} placeholders of a query. Values are in the
// text form ClickHouse parses for the placeholder's type (a String escaped as
// in TabSeparated, an Array(String) as ['a','b'], a number as digits); the
// engine quotes them for transport.
type Params map[string]string
