package rabbitmqtapreceiver

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSecondVHost reads the firehose of two vhosts: switching tracing on
// keeps the vhost's settings, and a message in the second vhost makes its
// flow.
func TestSecondVHost(t *testing.T) {
	t.Parallel()
	mgmt := managementAddr(t)
	api := testAPI(mgmt)
	t.Cleanup(api.client.CloseIdleConnections)
	vhost := strings.TrimSuffix(uniquePrefix("vhost"), ".")
	path := "/api/vhosts/" + url.PathEscape(vhost)
	ctx := context.Background()
	require.NoError(t, api.do(ctx, http.MethodPut, path, map[string]any{"description": "orders team", "tags": "eu,prod"}, nil))
	t.Cleanup(func() { _ = api.do(ctx, http.MethodDelete, path, nil, nil) })
	require.NoError(t, api.do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/guest",
		map[string]any{"configure": ".*", "write": ".*", "read": ".*"}, nil))

	t.Cleanup(func() {
		// After the tap's shutdown: it switched tracing on, so it
		// switched it off again.
		var v struct {
			Tracing bool `json:"tracing"`
		}
		require.NoError(t, api.do(ctx, http.MethodGet, path, nil, &v))
		assert.False(t, v.Tracing, "tracing switched off at shutdown")
	})
	rt := startTap(t, "vhost", func(cfg *Config) { cfg.VHosts = []string{"/", vhost} })
	var v struct {
		Description string   `json:"description"`
		Tags        []string `json:"tags"`
		Tracing     bool     `json:"tracing"`
	}
	require.NoError(t, api.do(ctx, http.MethodGet, path, nil, &v))
	assert.True(t, v.Tracing)
	assert.Equal(t, "orders team", v.Description)
	assert.ElementsMatch(t, []string{"eu", "prod"}, v.Tags)

	conn, err := amqp.DialConfig("amqp://guest:guest@"+amqpAddr(t), amqp.Config{Vhost: vhost})
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	eventually(t, 30*time.Second, "the tap consumes its queue in the second vhost", func() bool {
		return consumers(conn, rt.cfg.Queue) == 1
	})
	queue := rt.prefix + "orders"
	_, err = ch.QueueDeclare(queue, false, true, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, ch.PublishWithContext(ctx, "", queue, false, false, amqp.Publishing{MessageId: rt.prefix + "o-1", Body: []byte("{}")}))
	ds, err := ch.Consume(queue, "", false, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, next(t, ds).Ack(false))

	want := []string{"completed retries=0 dead_letters=0 hops=1 [rabbitmq/@orders:acked:1]"}
	assertFlows(t, rt.traces, rt.prefix, 30*time.Second, want)
}
