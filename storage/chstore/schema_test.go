package chstore_test

import (
	"context"
	"io/fs"
	"os"
	"testing"
	"testing/fstest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

func TestMigrateIsIdempotent(t *testing.T) {
	st, schema := newStore(t, 0)
	ctx := context.Background()
	require.NoError(t, st.Migrate(ctx))
	require.NoError(t, st.Migrate(ctx))

	files, err := fs.Glob(chstore.SchemaFS(), "*.sql")
	require.NoError(t, err)
	assert.Equal(t, len(files), count(t, schema, "schema_migrations", false), "one record per migration")

	rows := queryRows(t, "SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name", chstore.Params{"db": schema.Database})
	var tables []string
	for _, r := range rows {
		tables = append(tables, r["name"].(string))
	}
	assert.Equal(t, []string{"backlog", "edges_1m", "edges_1m_mv", "events", "flows", "hops", "schema_migrations"}, tables)
}

func TestEachMigrationAppliesOnce(t *testing.T) {
	schema := chstore.Schema{Database: "test_migrations_once"}
	t.Cleanup(func() { _ = engine.Exec(context.Background(), "DROP DATABASE IF EXISTS test_migrations_once", nil) })
	// Not idempotent on purpose: an INSERT applied twice would show.
	src := fstest.MapFS{
		"0001_create.sql": {Data: []byte("CREATE TABLE {{table \"applied\"}} (step String) ENGINE = MergeTree ORDER BY step;")},
		"0002_first.sql":  {Data: []byte("INSERT INTO {{table \"applied\"}} VALUES ('first');")},
	}
	ctx := context.Background()
	for range 3 {
		st, err := chstore.NewWithMigrations(engine, schema, src)
		require.NoError(t, err)
		require.NoError(t, st.Migrate(ctx))
	}
	assert.Equal(t, 1, count(t, schema, "applied", false))

	src["0003_second.sql"] = &fstest.MapFile{Data: []byte("INSERT INTO {{table \"applied\"}} VALUES ('second');")}
	st, err := chstore.NewWithMigrations(engine, schema, src)
	require.NoError(t, err)
	require.NoError(t, st.Migrate(ctx))
	require.NoError(t, st.Migrate(ctx))
	rows := queryRows(t, "SELECT step FROM test_migrations_once.applied ORDER BY step", nil)
	assert.Equal(t, []map[string]any{{"step": "first"}, {"step": "second"}}, rows)
}

func TestMigrationErrorNamesTheMigration(t *testing.T) {
	schema := chstore.Schema{Database: "test_migration_error"}
	t.Cleanup(func() { _ = engine.Exec(context.Background(), "DROP DATABASE IF EXISTS test_migration_error", nil) })
	src := fstest.MapFS{"0001_broken.sql": {Data: []byte("CREATE TABLE nonsense(;")}}
	st, err := chstore.NewWithMigrations(engine, schema, src)
	require.NoError(t, err)
	err = st.Migrate(context.Background())
	require.ErrorContains(t, err, "migration 0001_broken")
}

func TestTTLIsSet(t *testing.T) {
	_, schema := newStore(t, 30*24*time.Hour)
	for _, table := range []string{"events", "hops", "flows", "edges_1m", "backlog"} {
		rows := queryRows(t, "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = {table:String}",
			chstore.Params{"db": schema.Database, "table": table})
		require.Len(t, rows, 1, table)
		assert.Contains(t, rows[0]["create_table_query"], "TTL ", table)
		assert.Contains(t, rows[0]["create_table_query"], "toIntervalSecond(2592000)", table)
	}
}

func TestNoTTLWhenZero(t *testing.T) {
	_, schema := newStore(t, 0)
	rows := queryRows(t, "SELECT create_table_query FROM system.tables WHERE database = {db:String} AND name = 'events'",
		chstore.Params{"db": schema.Database})
	require.Len(t, rows, 1)
	assert.NotContains(t, rows[0]["create_table_query"], "TTL ")
}

// A database made by the migrations as they were before 0006 (kept in
// testdata) is brought to today's tables: flows searchable by key, flow_keys
// gone, the unused bloom filters dropped, key kinds plain strings, ids in
// LZ4.
func TestUpgradeFromFlowKeys(t *testing.T) {
	schema := chstore.Schema{Database: "test_upgrade_flow_keys"}
	t.Cleanup(func() { _ = engine.Exec(context.Background(), "DROP DATABASE IF EXISTS test_upgrade_flow_keys", nil) })
	ctx := context.Background()
	old, err := fs.Sub(os.DirFS("testdata"), "schema-before-0006")
	require.NoError(t, err)
	st, err := chstore.NewWithMigrations(engine, schema, old)
	require.NoError(t, err)
	require.NoError(t, st.Migrate(ctx))
	// Written by the old version, which also filled flow_keys.
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{{ID: "f", Version: 1, FirstSeen: t0, Keys: []model.Key{{Kind: "order_id", Value: "order-1"}}}}))

	st, err = chstore.New(engine, schema)
	require.NoError(t, err)
	require.NoError(t, st.Migrate(ctx))

	page, err := st.FindFlows(ctx, storage.FlowQuery{Key: "order-1"})
	require.NoError(t, err)
	assert.Equal(t, []string{"f"}, flowIDs(page.Flows))
	indexes := map[string][]string{}
	for _, r := range queryRows(t, "SELECT table, name FROM system.data_skipping_indices WHERE database = {db:String} ORDER BY table, name", chstore.Params{"db": schema.Database}) {
		indexes[r["table"].(string)] = append(indexes[r["table"].(string)], r["name"].(string))
	}
	assert.Equal(t, map[string][]string{"events": {"idx_message_id"}, "flows": {"idx_keys", "idx_name", "idx_start"}}, indexes)
	assert.Empty(t, queryRows(t, "SELECT name FROM system.tables WHERE database = {db:String} AND name = 'flow_keys'", chstore.Params{"db": schema.Database}))
	// 0008: ids compressed with LZ4, as 0001 and 0002 now create them.
	assert.Empty(t, queryRows(t, "SELECT table, name FROM system.columns WHERE database = {db:String} AND table IN ('events', 'hops') AND compression_codec LIKE '%ZSTD%'",
		chstore.Params{"db": schema.Database}), "events and hops hold no ZSTD column any more")
	// 0007: key kinds as plain strings, as 0003 now creates them.
	assert.Equal(t, []map[string]any{{"type": "Array(String)"}},
		queryRows(t, "SELECT type FROM system.columns WHERE database = {db:String} AND table = 'flows' AND name = 'keys.kind'", chstore.Params{"db": schema.Database}))
}
