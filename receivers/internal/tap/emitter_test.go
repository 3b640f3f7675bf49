package tap_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

var testType = component.MustNewType("test_tap")

type testConfig struct{ Endpoint string }

// testTap is the smallest tap: it only has an emitter.
type testTap struct {
	component.StartFunc
	component.ShutdownFunc
	emitter *tap.Emitter
}

func (t *testTap) Emitter() *tap.Emitter { return t.emitter }

func newTestFactory(created *int) receiver.Factory {
	return tap.NewFactory(testType, component.StabilityLevelAlpha,
		func() component.Config { return &testConfig{} },
		func(set receiver.Settings, _ component.Config) (*testTap, error) {
			*created++
			tel, err := tap.NewTelemetry(set.TelemetrySettings, "test", "scope")
			if err != nil {
				return nil, err
			}
			e, err := tap.NewEmitter(set, "test", tel)
			return &testTap{emitter: e}, err
		})
}

// refusing refuses the first refusals batches, then takes them.
type refusing struct {
	consumertest.TracesSink
	refusals int
	err      error
	calls    int
}

func (r *refusing) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	r.calls++
	if r.calls <= r.refusals {
		return r.err
	}
	return r.TracesSink.ConsumeTraces(ctx, td)
}

func emitterWith(t *testing.T, next consumer.Traces) *tap.Emitter {
	t.Helper()
	created := 0
	f := newTestFactory(&created)
	set := receivertest.NewNopSettings(testType)
	cfg := f.CreateDefaultConfig()
	r, err := f.CreateTraces(context.Background(), set, cfg, next)
	require.NoError(t, err)
	m, err := f.CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	assert.Same(t, r, m, "one tap for both signals")
	assert.Equal(t, 1, created)
	require.NoError(t, r.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() {
		require.NoError(t, r.Shutdown(context.Background()))
		require.NoError(t, m.Shutdown(context.Background()))
	})
	return r.(*tap.Handle[*testTap]).Tap.Emitter()
}

func oneSpan(t *testing.T) *tap.Spans {
	s := tap.NewSpans("test", "scope")
	o := rabbit(tap.Publish, 0)
	require.NoError(t, s.Add(&o))
	return s
}

// A reload builds receivers anew from new configurations: a tap left over
// from an earlier build (never shut down) is not handed out again.
func TestNewConfigurationNewTap(t *testing.T) {
	created := 0
	f := newTestFactory(&created)
	set := receivertest.NewNopSettings(testType)
	first, err := f.CreateTraces(context.Background(), set, f.CreateDefaultConfig(), consumertest.NewNop())
	require.NoError(t, err)
	second, err := f.CreateTraces(context.Background(), set, f.CreateDefaultConfig(), consumertest.NewNop())
	require.NoError(t, err)
	assert.NotSame(t, first, second)
	assert.Equal(t, 2, created)
}

func TestEmitterRetriesUntilTaken(t *testing.T) {
	next := &refusing{refusals: 2, err: errors.New("queue is full")}
	e := emitterWith(t, next)
	s := oneSpan(t)
	require.NoError(t, e.Traces(context.Background(), s))
	assert.Equal(t, 3, next.calls)
	assert.Equal(t, 1, next.SpanCount())
	assert.Equal(t, 0, s.Len(), "the batch is handed on")
}

func TestEmitterDropsWhatIsRefusedForGood(t *testing.T) {
	next := &refusing{refusals: 1, err: consumererror.NewPermanent(errors.New("malformed"))}
	e := emitterWith(t, next)
	assert.Error(t, e.Traces(context.Background(), oneSpan(t)))
	assert.Equal(t, 1, next.calls)
}

func TestEmitterGivesUpWhenStopped(t *testing.T) {
	next := &refusing{refusals: 1 << 30, err: errors.New("queue is full")}
	e := emitterWith(t, next)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.ErrorIs(t, e.Traces(ctx, oneSpan(t)), context.Canceled)
}

func TestEmitterMetrics(t *testing.T) {
	created := 0
	f := newTestFactory(&created)
	sink := new(consumertest.MetricsSink)
	r, err := f.CreateMetrics(context.Background(), receivertest.NewNopSettings(testType), f.CreateDefaultConfig(), sink)
	require.NoError(t, err)
	e := r.(*tap.Handle[*testTap]).Tap.Emitter()
	assert.False(t, e.HasTraces())
	assert.True(t, e.HasMetrics())
	b := tap.NewBacklog("test", "scope")
	b.Int(model.MetricBacklogDepth, t0, tap.Destination{System: "rabbitmq", Destination: "orders"}, 3)
	require.NoError(t, e.Metrics(context.Background(), b))
	assert.Equal(t, 1, sink.DataPointCount())
	assert.NoError(t, e.Traces(context.Background(), oneSpan(t)), "no traces pipeline: nothing to do")
}

func TestCleanText(t *testing.T) {
	for _, tc := range []struct {
		in   string
		max  int
		want string
		ok   bool
	}{
		{"orders", 10, "orders", true},
		{"a\nb\tc", 10, "a b c", false},
		{"bad \xff byte", 20, "bad \uFFFD byte", false},
		{"ééé", 5, "éé", false}, // cut on a rune boundary
	} {
		got, ok := tap.CleanText(tc.in, tc.max)
		assert.Equal(t, tc.want, got, tc.in)
		assert.Equal(t, tc.ok, ok, tc.in)
	}
}
