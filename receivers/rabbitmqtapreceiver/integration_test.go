package rabbitmqtapreceiver

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// declareWorkload declares a work queue that dead-letters to a fanout
// exchange, the dead-letter queue behind it, an audit and an orders queue.
func declareWorkload(t *testing.T, vhost string, ch *amqp.Channel, p string) {
	t.Helper()
	require.NoError(t, ch.ExchangeDeclare(p+"dlx", "fanout", false, true, false, false, nil))
	for _, q := range []struct {
		name string
		args amqp.Table
	}{{p + "work", amqp.Table{"x-dead-letter-exchange": p + "dlx"}}, {p + "dead", nil}, {p + "audit", nil}, {p + "orders", nil}} {
		_, err := ch.QueueDeclare(q.name, false, false, false, false, q.args)
		require.NoError(t, err)
		t.Cleanup(func() {
			_, ch := dialVHost(t, vhost)
			_, _ = ch.QueueDelete(q.name, false, false, false)
		})
	}
	require.NoError(t, ch.QueueBind(p+"dead", "", p+"dlx", false, nil))
}

// next receives one delivery.
func next(t *testing.T, ds <-chan amqp.Delivery) amqp.Delivery {
	t.Helper()
	select {
	case d := <-ds:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery")
		return amqp.Delivery{}
	}
}

