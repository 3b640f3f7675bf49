package kafkatapreceiver

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/internal/taptest"
)

// hopSummary is what the tests check of a hop.
type hopSummary struct {
	Destination, Group, MessageID string
	Attempts                      uint16
	Outcome                       model.HopOutcome
	Reason                        string
}

func summarize(hops []model.Hop) []hopSummary {
	out := make([]hopSummary, 0, len(hops))
	for _, h := range hops {
		out = append(out, hopSummary{h.Destination, h.ConsumerGroup, h.MessageID, h.Attempts, h.Outcome, h.Reason})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].MessageID != out[j].MessageID {
			return out[i].MessageID < out[j].MessageID
		}
		return out[i].Group < out[j].Group
	})
	return out
}

// flowWithKey finds the flow carrying a key.
func flowWithKey(t *testing.T, r taptest.Result, kind, value string) model.Flow {
	t.Helper()
	for _, f := range r.Flows {
		for _, k := range f.Keys {
			if k.Kind == kind && k.Value == value {
				return f
			}
		}
	}
	t.Fatalf("no flow has %s=%s", kind, value)
	return model.Flow{}
}

// TestWorkloadFlows runs orders through a billing group that retries two
// of them through a retry topic and dead-letters one, an audit group that
// takes every order, and a shipment published for the first order: the
// tap's spans alone must give exactly those flows.
func TestWorkloadFlows(t *testing.T) {
	run := runID()
	orders, shipments := "orders-"+run, "shipments-"+run
	retry, dlq := orders+".retry.1", orders+".dlq"
	billing, audit, shipping := "billing-"+run, "audit-"+run, "shipping-"+run
	cluster := newCluster(t, kfake.SeedTopics(2, orders), kfake.SeedTopics(1, retry, dlq, shipments))
	brokers := cluster.ListenAddrs()

	cfg := testConfig(brokers, orders, retry, dlq, shipments)
	cfg.ConsumerGroups = []string{billing, audit, shipping}
	cfg.KeyHeaders = map[string]string{"order_id": "order_id"}
	cfg.RetryTopics = []string{"{topic}.retry.{attempt}"}
	cfg.DeadLetterTopics = []string{"{topic}.dlq"}
	u := startTap(t, cfg)

	ctx := context.Background()
	producer := newClient(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	for i, order := range []string{"A", "B", "C"} {
		r := &kgo.Record{
			Topic: orders, Partition: int32(i % 2), Key: []byte("order-" + order), Value: []byte(`{"amount":1}`),
			Headers: []kgo.RecordHeader{{Key: "order_id", Value: []byte(order)}},
		}
		require.NoError(t, producer.ProduceSync(ctx, r).FirstErr())
	}

	// billing: A ships, B and C fail once and go to the retry topic; on
	// retry B succeeds and C is dead-lettered.
	billingClient := newClient(t, brokers, kgo.ConsumerGroup(billing), kgo.ConsumeTopics(orders, retry),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	consume(t, billingClient, 5, func(r *kgo.Record) {
		order := string(r.Headers[0].Value)
		var out *kgo.Record
		switch {
		case r.Topic == orders && order == "A":
			out = &kgo.Record{Topic: shipments, Value: []byte(`{}`), Headers: []kgo.RecordHeader{{Key: "order_id", Value: []byte("A")}}}
		case r.Topic == orders:
			out = springCopy(retry, r, billing, "com.example.PaymentTimeout", false)
		case order == "C":
			out = springCopy(dlq, r, billing, "com.example.PaymentDeclined", true)
		default:
			return
		}
		copied, err := billingClient.ProduceSync(ctx, out).First()
		require.NoError(t, err)
		// The copy is tapped before the commit passes the record it copies,
		// as it is when the tap keeps up with the topics.
		u.waitFor(t, func(s ptrace.Span) bool {
			dest, _ := s.Attributes().Get(tap.AttrDestination)
			offset, _ := s.Attributes().Get(attrOffset)
			event, _ := s.Attributes().Get(tap.AttrEvent)
			return dest.Str() == copied.Topic && offset.Int() == copied.Offset || copied.Topic == dlq && event.Str() == "dead_letter"
		})
	})
	consume(t, newClient(t, brokers, kgo.ConsumerGroup(audit), kgo.ConsumeTopics(orders),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit()), 3, nil)
	consume(t, newClient(t, brokers, kgo.ConsumerGroup(shipping), kgo.ConsumeTopics(shipments),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit()), 1, nil)

	// 6 publishes (3 orders, 1 shipment, 2 retry copies), 3 failed
	// attempts (B and C on orders, C on the retry topic), 1 dead letter,
	// 6 successes: billing's commits passed 5 records but it gave up on 3,
	// audit's passed 3, shipping's 1.
	const want = 6 + 3 + 1 + 6
	u.waitSpans(t, want)
	// A few more polls find nothing more to say.
	time.Sleep(5 * cfg.PollInterval)
	require.Equal(t, want, u.traces.SpanCount())
	assert.Zero(t, counter[int64](t, u, "flowtrace.tap.gaps"))
	assert.Zero(t, counter[int64](t, u, "flowtrace.tap.decode_errors"))
	assert.EqualValues(t, want, counter[int64](t, u, "flowtrace.tap.observations"))

	result := taptest.Correlate(t, correlator.Config{
		RetryDestinations:      []string{"{topic}.retry.{attempt}"},
		DeadLetterDestinations: []string{"{topic}.dlq"},
	}, u.traces.AllTraces()...)
	require.Len(t, result.Flows, 3)

	idA, idB, idC := orders+"/0/0", orders+"/1/0", orders+"/0/1"
	flowA := flowWithKey(t, result, "order_id", "A")
	assert.Equal(t, []hopSummary{
		{orders, audit, idA, 1, model.HopAcked, ""},
		{orders, billing, idA, 1, model.HopAcked, ""},
		{shipments, shipping, shipments + "/0/0", 1, model.HopAcked, ""},
	}, summarize(result.HopsOf(flowA.ID)))
	assert.Equal(t, model.FlowCompleted, flowA.Status)
	assert.EqualValues(t, 0, flowA.Retries)

	flowB := flowWithKey(t, result, "order_id", "B")
	assert.Equal(t, []hopSummary{
		{orders, audit, idB, 1, model.HopAcked, ""},
		{orders, billing, idB, 2, model.HopAcked, ""},
	}, summarize(result.HopsOf(flowB.ID)))
	assert.Equal(t, model.FlowCompleted, flowB.Status)
	assert.EqualValues(t, 1, flowB.Retries)
	assert.EqualValues(t, 0, flowB.DeadLetters)

	flowC := flowWithKey(t, result, "order_id", "C")
	assert.Equal(t, []hopSummary{
		{orders, audit, idC, 1, model.HopAcked, ""},
		{orders, billing, idC, 2, model.HopDeadLettered, "com.example.PaymentDeclined"},
	}, summarize(result.HopsOf(flowC.ID)))
	assert.Equal(t, model.FlowDeadLettered, flowC.Status)
	assert.EqualValues(t, 1, flowC.Retries)
	assert.EqualValues(t, 1, flowC.DeadLetters)

	// Every group has committed everything: its lag is zero, in messages
	// and in seconds, for every topic it consumes.
	require.Eventually(t, func() bool {
		lag := latestLag(u.metrics.AllMetrics())
		return len(lag) == 4 && lag[billing+"/"+orders] == 0 && lag[billing+"/"+retry] == 0 &&
			lag[audit+"/"+orders] == 0 && lag[shipping+"/"+shipments] == 0
	}, 10*time.Second, 50*time.Millisecond)
}

// latestLag is the newest flowtrace.backlog.lag point of each group/topic.
func latestLag(all []pmetric.Metrics) map[string]int64 {
	out := map[string]int64{}
	for _, md := range all {
		eachPoint(md, model.MetricBacklogLag, func(p pmetric.NumberDataPoint) {
			g, _ := p.Attributes().Get("consumer_group")
			d, _ := p.Attributes().Get("destination")
			out[g.Str()+"/"+d.Str()] = p.IntValue()
		})
	}
	return out
}

func eachPoint(md pmetric.Metrics, name string, fn func(pmetric.NumberDataPoint)) {
	for i := 0; i < md.ResourceMetrics().Len(); i++ {
		sms := md.ResourceMetrics().At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if ms.At(k).Name() != name {
					continue
				}
				points := ms.At(k).Gauge().DataPoints()
				for l := 0; l < points.Len(); l++ {
					fn(points.At(l))
				}
			}
		}
	}
}

