package clickhouse

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

func TestWrapJSONEachRow(t *testing.T) {
	assert.Equal(t, "SELECT formatRow('JSONEachRow', *) FROM (SELECT 1 AS a)", wrapJSONEachRow("SELECT 1 AS a"))
}

func TestOpenNeedsAnAddress(t *testing.T) {
	_, err := Open(context.Background(), Options{})
	require.ErrorContains(t, err, "no address")
}

// TestServer runs the store against a real server when
// FLOWTRACE_CLICKHOUSE_ADDR (host:port of the native protocol) is set, with
// FLOWTRACE_CLICKHOUSE_USER, FLOWTRACE_CLICKHOUSE_PASSWORD and
// FLOWTRACE_CLICKHOUSE_CLUSTER optional.
func TestServer(t *testing.T) {
	addr := os.Getenv("FLOWTRACE_CLICKHOUSE_ADDR")
	if addr == "" {
		t.Skip("FLOWTRACE_CLICKHOUSE_ADDR not set: no ClickHouse server to test against")
	}
	ctx := context.Background()
	conn, err := Open(ctx, Options{
		Addrs:    strings.Split(addr, ","),
		Username: os.Getenv("FLOWTRACE_CLICKHOUSE_USER"),
		Password: os.Getenv("FLOWTRACE_CLICKHOUSE_PASSWORD"),
	})
	require.NoError(t, err)
	schema := chstore.Schema{
		Database: "flowtrace_test_" + time.Now().UTC().Format("20060102150405"),
		Cluster:  os.Getenv("FLOWTRACE_CLICKHOUSE_CLUSTER"),
		TTL:      24 * time.Hour,
	}
	st, err := chstore.New(conn, schema)
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = conn.Exec(ctx, "DROP DATABASE IF EXISTS `"+schema.Database+"` "+onCluster(schema.Cluster), nil)
		_ = st.Close()
	})
	require.NoError(t, st.Migrate(ctx))
	require.NoError(t, st.Migrate(ctx))

	now := time.Now().UTC().Truncate(time.Millisecond)
	flow := model.Flow{ID: "f1", Version: 1, FirstSeen: now, Name: "it's\ta test", Status: model.FlowCompleted,
		Start: now, End: now.Add(time.Second), HopCount: 1, Keys: []model.Key{{Kind: "order_id", Value: `o\1`}}}
	for range 2 {
		require.NoError(t, st.WriteFlows(ctx, []model.Flow{flow}))
	}
	got, err := st.GetFlow(ctx, "f1")
	require.NoError(t, err)
	assert.Equal(t, flow, got.Flow)
	ids, err := st.FlowIDsByKey(ctx, `o\1`, 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"f1"}, ids)

	version, err := st.EngineVersion(ctx)
	require.NoError(t, err)
	assert.NotEmpty(t, version)
}

func onCluster(cluster string) string {
	if cluster == "" {
		return ""
	}
	return "ON CLUSTER `" + cluster + "`"
}