// TestWorkload runs a workload with a retry (nack and requeue), a dead
// letter (reject to a dead-letter exchange), a message routed to no queue
// and a message carrying a traceparent, and checks the flows the correlator builds from the tap's
// spans alone, then with the application's producer span.
func TestWorkload(t *testing.T) {
	t.Parallel()
	// A vhost of its own: the tap sees this workload only, so its
	// counters are this workload's.
	vhost := privateVHost(t, "workload")
	rt := startTap(t, "workload", func(cfg *Config) { cfg.VHosts = []string{vhost} })
	p := rt.prefix
	_, ch := dialVHost(t, vhost)
	declareWorkload(t, vhost, ch, p)
	// The poller binds the tap's queue to the dead-letter exchange, so the
	// dead letter is seen when it happens.
	eventually(t, 30*time.Second, "the tap's queue is bound to the dead-letter exchange", func() bool {
		bs, err := rt.api.bindings(context.Background(), vhost, p+"dlx")
		if err != nil {
			return false
		}
		for _, b := range bs {
			if b.Destination == rt.cfg.Queue {
				return true
			}
		}
		return false
	})

	publish := func(queue string, msg amqp.Publishing) {
		require.NoError(t, ch.PublishWithContext(context.Background(), "", queue, false, false, msg))
	}
	// Order 17: an order and its audit record share a correlation id.
	publish(p+"work", amqp.Publishing{MessageId: p + "order-17", CorrelationId: p + "c-17", Body: []byte(`{"order":17}`)})
	publish(p+"audit", amqp.Publishing{MessageId: p + "audit-17", CorrelationId: p + "c-17", Body: []byte(`{"audit":17}`)})
	// Order 18 fails once and is requeued.
	publish(p+"work", amqp.Publishing{MessageId: p + "order-18", Body: []byte(`{"order":18}`)})
	// A message without a message id, rejected: the tap names it by a
	// fingerprint that survives dead-lettering.
	publish(p+"work", amqp.Publishing{Body: []byte(`{"poison":true}`), Headers: amqp.Table{"kind": "poison"}})
	// An event nobody listens to: routed to no queue.
	require.NoError(t, ch.ExchangeDeclare(p+"events", "fanout", false, false, false, false, nil))
	t.Cleanup(func() {
		_, ch := dialVHost(t, vhost)
		_ = ch.ExchangeDelete(p+"events", false, false)
	})
	require.NoError(t, ch.PublishWithContext(context.Background(), p+"events", "", false, false, amqp.Publishing{MessageId: p + "event-1", Body: []byte(`{}`)}))
	// A message sent through a direct exchange with a key nothing is bound
	// to, once the poller has read the exchange's type: lost.
	require.NoError(t, ch.ExchangeDeclare(p+"direct", "direct", false, true, false, false, nil))
	t.Cleanup(func() {
		_, ch := dialVHost(t, vhost)
		_ = ch.ExchangeDelete(p+"direct", false, false)
	})
	polls := len(rt.metrics.AllMetrics())
	eventually(t, 30*time.Second, "two polls after the exchange was declared", func() bool {
		return len(rt.metrics.AllMetrics()) >= polls+2
	})
	require.NoError(t, ch.PublishWithContext(context.Background(), p+"direct", "nobody", false, false, amqp.Publishing{MessageId: p + "lost-1", Body: []byte(`{}`)}))
	// Order 19 comes from an instrumented application.
	traceID := pcommon.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	spanID := pcommon.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	published := time.Now()
	publish(p+"orders", amqp.Publishing{MessageId: p + "order-19", Body: []byte(`{"order":19}`),
		Headers: amqp.Table{"traceparent": "00-" + traceID.String() + "-" + spanID.String() + "-01"}})

	_, consumer := dialVHost(t, vhost)
	require.NoError(t, consumer.Qos(1, 0, false))
	work, err := consumer.Consume(p+"work", "", false, false, false, false, nil)
	require.NoError(t, err)
	d := next(t, work)
	require.Equal(t, p+"order-17", d.MessageId)
	require.NoError(t, d.Ack(false))
	d = next(t, work)
	require.Equal(t, p+"order-18", d.MessageId)
	require.NoError(t, d.Nack(false, true))
	d = next(t, work)
	require.Equal(t, p+"order-18", d.MessageId)
	require.True(t, d.Redelivered)
	require.NoError(t, d.Ack(false))
	d = next(t, work)
	require.Empty(t, d.MessageId)
	require.NoError(t, d.Reject(false))

	for _, q := range []string{p + "audit", p + "dead", p + "orders"} {
		ds, err := consumer.Consume(q, "", false, false, false, false, nil)
		require.NoError(t, err)
		d := next(t, ds)
		require.NoError(t, d.Ack(false))
	}

	want := []string{
		"completed retries=0 dead_letters=0 hops=1 [rabbitmq/@:acked:0]", // the event routed nowhere
		"completed retries=0 dead_letters=0 hops=1 [rabbitmq/@orders:acked:1]",
		"completed retries=0 dead_letters=0 hops=2 [rabbitmq/@audit:acked:1 rabbitmq/@work:acked:1]",
		"completed retries=1 dead_letters=0 hops=1 [rabbitmq/@work:acked:2]",
		"dead_lettered retries=0 dead_letters=1 hops=1 [rabbitmq/@:dead_lettered:0:unroutable]", // the message routed nowhere by a direct exchange
		"dead_lettered retries=0 dead_letters=1 hops=2 [rabbitmq/@dead:acked:1 rabbitmq/@work:dead_lettered:1:rejected]",
	}
	assertFlows(t, rt.traces, p, 40*time.Second, want)

	// What the tap inferred: settlements of the acked hops from queue
	// drains, a nack of order 18's first attempt from its redelivery, and
	// no settlement of the rejected message.
	settles := map[string][]string{}
	for _, td := range spansOf(rt.traces, p) {
		forEachSpan(td, func(s ptrace.Span) {
			a := s.Attributes()
			if v, ok := a.Get(tap.AttrOutcome); ok {
				id, _ := a.Get(tap.AttrMessageID)
				group, _ := a.Get(tap.AttrConsumerGroup)
				inferred, _ := a.Get(tap.AttrInferred)
				assert.True(t, inferred.Bool(), "settlement of %s is inferred", id.Str())
				settles[id.Str()+"@"+group.Str()] = append(settles[id.Str()+"@"+group.Str()], v.Str())
			}
		})
	}
	for key, outcomes := range settles {
		settles[key] = uniqueSorted(outcomes)
	}
	assert.Equal(t, []string{"ack"}, settles[p+"order-17@"+p+"work"])
	assert.Equal(t, []string{"ack", "nack"}, settles[p+"order-18@"+p+"work"])
	assert.Equal(t, []string{"ack"}, settles[p+"audit-17@"+p+"audit"])
	for key, outcomes := range settles {
		if strings.HasPrefix(key, "fp:") && strings.HasSuffix(key, "@"+p+"work") {
			t.Errorf("the rejected message was settled on its queue: %v", outcomes)
		}
	}
	assert.Zero(t, counter(t, rt.tel, "flowtrace.tap.decode_errors"))

	t.Run("backlog", func(t *testing.T) {
		// Every gauge of the work queue, from the management API.
		names := map[string]bool{}
		for _, md := range rt.metrics.AllMetrics() {
			rms := md.ResourceMetrics()
			for i := 0; i < rms.Len(); i++ {
				sms := rms.At(i).ScopeMetrics()
				for j := 0; j < sms.Len(); j++ {
					ms := sms.At(j).Metrics()
					for k := 0; k < ms.Len(); k++ {
						points := ms.At(k).Gauge().DataPoints()
						for l := 0; l < points.Len(); l++ {
							a := points.At(l).Attributes()
							dest, _ := a.Get("destination")
							if dest.Str() != p+"work" {
								continue
							}
							broker, _ := a.Get("broker")
							system, _ := a.Get("system")
							group, _ := a.Get("consumer_group")
							assert.Equal(t, vhost, broker.Str())
							assert.Equal(t, systemRabbitMQ, system.Str())
							assert.Equal(t, p+"work", group.Str())
							names[ms.At(k).Name()] = true
						}
					}
				}
			}
		}
		for _, name := range []string{model.MetricBacklogDepth, model.MetricBacklogUnacked, model.MetricBacklogConsumers} {
			assert.True(t, names[name], name)
		}
	})

	t.Run("bad_marker", func(t *testing.T) {
		// Anything else put in the tap's queue is read as a drain marker:
		// a bad one is counted and skipped.
		publish(rt.cfg.Queue, amqp.Publishing{Body: []byte("not json")})
		eventually(t, 20*time.Second, "the bad marker is counted", func() bool {
			return counter(t, rt.tel, "flowtrace.tap.decode_errors") == 1
		})
	})

	t.Run("trace_join", func(t *testing.T) {
		// The application's own producer span for order 19, as its
		// instrumentation sends it: with the tap's spans, one message,
		// one hop.
		app := ptrace.NewTraces()
		rs := app.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "checkout")
		span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		span.SetTraceID(traceID)
		span.SetSpanID(spanID)
		span.SetKind(ptrace.SpanKindProducer)
		span.SetName("send " + p + "orders")
		span.SetStartTimestamp(pcommon.NewTimestampFromTime(published))
		span.SetEndTimestamp(pcommon.NewTimestampFromTime(published.Add(time.Millisecond)))
		span.Attributes().PutStr(tap.AttrSystem, systemRabbitMQ)
		span.Attributes().PutStr(tap.AttrOperationType, "send")
		span.Attributes().PutStr(tap.AttrDestination, p+"orders")

		assert.Equal(t, want, flowSummary(t, p, spansOf(rt.traces, p), app))
		var joined []model.Hop
		for _, h := range flowHops(t, spansOf(rt.traces, p), app) {
			if h.ConsumerGroup == p+"orders" {
				joined = append(joined, h)
			}
		}
		require.Len(t, joined, 1)
		assert.Equal(t, "checkout", joined[0].Producer, "the hop's producer comes from the application's span")
		assert.Equal(t, p+"order-19", joined[0].MessageID)
	})
}

