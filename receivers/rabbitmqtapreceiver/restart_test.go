package rabbitmqtapreceiver

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os/exec"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// gate refuses every batch, as a pipeline that is down for now, until it
// is opened.
type gate struct {
	consumer.Traces
	open atomic.Bool
	// refused is the largest batch refused, in spans.
	refused atomic.Int64
}

func (g *gate) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if !g.open.Load() {
		if n := int64(td.SpanCount()); n > g.refused.Load() {
			g.refused.Store(n)
		}
		return errors.New("pipeline unavailable")
	}
	return g.Traces.ConsumeTraces(ctx, td)
}

// rabbitmqctlTimeout bounds one rabbitmqctl command: a broker that does
// not come back must not hang the tests.
const rabbitmqctlTimeout = 2 * time.Minute

func rabbitmqctl(t *testing.T, args ...string) {
	t.Helper()
	require.NoError(t, runRabbitmqctl(args...))
}

func runRabbitmqctl(args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), rabbitmqctlTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("rabbitmqctl %v: %w: %s", args, err, out)
	}
	return nil
}

// TestBrokerRestart restarts the broker while the tap's queue holds frames
// the pipeline has not taken: the tap reconnects, counts the gap, and every
// message's publish and delivery still reaches the pipeline.
func TestBrokerRestart(t *testing.T) {
	if _, err := exec.LookPath("rabbitmqctl"); err != nil {
		t.Skipf("rabbitmqctl is not available: %v", err)
	}
	g := &gate{}
	rt := startTapWith(t, "restart", nil, func(next consumer.Traces) consumer.Traces {
		g.Traces = next
		return g
	})
	p := rt.prefix
	queue := p + "orders"
	_, ch := dial(t)
	_, err := ch.QueueDeclare(queue, true, false, false, false, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, ch := dial(t)
		_, _ = ch.QueueDelete(queue, false, false, false)
	})

	// run publishes and consumes n messages.
	run := func(ch *amqp.Channel, from, n int) {
		for i := from; i < from+n; i++ {
			require.NoError(t, ch.PublishWithContext(context.Background(), "", queue, false, false, amqp.Publishing{
				MessageId: fmt.Sprintf("%sorder-%d", p, i), DeliveryMode: amqp.Persistent, Body: []byte(`{"order":true}`),
			}))
		}
		ds, err := ch.Consume(queue, "", false, false, false, false, nil)
		require.NoError(t, err)
		for range n {
			require.NoError(t, next(t, ds).Ack(false))
		}
	}
	const before, after = 30, 30
	run(ch, 0, before)
	// Every frame is in the tap's queue by now (the broker queues a frame
	// as it publishes or delivers), read and refused, or waiting.
	eventually(t, 30*time.Second, "the pipeline refused the tap's spans", func() bool {
		return g.refused.Load() > 0
	})
	require.Zero(t, rt.traces.SpanCount(), "the pipeline took nothing yet")

	t.Cleanup(func() {
		// Whatever happened, leave the broker running for others.
		if err := runRabbitmqctl("start_app"); err != nil {
			t.Error(err)
		}
		if err := runRabbitmqctl("await_startup"); err != nil {
			t.Error(err)
		}
	})
	rabbitmqctl(t, "stop_app")
	rabbitmqctl(t, "start_app")
	g.open.Store(true)

	eventually(t, 60*time.Second, "the tap reconnects", func() bool {
		return counter(t, rt.tel, "flowtrace.tap.gaps") >= 1
	})
	_, ch = dial(t)
	run(ch, before, after)

	eventually(t, 60*time.Second, "every message's frames reach the pipeline", func() bool {
		return len(seen(spansOf(rt.traces, p))) == before+after
	})
	// Exactly once each: nothing lost, nothing sent twice.
	for id, kinds := range seen(spansOf(rt.traces, p)) {
		slices.Sort(kinds)
		assert.Equal(t, []string{"receive", "send"}, kinds, id)
	}
	assert.Positive(t, counter(t, rt.tel, "flowtrace.tap.gap_seconds"), "the gap lasted")

	want := make([]string, before+after)
	for i := range want {
		want[i] = "completed retries=0 dead_letters=0 hops=1 [rabbitmq/@orders:acked:1]"
	}
	assertFlows(t, rt.traces, p, 60*time.Second, want)
}

