package clickhouseexporter

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/flowsim"
	"github.com/flowtrace/flowtrace/correlator/records"
	"github.com/flowtrace/flowtrace/exporters/clickhouseexporter/internal/metadata"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/flowstorage"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// host offers a started flowstorage extension, as the collector does.
type host struct {
	component.Host
	extensions map[component.ID]component.Component
}

func (h host) GetExtensions() map[component.ID]component.Component { return h.extensions }

// startStorage starts the storage extension on the embedded engine in a
// fresh directory.
func startStorage(t *testing.T) (host, storage.Store) {
	t.Helper()
	factory := flowstorage.NewFactory()
	cfg := factory.CreateDefaultConfig().(*flowstorage.Config)
	cfg.Backends = map[string]flowstorage.BackendConfig{"default": {Chdb: &flowstorage.ChdbConfig{Path: t.TempDir()}}}
	ext, err := factory.Create(context.Background(), extensiontest.NewNopSettings(factory.Type()), cfg)
	require.NoError(t, err)
	h := host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{component.NewID(factory.Type()): ext}}
	require.NoError(t, ext.Start(context.Background(), h))
	t.Cleanup(func() { require.NoError(t, ext.Shutdown(context.Background())) })
	st, err := flowstorage.GetStore(h, "")
	require.NoError(t, err)
	return h, st
}

// syncConfig writes synchronously, so a test reads what it pushed.
func syncConfig() *Config {
	cfg := createDefaultConfig()
	cfg.QueueConfig = configoptional.None[exporterhelper.QueueBatchConfig]()
	return cfg
}

