package rabbitmqtapreceiver

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/receiver/receivertest"

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
