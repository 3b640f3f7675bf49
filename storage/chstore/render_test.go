package chstore_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

func renderAll(t *testing.T, schema chstore.Schema) string {
	t.Helper()
	migrations, err := schema.Migrations(chstore.SchemaFS())
	require.NoError(t, err)
	var all []string
	for _, m := range migrations {
		all = append(all, m.Statements...)
	}
	return strings.Join(all, ";\n")
}

func TestRenderSingleNode(t *testing.T) {
	ddl := renderAll(t, chstore.Schema{Database: "flowtrace", TTL: 72 * time.Hour})
	assert.NotContains(t, ddl, "ON CLUSTER")
	assert.NotContains(t, ddl, "Replicated")
	assert.NotContains(t, ddl, "Distributed")
	assert.Contains(t, ddl, "CREATE TABLE IF NOT EXISTS `flowtrace`.`events`")
	assert.Contains(t, ddl, "ENGINE = ReplacingMergeTree(version, deleted)")
	assert.Contains(t, ddl, "SETTINGS non_replicated_deduplication_window = 1000")
	assert.Contains(t, ddl, "TTL toDateTime(time) + INTERVAL 259200 SECOND")
	assert.NotContains(t, ddl, "{{")
}

func TestRenderCluster(t *testing.T) {
	ddl := renderAll(t, chstore.Schema{Database: "ft", Cluster: "prod", TTL: time.Hour})
	for _, table := range []string{"events", "hops", "flows", "edges_1m", "backlog"} {
		assert.Contains(t, ddl, "CREATE TABLE IF NOT EXISTS `ft`.`"+table+"_local` ON CLUSTER `prod`", table)
		assert.Contains(t, ddl, "CREATE TABLE IF NOT EXISTS `ft`.`"+table+"` ON CLUSTER `prod` AS `ft`.`"+table+"_local` ENGINE = Distributed(`prod`, `ft`, `"+table+"_local`", table)
	}
	assert.Contains(t, ddl, "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', version, deleted)")
	assert.Contains(t, ddl, "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')")
	assert.Contains(t, ddl, "ENGINE = ReplicatedAggregatingMergeTree(")
	// The view reads and writes the node's own tables.
	assert.Contains(t, ddl, "TO `ft`.`edges_1m_local`")
	assert.Contains(t, ddl, "FROM `ft`.`hops_local`")
	assert.NotContains(t, ddl, "non_replicated_deduplication_window")
	// Every table is sharded by its rows' own values, so a retried insert
	// splits the same way and each shard recognises its part; events made
	// by earlier versions, sharded at random, are redistributed.
	assert.NotContains(t, ddl, "rand()")
	assert.Contains(t, ddl, "CREATE OR REPLACE TABLE `ft`.`events` ON CLUSTER `prod` AS `ft`.`events_local` ENGINE = Distributed(`prod`, `ft`, `events_local`, cityHash64(message_id, span_id))")
}

// TestKeySearchOnACluster: a key search reads flows through the Distributed
// table, and its subquery must read each node's own table. A subquery on
// the Distributed table inside it is a double-distributed IN, which
// ClickHouse refuses by default; flows are sharded by flow_id, so every
// version of a flow is on the node that answers for it.
func TestKeySearchOnACluster(t *testing.T) {
	query, err := chstore.FindFlowsSQL(chstore.Schema{Database: "ft", Cluster: "prod"}, storage.FlowQuery{Key: "o-1"})
	require.NoError(t, err)
	assert.Contains(t, query, "FROM `ft`.`flows` FINAL")
	assert.Contains(t, query, "flow_id IN (SELECT flow_id FROM `ft`.`flows_local` WHERE")
}

func TestSchemaValidate(t *testing.T) {
	for _, tc := range []struct {
		schema chstore.Schema
		err    string
	}{
		{chstore.Schema{Database: "flowtrace"}, ""},
		{chstore.Schema{Database: ""}, "database"},
		{chstore.Schema{Database: "x`; DROP TABLE y"}, "database"},
		{chstore.Schema{Database: "ok", Cluster: "no spaces"}, "cluster"},
		{chstore.Schema{Database: "ok", TTL: -time.Hour}, "ttl"},
	} {
		err := tc.schema.Validate()
		if tc.err == "" {
			assert.NoError(t, err)
		} else {
			assert.ErrorContains(t, err, tc.err)
		}
	}
}