// TestLagInMessagesAndSeconds leaves records uncommitted: the group's lag
// is the records it has not committed, and its age the oldest of them.
func TestLagInMessagesAndSeconds(t *testing.T) {
	run := runID()
	topic, group := "jobs-"+run, "workers-"+run
	cluster := newCluster(t, kfake.SeedTopics(1, topic))
	brokers := cluster.ListenAddrs()
	cfg := testConfig(brokers, topic)
	cfg.ConsumerGroups = []string{group}
	cfg.StartAt = StartEarliest // the records are stamped before the tap started
	u := startTap(t, cfg)

	ctx := context.Background()
	producer := newClient(t, brokers)
	old := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
	for i := range 5 {
		r := &kgo.Record{Topic: topic, Value: []byte("{}"), Timestamp: old.Add(time.Duration(i) * time.Second)}
		require.NoError(t, producer.ProduceSync(ctx, r).FirstErr())
	}
	// The group commits the first two only.
	admin := newClient(t, brokers, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	var first []*kgo.Record
	ctxPoll, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for len(first) < 2 {
		fs := admin.PollRecords(ctxPoll, 2-len(first))
		require.NoError(t, ctxPoll.Err())
		first = append(first, fs.Records()...)
	}
	require.NoError(t, admin.CommitRecords(ctx, first...))

	var lag int64
	var seconds pmetric.NumberDataPoint
	require.Eventually(t, func() bool {
		known := false
		for _, md := range u.metrics.AllMetrics() {
			eachPoint(md, model.MetricBacklogLag, func(p pmetric.NumberDataPoint) { lag = p.IntValue() })
			eachPoint(md, model.MetricBacklogLagSeconds, func(p pmetric.NumberDataPoint) { seconds, known = p, true })
		}
		return lag == 3 && known
	}, 10*time.Second, 50*time.Millisecond)
	// The oldest uncommitted record (offset 2) was stamped old+2s: its age
	// when the point was taken.
	assert.InDelta(t, seconds.Timestamp().AsTime().Sub(old.Add(2*time.Second)).Seconds(), seconds.DoubleValue(), 1e-6)

	// Two settle spans: the committed records, inferred.
	var settles int
	for _, s := range u.spans() {
		if v, ok := s.Attributes().Get(tap.AttrOperationType); ok && v.Str() == "settle" {
			settles++
			inferred, _ := s.Attributes().Get(tap.AttrInferred)
			assert.True(t, inferred.Bool())
		}
	}
	assert.Equal(t, 2, settles)
}

// TestTopicCreatedLater: a topic matching topic_regexes that appears after
// the tap started is read from its first record.
func TestTopicCreatedLater(t *testing.T) {
	run := runID()
	topic := "late-" + run
	cluster := newCluster(t)
	brokers := cluster.ListenAddrs()
	cfg := testConfig(brokers)
	cfg.TopicRegexes = []string{"^late-" + run + "$"}
	cfg.MetadataRefreshInterval = 100 * time.Millisecond
	u := startTap(t, cfg)

	admin := kadm.NewClient(newClient(t, brokers))
	_, err := admin.CreateTopic(context.Background(), 1, 1, nil, topic)
	require.NoError(t, err)
	producer := newClient(t, brokers)
	for range 3 {
		require.NoError(t, producer.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte("{}")}).FirstErr())
	}
	u.waitSpans(t, 3)
	ids := map[string]bool{}
	for _, s := range u.spans() {
		id, _ := s.Attributes().Get(tap.AttrMessageID)
		ids[id.Str()] = true
	}
	assert.Equal(t, map[string]bool{topic + "/0/0": true, topic + "/0/1": true, topic + "/0/2": true}, ids)
}
