package redistapreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/internal/taptest"
)

// A consumer group works through four entries: one acked at once, one
// claimed again (delivery count 2) and then acked, one dead-lettered to the
// dead-letter stream and then acked, one read and acked between two polls.
// The correlator, fed the tap's spans alone, builds exactly these flows.
func TestStreamsWorkload(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	stream := uniqueName("orders")
	const group = "billing"
	t.Cleanup(func() { client.Del(ctx, stream, stream+".dlq") })
	require.NoError(t, client.XGroupCreateMkStream(ctx, stream, group, "$").Err())

	cfg := testConfig(addr)
	cfg.Streams.Names = []string{stream}
	cfg.Streams.KeyFields = map[string]string{"order_id": "order_id"}
	rt := startTap(t, cfg)

	add := func(values ...any) string {
		id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: values}).Result()
		require.NoError(t, err)
		return id
	}
	// Bodies are synthetic test data.
	e1 := add("order_id", "o-1", "body", "first")
	e2 := add("order_id", "o-1", "body", "second")
	e3 := add("order_id", "o-3", "body", "poison")
	msg := func(id string) string { return stream + "/" + id }

	read, err := client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c1", Streams: []string{stream, ">"}, Count: 10}).Result()
	require.NoError(t, err)
	require.Len(t, read[0].Messages, 3)
	for _, id := range []string{e1, e2, e3} {
		waitForSpan(t, rt.traces, "delivery of "+id, func(s seenSpan) bool {
			return s.event == "receive" && s.messageID == msg(id) && s.group == group && s.attempt == 1
		})
	}

	require.NoError(t, client.XAck(ctx, stream, group, e1).Err())

	// e2: the consumer gives up on it; another claims it (a retry).
	require.NoError(t, client.XClaim(ctx, &redis.XClaimArgs{Stream: stream, Group: group, Consumer: "c2", Messages: []string{e2}}).Err())
	waitForSpan(t, rt.traces, "redelivery of e2", func(s seenSpan) bool {
		return s.event == "receive" && s.messageID == msg(e2) && s.attempt == 2
	})
	require.NoError(t, client.XAck(ctx, stream, group, e2).Err())

	// e3: dead-lettered, then acked.
	require.NoError(t, client.XAdd(ctx, &redis.XAddArgs{Stream: stream + ".dlq", Values: []any{"original_id", e3, "reason", "bad_amount"}}).Err())
	require.NoError(t, client.XAck(ctx, stream, group, e3).Err())

	// e4: read and acked at once, most likely between two polls.
	e4 := add("body", "fourth")
	read, err = client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c1", Streams: []string{stream, ">"}, Count: 10}).Result()
	require.NoError(t, err)
	require.Len(t, read[0].Messages, 1)
	require.NoError(t, client.XAck(ctx, stream, group, e4).Err())

	for _, id := range []string{e1, e2, e4} {
		waitForSpan(t, rt.traces, "ack of "+id, func(s seenSpan) bool {
			return s.event == "settle" && s.messageID == msg(id) && s.outcome == tap.Ack && s.inferred
		})
	}
	waitForSpan(t, rt.traces, "dead letter of e3", func(s seenSpan) bool {
		return s.event == "dead_letter" && s.messageID == msg(e3) && s.group == group && s.reason == "bad_amount"
	})

	res := taptest.Correlate(t, correlator.Config{}, rt.traces.AllTraces()...)
	require.Len(t, res.Flows, 3, "flows: o-1 (two entries), o-3, and e4 alone")
	byMessage := map[string]model.Hop{}
	for _, h := range res.Hops {
		byMessage[h.MessageID] = h
	}
	require.Len(t, byMessage, 4)
	type want struct {
		attempts uint16
		outcome  model.HopOutcome
	}
	for id, w := range map[string]want{
		e1: {1, model.HopAcked}, e2: {2, model.HopAcked}, e3: {1, model.HopDeadLettered}, e4: {1, model.HopAcked},
	} {
		h, ok := byMessage[msg(id)]
		require.True(t, ok, id)
		assert.Equal(t, w.attempts, h.Attempts, id)
		assert.Equal(t, w.outcome, h.Outcome, id)
		assert.Equal(t, group, h.ConsumerGroup, id)
		assert.Equal(t, stream, h.Destination, id)
		assert.Equal(t, "redis", h.System, id)
		assert.False(t, h.PublishTime.IsZero(), id)
		assert.False(t, h.DeliverTime.Before(h.PublishTime), id)
	}
	assert.Equal(t, "bad_amount", byMessage[msg(e3)].Reason)
	assert.Equal(t, byMessage[msg(e1)].FlowID, byMessage[msg(e2)].FlowID, "joined by order_id")

	flows := map[string]model.Flow{}
	for _, f := range res.Flows {
		flows[f.ID] = f
	}
	type flowWant struct {
		hops, retries, deadLetters uint32
		status                     model.FlowStatus
	}
	for id, w := range map[string]flowWant{
		e1: {2, 1, 0, model.FlowCompleted}, e3: {1, 0, 1, model.FlowDeadLettered}, e4: {1, 0, 0, model.FlowCompleted},
	} {
		f := flows[byMessage[msg(id)].FlowID]
		assert.Equal(t, w.hops, f.HopCount, id)
		assert.Equal(t, w.retries, f.Retries, id)
		assert.Equal(t, w.deadLetters, f.DeadLetters, id)
		assert.Equal(t, w.status, f.Status, id)
	}

	// Backlog: the group has nothing left to deliver or ack.
	waitForBacklog(t, rt, stream, group)
}

