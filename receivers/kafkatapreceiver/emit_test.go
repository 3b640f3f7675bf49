package kafkatapreceiver

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// refusing refuses its first refusals batches with err, then hands them to
// its sink.
type refusing struct {
	consumertest.TracesSink
	refusals int64
	err      error
	calls    atomic.Int64
}

func (r *refusing) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if r.calls.Add(1) <= r.refusals {
		return r.err
	}
	return r.TracesSink.ConsumeTraces(ctx, td)
}

// offsets counts the publish spans emitted per offset.
func (u *tapUnderTest) offsets(t *testing.T) map[int64]int {
	t.Helper()
	out := map[int64]int{}
	for _, s := range u.spans() {
		offset, ok := s.Attributes().Get(attrOffset)
		require.True(t, ok)
		out[offset.Int()]++
	}
	return out
}

// TestRefusedSpansRetried: spans the pipeline refuses for now (a full
// queue) are offered again until taken, none lost.
func TestRefusedSpansRetried(t *testing.T) {
	topic := "refused-" + runID()
	c := newCluster(t, kfake.SeedTopics(1, topic))
	next := &refusing{refusals: 3, err: errors.New("queue is full")}
	u := startTapWith(t, testConfig(c.ListenAddrs(), topic), next, &next.TracesSink)
	producer := newClient(t, c.ListenAddrs())
	for range 5 {
		require.NoError(t, producer.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte("{}")}).FirstErr())
	}

	u.waitSpans(t, 5)
	assert.Greater(t, next.calls.Load(), next.refusals, "the refused batches were offered again")
	assert.Equal(t, map[int64]int{0: 1, 1: 1, 2: 1, 3: 1, 4: 1}, u.offsets(t))
}

// TestPermanentlyRefusedSpansDropped: spans refused for good are not
// offered again; the tap goes on with the next records.
func TestPermanentlyRefusedSpansDropped(t *testing.T) {
	topic := "rejected-" + runID()
	c := newCluster(t, kfake.SeedTopics(1, topic))
	next := &refusing{refusals: 1, err: consumererror.NewPermanent(errors.New("malformed"))}
	u := startTapWith(t, testConfig(c.ListenAddrs(), topic), next, &next.TracesSink)
	producer := newClient(t, c.ListenAddrs())
	produce := func() {
		require.NoError(t, producer.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte("{}")}).FirstErr())
	}

	produce()
	require.Eventually(t, func() bool { return next.calls.Load() >= 1 }, waitLimit, waitTick)
	produce()
	u.waitSpans(t, 1)
	assert.Equal(t, map[int64]int{1: 1}, u.offsets(t), "offset 0 was refused for good")
}

// blocking holds every batch until released, whatever its context says.
type blocking struct {
	consumertest.TracesSink
	entered  chan struct{}
	enter    sync.Once
	released chan struct{}
}

func (b *blocking) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	b.enter.Do(func() { close(b.entered) })
	<-b.released
	return b.TracesSink.ConsumeTraces(ctx, td)
}

// TestShutdownWaitsForRun: a Shutdown whose deadline passed while the tap
// is stuck in its next consumer reports it, and so does the next one while
// it is still stuck; once it is free, Shutdown returns nil only after the
// tap stopped, so nothing is emitted after.
func TestShutdownWaitsForRun(t *testing.T) {
	topic := "stuck-" + runID()
	c := newCluster(t, kfake.SeedTopics(1, topic))
	next := &blocking{entered: make(chan struct{}), released: make(chan struct{})}
	u := startTapWith(t, testConfig(c.ListenAddrs(), topic), next, &next.TracesSink)
	release := sync.OnceFunc(func() { close(next.released) })
	t.Cleanup(release)
	u.tap.shutdownGrace = 0
	producer := newClient(t, c.ListenAddrs())
	require.NoError(t, producer.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte("{}")}).FirstErr())
	select {
	case <-next.entered:
	case <-time.After(waitLimit):
		t.Fatal("the tap emitted nothing")
	}

	expired, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, u.tap.Shutdown(expired), context.Canceled)
	require.ErrorIs(t, u.tap.Shutdown(expired), context.Canceled, "still running: a second Shutdown does not pretend it stopped")

	release()
	require.NoError(t, u.tap.Shutdown(context.Background()))
	select {
	case <-u.tap.done:
	default:
		t.Fatal("Shutdown returned nil while the tap was still running")
	}
	require.NoError(t, u.tap.Shutdown(context.Background()))
}
