package rabbitmqtapreceiver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/internal/brokertest"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/internal/taptest"
	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver/internal/metadata"
)

func TestMain(m *testing.M) {
	restore := traceRootVHost()
	code := m.Run()
	restore()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreAnyFunction("net/http.(*persistConn).writeLoop"),
		); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// traceRootVHost switches tracing on for the vhost "/" the tests share,
// once for them all (a tap does not switch it off then), and returns what
// puts it back as it was.
func traceRootVHost() (restore func()) {
	mgmt := os.Getenv("FLOWTRACE_RABBITMQ_MANAGEMENT")
	if mgmt == "" {
		mgmt = "127.0.0.1:15672"
	}
	api := testAPI(mgmt)
	defer api.client.CloseIdleConnections()
	switched, err := api.setTracing(context.Background(), "/", true)
	if err != nil || !switched {
		return func() {}
	}
	return func() {
		defer api.client.CloseIdleConnections()
		if _, err := api.setTracing(context.Background(), "/", false); err != nil {
			fmt.Fprintln(os.Stderr, "could not switch tracing off again on vhost /:", err)
		}
	}
}

// The local broker the tests use; FLOWTRACE_RABBITMQ and
// FLOWTRACE_RABBITMQ_MANAGEMENT override the addresses.
func amqpAddr(t testing.TB) string {
	return brokertest.Addr(t, "FLOWTRACE_RABBITMQ", "127.0.0.1:5672")
}

func managementAddr(t testing.TB) string {
	return brokertest.Addr(t, "FLOWTRACE_RABBITMQ_MANAGEMENT", "127.0.0.1:15672")
}

// uniquePrefix starts every queue and exchange name of one test run.
func uniquePrefix(name string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "flowtrace-test." + name + "." + hex.EncodeToString(b) + "."
}

// runningTap is a tap started through its factory, with its sinks and
// telemetry.
type runningTap struct {
	cfg     *Config
	prefix  string
	traces  *consumertest.TracesSink
	metrics *consumertest.MetricsSink
	tel     *componenttest.Telemetry
	api     *managementAPI
}

// startTap starts a tap on the local broker with its own queue, and waits
// until it reads the firehose.
func startTap(t *testing.T, name string, mutate func(*Config)) *runningTap {
	t.Helper()
	return startTapWith(t, name, mutate, nil)
}

// startTapWith is startTap with the traces pipeline wrapped, to inject
// its failures.
func startTapWith(t *testing.T, name string, mutate func(*Config), wrap func(consumer.Traces) consumer.Traces) *runningTap {
	t.Helper()
	addr, mgmt := amqpAddr(t), managementAddr(t)
	prefix := uniquePrefix(name)
	cfg := createDefaultConfig()
	cfg.Endpoint = "amqp://" + addr
	cfg.Queue = prefix + "firehose"
	cfg.EnableTracing = true
	cfg.Batch.Timeout = 20 * time.Millisecond
	cfg.Management.Endpoint = "http://" + mgmt
	cfg.Management.Interval = 300 * time.Millisecond
	cfg.Reconnect = tap.Backoff{Initial: 100 * time.Millisecond, Max: time.Second}
	if mutate != nil {
		mutate(cfg)
	}
	require.NoError(t, cfg.Validate())

	rt := &runningTap{
		cfg: cfg, prefix: prefix,
		traces: new(consumertest.TracesSink), metrics: new(consumertest.MetricsSink),
		tel: componenttest.NewTelemetry(),
		api: testAPI(mgmt),
	}
	set := receivertest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = rt.tel.NewTelemetrySettings()
	set.Logger = zaptest.NewLogger(t)
	f := NewFactory()
	var next consumer.Traces = rt.traces
	if wrap != nil {
		next = wrap(next)
	}
	tr, err := f.CreateTraces(context.Background(), set, cfg, next)
	require.NoError(t, err)
	mr, err := f.CreateMetrics(context.Background(), set, cfg, rt.metrics)
	require.NoError(t, err)
	require.NoError(t, tr.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, mr.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() {
		require.NoError(t, tr.Shutdown(context.Background()))
		require.NoError(t, mr.Shutdown(context.Background()))
		for _, vhost := range cfg.VHosts {
			_ = rt.api.do(context.Background(), http.MethodDelete, "/api/queues/"+url.PathEscape(vhost)+"/"+url.PathEscape(cfg.Queue), nil, nil)
		}
		rt.api.client.CloseIdleConnections()
		require.NoError(t, rt.tel.Shutdown(context.Background()))
	})
	conn, _ := dialVHost(t, cfg.VHosts[0])
	eventually(t, 30*time.Second, "the tap consumes its queue", func() bool {
		return consumers(conn, cfg.Queue) == 1
	})
	return rt
}

// consumers is the number of consumers of a queue as the broker has it
// now (the management API's figure lags by its statistics interval); -1
// when the queue does not exist.
func consumers(conn *amqp.Connection, queue string) int {
	ch, err := conn.Channel()
	if err != nil {
		return -1
	}
	defer ch.Close()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return -1
	}
	return q.Consumers
}

func testAPI(mgmt string) *managementAPI {
	return &managementAPI{endpoint: "http://" + mgmt, username: "guest", password: "guest", client: &http.Client{Timeout: 5 * time.Second}}
}

// eventually waits for cond, failing the test when it does not hold in
// time. The wait bounds the test, it measures nothing.
func eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	if !waitFor(limit, cond) {
		t.Fatalf("gave up waiting: %s", what)
	}
}

