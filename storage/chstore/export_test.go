package chstore

import (
	"io/fs"

	"github.com/flowtrace/flowtrace/storage"
)

// NewWithMigrations is New with the migrations taken from src, for tests.
func NewWithMigrations(conn Conn, schema Schema, src fs.FS) (storage.Store, error) {
	return newStore(conn, schema, src)
}
