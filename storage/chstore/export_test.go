package chstore

import (
	"io/fs"

	"github.com/flowtrace/flowtrace/storage"
)

// NewWithMigrations is New with the migrations taken from src, for tests.
func NewWithMigrations(conn Conn, schema Schema, src fs.FS) (storage.Store, error) {
	return newStore(conn, schema, src)
}

// FindFlowsSQL is the statement FindFlows runs for q, for tests of its text.
func FindFlowsSQL(schema Schema, q storage.FlowQuery) (string, error) {
	query, _, _, err := (&store{schema: schema}).findFlowsQuery(q)
	return query, err
}
