package natstapreceiver

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/internal/taptest"
)

// TestJetStreamFlows runs a workload on the local server — one message
// acked, one nacked then acked, one nacked until it reaches max_deliver, one
// terminated, all also read by a second consumer group — and checks the
// flows the correlator builds from the tap's spans alone.
func TestJetStreamFlows(t *testing.T) {
	addr := localNATS(t)
	name := uniqueName("FTFLOW")
	cfg := streamConfig(addr, name)
	cfg.DeliverPolicy = DeliverAll
	cfg.PollInterval = 200 * time.Millisecond
	_, js := client(t, addr)
	stream := createStream(t, js, name)
	ctx := context.Background()
	workers, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 3, AckWait: 30 * time.Second,
		// Sampled acks tell when each acked message was delivered.
		SampleFrequency: "100%"})
	require.NoError(t, err)
	audit, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "audit", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 30 * time.Second})
	require.NoError(t, err)
	// A consumer that never fetches: all behind, no hops.
	_, err = stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "idle", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)

	r := startTap(t, cfg)

	// Subjects name what the workers do with each message.
	plan := []string{"ack", "retry", "dead", "term"}
	for _, p := range plan {
		_, err := js.Publish(ctx, name+".orders."+p, []byte(`{"order":"synthetic"}`))
		require.NoError(t, err)
	}
	runWorkers(t, workers)
	drain(t, audit, len(plan))

	eventually(t, "the dead letter and the terminate", func() bool {
		return r.has(map[string]any{tap.AttrEvent: "dead_letter", tap.AttrMessageID: name + "/3"}) &&
			r.has(map[string]any{tap.AttrOutcome: tap.Term, tap.AttrMessageID: name + "/4"}) &&
			r.count(map[string]any{tap.AttrConsumerGroup: "audit", tap.AttrOutcome: tap.Ack}) == len(plan) &&
			r.count(map[string]any{tap.AttrOperationType: "send"}) == len(plan)
	})
	// The tap has the ack floors the server has now (past the terminated
	// and dead-lettered messages or not, depending on the server's
	// version); it saw each message settled, so it infers nothing.
	for _, c := range []jetstream.Consumer{workers, audit} {
		info, err := c.Info(ctx)
		require.NoError(t, err)
		eventually(t, "the tap at the floor of "+info.Name, func() bool { return trackerAt(r.tap.streams[0], info.Name, info.AckFloor.Stream) })
	}
	r.flush(t)
	assert.Zero(t, r.count(map[string]any{tap.AttrInferred: true}), "no inferred settlement")

	res := taptest.Correlate(t, correlator.Config{}, r.traces.AllTraces()...)
	require.Len(t, res.Flows, len(plan), "one flow per message")
	type hopWant struct {
		attempts uint16
		outcome  model.HopOutcome
	}
	want := map[string]struct {
		status      model.FlowStatus
		retries     uint32
		deadLetters uint32
		workers     hopWant
	}{
		name + "/1": {model.FlowCompleted, 0, 0, hopWant{1, model.HopAcked}},
		name + "/2": {model.FlowCompleted, 1, 0, hopWant{2, model.HopAcked}},
		name + "/3": {model.FlowDeadLettered, 2, 1, hopWant{3, model.HopDeadLettered}},
		name + "/4": {model.FlowFailed, 0, 0, hopWant{1, model.HopRejected}},
	}
	for _, f := range res.Flows {
		hops := res.HopsOf(f.ID)
		for _, h := range hops {
			t.Logf("flow %s %s retries=%d dl=%d hop %s group=%s attempts=%d outcome=%s dest=%s wait=%s reason=%s", f.ID[:8], f.Status, f.Retries, f.DeadLetters, h.MessageID, h.ConsumerGroup, h.Attempts, h.Outcome, h.Destination, h.QueueWait, h.Reason)
		}
		require.Len(t, hops, 2, "flow %s: one hop per consumer group", f.ID)
		sort.Slice(hops, func(i, j int) bool { return hops[i].ConsumerGroup < hops[j].ConsumerGroup })
		id := hops[0].MessageID
		w, ok := want[id]
		require.True(t, ok, "unexpected message %s", id)
		delete(want, id)
		assert.Equal(t, w.status, f.Status, id)
		assert.Equal(t, w.retries, f.Retries, id)
		assert.Equal(t, w.deadLetters, f.DeadLetters, id)
		assert.Equal(t, uint32(2), f.HopCount, id)
		auditHop, workerHop := hops[0], hops[1]
		assert.Equal(t, "audit", auditHop.ConsumerGroup)
		assert.Equal(t, "workers", workerHop.ConsumerGroup)
		assert.Equal(t, model.HopAcked, auditHop.Outcome, id)
		assert.Equal(t, uint16(1), auditHop.Attempts, id)
		assert.Equal(t, w.workers.outcome, workerHop.Outcome, id)
		assert.Equal(t, w.workers.attempts, workerHop.Attempts, id)
		for _, h := range hops {
			assert.Equal(t, name, h.Destination, "the consumer side reads the stream")
			assert.Equal(t, "nats", h.System)
			assert.False(t, h.PublishTime.IsZero(), "publish seen")
			assert.False(t, h.DeliverTime.Before(h.PublishTime), "delivered after it was stored")
			assert.False(t, h.SettleTime.IsZero(), "settled")
		}
		if id == name+"/3" {
			assert.Equal(t, reasonMaxDeliveries, workerHop.Reason)
		}
		if id == name+"/1" {
			// The ack metric puts the delivery before the processing.
			assert.GreaterOrEqual(t, workerHop.SettleTime.Sub(workerHop.DeliverTime), processing-5*time.Millisecond)
		}
	}
	assert.Empty(t, want, "messages without a flow")

	// Backlog: the working consumers are caught up, the idle one is behind
	// by every message, the oldest stored a moment ago.
	eventually(t, "backlog gauges after the workload", func() bool {
		points := backlogPoints(r)
		for _, group := range []string{"audit", "workers"} {
			for _, metric := range []string{model.MetricBacklogUnacked, model.MetricBacklogLag} {
				if v, ok := points[name+"/"+group+"/"+metric]; !ok || v != 0 {
					return false
				}
			}
		}
		return true
	})
	points := backlogPoints(r)
	for _, group := range []string{"audit", "workers"} {
		assert.Equal(t, 0.0, points[name+"/"+group+"/"+model.MetricBacklogLag], group)
		assert.Equal(t, 0.0, points[name+"/"+group+"/"+model.MetricBacklogLagSeconds], group)
	}
	idle := name + "/idle/"
	assert.Equal(t, float64(len(plan)), points[idle+model.MetricBacklogLag])
	assert.Equal(t, float64(len(plan)), points[idle+model.MetricBacklogDepth])
	assert.Equal(t, 0.0, points[idle+model.MetricBacklogUnacked])
	require.Contains(t, points, idle+model.MetricBacklogLagSeconds, "the oldest message's store time is known")
	assert.GreaterOrEqual(t, points[idle+model.MetricBacklogLagSeconds], 0.0)
	assert.Equal(t, float64(len(plan)), points[name+"//"+model.MetricBacklogDepth], "stream depth")
}