func forEachSpan(td ptrace.Traces, fn func(ptrace.Span)) {
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		for j := 0; j < td.ResourceSpans().At(i).ScopeSpans().Len(); j++ {
			spans := td.ResourceSpans().At(i).ScopeSpans().At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				fn(spans.At(k))
			}
		}
	}
}

func uniqueSorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// TestDelayedRetry: a message rejected into a delay queue (a message TTL
// and a dead-letter exchange back to its queue) is retried, not dead
// lettered: one hop, two attempts, acked.
func TestDelayedRetry(t *testing.T) {
	t.Parallel()
	rt := startTap(t, "delay", nil)
	p := rt.prefix
	_, ch := dial(t)
	for _, q := range []struct {
		name string
		args amqp.Table
	}{
		{p + "jobs", amqp.Table{"x-dead-letter-exchange": "", "x-dead-letter-routing-key": p + "jobs.wait"}},
		{p + "jobs.wait", amqp.Table{"x-message-ttl": int32(300), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": p + "jobs"}},
	} {
		_, err := ch.QueueDeclare(q.name, false, false, false, false, q.args)
		require.NoError(t, err)
		t.Cleanup(func() {
			_, ch := dial(t)
			_, _ = ch.QueueDelete(q.name, false, false, false)
		})
	}
	eventually(t, 30*time.Second, "the poller saw the delay queue", func() bool {
		for _, md := range rt.metrics.AllMetrics() {
			rms := md.ResourceMetrics()
			for i := 0; i < rms.Len(); i++ {
				ms := rms.At(i).ScopeMetrics().At(0).Metrics()
				for k := 0; k < ms.Len(); k++ {
					points := ms.At(k).Gauge().DataPoints()
					for l := 0; l < points.Len(); l++ {
						if d, _ := points.At(l).Attributes().Get("destination"); d.Str() == p+"jobs.wait" {
							return true
						}
					}
				}
			}
		}
		return false
	})

	require.NoError(t, ch.PublishWithContext(context.Background(), "", p+"jobs", false, false, amqp.Publishing{MessageId: p + "job-1", Body: []byte(`{"job":1}`)}))
	ds, err := ch.Consume(p+"jobs", "", false, false, false, false, nil)
	require.NoError(t, err)
	require.NoError(t, next(t, ds).Reject(false))
	d := next(t, ds)
	require.Equal(t, p+"job-1", d.MessageId)
	require.NoError(t, d.Ack(false))

	want := []string{"completed retries=1 dead_letters=0 hops=1 [rabbitmq/@jobs:acked:2]"}
	assertFlows(t, rt.traces, p, 30*time.Second, want)
}

// backlogPolls lists, poll by poll, the depth and unacked gauges the tap
// emitted for a queue.
func backlogPolls(rt *runningTap, queue string) (depth, unacked []int64) {
	for _, md := range rt.metrics.AllMetrics() {
		d, u := int64(-1), int64(-1)
		rms := md.ResourceMetrics()
		for i := 0; i < rms.Len(); i++ {
			sms := rms.At(i).ScopeMetrics()
			for j := 0; j < sms.Len(); j++ {
				ms := sms.At(j).Metrics()
				for k := 0; k < ms.Len(); k++ {
					points := ms.At(k).Gauge().DataPoints()
					for l := 0; l < points.Len(); l++ {
						if dest, _ := points.At(l).Attributes().Get("destination"); dest.Str() != queue {
							continue
						}
						switch ms.At(k).Name() {
						case model.MetricBacklogDepth:
							d = points.At(l).IntValue()
						case model.MetricBacklogUnacked:
							u = points.At(l).IntValue()
						}
					}
				}
			}
		}
		if d >= 0 && u >= 0 {
			depth, unacked = append(depth, d), append(unacked, u)
		}
	}
	return depth, unacked
}

// TestConsumerDied: a consumer takes messages and dies without acking
// them; the broker puts them back. A poll then finds no unacknowledged
// message, but the messages are waiting again: not acked. Their
// redelivery is a retry.
func TestConsumerDied(t *testing.T) {
	t.Parallel()
	rt := startTap(t, "died", func(cfg *Config) { cfg.Management.StatsDelay = time.Millisecond })
	p := rt.prefix
	_, ch := dial(t)
	queue := p + "work"
	_, err := ch.QueueDeclare(queue, false, false, false, false, nil)
	require.NoError(t, err)
	t.Cleanup(func() {
		_, ch := dial(t)
		_, _ = ch.QueueDelete(queue, false, false, false)
	})
	for i := range 2 {
		require.NoError(t, ch.PublishWithContext(context.Background(), "", queue, false, false,
			amqp.Publishing{MessageId: fmt.Sprintf("%sjob-%d", p, i), Body: []byte(`{"job":true}`)}))
	}
	// The broker's statistics lag: wait until a poll sees the messages
	// waiting. A poll reading older ones (the new queue empty, nothing
	// handed out) while they are handed out would take them for acked.
	eventually(t, 30*time.Second, "a poll sees the messages waiting", func() bool {
		depth, _ := backlogPolls(rt, queue)
		return slices.Contains(depth, 2)
	})
	conn, _ := dial(t)
	dying, err := conn.Channel()
	require.NoError(t, err)
	ds, err := dying.Consume(queue, "", false, false, false, false, nil)
	require.NoError(t, err)
	next(t, ds)
	next(t, ds)
	// A poll sees them handed out, then, once the consumer is gone, a
	// poll sees them waiting again and none handed out.
	eventually(t, 30*time.Second, "a poll sees the messages handed out", func() bool {
		_, unacked := backlogPolls(rt, queue)
		return slices.Contains(unacked, 2)
	})
	require.NoError(t, dying.Close())
	eventually(t, 30*time.Second, "a poll sees the messages waiting again", func() bool {
		depth, unacked := backlogPolls(rt, queue)
		i := slices.Index(unacked, 2)
		for ; i >= 0 && i < len(depth); i++ {
			if depth[i] == 2 && unacked[i] == 0 {
				return true
			}
		}
		return false
	})

	ds, err = ch.Consume(queue, "", false, false, false, false, nil)
	require.NoError(t, err)
	for range 2 {
		d := next(t, ds)
		require.True(t, d.Redelivered)
		require.NoError(t, d.Ack(false))
	}
	want := []string{
		"completed retries=1 dead_letters=0 hops=1 [rabbitmq/@work:acked:2]",
		"completed retries=1 dead_letters=0 hops=1 [rabbitmq/@work:acked:2]",
	}
	assertFlows(t, rt.traces, p, 30*time.Second, want)
	// The first attempts were given back, not acked.
	settles := settlements(rt, p)
	for i := range 2 {
		assert.Equal(t, []string{"nack", "ack"}, settles[fmt.Sprintf("%sjob-%d", p, i)])
	}
}

// TestHeldDeliveriesStayPending: consumers hold their deliveries unacked
// across many polls, with the default stats_delay. The broker publishes a
// queue's figures every statistics interval and they reach the management
// API a little later, so just after a delivery a poll can still read the
// figures from before it: nothing handed out. Such a poll must not settle
// the delivery. Twenty queues, each with one delivery, taken a quarter of
// a second apart, meet the figures' update at every phase of the interval.
func TestHeldDeliveriesStayPending(t *testing.T) {
	t.Parallel()
	rt := startTap(t, "held", nil)
	p := rt.prefix
	_, ch := dial(t)
	const queues = 20
	var held []amqp.Delivery
	for i := range queues {
		queue := fmt.Sprintf("%sheld-%02d", p, i)
		_, err := ch.QueueDeclare(queue, false, false, false, false, nil)
		require.NoError(t, err)
		t.Cleanup(func() {
			_, ch := dial(t)
			_, _ = ch.QueueDelete(queue, false, false, false)
		})
		require.NoError(t, ch.PublishWithContext(context.Background(), "", queue, false, false,
			amqp.Publishing{MessageId: queue, Body: []byte(`{"job":true}`)}))
	}
	_, consumer := dial(t)
	for i := range queues {
		ds, err := consumer.Consume(fmt.Sprintf("%sheld-%02d", p, i), "", false, false, false, false, nil)
		require.NoError(t, err)
		held = append(held, next(t, ds))
		time.Sleep(250 * time.Millisecond)
	}
	// Two statistics intervals and more after the last delivery: every
	// queue's figures have said "handed out" by now, and the tap has
	// polled about forty times.
	time.Sleep(12 * time.Second)
	require.Empty(t, settlements(rt, p), "deliveries still held were settled")

	for _, d := range held {
		require.NoError(t, d.Ack(false))
	}
	want := map[string][]string{}
	for i := range queues {
		want[fmt.Sprintf("%sheld-%02d", p, i)] = []string{"ack"}
	}
	var got map[string][]string
	waitFor(60*time.Second, func() bool {
		got = settlements(rt, p)
		return assert.ObjectsAreEqual(want, got)
	})
	assert.Equal(t, want, got, "once acked, each delivery is settled by a drain, once")
}
