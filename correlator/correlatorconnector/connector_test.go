package correlatorconnector

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/connector/connectortest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/correlatorconnector/internal/metadata"
	"github.com/flowtrace/flowtrace/correlator/flowsim"
	"github.com/flowtrace/flowtrace/correlator/records"
	"github.com/flowtrace/flowtrace/correlator/spanevent"
	"github.com/flowtrace/flowtrace/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// simConfig is the configuration under which flowsim's truth is exact.
func simConfig() *Config {
	cfg := createDefaultConfig()
	cfg.Config = correlator.Config{
		StuckAfter: 10 * time.Second, FlowIdle: 30 * time.Second, Retain: 2 * time.Minute,
		RetryDestinations:      []string{flowsim.RetryPattern},
		DeadLetterDestinations: []string{flowsim.DeadLetterPattern},
	}
	cfg.Spans = spanevent.Config{KeyAttributes: flowsim.KeyAttributes()}
	cfg.TickInterval = time.Hour // the test drives time itself
	cfg.MetricsFlushInterval = time.Hour
	return cfg
}

// simClock is the processing time a test hands the connector.
type simClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *simClock) set(t time.Time) { c.mu.Lock(); c.now = t; c.mu.Unlock() }
func (c *simClock) get() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

type routes struct {
	logs, metrics connector.Traces
	logsSink      *consumertest.LogsSink
	metricsSink   *consumertest.MetricsSink
	core          *core
}

func newRoutes(t *testing.T, factory connector.Factory, cfg *Config, clock *simClock) routes {
	t.Helper()
	set := connectortest.NewNopSettings(metadata.Type)
	r := routes{logsSink: new(consumertest.LogsSink), metricsSink: new(consumertest.MetricsSink)}
	var err error
	r.logs, err = factory.CreateTracesToLogs(context.Background(), set, cfg, r.logsSink)
	require.NoError(t, err)
	r.metrics, err = factory.CreateTracesToMetrics(context.Background(), set, cfg, r.metricsSink)
	require.NoError(t, err)
	r.core = r.logs.(*route).core
	require.Same(t, r.core, r.metrics.(*route).core, "both routes share one engine")
	r.core.clock = clock.get
	for _, c := range []component.Component{r.logs, r.metrics} {
		require.NoError(t, c.Start(context.Background(), componenttest.NewNopHost()))
	}
	return r
}

func (r routes) shutdown(t *testing.T) {
	t.Helper()
	require.NoError(t, r.logs.Shutdown(context.Background()))
	require.NoError(t, r.metrics.Shutdown(context.Background()))
	require.NoError(t, r.metrics.Shutdown(context.Background()), "shutdown twice")
}

// feed hands span batches to both routes, as the collector does, at their
// arrival times, ticking the engine between them.
func feed(t *testing.T, r routes, clock *simClock, batches []flowsim.SpanBatch) {
	t.Helper()
	for _, b := range batches {
		clock.set(b.Arrival)
		require.NoError(t, r.core.tick(context.Background(), b.Arrival))
		require.NoError(t, r.logs.ConsumeTraces(context.Background(), b.Traces))
		require.NoError(t, r.metrics.ConsumeTraces(context.Background(), b.Traces))
	}
}

// feedLogs starts a logs route into sink and feeds it the batches at their
// arrival times, ticking between them; a tick the sink refuses is sent
// again later, like the rest.
func feedLogs(t *testing.T, cfg *Config, sink consumer.Logs, clock *simClock, batches []flowsim.SpanBatch) (connector.Traces, *core) {
	t.Helper()
	logs, err := NewFactory().CreateTracesToLogs(context.Background(), connectortest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)
	c := logs.(*route).core
	c.clock = clock.get
	require.NoError(t, logs.Start(context.Background(), componenttest.NewNopHost()))
	for _, b := range batches {
		clock.set(b.Arrival)
		_ = c.tick(context.Background(), b.Arrival)
		require.NoError(t, logs.ConsumeTraces(context.Background(), b.Traces))
	}
	return logs, c
}

// crash stops the connector as a killed process would: nothing is
// flushed, checkpointed or closed cleanly beyond what the test needs to
// leave no goroutine behind.
func crash(t *testing.T, c *core) {
	t.Helper()
	close(c.stop)
	c.done.Wait()
	require.NoError(t, c.wal.Close())
}

