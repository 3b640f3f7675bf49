package redistapreceiver

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// A tapped stream that is a key of another type is that key's problem:
// counted once, skipped, and read once it is a stream; the other streams
// and the pub/sub go on, on the same connection.
func TestStreamOfAnotherType(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	good, bad := uniqueName("typed"), uniqueName("string")
	channel := uniqueName("typed-events")
	t.Cleanup(func() { client.Del(ctx, good, bad, good+".dlq", bad+".dlq") })
	require.NoError(t, client.Set(ctx, bad, "a string", 0).Err())
	require.NoError(t, client.XAdd(ctx, &redis.XAddArgs{Stream: good, Values: []any{"n", 0}}).Err())

	cfg := testConfig(addr)
	cfg.Streams.Names = []string{good, bad}
	cfg.PubSub.Patterns = []string{channel}
	rt := startTap(t, cfg)

	add := func(stream string) string {
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", 1}}).Result()
		require.NoError(t, err)
		return id
	}
	id := add(good)
	waitForSpan(t, rt.traces, "the good stream's entry", hasSpan("send", good+"/"+id))
	require.NoError(t, client.Publish(ctx, channel, "synthetic").Err())
	waitForSpan(t, rt.traces, "the pub/sub message", func(s seenSpan) bool {
		return strings.HasPrefix(s.messageID, channel+"/")
	})
	// More reads and polls.
	for range 3 {
		id := add(good)
		waitForSpan(t, rt.traces, "the good stream's entry", hasSpan("send", good+"/"+id))
	}
	assert.Equal(t, map[string]int64{reasonWrongType: 1}, decodeErrors(t, rt), "counted once")

	// The key becomes a stream: read from its start.
	require.NoError(t, client.Del(ctx, bad).Err())
	id = add(bad)
	waitForSpan(t, rt.traces, "the entry of the stream the key became", hasSpan("send", bad+"/"+id))
	_, err := rt.tel.GetMetric("flowtrace.tap.gaps")
	assert.Error(t, err, "the session was never lost")
	assert.Equal(t, int64(1), rt.connected())
}

// Broker text put on spans (key values, dead-letter reasons and groups) is
// valid UTF-8 without control characters, at most tap.MaxText bytes; each
// text cleaned is counted.
func TestBrokerTextCleaned(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	stream := uniqueName("text")
	t.Cleanup(func() { client.Del(ctx, stream, stream+".dlq") })
	require.NoError(t, client.XGroupCreateMkStream(ctx, stream, "g", "$").Err())

	cfg := testConfig(addr)
	cfg.Streams.Names = []string{stream}
	cfg.Streams.KeyFields = map[string]string{"order_id": "order_id"}
	rt := startTap(t, cfg)

	long := strings.Repeat("é", 300)
	id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"order_id", "o-\xff\x01" + long}}).Result()
	require.NoError(t, err)
	waitForSpan(t, rt.traces, "the entry", hasSpan("send", stream+"/"+id))
	res, err := client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c\x00" + long, Streams: []string{stream, ">"}, Count: 1}).Result()
	require.NoError(t, err)
	require.Len(t, res[0].Messages, 1)
	waitForSpan(t, rt.traces, "the delivery", hasSpan("receive", stream+"/"+id))
	require.NoError(t, client.XAdd(ctx, &redis.XAddArgs{Stream: stream + ".dlq", Values: []any{
		"original_id", id, "reason", "customer jane@example.com\n\xfe" + long, "group", "g",
	}}).Err())
	waitForSpan(t, rt.traces, "the dead letter", hasSpan("dead_letter", stream+"/"+id))

	for _, td := range rt.traces.AllTraces() {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			spans := td.ResourceSpans().At(i).ScopeSpans().At(0).Spans()
			for j := 0; j < spans.Len(); j++ {
				for k, v := range spans.At(j).Attributes().All() {
					s := v.AsString()
					assert.True(t, utf8.ValidString(s), k)
					assert.LessOrEqual(t, len(s), tap.MaxText, k)
					assert.NotContains(t, s, "\n", k)
					assert.NotContains(t, s, "\x00", k)
				}
			}
		}
	}
	assert.Equal(t, int64(3), decodeErrors(t, rt)[reasonText], "the key value, the consumer name, the reason")
}

// Sidekiq's queues set as a key of another type: counted once, and the
// rest of the tap goes on without a reconnection.
func TestSidekiqQueuesOfAnotherType(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	ns := uniqueName("sidekiq-typed")
	stream := uniqueName("sidekiq-typed-stream")
	t.Cleanup(func() { client.Del(ctx, ns+":queues", stream, stream+".dlq") })
	require.NoError(t, client.Set(ctx, ns+":queues", "a string", 0).Err())
	// A group, so every poll sends backlog points.
	require.NoError(t, client.XGroupCreateMkStream(ctx, stream, "g", "$").Err())

	cfg := testConfig(addr)
	cfg.Streams.Names = []string{stream}
	cfg.Sidekiq.Enabled = true
	cfg.Sidekiq.Namespace = ns
	rt := startTap(t, cfg)
	for range 3 {
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", 1}}).Result()
		require.NoError(t, err)
		waitForSpan(t, rt.traces, "the stream's entry", hasSpan("send", stream+"/"+id))
	}
	require.Eventually(t, func() bool { return decodeErrors(t, rt)[reasonWrongType] == 1 }, defaultWait, pollEvery)
	polls := len(rt.metrics.AllMetrics())
	require.Eventually(t, func() bool { return len(rt.metrics.AllMetrics()) >= polls+3 }, defaultWait, pollEvery, "more polls")
	_, err := rt.tel.GetMetric("flowtrace.tap.gaps")
	assert.Error(t, err, "the session was never lost")
	assert.Equal(t, int64(1), rt.connected())
	assert.Equal(t, map[string]int64{reasonWrongType: 1}, decodeErrors(t, rt))
}