// waitFor waits for cond; false when it does not hold in time, for the
// caller to say what it got.
func waitFor(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
	return true
}

// spansOf returns the tap's spans about names starting with prefix: the
// tap sees the whole vhost, other tests' traffic included.
func spansOf(sink *consumertest.TracesSink, prefix string) []ptrace.Traces {
	var out []ptrace.Traces
	for _, td := range sink.AllTraces() {
		c := ptrace.NewTraces()
		td.CopyTo(c)
		c.ResourceSpans().RemoveIf(func(rs ptrace.ResourceSpans) bool {
			rs.ScopeSpans().RemoveIf(func(ss ptrace.ScopeSpans) bool {
				ss.Spans().RemoveIf(func(s ptrace.Span) bool {
					d, _ := s.Attributes().Get(tap.AttrDestination)
					return !strings.HasPrefix(d.Str(), prefix)
				})
				return ss.Spans().Len() == 0
			})
			return rs.ScopeSpans().Len() == 0
		})
		if c.SpanCount() > 0 {
			out = append(out, c)
		}
	}
	return out
}

// settlements are the outcomes of the settle spans the tap emitted, by
// message id, for the test's destinations.
func settlements(rt *runningTap, prefix string) map[string][]string {
	out := map[string][]string{}
	for _, td := range spansOf(rt.traces, prefix) {
		forEachSpan(td, func(s ptrace.Span) {
			if v, ok := s.Attributes().Get(tap.AttrOutcome); ok {
				id, _ := s.Attributes().Get(tap.AttrMessageID)
				out[id.Str()] = append(out[id.Str()], v.Str())
			}
		})
	}
	return out
}

// assertFlows waits up to limit for the flows the correlator builds from the
// spans of prefix to be want (in flowSummary's form), and asserts they are.
func assertFlows(t *testing.T, traces *consumertest.TracesSink, prefix string, limit time.Duration, want []string) {
	t.Helper()
	var got []string
	waitFor(limit, func() bool {
		got = flowSummary(t, prefix, spansOf(traces, prefix))
		return assert.ObjectsAreEqual(want, got)
	})
	assert.Equal(t, want, got)
}

// flowSummary writes each flow the correlator builds from the spans as one
// line: status, retries, dead letters and its hops (queue, outcome,
// attempts, reason), names without the prefix; sorted.
func flowSummary(t testing.TB, prefix string, spans []ptrace.Traces, extra ...ptrace.Traces) []string {
	res := taptest.Correlate(t, correlator.Config{}, append(spans, extra...)...)
	var out []string
	for _, f := range res.Flows {
		var hops []string
		for _, h := range res.HopsOf(f.ID) {
			s := fmt.Sprintf("%s/%s@%s:%s:%d", h.System, h.Operation, strings.TrimPrefix(h.ConsumerGroup, prefix), h.Outcome, h.Attempts)
			if h.Reason != "" {
				s += ":" + h.Reason
			}
			hops = append(hops, s)
		}
		slices.Sort(hops)
		out = append(out, fmt.Sprintf("%s retries=%d dead_letters=%d hops=%d %v", f.Status, f.Retries, f.DeadLetters, f.HopCount, hops))
	}
	slices.Sort(out)
	return out
}

// dial connects a client of the workload.
func dial(t testing.TB) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	return dialVHost(t, "/")
}

// dialVHost connects a client of the workload to a vhost.
func dialVHost(t testing.TB, vhost string) (*amqp.Connection, *amqp.Channel) {
	t.Helper()
	conn, err := amqp.DialConfig("amqp://guest:guest@"+amqpAddr(t), amqp.Config{Vhost: vhost})
	require.NoError(t, err)
	ch, err := conn.Channel()
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn, ch
}

// counter is the sum of a tap counter's points.
func counter(t testing.TB, tel *componenttest.Telemetry, name string) float64 {
	m, err := tel.GetMetric(name)
	if err != nil {
		return 0
	}
	var sum float64
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			sum += float64(p.Value)
		}
	case metricdata.Sum[float64]:
		for _, p := range d.DataPoints {
			sum += p.Value
		}
	}
	return sum
}

// flowHops is every hop the correlator builds from the spans.
func flowHops(t testing.TB, spans []ptrace.Traces, extra ...ptrace.Traces) []model.Hop {
	return taptest.Correlate(t, correlator.Config{}, append(spans, extra...)...).Hops
}

// privateVHost creates a vhost for one test, so the tap reading it sees
// that test's traffic only; it is deleted after the test.
func privateVHost(t *testing.T, name string) string {
	t.Helper()
	api := testAPI(managementAddr(t))
	t.Cleanup(api.client.CloseIdleConnections)
	vhost := strings.TrimSuffix(uniquePrefix(name), ".")
	path := "/api/vhosts/" + url.PathEscape(vhost)
	ctx := context.Background()
	require.NoError(t, api.do(ctx, http.MethodPut, path, map[string]any{"description": "flowtrace test"}, nil))
	t.Cleanup(func() { _ = api.do(ctx, http.MethodDelete, path, nil, nil) })
	require.NoError(t, api.do(ctx, http.MethodPut, "/api/permissions/"+url.PathEscape(vhost)+"/guest",
		map[string]any{"configure": ".*", "write": ".*", "read": ".*"}, nil))
	return vhost
}