// decode reads every hop and flow record the logs routes emitted into sinks
// (one per connector that ran), keeping the newest version of each.
func decode(t *testing.T, sinks ...*consumertest.LogsSink) ([]model.Hop, []model.Flow) {
	t.Helper()
	var hops []model.Hop
	var flows []model.Flow
	var all []plog.Logs
	for _, sink := range sinks {
		all = append(all, sink.AllLogs()...)
	}
	for _, logs := range all {
		rls := logs.ResourceLogs()
		for i := 0; i < rls.Len(); i++ {
			sls := rls.At(i).ScopeLogs()
			for j := 0; j < sls.Len(); j++ {
				lrs := sls.At(j).LogRecords()
				for k := 0; k < lrs.Len(); k++ {
					switch records.Type(lrs.At(k)) {
					case records.TypeHop:
						h, err := records.DecodeHop(lrs.At(k))
						require.NoError(t, err)
						hops = append(hops, h)
					case records.TypeFlow:
						f, err := records.DecodeFlow(lrs.At(k))
						require.NoError(t, err)
						flows = append(flows, f)
					case records.TypeBatch:
						var err error
						hops, flows, err = records.DecodeBatch(lrs.At(k), hops, flows)
						require.NoError(t, err)
					default:
						t.Fatalf("record without a type: %v", lrs.At(k).Attributes().AsRaw())
					}
				}
			}
		}
	}
	return flowsim.Latest(hops, flows)
}

// TestSpansInFlowsOut drives the connector with the simulator's OTLP spans
// and requires the hop and flow records to be exactly the true flows.
func TestSpansInFlowsOut(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		w := flowsim.Generate(flowsim.Config{Seed: seed})
		batches := w.Spans(50)
		clock := &simClock{now: batches[0].Arrival}
		r := newRoutes(t, NewFactory(), simConfig(), clock)
		feed(t, r, clock, batches)
		clock.set(batches[len(batches)-1].Arrival.Add(time.Minute))
		r.shutdown(t)

		hops, flows := decode(t, r.logsSink)
		report := flowsim.Score(w.Truth, hops, flows)
		require.True(t, report.Exact(), "seed %d: %s", seed, report)

		metrics := r.metricsSink.AllMetrics()
		require.NotEmpty(t, metrics)
		names := metricNames(metrics[len(metrics)-1])
		for _, name := range []string{
			"flowtrace.hop.queue_wait", "flowtrace.hop.processing", "flowtrace.hops", "flowtrace.hop.retries",
			"flowtrace.hop.dead_letters", "flowtrace.flow.duration", "flowtrace.flows", "flowtrace.flows.in_flight",
			"flowtrace.hops.in_flight", "flowtrace.flows.stuck", "flowtrace.correlator.evictions",
		} {
			assert.Contains(t, names, name)
		}
		assert.Equal(t, int64(len(w.Truth)), sumOf(metrics[len(metrics)-1], "flowtrace.flows"), "every flow counted once, by final status")
	}
}

func metricNames(md pmetric.Metrics) map[string]pmetric.Metric {
	names := map[string]pmetric.Metric{}
	ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	for i := 0; i < ms.Len(); i++ {
		names[ms.At(i).Name()] = ms.At(i)
	}
	return names
}

func sumOf(md pmetric.Metrics, name string) int64 {
	m, ok := metricNames(md)[name]
	if !ok {
		return -1
	}
	var total int64
	for i := 0; i < m.Sum().DataPoints().Len(); i++ {
		total += m.Sum().DataPoints().At(i).IntValue()
	}
	return total
}

// TestSpansInFlowsOutSharded is TestSpansInFlowsOut with the flows spread
// over workers.
func TestSpansInFlowsOutSharded(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 5})
	batches := w.Spans(50)
	cfg := simConfig()
	cfg.Workers = 3
	clock := &simClock{now: batches[0].Arrival}
	r := newRoutes(t, NewFactory(), cfg, clock)
	feed(t, r, clock, batches)
	clock.set(batches[len(batches)-1].Arrival.Add(time.Minute))
	r.shutdown(t)
	hops, flows := decode(t, r.logsSink)
	report := flowsim.Score(w.Truth, hops, flows)
	require.True(t, report.Exact(), report.String())
}