// seen lists, per message id, the operation types of its spans other
// than settlements.
func seen(traces []ptrace.Traces) map[string][]string {
	out := map[string][]string{}
	for _, td := range traces {
		forEachSpan(td, func(s ptrace.Span) {
			id, _ := s.Attributes().Get(tap.AttrMessageID)
			op, _ := s.Attributes().Get(tap.AttrOperationType)
			if op.Str() == "send" || op.Str() == "receive" {
				out[id.Str()] = append(out[id.Str()], op.Str())
			}
		})
	}
	return out
}

// TestQueueDeleted: when the tap's queue is deleted under it, the broker
// cancels its consumer; the tap counts a gap and declares the queue again.
func TestQueueDeleted(t *testing.T) {
	t.Parallel()
	rt := startTap(t, "deleted", nil)
	require.NoError(t, rt.api.do(context.Background(), "DELETE", "/api/queues/%2F/"+rt.cfg.Queue, nil, nil))
	conn, _ := dial(t)
	eventually(t, 30*time.Second, "the tap declares its queue again", func() bool {
		return consumers(conn, rt.cfg.Queue) == 1 && counter(t, rt.tel, "flowtrace.tap.gaps") == 1
	})
}

// TestDeadLetterAfterQueueDeleted: the tap's queue loses its binding to a
// dead-letter exchange when it is deleted; the poller binds it again, and
// a message rejected afterwards is a dead letter, not an ack.
func TestDeadLetterAfterQueueDeleted(t *testing.T) {
	t.Parallel()
	rt := startTap(t, "rebind", nil)
	p := rt.prefix
	_, ch := dial(t)
	declareWorkload(t, "/", ch, p)
	boundToDLX := func() bool {
		bs, err := rt.api.bindings(context.Background(), "/", p+"dlx")
		if err != nil {
			return false
		}
		for _, b := range bs {
			if b.Destination == rt.cfg.Queue {
				return true
			}
		}
		return false
	}
	eventually(t, 30*time.Second, "the tap's queue is bound to the dead-letter exchange", boundToDLX)

	require.NoError(t, rt.api.do(context.Background(), "DELETE", "/api/queues/%2F/"+rt.cfg.Queue, nil, nil))
	conn, _ := dial(t)
	eventually(t, 30*time.Second, "the tap declares its queue again", func() bool {
		return consumers(conn, rt.cfg.Queue) == 1 && counter(t, rt.tel, "flowtrace.tap.gaps") == 1
	})
	eventually(t, 30*time.Second, "the tap's queue is bound to the dead-letter exchange again", boundToDLX)

	require.NoError(t, ch.PublishWithContext(context.Background(), "", p+"work", false, false,
		amqp.Publishing{MessageId: p + "poison-1", Body: []byte(`{"poison":1}`)}))
	ds, err := ch.Consume(p+"work", "", false, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, next(t, ds).Reject(false))

	want := []string{"dead_lettered retries=0 dead_letters=1 hops=1 [rabbitmq/@work:dead_lettered:1:rejected]"}
	assertFlows(t, rt.traces, p, 30*time.Second, want)
}

// TestQueueBounded: the tap declares its queue with a bound, and uses a
// queue declared before with other arguments as it is.
func TestQueueBounded(t *testing.T) {
	t.Parallel()
	rt := startTap(t, "bounded", func(cfg *Config) { cfg.MaxQueueBytes = 1 << 20 })
	var q queueInfo
	require.NoError(t, rt.api.do(context.Background(), "GET", "/api/queues/%2F/"+url.PathEscape(rt.cfg.Queue), nil, &q))
	assert.EqualValues(t, 1<<20, q.Arguments["x-max-length-bytes"])
	assert.EqualValues(t, 1000000, q.Arguments["x-max-length"])
	assert.Equal(t, "drop-head", q.Arguments["x-overflow"])

	// A queue of an earlier version, without bounds.
	_, ch := dial(t)
	old := uniquePrefix("unbounded") + "firehose"
	_, err := ch.QueueDeclare(old, true, false, false, false, amqp.Table{"x-queue-type": "quorum"})
	require.NoError(t, err)
	rt = startTap(t, "unbounded", func(cfg *Config) { cfg.Queue = old })
	conn, _ := dial(t)
	assert.Equal(t, 1, consumers(conn, old))
	q = queueInfo{}
	require.NoError(t, rt.api.do(context.Background(), "GET", "/api/queues/%2F/"+url.PathEscape(rt.cfg.Queue), nil, &q))
	assert.NotContains(t, q.Arguments, "x-max-length-bytes", "the queue is used as it is")
}
