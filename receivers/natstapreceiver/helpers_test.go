package natstapreceiver

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/internal/brokertest"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/natstapreceiver/internal/metadata"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// localNATS is the address of the shared local server (FLOWTRACE_NATS), with
// JetStream.
func localNATS(t testing.TB) string {
	return "nats://" + brokertest.Addr(t, "FLOWTRACE_NATS", "127.0.0.1:4222")
}

// uniqueName is a stream or subject prefix of its own for one test run.
func uniqueName(prefix string) string {
	return prefix + "_" + strings.ToUpper(nuid.Next()[:12])
}

// running is a tap under test with its sinks and telemetry.
type running struct {
	tap     *natsTap
	traces  *consumertest.TracesSink
	metrics *consumertest.MetricsSink
	tel     *componenttest.Telemetry
	// connCh gets a value each time the tap's connection is working.
	connCh chan struct{}
}

// startTap starts a tap with both pipelines and waits for its first
// connection.
func startTap(t *testing.T, cfg *Config, prepare ...func(*natsTap)) *running {
	t.Helper()
	sink := new(consumertest.TracesSink)
	r := startTapWith(t, cfg, sink, prepare...)
	r.traces = sink
	return r
}

// startTapWith starts a tap whose spans go to next.
func startTapWith(t *testing.T, cfg *Config, next consumer.Traces, prepare ...func(*natsTap)) *running {
	t.Helper()
	require.NoError(t, cfg.Validate())
	r := &running{
		metrics: new(consumertest.MetricsSink),
		tel:     componenttest.NewTelemetry(),
		connCh:  make(chan struct{}, 16),
	}
	t.Cleanup(func() { require.NoError(t, r.tel.Shutdown(context.Background())) })
	set := receivertest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = r.tel.NewTelemetrySettings()
	f := NewFactory()
	tr, err := f.CreateTraces(context.Background(), set, cfg, next)
	require.NoError(t, err)
	mr, err := f.CreateMetrics(context.Background(), set, cfg, r.metrics)
	require.NoError(t, err)
	r.tap = tr.(*tap.Handle[*natsTap]).Tap
	for _, p := range prepare {
		p(r.tap)
	}
	r.tap.onConnected = func() {
		select {
		case r.connCh <- struct{}{}:
		default:
		}
	}
	host := componenttest.NewNopHost()
	require.NoError(t, tr.Start(context.Background(), host))
	require.NoError(t, mr.Start(context.Background(), host))
	t.Cleanup(func() {
		require.NoError(t, tr.Shutdown(context.Background()))
		require.NoError(t, mr.Shutdown(context.Background()))
	})
	r.waitConnected(t)
	return r
}

func (r *running) waitConnected(t *testing.T) {
	t.Helper()
	select {
	case <-r.connCh:
	case <-time.After(30 * time.Second):
		t.Fatal("the tap did not connect")
	}
}

// flush hands on everything the tap gathered so far: when it returns, the
// sink holds it.
func (r *running) flush(t *testing.T) {
	t.Helper()
	require.NoError(t, r.tap.batch.flush(context.Background()))
}

// spans returns every span the tap emitted so far.
func (r *running) spans() []ptrace.Span {
	var out []ptrace.Span
	for _, td := range r.traces.AllTraces() {
		for i := 0; i < td.ResourceSpans().Len(); i++ {
			ss := td.ResourceSpans().At(i).ScopeSpans()
			for j := 0; j < ss.Len(); j++ {
				for k := 0; k < ss.At(j).Spans().Len(); k++ {
					out = append(out, ss.At(j).Spans().At(k))
				}
			}
		}
	}
	return out
}

// has reports whether a span with all the given string attributes (and
// integer ones, written as ints) was emitted.
func (r *running) has(want map[string]any) bool {
	for _, s := range r.spans() {
		if spanMatches(s, want) {
			return true
		}
	}
	return false
}

func (r *running) count(want map[string]any) int {
	n := 0
	for _, s := range r.spans() {
		if spanMatches(s, want) {
			n++
		}
	}
	return n
}

func spanMatches(s ptrace.Span, want map[string]any) bool {
	for k, v := range want {
		got, ok := s.Attributes().Get(k)
		if !ok {
			return false
		}
		switch v := v.(type) {
		case string:
			if got.Type() != pcommon.ValueTypeStr || got.Str() != v {
				return false
			}
		case int:
			if got.Type() != pcommon.ValueTypeInt || got.Int() != int64(v) {
				return false
			}
		case bool:
			if got.Type() != pcommon.ValueTypeBool || got.Bool() != v {
				return false
			}
		}
	}
	return true
}

// eventually waits for cond, failing the test with what when it does not
// come.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client connects a workload client and creates a stream of its own.
func client(t *testing.T, addr string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(addr, nats.Name("flowtrace-nats-tap-test"))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

func createStream(t *testing.T, js jetstream.JetStream, name string) jetstream.Stream {
	t.Helper()
	ctx := context.Background()
	s, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name) })
	return s
}