// TestSpansInFlowsOutAsBatches is TestSpansInFlowsOut with the records sent
// in batches: one log record per send, carrying every version.
func TestSpansInFlowsOutAsBatches(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 11})
	batches := w.Spans(50)
	cfg := simConfig()
	cfg.RecordEncoding = EncodingBatch
	clock := &simClock{now: batches[0].Arrival}
	r := newRoutes(t, NewFactory(), cfg, clock)
	feed(t, r, clock, batches)
	clock.set(batches[len(batches)-1].Arrival.Add(time.Minute))
	r.shutdown(t)
	for _, logs := range r.logsSink.AllLogs() {
		lrs := logs.ResourceLogs().At(0).ScopeLogs().At(0).LogRecords()
		require.Equal(t, 1, lrs.Len(), "one record per send")
		require.Equal(t, records.TypeBatch, records.Type(lrs.At(0)))
	}
	hops, flows := decode(t, r.logsSink)
	report := flowsim.Score(w.Truth, hops, flows)
	require.True(t, report.Exact(), report.String())
}

// TestOnlyOneRouteFeedsTheEngine: both routes receive every batch; the
// engine must see it once.
func TestOnlyOneRouteFeedsTheEngine(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 7, Flows: 3})
	batches := w.Spans(1000)
	clock := &simClock{now: batches[0].Arrival}
	r := newRoutes(t, NewFactory(), simConfig(), clock)
	defer r.shutdown(t)
	feed(t, r, clock, batches)
	r.core.mu.Lock()
	added := r.core.engine.Stats().EventsAdded
	r.core.mu.Unlock()

	alone, err := correlator.New(simConfig().Config)
	require.NoError(t, err)
	for i := range w.Events {
		alone.Add(w.Arrivals[i], &w.Events[i])
	}
	assert.Equal(t, alone.Stats().EventsAdded, added)
}

// TestRestartNeitherLosesNorSplitsFlows stops the connector halfway, with a
// checkpoint, and starts a new one from it.
func TestRestartNeitherLosesNorSplitsFlows(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 11})
	batches := w.Spans(50)
	cfg := simConfig()
	cfg.Checkpoint = CheckpointConfig{Path: filepath.Join(t.TempDir(), "correlator.checkpoint"), Interval: time.Hour}
	half := len(batches) / 2

	clock := &simClock{now: batches[0].Arrival}
	first := newRoutes(t, NewFactory(), cfg, clock)
	feed(t, first, clock, batches[:half])
	first.shutdown(t)

	second := newRoutes(t, NewFactory(), cfg, clock)
	feed(t, second, clock, batches[half:])
	clock.set(batches[len(batches)-1].Arrival.Add(time.Minute))
	second.shutdown(t)

	hops, flows := decode(t, first.logsSink, second.logsSink)
	report := flowsim.Score(w.Truth, hops, flows)
	require.True(t, report.Exact(), report.String())
}

// TestUnreadableCheckpointStopsTheStart: the log segments the checkpoint
// covered are gone, so starting without it would split the flows in flight;
// the connector refuses, saying what to do, and leaves the files as they are.
func TestUnreadableCheckpointStopsTheStart(t *testing.T) {
	cfg := simConfig()
	cfg.Checkpoint = CheckpointConfig{Path: filepath.Join(t.TempDir(), "correlator.checkpoint"), Interval: time.Hour}
	require.NoError(t, writeFile(cfg.Checkpoint.Path, "garbage"))
	leftover := cfg.Checkpoint.Path + ".tmp-123"
	require.NoError(t, writeFile(leftover, "half a checkpoint"))

	logs, err := NewFactory().CreateTracesToLogs(context.Background(), connectortest.NewNopSettings(metadata.Type), cfg, new(consumertest.LogsSink))
	require.NoError(t, err)
	err = logs.Start(context.Background(), componenttest.NewNopHost())
	require.ErrorContains(t, err, "correlator checkpoint "+cfg.Checkpoint.Path+" is unreadable")
	require.ErrorContains(t, err, "move it and "+cfg.Checkpoint.Path+".wal aside")
	require.NoError(t, logs.Shutdown(context.Background()))

	content, err := os.ReadFile(cfg.Checkpoint.Path)
	require.NoError(t, err)
	assert.Equal(t, "garbage", string(content), "the checkpoint is left for the operator")
	assert.NoFileExists(t, leftover, "partial checkpoints from a crash are removed")
}

// refusingSink refuses every other batch of records, as an exporter whose
// queue is full does.
type refusingSink struct {
	consumertest.LogsSink
	mu     sync.Mutex
	calls  int
	healed bool // accepts everything from now on
}