// trackerAt reports whether the tap has consumer's ack floor at floor with
// no ack due to be inferred.
func trackerAt(st *streamState, consumer string, floor uint64) bool {
	st.settle.mu.Lock()
	defer st.settle.mu.Unlock()
	c := st.settle.consumers[consumer]
	return c != nil && c.floor == floor && len(c.due) == 0
}

// processing is how long the workers work on the message they ack at once.
const processing = 50 * time.Millisecond

// runWorkers handles the messages of the plan: ack, nak once, nak until
// max_deliver, terminate.
func runWorkers(t *testing.T, c jetstream.Consumer) {
	t.Helper()
	deadDeliveries := 0
	done := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for (!done["ack"] || !done["retry"] || !done["term"] || deadDeliveries < 3) && time.Now().Before(deadline) {
		batch, err := c.Fetch(10, jetstream.FetchMaxWait(300*time.Millisecond))
		require.NoError(t, err)
		for m := range batch.Messages() {
			md, err := m.Metadata()
			require.NoError(t, err)
			switch subjectVerb(m.Subject()) {
			case "ack":
				time.Sleep(processing)
				require.NoError(t, m.Ack())
				done["ack"] = true
			case "retry":
				if md.NumDelivered == 1 {
					require.NoError(t, m.Nak())
				} else {
					require.NoError(t, m.DoubleAck(context.Background()))
					done["retry"] = true
				}
			case "dead":
				deadDeliveries++
				require.NoError(t, m.Nak())
			case "term":
				require.NoError(t, m.Term())
				done["term"] = true
			}
		}
	}
	require.Equal(t, 3, deadDeliveries, "deliveries of the message that reaches max_deliver")
}

func subjectVerb(subject string) string {
	for i := len(subject) - 1; i >= 0; i-- {
		if subject[i] == '.' {
			return subject[i+1:]
		}
	}
	return subject
}

// drain acks n messages of c.
func drain(t *testing.T, c jetstream.Consumer, n int) {
	t.Helper()
	got := 0
	deadline := time.Now().Add(30 * time.Second)
	for got < n && time.Now().Before(deadline) {
		batch, err := c.Fetch(n-got, jetstream.FetchMaxWait(300*time.Millisecond))
		require.NoError(t, err)
		for m := range batch.Messages() {
			require.NoError(t, m.Ack())
			got++
		}
	}
	require.Equal(t, n, got)
}

