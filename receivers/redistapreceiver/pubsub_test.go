package redistapreceiver

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

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

// A pub/sub connection that stays open but carries nothing any more (the
// peer vanished without closing it) is noticed by a ping without a reply:
// the tap reconnects, counts the gap, and reports what is published next.
func TestPubSubHalfOpenConnection(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	channel := uniqueName("halfopen")
	p := startProxy(t, addr)

	cfg := testConfig(p.addr)
	cfg.PubSub.Patterns = []string{channel + ".*"}
	rt := startTapTo(t, cfg, nil, func(rt *redisTap) { rt.pingAfter, rt.pongWait = 100*time.Millisecond, time.Second })

	// Pub/sub keeps nothing for a subscriber away: publish on ch until the
	// tap sees a message of it.
	publishUntilSeen := func(ch string) {
		require.Eventually(t, func() bool {
			require.NoError(t, client.Publish(ctx, ch, "synthetic").Err())
			return slices.ContainsFunc(spansOf(rt.traces), func(s seenSpan) bool { return strings.HasPrefix(s.messageID, ch+"/") })
		}, defaultWait, pollEvery, "a message on %s", ch)
	}
	publishUntilSeen(channel + ".before")

	p.freeze()
	// Only a new connection carries messages now.
	publishUntilSeen(channel + ".after")
	assert.GreaterOrEqual(t, gaps(rt), int64(1))
}

// gaps is the tap's flowtrace.tap.gaps counter.
func gaps(rt *runningTap) int64 {
	m, err := rt.tel.GetMetric("flowtrace.tap.gaps")
	if err != nil {
		return 0
	}
	points := m.Data.(metricdata.Sum[int64]).DataPoints
	if len(points) != 1 {
		return 0
	}
	return points[0].Value
}
