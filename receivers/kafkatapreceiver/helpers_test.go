package kafkatapreceiver

import (
	"context"
	"encoding/binary"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var runCounter atomic.Int64

// runID makes names unique per test run, so runs never see each other's
// topics and groups.
func runID() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "-" + strconv.FormatInt(runCounter.Add(1), 10)
}

// newCluster starts an in-process Kafka-protocol broker on 127.0.0.1.
func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// newClient is an application client of the cluster.
func newClient(t *testing.T, brokers []string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	c, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(c.Close)
	return c
}

// testConfig taps topics with fast polls.
func testConfig(brokers []string, topics ...string) *Config {
	cfg := createDefaultConfig()
	cfg.Brokers = brokers
	cfg.Topics = topics
	cfg.PollInterval = 100 * time.Millisecond
	cfg.Timeout = 2 * time.Second
	cfg.Reconnect.Initial = 100 * time.Millisecond
	cfg.Reconnect.Max = 500 * time.Millisecond
	return cfg
}

// tapUnderTest is a started tap and what it emitted.
type tapUnderTest struct {
	traces  *consumertest.TracesSink
	metrics *consumertest.MetricsSink
	tel     *componenttest.Telemetry
	tap     *kafkaTap
}

// startTap starts the traces and metrics receivers of one component id,
// which share one tap, as a collector would.
func startTap(t *testing.T, cfg *Config, extra ...kgo.Opt) *tapUnderTest {
	t.Helper()
	sink := new(consumertest.TracesSink)
	return startTapWith(t, cfg, sink, sink, extra...)
}

// startTapWith is startTap with next in front of the traces sink.
func startTapWith(t *testing.T, cfg *Config, next consumer.Traces, sink *consumertest.TracesSink, extra ...kgo.Opt) *tapUnderTest {
	t.Helper()
	require.NoError(t, cfg.Validate())
	tt := componenttest.NewTelemetry()
	t.Cleanup(func() { require.NoError(t, tt.Shutdown(context.Background())) })
	set := receivertest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = tt.NewTelemetrySettings()
	u := &tapUnderTest{traces: sink, metrics: new(consumertest.MetricsSink), tel: tt}

	f := NewFactory()
	traces, err := f.CreateTraces(context.Background(), set, cfg, next)
	require.NoError(t, err)
	metrics, err := f.CreateMetrics(context.Background(), set, cfg, u.metrics)
	require.NoError(t, err)
	u.tap = traces.(*tap.Handle[*kafkaTap]).Tap
	u.tap.extraOpts = extra
	for _, r := range []component.Component{traces, metrics} {
		require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	}
	t.Cleanup(func() {
		require.NoError(t, traces.Shutdown(context.Background()))
		require.NoError(t, metrics.Shutdown(context.Background()))
	})
	return u
}

// spans returns every span emitted so far, with its resource's service.
func (u *tapUnderTest) spans() []ptrace.Span {
	var out []ptrace.Span
	for _, td := range u.traces.AllTraces() {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			rs := td.ResourceSpans().At(i)
			for j := 0; j < rs.ScopeSpans().Len(); j++ {
				ss := rs.ScopeSpans().At(j).Spans()
				for k := 0; k < ss.Len(); k++ {
					out = append(out, ss.At(k))
				}
			}
		}
	}
	return out
}

// waitSpans waits until at least n spans were emitted.
func (u *tapUnderTest) waitSpans(t *testing.T, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return u.traces.SpanCount() >= n },
		30*time.Second, 20*time.Millisecond, "the tap emitted %d spans, want %d", u.traces.SpanCount(), n)
}

// waitFor waits until a span emitted so far matches.
func (u *tapUnderTest) waitFor(t *testing.T, match func(ptrace.Span) bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, s := range u.spans() {
			if match(s) {
				return true
			}
		}
		return false
	}, 30*time.Second, 10*time.Millisecond, "the tap did not emit the span")
}

// consume polls c until it has n records, handing each to handle, and
// commits each batch after handling it.
func consume(t *testing.T, c *kgo.Client, n int, handle func(*kgo.Record)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for seen := 0; seen < n; {
		fetches := c.PollFetches(ctx)
		require.NoError(t, ctx.Err(), "consumed %d of %d records", seen, n)
		fetches.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		recs := fetches.Records()
		for _, r := range recs {
			if handle != nil {
				handle(r)
			}
		}
		seen += len(recs)
		require.NoError(t, c.CommitRecords(ctx, recs...))
	}
}

// springCopy is a record copied to a retry or dead-letter topic as Spring
// Kafka's DeadLetterPublishingRecoverer writes it: the original's
// coordinates as binary integers, the failing group and exception class.
// Spring appends them to the original's headers, so a copy of a copy still
// names the first record first; with onlyLatest, the earlier coordinates
// are dropped, so only the tap's memory of the copy leads to the first.
func springCopy(topic string, original *kgo.Record, group, exception string, onlyLatest bool) *kgo.Record {
	partition := binary.BigEndian.AppendUint32(nil, uint32(original.Partition))
	offset := binary.BigEndian.AppendUint64(nil, uint64(original.Offset))
	var headers []kgo.RecordHeader
	for _, h := range original.Headers {
		if !onlyLatest || !strings.HasPrefix(h.Key, "kafka_dlt-") {
			headers = append(headers, h)
		}
	}
	headers = append(headers,
		kgo.RecordHeader{Key: "kafka_dlt-original-topic", Value: []byte(original.Topic)},
		kgo.RecordHeader{Key: "kafka_dlt-original-partition", Value: partition},
		kgo.RecordHeader{Key: "kafka_dlt-original-offset", Value: offset},
		kgo.RecordHeader{Key: "kafka_dlt-original-consumer-group", Value: []byte(group)},
		kgo.RecordHeader{Key: "kafka_dlt-exception-fqcn", Value: []byte(exception)},
	)
	return &kgo.Record{Topic: topic, Key: original.Key, Value: original.Value, Headers: headers}
}

// How long tests wait for what the tap does, and how often they look.
const (
	waitLimit = 30 * time.Second
	waitTick  = 10 * time.Millisecond
)