func (s *refusingSink) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	s.mu.Lock()
	s.calls++
	refuse := s.calls%2 == 1 && !s.healed
	s.mu.Unlock()
	if refuse {
		return errors.New("sending queue is full")
	}
	return s.LogsSink.ConsumeLogs(ctx, ld)
}

// TestRefusedRecordsAreSentAgain: records the next consumer refuses go out
// with the next ones, and the spans are not refused for it (their resend
// would duplicate raw events downstream).
func TestRefusedRecordsAreSentAgain(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 17})
	batches := w.Spans(50)
	sink := new(refusingSink)
	clock := &simClock{now: batches[0].Arrival}
	logs, _ := feedLogs(t, simConfig(), sink, clock, batches)
	sink.mu.Lock()
	sink.healed = true
	sink.mu.Unlock()
	clock.set(batches[len(batches)-1].Arrival.Add(time.Minute))
	require.NoError(t, logs.Shutdown(context.Background()))

	hops, flows := decode(t, &sink.LogsSink)
	report := flowsim.Score(w.Truth, hops, flows)
	require.True(t, report.Exact(), report.String())
	assert.Greater(t, sink.calls, 10)
}

func writeFile(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o600)
}

// TestCrashLosesNoAcknowledgedSpan: after a checkpoint, more spans are
// acknowledged, then the process dies without a word. The next one restores
// the checkpoint, replays the write-ahead log, takes the rest, and the flows
// are exact.
func TestCrashLosesNoAcknowledgedSpan(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 13})
	batches := w.Spans(40)
	cfg := simConfig()
	cfg.Checkpoint = CheckpointConfig{Path: filepath.Join(t.TempDir(), "correlator.checkpoint"), Interval: time.Hour}
	third := len(batches) / 3

	clock := &simClock{now: batches[0].Arrival}
	first := newRoutes(t, NewFactory(), cfg, clock)
	feed(t, first, clock, batches[:third])
	require.NoError(t, first.core.checkpoint())
	feed(t, first, clock, batches[third:2*third])
	crash(t, first.core)

	second := newRoutes(t, NewFactory(), cfg, clock)
	feed(t, second, clock, batches[2*third:])
	clock.set(batches[len(batches)-1].Arrival.Add(time.Minute))
	second.shutdown(t)

	hops, flows := decode(t, first.logsSink, second.logsSink)
	report := flowsim.Score(w.Truth, hops, flows)
	require.True(t, report.Exact(), report.String())
}

// permanentSink refuses its first batch for good and takes the rest.
type permanentSink struct {
	consumertest.LogsSink
	mu      sync.Mutex
	refused int // records in the refused batch
}

func (s *permanentSink) ConsumeLogs(ctx context.Context, ld plog.Logs) error {
	s.mu.Lock()
	first := s.refused == 0
	if first {
		s.refused = ld.LogRecordCount()
	}
	s.mu.Unlock()
	if first {
		return consumererror.NewPermanent(errors.New("malformed records"))
	}
	return s.LogsSink.ConsumeLogs(ctx, ld)
}

// TestRecordsRefusedForGoodAreNotSentAgain: a permanent refusal would be
// repeated, so those records are dropped at once, and counted.
func TestRecordsRefusedForGoodAreNotSentAgain(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 17})
	batches := w.Spans(50)
	sink := new(permanentSink)
	clock := &simClock{now: batches[0].Arrival}
	logs, c := feedLogs(t, simConfig(), sink, clock, batches)
	clock.set(batches[len(batches)-1].Arrival.Add(time.Minute))
	require.NoError(t, logs.Shutdown(context.Background()))

	require.Positive(t, sink.refused)
	c.mu.Lock()
	dropped := c.agg.recordsDropped
	c.mu.Unlock()
	assert.Equal(t, uint64(sink.refused), dropped)
	assert.Len(t, c.unsent.hops, 0)
	assert.Len(t, c.unsent.flows, 0)
	hops, flows := decode(t, &sink.LogsSink)
	report := flowsim.Score(w.Truth, hops, flows)
	assert.False(t, report.Exact(), "the refused records are missing")
}

