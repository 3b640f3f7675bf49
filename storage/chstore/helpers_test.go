package chstore_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

// newStore migrates a store in a database of its own, dropped when the test
// ends.
func newStore(t *testing.T, ttl time.Duration) (storage.Store, chstore.Schema) {
	t.Helper()
	schema := chstore.Schema{Database: "test_" + strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())), TTL: ttl}
	st, err := chstore.New(engine, schema)
	require.NoError(t, err)
	require.NoError(t, st.Migrate(context.Background()))
	t.Cleanup(func() {
		require.NoError(t, engine.Exec(context.Background(), "DROP DATABASE IF EXISTS `"+schema.Database+"`", nil))
	})
	return st, schema
}

// queryRows runs a query and decodes its rows as generic maps.
func queryRows(t *testing.T, query string, params chstore.Params) []map[string]any {
	t.Helper()
	out, err := engine.Query(context.Background(), query, params)
	require.NoError(t, err)
	var rows []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var row map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &row))
		rows = append(rows, row)
	}
	return rows
}

// count returns SELECT count() of a table, FINAL or not.
func count(t *testing.T, schema chstore.Schema, table string, final bool) int {
	t.Helper()
	query := "SELECT count() AS n FROM `" + schema.Database + "`.`" + table + "`"
	if final {
		query += " FINAL"
	}
	rows := queryRows(t, query, nil)
	require.Len(t, rows, 1)
	return int(rows[0]["n"].(float64))
}
