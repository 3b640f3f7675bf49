package rabbitmqtapreceiver

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver/internal/metadata"
)

// TestReplay: a frame the broker gives again after its batch was not acked
// yields the observations it yielded the first time, not new ones.
func TestReplay(t *testing.T) {
	rt, err := newRabbitTap(createDefaultConfig(), receivertest.NewNopSettings(metadata.Type))
	require.NoError(t, err)
	clock := time.Unix(1795000000, 0)
	rt.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	frames := loadFrames(t)
	var deliver amqp.Delivery
	for _, d := range frames {
		if d.RoutingKey != "publish." {
			deliver = d
			break
		}
	}
	deliver.DeliveryTag = 7
	first := rt.handle(context.Background(), incoming{d: deliver})
	require.Len(t, first.obs, 1)
	rt.replay.keep([]frameRecord{first})

	again := deliver
	again.Redelivered, again.DeliveryTag = true, 9
	replayed := rt.handle(context.Background(), incoming{d: again})
	assert.Equal(t, first.obs, replayed.obs)
	assert.Equal(t, uint64(9), replayed.tag)

	// Not remembered any more: read anew, at a later time.
	fresh := rt.handle(context.Background(), incoming{d: again})
	require.Len(t, fresh.obs, 1)
	assert.True(t, fresh.obs[0].Time.After(first.obs[0].Time))
}

func TestReplayCacheBound(t *testing.T) {
	c := newReplayCache(2)
	c.keep([]frameRecord{{digest: 1}, {digest: 2}})
	c.keep([]frameRecord{{digest: 3}})
	_, ok := c.take(0, 1)
	assert.False(t, ok, "past the bound, older frames are forgotten")
	_, ok = c.take(0, 3)
	assert.True(t, ok)
	_, ok = c.take(0, 3)
	assert.False(t, ok, "taken once")
}

// TestPartialAck: when the ack of one vhost's frames fails after another
// vhost's were acked, only the frames not acked are kept for replay.
func TestPartialAck(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.VHosts = []string{"/", "orders", "billing"}
	rt, err := newRabbitTap(cfg, receivertest.NewNopSettings(metadata.Type))
	require.NoError(t, err)
	batch := []frameRecord{{vhost: 0, tag: 1, digest: 10}, {vhost: 1, tag: 1, digest: 11}, {vhost: 2, tag: 1, digest: 12}, {vhost: 0, tag: 2, digest: 13}}
	var acked []int
	ack := func(vhost int, _ uint64) error {
		if vhost == 1 {
			return errors.New("channel closed")
		}
		acked = append(acked, vhost)
		return nil
	}
	require.Error(t, rt.flush(context.Background(), ack, &batch, tap.NewSpans(systemRabbitMQ, metadata.ScopeName)))
	assert.Equal(t, []int{0}, acked)
	assert.Equal(t, []frameRecord{{vhost: 1, tag: 1, digest: 11}, {vhost: 2, tag: 1, digest: 12}}, batch)
}

// TestFrameDigest: frames that differ only in their properties differ;
// the order of a table's keys does not matter.
func TestFrameDigest(t *testing.T) {
	frame := func(props amqp.Table) *amqp.Delivery {
		return &amqp.Delivery{Exchange: traceExchange, RoutingKey: "deliver.work", Body: []byte("{}"),
			Headers: amqp.Table{"properties": props}}
	}
	a := frameDigest(frame(amqp.Table{"message_id": "m1", "headers": amqp.Table{"a": int32(1), "b": "x"}}))
	assert.Equal(t, a, frameDigest(frame(amqp.Table{"headers": amqp.Table{"b": "x", "a": int32(1)}, "message_id": "m1"})))
	assert.NotEqual(t, a, frameDigest(frame(amqp.Table{"message_id": "m2", "headers": amqp.Table{"a": int32(1), "b": "x"}})))
	assert.NotEqual(t, a, frameDigest(frame(amqp.Table{"message_id": "m1", "headers": amqp.Table{"a": int32(2), "b": "x"}})))
}

// TestMarkerToken: a drain marker settles deliveries only with the tap's
// token.
func TestMarkerToken(t *testing.T) {
	rt, err := newRabbitTap(createDefaultConfig(), receivertest.NewNopSettings(metadata.Type))
	require.NoError(t, err)
	now := time.Unix(1795000000, 0)
	require.NoError(t, rt.tracker.frame("/", deliverFrame("work", "m1", false, nil), now))
	rt.tracker.take()
	marker := func(token string) incoming {
		body, err := json.Marshal(drainMarker{Token: token, At: now.Add(time.Minute), Cutoff: now.Add(time.Second), Queues: []string{"work"}})
		require.NoError(t, err)
		return incoming{d: amqp.Delivery{Exchange: "", RoutingKey: rt.cfg.Queue, Body: body}}
	}
	assert.Empty(t, rt.handle(context.Background(), marker("forged")).obs)
	assert.Empty(t, rt.handle(context.Background(), marker("")).obs)
	assert.Equal(t, []string{"settle@work:ack"}, kindsOf(rt.handle(context.Background(), marker(rt.markerToken)).obs))
}

// TestManagementEndpointTrimmed: a trailing slash of the management
// endpoint does not double the slash of every request path.
func TestManagementEndpointTrimmed(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Management.Endpoint = "http://127.0.0.1:15672/"
	rt, err := newRabbitTap(cfg, receivertest.NewNopSettings(metadata.Type))
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:15672", rt.api.endpoint)
}