func waitForBacklog(t *testing.T, rt *runningTap, stream, group string) {
	t.Helper()
	require.Eventually(t, func() bool {
		seen := map[string]bool{}
		for _, md := range rt.metrics.AllMetrics() {
			ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
			for i := 0; i < ms.Len(); i++ {
				points := ms.At(i).Gauge().DataPoints()
				for j := 0; j < points.Len(); j++ {
					attrs := points.At(j).Attributes()
					dest, _ := attrs.Get("destination")
					g, ok := attrs.Get("consumer_group")
					if ok && dest.AsString() == stream && g.AsString() == group && points.At(j).IntValue() == 0 {
						seen[ms.At(i).Name()] = true
					}
				}
			}
		}
		return seen[model.MetricBacklogLag] && seen[model.MetricBacklogUnacked]
	}, 30*time.Second, 20*time.Millisecond)
}

// An entry carrying a traceparent, and the application's producer span of
// that traceparent: one hop, not two. The tap's publish takes the
// application span's id; its consumer-side spans link to it.
func TestStreamsTraceJoin(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	stream := uniqueName("payments")
	const group = "ledger"
	t.Cleanup(func() { client.Del(ctx, stream) })
	require.NoError(t, client.XGroupCreateMkStream(ctx, stream, group, "$").Err())

	cfg := testConfig(addr)
	cfg.Streams.Names = []string{stream}
	rt := startTap(t, cfg)

	const traceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traceID, spanID, ok := tap.ParseTraceParent(traceParent)
	require.True(t, ok)
	id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"traceparent", traceParent, "body", "synthetic"}}).Result()
	require.NoError(t, err)
	_, err = client.XReadGroup(ctx, &redis.XReadGroupArgs{Group: group, Consumer: "c1", Streams: []string{stream, ">"}}).Result()
	require.NoError(t, err)
	waitForSpan(t, rt.traces, "delivery", hasSpan("receive", stream+"/"+id))
	require.NoError(t, client.XAck(ctx, stream, group, id).Err())
	waitForSpan(t, rt.traces, "ack", hasSpan("settle", stream+"/"+id))

	for _, s := range spansOf(rt.traces) {
		assert.Equal(t, traceID, s.traceID, s.String())
		if s.event == "send" {
			assert.Equal(t, spanID, s.spanID, "the tap's publish is the application's producer span")
		} else {
			assert.Equal(t, []pcommon.SpanID{spanID}, s.links, s.String())
		}
	}

	entryTime, err := parseEntryID(id)
	require.NoError(t, err)
	app := appProducerSpan(traceID, spanID, "checkout", "redis", stream, entryTime.time())

	res := taptest.Correlate(t, correlator.Config{}, append([]ptrace.Traces{app}, rt.traces.AllTraces()...)...)
	require.Len(t, res.Flows, 1)
	require.Len(t, res.Hops, 1, "the application's span and the tap's are one hop")
	h := res.Hops[0]
	assert.Equal(t, "checkout", h.Producer)
	assert.Equal(t, group, h.ConsumerGroup)
	assert.Equal(t, model.HopAcked, h.Outcome)
	assert.Contains(t, res.Flows[0].Keys, model.Key{Kind: "trace_id", Value: traceID.String()})
}

// appProducerSpan is an application's producer span, without a message
// id, as an instrumented client would send it.
func appProducerSpan(traceID pcommon.TraceID, spanID pcommon.SpanID, service, system, destination string, at time.Time) ptrace.Traces {
	app := ptrace.NewTraces()
	rs := app.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	sp.SetTraceID(traceID)
	sp.SetSpanID(spanID)
	sp.SetKind(ptrace.SpanKindProducer)
	sp.SetName("send " + destination)
	sp.SetStartTimestamp(pcommon.NewTimestampFromTime(at.Add(-time.Millisecond)))
	sp.SetEndTimestamp(pcommon.NewTimestampFromTime(at))
	sp.Attributes().PutStr(tap.AttrSystem, system)
	sp.Attributes().PutStr(tap.AttrOperationType, "send")
	sp.Attributes().PutStr(tap.AttrDestination, destination)
	return app
}