// backlogPoints flattens the latest backlog points as
// "<destination>/<group>/<metric>".
func backlogPoints(r *running) map[string]float64 {
	out := map[string]float64{}
	for _, md := range r.metrics.AllMetrics() {
		ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
		for i := 0; i < ms.Len(); i++ {
			m := ms.At(i)
			dps := m.Gauge().DataPoints()
			for j := 0; j < dps.Len(); j++ {
				dp := dps.At(j)
				dest, _ := dp.Attributes().Get("destination")
				group := ""
				if g, ok := dp.Attributes().Get("consumer_group"); ok {
					group = g.Str()
				}
				v := dp.DoubleValue()
				if dp.ValueType() == 1 { // int
					v = float64(dp.IntValue())
				}
				out[dest.Str()+"/"+group+"/"+m.Name()] = v
			}
		}
	}
	return out
}

// TestTraceJoin checks that a message published with a traceparent is one
// hop with the application's producer span, and that the consumer side's
// tap spans link to that span.
func TestTraceJoin(t *testing.T) {
	addr := localNATS(t)
	name := uniqueName("FTJOIN")
	cfg := streamConfig(addr, name)
	cfg.DeliverPolicy = DeliverAll
	_, js := client(t, addr)
	stream := createStream(t, js, name)
	ctx := context.Background()
	workers, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	r := startTap(t, cfg)

	traceID := pcommon.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	spanID := pcommon.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	traceParent := fmt.Sprintf("00-%s-%s-01", traceID, spanID)
	// The application's producer span starts before the broker stores the
	// message.
	sentAt := pcommon.NewTimestampFromTime(time.Now())
	msg := nats.NewMsg(name + ".payments")
	msg.Header.Set(headerTraceParent, traceParent)
	msg.Data = []byte("synthetic payment")
	_, err = js.PublishMsg(ctx, msg)
	require.NoError(t, err)
	// The tap has read the publish before the consumer acks, so the ack's
	// spans can link to it.
	eventually(t, "the publish", func() bool { return r.has(map[string]any{tap.AttrOperationType: "send"}) })
	drain(t, workers, 1)
	eventually(t, "the ack", func() bool { return r.has(map[string]any{tap.AttrOutcome: tap.Ack}) })
	r.flush(t)

	// The application's own producer span for the same message.
	app := ptrace.NewTraces()
	rs := app.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", "checkout")
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetTraceID(traceID)
	span.SetSpanID(spanID)
	span.SetKind(ptrace.SpanKindProducer)
	span.SetName("send " + name + ".payments")
	span.SetStartTimestamp(sentAt)
	span.SetEndTimestamp(sentAt)
	span.Attributes().PutStr(tap.AttrSystem, "nats")
	span.Attributes().PutStr(tap.AttrOperationType, "send")
	span.Attributes().PutStr(tap.AttrDestination, name+".payments")

	for _, s := range r.spans() {
		kind, _ := s.Attributes().Get(tap.AttrOperationType)
		assert.Equal(t, traceID, s.TraceID(), "every tap span is in the message's trace")
		if kind.Str() == "send" {
			assert.Equal(t, spanID, s.SpanID(), "the tap's publish is the application's producer span")
			continue
		}
		require.Equal(t, 1, s.Links().Len(), "%s links to the producer span", kind.Str())
		assert.Equal(t, spanID, s.Links().At(0).SpanID())
	}

	res := taptest.Correlate(t, correlator.Config{}, append(r.traces.AllTraces(), app)...)
	require.Len(t, res.Flows, 1)
	require.Len(t, res.Hops, 1, "one hop, not one for the tap and one for the application")
	h := res.Hops[0]
	assert.Equal(t, "checkout", h.Producer)
	assert.Equal(t, "workers", h.ConsumerGroup)
	assert.Equal(t, model.HopAcked, h.Outcome)
	assert.Equal(t, name+"/1", h.MessageID)
}

// TestCoreSubjects checks that publishes on core subjects become publish
// spans, named by Nats-Msg-Id when they carry one.
func TestCoreSubjects(t *testing.T) {
	addr := localNATS(t)
	prefix := uniqueName("ftcore")
	cfg := createDefaultConfig()
	cfg.URL = addr
	cfg.Subjects = []string{prefix + ".>"}
	nc, _ := client(t, addr)
	r := startTap(t, cfg)

	require.NoError(t, nc.Publish(prefix+".alerts", []byte("synthetic alert")))
	withID := nats.NewMsg(prefix + ".audit")
	withID.Header.Set(headerMsgID, "audit-42")
	withID.Data = []byte("synthetic")
	require.NoError(t, nc.PublishMsg(withID))
	require.NoError(t, nc.Publish("elsewhere."+prefix, []byte("not tapped")))
	require.NoError(t, nc.Flush())

	eventually(t, "two publishes", func() bool { return r.count(map[string]any{tap.AttrOperationType: "send"}) == 2 })
	assert.True(t, r.has(map[string]any{tap.AttrDestination: prefix + ".alerts", tap.AttrBodySize: len("synthetic alert")}))
	assert.True(t, r.has(map[string]any{tap.AttrDestination: prefix + ".audit", tap.AttrMessageID: "audit-42"}))
	for _, s := range r.spans() {
		assert.Equal(t, ptrace.SpanKindProducer, s.Kind())
	}
}
