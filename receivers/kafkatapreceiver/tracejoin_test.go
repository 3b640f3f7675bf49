package kafkatapreceiver

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/internal/taptest"
)

// kcatProduce produces one record with kcat, a client flowtrace did not
// write.
func kcatProduce(t *testing.T, broker, topic, key, value string, headers ...string) {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("kcat is not installed: %v", err)
		}
		t.Skipf("kcat is not installed: %v", err)
	}
	args := []string{"-b", broker, "-P", "-t", topic, "-k", key}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, args...)
	cmd.Stdin = strings.NewReader(value + "\n")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "kcat: %s", out)
}

// appProducerSpan is the span an instrumented producer would have emitted
// for the message it sent with traceparent.
func appProducerSpan(t *testing.T, service, topic, traceparent string) ptrace.Traces {
	t.Helper()
	traceID, spanID, ok := tap.ParseTraceParent(traceparent)
	require.True(t, ok)
	td := ptrace.NewTraces()
	rs := td.ResourceSpans().AppendEmpty()
	rs.Resource().Attributes().PutStr("service.name", service)
	span := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
	span.SetTraceID(traceID)
	span.SetSpanID(spanID)
	span.SetKind(ptrace.SpanKindProducer)
	span.SetName("send " + topic)
	now := pcommon.NewTimestampFromTime(time.Now().Add(-time.Second))
	span.SetStartTimestamp(now)
	span.SetEndTimestamp(now + 1000)
	span.Attributes().PutStr("messaging.system", "kafka")
	span.Attributes().PutStr("messaging.destination.name", topic)
	span.Attributes().PutStr("messaging.operation.type", "send")
	return td
}

// TestKcatTraceJoin taps two records produced by kcat with a traceparent
// and an order id header. The first was also reported by its producer as
// an application span: the tap's spans and it make one hop, not two; the
// order id joins both messages into one flow.
func TestKcatTraceJoin(t *testing.T) {
	run := runID()
	topic, group := "payments-"+run, "ledger-"+run
	cluster := newCluster(t, kfake.SeedTopics(1, topic))
	brokers := cluster.ListenAddrs()
	cfg := testConfig(brokers, topic)
	cfg.ConsumerGroups = []string{group}
	cfg.KeyHeaders = map[string]string{"order_id": "order_id"}
	cfg.RecordKey = true
	u := startTap(t, cfg)

	const (
		first  = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		second = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	)
	kcatProduce(t, brokers[0], topic, "pay-1", `{"amount":5}`, "traceparent="+first, "order_id=P1")
	kcatProduce(t, brokers[0], topic, "pay-2", `{"amount":7}`, "traceparent="+second, "order_id=P1")
	consume(t, newClient(t, brokers, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit()), 2, nil)
	u.waitSpans(t, 4) // two publishes, two commits passed

	// The tap's spans of the first record: the publish is the producer's
	// span seen from the broker; the settlement links to it.
	firstTrace, firstSpan, _ := tap.ParseTraceParent(first)
	var publish, settle ptrace.Span
	for _, s := range u.spans() {
		id, _ := s.Attributes().Get(tap.AttrMessageID)
		if id.Str() != topic+"/0/0" {
			continue
		}
		if s.Kind() == ptrace.SpanKindProducer {
			publish = s
		} else {
			settle = s
		}
	}
	require.NotEqual(t, ptrace.Span{}, publish)
	require.NotEqual(t, ptrace.Span{}, settle)
	assert.Equal(t, firstTrace, publish.TraceID())
	assert.Equal(t, firstSpan, publish.SpanID())
	key, _ := publish.Attributes().Get(attrMessageKey)
	assert.Equal(t, "pay-1", key.Str())
	orderID, _ := publish.Attributes().Get(tap.AttrKeyPrefix + "order_id")
	assert.Equal(t, "P1", orderID.Str())
	offset, _ := publish.Attributes().Get(attrOffset)
	assert.EqualValues(t, 0, offset.Int())
	require.Equal(t, 1, settle.Links().Len())
	assert.Equal(t, firstSpan, settle.Links().At(0).SpanID())
	assert.Equal(t, firstTrace, settle.TraceID())

	spans := append([]ptrace.Traces{appProducerSpan(t, "checkout", topic, first)}, u.traces.AllTraces()...)
	result := taptest.Correlate(t, correlator.Config{}, spans...)
	require.Len(t, result.Flows, 1)
	flow := result.Flows[0]
	assert.Contains(t, flow.Keys, model.Key{Kind: "order_id", Value: "P1"})
	assert.Equal(t, model.FlowCompleted, flow.Status)
	hops := result.HopsOf(flow.ID)
	require.Len(t, hops, 2, "the application's producer span and the tap's publish are one message")
	byID := map[string]model.Hop{}
	for _, h := range hops {
		byID[h.MessageID] = h
	}
	one, two := byID[topic+"/0/0"], byID[topic+"/0/1"]
	assert.Equal(t, "checkout", one.Producer)
	assert.Equal(t, group, one.ConsumerGroup)
	assert.Equal(t, model.HopAcked, one.Outcome)
	assert.Equal(t, "", two.Producer)
	assert.Equal(t, group, two.ConsumerGroup)
	assert.Equal(t, model.HopAcked, two.Outcome)
}
