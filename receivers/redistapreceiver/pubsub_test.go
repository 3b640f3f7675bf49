package redistapreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// Messages published on channels matching the tap's pattern become
// publish spans, one per message, each with an id of its own and the
// payload's size, never the payload.
func TestPubSubPublishSpans(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	prefix := uniqueName("events")

	cfg := testConfig(addr)
	cfg.PubSub.Patterns = []string{prefix + ".*"}
	rt := startTap(t, cfg)

	// Synthetic payloads; the same payload twice is still two messages.
	published := []struct{ channel, payload string }{
		{prefix + ".created", "payload-one"},
		{prefix + ".created", "payload-one"},
		{prefix + ".deleted", "payload-three!"},
		{"other." + prefix, "not matched"},
	}
	for _, p := range published {
		require.NoError(t, client.Publish(ctx, p.channel, p.payload).Err())
	}
	require.Eventually(t, func() bool { return rt.traces.SpanCount() >= 3 }, defaultWait, pollEvery)

	var ids []string
	var channels []string
	for _, td := range rt.traces.AllTraces() {
		spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
		for i := 0; i < spans.Len(); i++ {
			attrs := spans.At(i).Attributes().AsRaw()
			assert.Equal(t, "send", attrs[tap.AttrOperationType])
			assert.Equal(t, "redis", attrs[tap.AttrSystem])
			assert.Equal(t, prefix+".*", attrs["messaging.redis.pattern"])
			for _, v := range spans.At(i).Attributes().All() {
				assert.NotContains(t, v.AsString(), "payload-", "payloads are never kept")
			}
			ids = append(ids, attrs[tap.AttrMessageID].(string))
			channels = append(channels, attrs[tap.AttrDestination].(string))
			if attrs[tap.AttrDestination] == prefix+".deleted" {
				assert.Equal(t, int64(len("payload-three!")), attrs[tap.AttrBodySize])
			}
		}
	}
	assert.Equal(t, []string{prefix + ".created", prefix + ".created", prefix + ".deleted"}, channels)
	require.Len(t, ids, 3)
	assert.NotEqual(t, ids[0], ids[1])
}
