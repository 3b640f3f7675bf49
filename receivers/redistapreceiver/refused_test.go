package redistapreceiver

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// refusingTraces refuses spans for now while refusing is set, then hands
// them to sink.
type refusingTraces struct {
	consumertest.TracesSink
	refusing atomic.Bool
	refusals atomic.Int64
}

func (r *refusingTraces) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (r *refusingTraces) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if r.refusing.Load() {
		r.refusals.Add(1)
		return errors.New("synthetic: queue is full")
	}
	return r.TracesSink.ConsumeTraces(ctx, td)
}

// Spans the pipeline refuses for now are retried, not dropped; meanwhile
// the tap reads nothing more, and once the pipeline takes spans again
// every entry is reported, once.
func TestRefusedSpansRetried(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	stream := uniqueName("refused")
	t.Cleanup(func() { client.Del(ctx, stream) })

	next := &refusingTraces{}
	next.refusing.Store(true)
	cfg := testConfig(addr)
	cfg.Streams.Names = []string{stream}
	rt := startTapTo(t, cfg, next)

	var ids []string
	add := func() {
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", len(ids)}}).Result()
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for range 3 {
		add()
	}
	require.Eventually(t, func() bool { return next.refusals.Load() >= 2 }, defaultWait, pollEvery, "the refused batch is retried")
	for range 2 {
		add()
	}
	next.refusing.Store(false)
	for _, id := range ids {
		waitForSpan(t, &next.TracesSink, "publish of "+id, hasSpan("send", stream+"/"+id))
	}
	count := map[string]int{}
	for _, s := range spansOf(&next.TracesSink) {
		count[s.messageID]++
	}
	for _, id := range ids {
		assert.Equal(t, 1, count[stream+"/"+id], id)
	}
	assert.Zero(t, rt.traces.SpanCount())
}

// A tap retrying a refused batch still stops when told to, at once.
func TestShutdownWhileRefused(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	stream := uniqueName("refused-stop")
	t.Cleanup(func() { client.Del(ctx, stream) })

	next := &refusingTraces{}
	next.refusing.Store(true)
	cfg := testConfig(addr)
	cfg.Streams.Names = []string{stream}
	rt := startTapTo(t, cfg, next)
	require.NoError(t, client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"n", 1}}).Err())
	require.Eventually(t, func() bool { return next.refusals.Load() >= 1 }, defaultWait, pollEvery)
	// Shutdown returns while the batch is still refused: Background has no
	// deadline, so a tap that kept retrying would hang the test here.
	require.NoError(t, rt.tap.Shutdown(ctx))
	require.NoError(t, rt.tap.Shutdown(ctx))
}