// TestReplayReleasesFlowsAsBefore: a flow is released after the checkpoint
// and a later message of its trace starts a flow of its own; then the
// process dies. The replay of the write-ahead log must release the flow as
// the process did, or the later message joins the flow that was gone.
func TestReplayReleasesFlowsAsBefore(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	publish := func(msg string, span byte, at time.Time) ptrace.Traces {
		td := ptrace.NewTraces()
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", "api")
		s := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
		s.SetTraceID(pcommon.TraceID{7, 1}) // one trace for both messages
		s.SetSpanID(pcommon.SpanID{span, 1})
		s.SetKind(ptrace.SpanKindProducer)
		s.SetStartTimestamp(pcommon.NewTimestampFromTime(at))
		s.SetEndTimestamp(pcommon.NewTimestampFromTime(at.Add(time.Millisecond)))
		s.Attributes().PutStr("messaging.system", "rabbitmq")
		s.Attributes().PutStr("messaging.operation.type", "send")
		s.Attributes().PutStr("messaging.destination.name", "orders")
		s.Attributes().PutStr("messaging.message.id", msg)
		return td
	}
	run := func(t *testing.T, dies bool) map[string]uint32 {
		cfg := simConfig()
		cfg.Config = correlator.Config{StuckAfter: time.Second, FlowIdle: 2 * time.Second, Retain: 2 * time.Second}
		cfg.Checkpoint = CheckpointConfig{Path: filepath.Join(t.TempDir(), "correlator.checkpoint"), Interval: time.Hour}
		clock := &simClock{now: t0}
		ctx := context.Background()
		first := newRoutes(t, NewFactory(), cfg, clock)
		require.NoError(t, first.logs.ConsumeTraces(ctx, publish("m1", 1, t0)))
		require.NoError(t, first.core.checkpoint())
		for s := 1; s <= 10; s++ { // the flow goes quiet, finishes and is released
			clock.set(t0.Add(time.Duration(s) * time.Second))
			require.NoError(t, first.core.tick(ctx, clock.get()))
		}
		clock.set(t0.Add(11 * time.Second))
		require.NoError(t, first.logs.ConsumeTraces(ctx, publish("m2", 2, clock.get())))
		sinks := []*consumertest.LogsSink{first.logsSink}
		if dies {
			crash(t, first.core)
			second := newRoutes(t, NewFactory(), cfg, clock)
			clock.set(t0.Add(12 * time.Second))
			second.shutdown(t)
			sinks = append(sinks, second.logsSink)
		} else {
			first.shutdown(t)
		}
		hops, flows := decode(t, sinks...)
		hopCounts := map[string]uint32{}
		for _, f := range flows {
			hopCounts[f.ID] = f.HopCount
		}
		byMessage := map[string]uint32{}
		for _, h := range hops {
			byMessage[h.MessageID] = hopCounts[h.FlowID]
		}
		assert.Len(t, flows, 2, "died=%v: two flows", dies)
		return byMessage
	}
	want := map[string]uint32{"m1": 1, "m2": 1}
	assert.Equal(t, want, run(t, false), "without a crash, a flow each")
	assert.Equal(t, want, run(t, true), "after a crash and a replay, the same")
}

// TestRefusedRecordsSurviveACrash: records the next consumer refuses wait
// in memory to be sent again; a checkpoint keeps them, so that a crash
// after it does not lose them. Their flows are not in flight any more, or
// not changing: nothing else would send them.
func TestRefusedRecordsSurviveACrash(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 13})
	batches := w.Spans(40)
	cfg := simConfig()
	cfg.Checkpoint = CheckpointConfig{Path: filepath.Join(t.TempDir(), "correlator.checkpoint"), Interval: time.Hour}
	clock := &simClock{now: batches[0].Arrival}
	sink := new(refusingSink)
	_, c := feedLogs(t, cfg, sink, clock, batches)
	clock.set(batches[len(batches)-1].Arrival.Add(time.Minute))
	sink.mu.Lock()
	sink.calls = 0 // the next send is refused
	sink.mu.Unlock()
	_ = c.tick(context.Background(), clock.get())
	c.sendMu.Lock()
	waiting := len(c.unsent.hops) + len(c.unsent.flows)
	c.sendMu.Unlock()
	require.Positive(t, waiting, "records wait to be sent again")
	require.NoError(t, c.checkpoint())
	crash(t, c)

	second := newRoutes(t, NewFactory(), cfg, clock)
	clock.set(clock.get().Add(time.Minute))
	second.shutdown(t)

	hops, flows := decode(t, &sink.LogsSink, second.logsSink)
	report := flowsim.Score(w.Truth, hops, flows)
	require.True(t, report.Exact(), report.String())
}
