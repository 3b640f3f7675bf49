package redistapreceiver

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Input the tap cannot read is counted by reason and skipped; the rest is
// still reported.
func TestBadInputCounted(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	stream := uniqueName("bad")
	ns := uniqueName("bad-sidekiq")
	t.Cleanup(func() { client.Del(ctx, stream, stream+".dlq", ns+":queues", ns+":queue:default") })
	require.NoError(t, client.XGroupCreateMkStream(ctx, stream, "g", "$").Err())

	cfg := testConfig(addr)
	cfg.Streams.Names = []string{stream}
	cfg.Sidekiq.Enabled = true
	cfg.Sidekiq.Namespace = ns
	cfg.Sidekiq.Queues = []string{"default"}
	rt := startTap(t, cfg)

	bad, err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"traceparent", "00-not-a-traceparent"}}).Result()
	require.NoError(t, err)
	require.NoError(t, client.XAdd(ctx, &redis.XAddArgs{Stream: stream + ".dlq", Values: []any{"original_id", "yesterday"}}).Err())
	require.NoError(t, client.LPush(ctx, ns+":queue:default", "not json", `{"class":"NoJid"}`).Err())
	sk := &sidekiq{t: t, client: client, prefix: ns + ":"}
	good := map[string]any{"queue": "default", "class": "InvoiceJob", "args": []any{}, "jid": newJID(), "created_at": 1700000000000}
	sk.push(good)

	waitForSpan(t, rt.traces, "the entry, without its traceparent", hasSpan("send", stream+"/"+bad))
	waitForSpan(t, rt.traces, "the good job", hasSpan("send", good["jid"].(string)))
	want := map[string]int64{reasonTraceParent: 1, reasonDeadLetter: 1, reasonJob: 2}
	require.Eventually(t, func() bool {
		got := decodeErrors(t, rt)
		for reason, n := range want {
			if got[reason] < n {
				return false
			}
		}
		return true
	}, defaultWait, pollEvery)
	// More polls, which see the bad jobs again.
	for range 3 {
		another := map[string]any{"queue": "default", "class": "InvoiceJob", "args": []any{}, "jid": newJID(), "created_at": 1700000000000}
		sk.push(another)
		waitForSpan(t, rt.traces, "another job", hasSpan("send", another["jid"].(string)))
	}
	got := decodeErrors(t, rt)
	assert.Equal(t, int64(1), got[reasonTraceParent])
	assert.Equal(t, int64(1), got[reasonDeadLetter])
	assert.Equal(t, int64(2), got[reasonJob], "counted once, though read at every poll")
}

func decodeErrors(t *testing.T, rt *runningTap) map[string]int64 {
	m, err := rt.tel.GetMetric("flowtrace.tap.decode_errors")
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
		reason, _ := p.Attributes.Value("reason")
		out[reason.AsString()] = p.Value
	}
	return out
}
