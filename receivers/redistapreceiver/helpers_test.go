package redistapreceiver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/internal/brokertest"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/redistapreceiver/internal/metadata"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// redisAddr is the local Redis the tests use (FLOWTRACE_REDIS overrides).
func redisAddr(t testing.TB) string {
	return brokertest.Addr(t, "FLOWTRACE_REDIS", "127.0.0.1:6379")
}

// uniqueName makes names that do not collide across runs and packages.
func uniqueName(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "flowtrace-test-" + prefix + "-" + hex.EncodeToString(b)
}

func newTestClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// testConfig is a config with short intervals for tests.
func testConfig(addr string) *Config {
	cfg := createDefaultConfig()
	cfg.Endpoint = addr
	cfg.PollInterval = minPollInterval
	cfg.Reconnect = tap.Backoff{Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
	return cfg
}

// runningTap is a tap started through its factory, with its sinks.
type runningTap struct {
	traces  *consumertest.TracesSink
	metrics *consumertest.MetricsSink
	tel     *componenttest.Telemetry
	tap     *redisTap
}

func startTap(t *testing.T, cfg *Config) *runningTap {
	t.Helper()
	return startTapTo(t, cfg, nil)
}

// startTapTo starts a tap whose spans go to next, or to its sink when next
// is nil; tweaks change the tap before it starts.
func startTapTo(t *testing.T, cfg *Config, next consumer.Traces, tweaks ...func(*redisTap)) *runningTap {
	t.Helper()
	require.NoError(t, cfg.Validate())
	rt := &runningTap{traces: new(consumertest.TracesSink), metrics: new(consumertest.MetricsSink), tel: componenttest.NewTelemetry()}
	if next == nil {
		next = rt.traces
	}
	set := receivertest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = rt.tel.NewTelemetrySettings()
	f := NewFactory()
	tr, err := f.CreateTraces(context.Background(), set, cfg, next)
	require.NoError(t, err)
	rt.tap = tr.(*tap.Handle[*redisTap]).Tap
	for _, tweak := range tweaks {
		tweak(rt.tap)
	}
	mr, err := f.CreateMetrics(context.Background(), set, cfg, rt.metrics)
	require.NoError(t, err)
	host := componenttest.NewNopHost()
	require.NoError(t, tr.Start(context.Background(), host))
	require.NoError(t, mr.Start(context.Background(), host))
	t.Cleanup(func() {
		require.NoError(t, tr.Shutdown(context.Background()))
		require.NoError(t, tr.Shutdown(context.Background()), "a second shutdown is harmless")
		require.NoError(t, mr.Shutdown(context.Background()))
		require.NoError(t, rt.tap.Shutdown(context.Background()), "the tap's own shutdown, again, is harmless")
		require.NoError(t, rt.tel.Shutdown(context.Background()))
	})
	rt.waitConnected(t)
	return rt
}

// waitConnected waits until the tap's session works (it has found where to
// read its streams from).
func (rt *runningTap) waitConnected(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool { return rt.connected() == 1 }, defaultWait, pollEvery, "the tap does not connect")
}

// connected is the tap's flowtrace.tap.connected gauge, -1 before it is
// recorded.
func (rt *runningTap) connected() int64 {
	m, err := rt.tel.GetMetric("flowtrace.tap.connected")
	if err != nil {
		return -1
	}
	points := m.Data.(metricdata.Gauge[int64]).DataPoints
	if len(points) != 1 {
		return -1
	}
	return points[0].Value
}

// defaultWait bounds how long a test waits for the tap to see something;
// pollEvery is how often it looks.
const (
	defaultWait = 30 * time.Second
	pollEvery   = 10 * time.Millisecond
)

// seenSpan is what the tests check of a tap span.
type seenSpan struct {
	event, messageID, group, outcome, reason string
	attempt                                  int64
	inferred                                 bool
	traceID                                  pcommon.TraceID
	spanID                                   pcommon.SpanID
	links                                    []pcommon.SpanID
}

func (s seenSpan) String() string {
	return fmt.Sprintf("%s %s group=%s attempt=%d outcome=%s", s.event, s.messageID, s.group, s.attempt, s.outcome)
}

func spansOf(sink *consumertest.TracesSink) []seenSpan {
	var out []seenSpan
	for _, td := range sink.AllTraces() {
		out = append(out, readSpans(td)...)
	}
	return out
}

func readSpans(td ptrace.Traces) []seenSpan {
	var out []seenSpan
	for i := 0; i < td.ResourceSpans().Len(); i++ {
		ss := td.ResourceSpans().At(i).ScopeSpans()
		for j := 0; j < ss.Len(); j++ {
			spans := ss.At(j).Spans()
			for k := 0; k < spans.Len(); k++ {
				sp := spans.At(k)
				attrs := sp.Attributes()
				str := func(key string) string {
					if v, ok := attrs.Get(key); ok {
						return v.AsString()
					}
					return ""
				}
				s := seenSpan{
					event: str(tap.AttrEvent), messageID: str(tap.AttrMessageID), group: str(tap.AttrConsumerGroup),
					outcome: str(tap.AttrOutcome), reason: str(tap.AttrReason), traceID: sp.TraceID(), spanID: sp.SpanID(),
				}
				if s.event == "" {
					s.event = str(tap.AttrOperationType)
				}
				if v, ok := attrs.Get(tap.AttrAttempt); ok {
					s.attempt = v.Int()
				}
				if v, ok := attrs.Get(tap.AttrInferred); ok {
					s.inferred = v.Bool()
				}
				for l := 0; l < sp.Links().Len(); l++ {
					s.links = append(s.links, sp.Links().At(l).SpanID())
				}
				out = append(out, s)
			}
		}
	}
	return out
}

// waitForSpan waits until the tap emitted a span matching match.
func waitForSpan(t *testing.T, sink *consumertest.TracesSink, what string, match func(seenSpan) bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		return slices.ContainsFunc(spansOf(sink), match)
	}, defaultWait, pollEvery, "waiting for %s; spans: %v", what, spansOf(sink))
}

func hasSpan(event, messageID string) func(seenSpan) bool {
	return func(s seenSpan) bool { return s.event == event && s.messageID == messageID }
}