func start[T component.Component](t *testing.T, h host, create func(context.Context, exporter.Settings, component.Config) (T, error), cfg *Config) T {
	t.Helper()
	exp, err := create(context.Background(), exportertest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	require.NoError(t, exp.Start(context.Background(), h))
	t.Cleanup(func() { require.NoError(t, exp.Shutdown(context.Background())) })
	return exp
}

// TestFlowsReachStorageExactly: the simulator's spans go through the
// correlator; its records go through the exporter into embedded ClickHouse,
// one by one and in batches; the flows read back are the true ones.
func TestFlowsReachStorageExactly(t *testing.T) {
	t.Run("records", func(t *testing.T) {
		testFlowsReachStorageExactly(t, func(lrs plog.LogRecordSlice, c correlator.Changes) {
			for _, h := range c.Hops {
				records.AppendHop(lrs, h, time.Now())
			}
			for _, f := range c.Flows {
				records.AppendFlow(lrs, f, time.Now())
			}
		})
	})
	t.Run("batches", func(t *testing.T) {
		testFlowsReachStorageExactly(t, func(lrs plog.LogRecordSlice, c correlator.Changes) {
			records.AppendBatch(lrs, c.Hops, c.Flows, time.Now())
		})
	})
}

func testFlowsReachStorageExactly(t *testing.T, appendChanges func(plog.LogRecordSlice, correlator.Changes)) {
	h, st := startStorage(t)
	logsExp := start(t, h, NewFactory().CreateLogs, syncConfig())
	tracesExp := start(t, h, NewFactory().CreateTraces, syncConfig())

	// Recent times: storage drops what is older than its retention.
	w := flowsim.Generate(flowsim.Config{Seed: 2, Flows: 5, Start: time.Now().Add(-time.Hour)})
	e, err := correlator.New(correlator.Config{
		StuckAfter: 10 * time.Second, FlowIdle: 30 * time.Second, Retain: 2 * time.Minute,
		RetryDestinations: []string{flowsim.RetryPattern}, DeadLetterDestinations: []string{flowsim.DeadLetterPattern},
	})
	require.NoError(t, err)
	ctx := context.Background()
	send := func(c correlator.Changes) {
		logs := plog.NewLogs()
		appendChanges(logs.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords(), c)
		require.NoError(t, logsExp.ConsumeLogs(ctx, logs))
	}
	for i := range w.Events {
		e.Advance(w.Arrivals[i])
		e.Add(w.Arrivals[i], &w.Events[i])
		if i%50 == 0 {
			send(e.Flush())
		}
	}
	e.Advance(w.Arrivals[len(w.Arrivals)-1].Add(time.Minute))
	send(e.Flush())
	for _, batch := range w.Spans(100) {
		require.NoError(t, tracesExp.ConsumeTraces(ctx, batch.Traces))
	}

	var hops []model.Hop
	var flows []model.Flow
	page := storage.FlowQuery{Limit: storage.MaxLimit}
	for {
		p, err := st.FindFlows(ctx, page)
		require.NoError(t, err)
		for _, f := range p.Flows {
			detail, err := st.GetFlow(ctx, f.ID)
			require.NoError(t, err)
			flows = append(flows, detail.Flow)
			hops = append(hops, detail.Hops...)
			if f.ID == p.Flows[0].ID && len(detail.Hops) > 0 && detail.Hops[0].MessageID != "" {
				assert.NotEmpty(t, detail.Events, "the flow's raw events were written from its spans")
			}
		}
		if p.NextCursor == "" {
			break
		}
		page.Cursor = p.NextCursor
	}
	report := flowsim.Score(w.Truth, hops, flows)
	require.True(t, report.Exact(), report.String())
}

func TestMalformedRecordsAreRefusedNotRetried(t *testing.T) {
	h, st := startStorage(t)
	exp := start(t, h, NewFactory().CreateLogs, syncConfig())
	logs := plog.NewLogs()
	lrs := logs.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	now := time.Now().UTC()
	records.AppendFlow(lrs, model.Flow{ID: "good", Version: 1, FirstSeen: now, Name: "api orders", Status: model.FlowRunning, Start: now}, now)
	records.AppendHop(lrs, model.Hop{FlowID: "good", HopID: "h", Version: 1}, now)
	lrs.At(1).Attributes().PutStr(records.KeyVersion, "not a number")
	lrs.AppendEmpty().Body().SetStr("a log line, not a record")
	records.AppendBatch(lrs, []model.Hop{{FlowID: "good", HopID: "b", Version: 1}}, nil, now)
	lrs.At(3).Body().Bytes().Append(0) // a byte too many: the batch is refused whole

	err := exp.ConsumeLogs(context.Background(), logs)
	require.Error(t, err)
	assert.True(t, consumererror.IsPermanent(err))
	assert.ErrorContains(t, err, "3 malformed")
	assert.ErrorContains(t, err, "flowtrace.version: want Int, got Str")
	got, err := st.GetFlow(context.Background(), "good")
	require.NoError(t, err, "the well-formed record is written")
	assert.Equal(t, "api orders", got.Flow.Name)
	assert.Empty(t, got.Hops, "neither the malformed hop nor the refused batch's")
}

func TestBacklogSamples(t *testing.T) {
	h, st := startStorage(t)
	exp := start(t, h, NewFactory().CreateMetrics, syncConfig())
	md := pmetric.NewMetrics()
	ms := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics()
	ts := pcommon.NewTimestampFromTime(time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC))
	gauge := func(name string, v float64, attrs map[string]any) {
		m := ms.AppendEmpty()
		m.SetName(name)
		p := m.SetEmptyGauge().DataPoints().AppendEmpty()
		p.SetTimestamp(ts)
		p.SetDoubleValue(v)
		require.NoError(t, p.Attributes().FromRaw(attrs))
	}
	dims := map[string]any{"system": "kafka", "broker": "c1", "destination": "orders", "consumer_group": "billing"}
	gauge(model.MetricBacklogDepth, 12, dims)
	gauge(model.MetricBacklogLag, 40, dims)
	gauge(model.MetricBacklogLagSeconds, 3.5, dims)
	gauge("process.cpu.time", 1, dims) // not backlog: skipped
	gauge(model.MetricBacklogDepth, 1, map[string]any{"system": "kafka"})
	other := map[string]any{"system": "kafka", "destination": "invoices"}
	gauge(model.MetricBacklogLagSeconds, math.NaN(), other)
	gauge(model.MetricBacklogLag, math.Inf(1), other)
	gauge(model.MetricBacklogDepth, -3, other)
	empty := ms.AppendEmpty()
	empty.SetName(model.MetricBacklogConsumers)
	require.NoError(t, empty.SetEmptyGauge().DataPoints().AppendEmpty().Attributes().FromRaw(other))

	_, bad := backlogSamples(md)
	assert.Equal(t, []string{
		"flowtrace.backlog.depth: a point without a destination attribute",
		"flowtrace.backlog.lag_seconds: want a value from 0 to 4.611686018427388e+18, got NaN",
		"flowtrace.backlog.lag: want a value from 0 to 4.611686018427388e+18, got +Inf",
		"flowtrace.backlog.depth: want a value from 0 to 4.611686018427388e+18, got -3",
		"flowtrace.backlog.consumers: a point without a value",
	}, errorStrings(bad))

	err := exp.ConsumeMetrics(context.Background(), md)
	require.ErrorContains(t, err, "5 malformed, the first: flowtrace.backlog.depth: a point without a destination")
	none, err := st.BacklogSeries(context.Background(), storage.BacklogQuery{Destination: "invoices", From: ts.AsTime().Add(-time.Minute), To: ts.AsTime().Add(time.Minute)})
	require.NoError(t, err)
	assert.Empty(t, none, "no sample made of bad points alone")
	samples, err := st.BacklogSeries(context.Background(), storage.BacklogQuery{Destination: "orders", From: ts.AsTime().Add(-time.Minute), To: ts.AsTime().Add(time.Minute)})
	require.NoError(t, err)
	require.Len(t, samples, 1)
	assert.Equal(t, model.BacklogSample{Time: ts.AsTime().UTC(), System: "kafka", Broker: "c1", Destination: "orders", ConsumerGroup: "billing",
		Depth: 12, LagMessages: 40, LagSeconds: 3.5}, samples[0])
}

func errorStrings(errs []error) []string {
	out := make([]string, len(errs))
	for i, err := range errs {
		out[i] = err.Error()
	}
	return out
}

func TestStartFailsWithoutStorage(t *testing.T) {
	exp, err := NewFactory().CreateLogs(context.Background(), exportertest.NewNopSettings(metadata.Type), syncConfig())
	require.NoError(t, err)
	require.ErrorIs(t, exp.Start(context.Background(), componenttest.NewNopHost()), flowstorage.ErrNoExtension)
	require.NoError(t, exp.Shutdown(context.Background()))
}
