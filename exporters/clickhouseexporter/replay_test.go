package clickhouseexporter

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/extension/extensiontest"
	xstorage "go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/correlator/records"
	"github.com/flowtrace/flowtrace/exporters/clickhouseexporter/internal/metadata"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/chdb"
	"github.com/flowtrace/flowtrace/storage/chstore"
	"github.com/flowtrace/flowtrace/storage/segmentstorage"
)

// dyingStore stands for a process killed right after ClickHouse took a
// batch: once armed, a write to the table it names succeeds and then never
// returns, so the sending queue never hears that the batch was written.
type dyingStore struct {
	storage.Store
	table   string
	armed   atomic.Bool
	written chan struct{}
	release chan struct{}
}

func (s *dyingStore) die(table string) error {
	if s.table == table && s.armed.CompareAndSwap(true, false) {
		s.written <- struct{}{}
		<-s.release
		return fmt.Errorf("the process is gone")
	}
	return nil
}

func (s *dyingStore) WriteEvents(ctx context.Context, events []model.Event) error {
	if err := s.Store.WriteEvents(ctx, events); err != nil {
		return err
	}
	return s.die("events")
}

func (s *dyingStore) WriteHops(ctx context.Context, hops []model.Hop) error {
	if err := s.Store.WriteHops(ctx, hops); err != nil {
		return err
	}
	return s.die("hops")
}

// embeddedStore is storage on the embedded engine in a fresh directory,
// with the engine for queries of the test's own.
func embeddedStore(t *testing.T) (chstore.Conn, storage.Store) {
	t.Helper()
	conn, err := chdb.Open(t.TempDir())
	require.NoError(t, err)
	st, err := chstore.New(conn, chstore.Schema{Database: "flowtrace"})
	require.NoError(t, err)
	t.Cleanup(func() { st.Close() })
	require.NoError(t, st.Migrate(context.Background()))
	return conn, st
}

// TestReplayAfterACrashWritesNothingTwice: a batch reaches ClickHouse and
// the process dies before the sending queue marks it done; a second
// request waits in the queue. After the restart the queue hands both back,
// and its batcher puts them in one batch, unlike before. Each row is
// stored once all the same, and the topology counts each hop once.
func TestReplayAfterACrashWritesNothingTwice(t *testing.T) {
	t.Run("spans", func(t *testing.T) {
		testReplay(t, "events", func(ctx context.Context, exp component.Component, i int) error {
			return exp.(exporter.Traces).ConsumeTraces(ctx, replaySpans(i))
		}, NewFactory().CreateTraces)
	})
	t.Run("records", func(t *testing.T) {
		testReplay(t, "hops", func(ctx context.Context, exp component.Component, i int) error {
			return exp.(exporter.Logs).ConsumeLogs(ctx, replayRecords(i))
		}, NewFactory().CreateLogs)
	})
}

func testReplay[T component.Component](t *testing.T, table string, send func(context.Context, component.Component, int) error,
	create func(context.Context, exporter.Settings, component.Config) (T, error)) {
	ctx := context.Background()
	conn, backing := embeddedStore(t)

	segments := segmentstorage.NewFactory()
	queueID := component.NewID(segments.Type())
	run := func(dir string, store storage.Store) (component.Component, func()) {
		cfg := segments.CreateDefaultConfig().(*segmentstorage.Config)
		cfg.Directory = dir
		queueStorage, err := segments.Create(ctx, extensiontest.NewNopSettings(segments.Type()), cfg)
		require.NoError(t, err)
		h := host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{
			queueID: queueStorage, component.MustNewID("flowstorage"): provider{store: store}}}
		require.NoError(t, queueStorage.Start(ctx, h))
		expCfg := createDefaultConfig()
		queue := *expCfg.QueueConfig.Get()
		queue.StorageID = &queueID
		queue.NumConsumers = 1
		// A lone request is flushed by time; after the restart both
		// requests are there at once and go out together.
		queue.Batch = configoptional.Some(exporterhelper.BatchConfig{FlushTimeout: 200 * time.Millisecond, MinSize: 1000, Sizer: exporterhelper.RequestSizerTypeItems})
		expCfg.QueueConfig = configoptional.Some(queue)
		expCfg.BackOffConfig.MaxElapsedTime = 0
		set := exportertest.NewNopSettings(metadata.Type)
		set.ID = component.NewID(metadata.Type) // the same exporter in both runs
		exp, err := create(ctx, set, expCfg)
		require.NoError(t, err)
		require.NoError(t, exp.Start(ctx, h))
		return exp, func() {
			assert.NoError(t, exp.Shutdown(ctx))
			assert.NoError(t, queueStorage.Shutdown(ctx))
		}
	}

	dying := &dyingStore{Store: backing, table: table, written: make(chan struct{}, 1), release: make(chan struct{})}
	dying.armed.Store(true)
	before := t.TempDir()
	exp, stop := run(before, dying)
	require.NoError(t, send(ctx, exp, 0))
	<-dying.written
	require.NoError(t, send(ctx, exp, 1)) // on disk in the queue
	// Killed: the next process finds what is on disk now.
	after := t.TempDir()
	require.NoError(t, os.CopyFS(after, os.DirFS(before)))
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(dying.release); stop() }) })

	_, stop2 := run(after, backing)
	defer stop2()
	id := map[string]string{"events": "span_id", "hops": "hop_id"}[table]
	var rows, distinct int64
	count := func() {
		b, err := conn.Query(ctx, "SELECT count() AS rows, uniqExact("+id+") AS distinct FROM flowtrace."+table, nil)
		require.NoError(t, err)
		var got struct{ Rows, Distinct json.Number }
		require.NoError(t, json.Unmarshal(b, &got))
		rows, _ = got.Rows.Int64()
		distinct, _ = got.Distinct.Int64()
	}
	want := int64(2 * replayRows)
	require.Eventually(t, func() bool { count(); return distinct == want }, 30*time.Second, 20*time.Millisecond, "both requests written")
	time.Sleep(500 * time.Millisecond) // room for a repeat to land
	count()
	assert.Equal(t, want, rows, "every row once")
	if table == "hops" {
		edges, err := backing.Topology(ctx, replayAt.Add(-time.Hour), replayAt.Add(time.Hour))
		require.NoError(t, err)
		var hops uint64
		for _, e := range edges {
			hops += e.Count
		}
		assert.Equal(t, uint64(want), hops, "the topology counts each hop once")
	}
}

var replayAt = time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)

// replayRows is how many rows each request of the replay test holds.
const replayRows = 6

// replaySpans is request i: six messaging spans of its own.
func replaySpans(i int) ptrace.Traces {
	td := ptrace.NewTraces()
	spans := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans()
	for j := range replayRows {
		span := spans.AppendEmpty()
		span.SetTraceID(pcommon.TraceID{byte(i), 1})
		span.SetSpanID(pcommon.SpanID{byte(i), byte(j)})
		span.SetKind(ptrace.SpanKindProducer)
		span.SetStartTimestamp(pcommon.NewTimestampFromTime(replayAt))
		span.SetEndTimestamp(pcommon.NewTimestampFromTime(replayAt.Add(time.Millisecond)))
		a := span.Attributes()
		a.PutStr("messaging.system", "kafka")
		a.PutStr("messaging.operation.type", "send")
		a.PutStr("messaging.destination.name", "orders")
		a.PutStr("messaging.message.id", fmt.Sprintf("m-%d-%d", i, j))
	}
	return td
}

// replayRecords is request i: six settled hops of its own.
func replayRecords(i int) plog.Logs {
	logs := plog.NewLogs()
	lrs := logs.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for j := range replayRows {
		records.AppendHop(lrs, model.Hop{FlowID: fmt.Sprint("f", i), HopID: fmt.Sprintf("h-%d-%d", i, j), Version: 1,
			FirstSeen: replayAt, PublishTime: replayAt, System: "kafka", Producer: "api", Destination: "orders",
			Consumer: "billing", ConsumerGroup: "billing", Attempts: 1, Outcome: model.HopAcked, Counted: true}, replayAt)
	}
	return logs
}

// TestABadReplayRecordIsGivenUp: a record of a batch that does not decode
// is logged and given up, and the exporter goes on writing.
func TestABadReplayRecordIsGivenUp(t *testing.T) {
	ctx := context.Background()
	conn, st := embeddedStore(t)

	segments := segmentstorage.NewFactory()
	cfg := segments.CreateDefaultConfig().(*segmentstorage.Config)
	cfg.Directory = t.TempDir()
	queueStorage, err := segments.Create(ctx, extensiontest.NewNopSettings(segments.Type()), cfg)
	require.NoError(t, err)
	queueID := component.NewID(segments.Type())
	h := host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{
		queueID: queueStorage, component.MustNewID("flowstorage"): provider{store: st}}}
	require.NoError(t, queueStorage.Start(ctx, h))
	defer func() { require.NoError(t, queueStorage.Shutdown(ctx)) }()

	id := component.NewID(metadata.Type)
	client, err := queueStorage.(xstorage.Extension).GetClient(ctx, component.KindExporter, id, "replay_traces")
	require.NoError(t, err)
	require.NoError(t, client.Set(ctx, intentsKey, []byte(intentPrefix+"bad\n")))
	require.NoError(t, client.Set(ctx, intentPrefix+"bad", []byte{0xff, 0xff}))
	require.NoError(t, client.Close(ctx))

	expCfg := createDefaultConfig()
	queue := *expCfg.QueueConfig.Get()
	queue.StorageID = &queueID
	expCfg.QueueConfig = configoptional.Some(queue)
	set := exportertest.NewNopSettings(metadata.Type)
	set.ID = id
	exp, err := NewFactory().CreateTraces(ctx, set, expCfg)
	require.NoError(t, err)
	require.NoError(t, exp.Start(ctx, h))
	defer func() { require.NoError(t, exp.Shutdown(ctx)) }()
	require.NoError(t, exp.ConsumeTraces(ctx, replaySpans(0)))
	require.Eventually(t, func() bool {
		b, err := conn.Query(ctx, "SELECT count() AS n FROM flowtrace.events", nil)
		require.NoError(t, err)
		var got struct{ N json.Number }
		require.NoError(t, json.Unmarshal(b, &got))
		n, _ := got.N.Int64()
		return n == replayRows
	}, 30*time.Second, 20*time.Millisecond, "the spans are written")
}

// TestARecordedBatchKeepsItsItems: a batch that left out an item written
// before is recorded with its items all the same, so that, should the
// process die once it is written, the items are known written after the
// next restart too.
func TestARecordedBatchKeepsItsItems(t *testing.T) {
	ctx := context.Background()
	segments := segmentstorage.NewFactory()
	cfg := segments.CreateDefaultConfig().(*segmentstorage.Config)
	cfg.Directory = t.TempDir()
	queueStorage, err := segments.Create(ctx, extensiontest.NewNopSettings(segments.Type()), cfg)
	require.NoError(t, err)
	require.NoError(t, queueStorage.Start(ctx, componenttest.NewNopHost()))
	defer func() { require.NoError(t, queueStorage.Shutdown(ctx)) }()
	open := func() *replayGuard {
		client, err := queueStorage.(xstorage.Extension).GetClient(ctx, component.KindExporter, component.NewID(metadata.Type), "replay_traces")
		require.NoError(t, err)
		g, err := newReplayGuard(ctx, client)
		require.NoError(t, err)
		return g
	}

	g := open()
	g.markDone(queuedItem(t, 1).item) // written before the last restart
	r := queuedBatch(t, 1, 2)
	items := r.itemHashes()
	batch := g.dropDone(r)
	require.Equal(t, 4*2, batch.ItemsCount(), "item 1 left out")
	require.NoError(t, batch.gather())
	_, err = g.begin(ctx, batch, items)
	require.NoError(t, err)
	require.NoError(t, g.close(ctx)) // written, then the process dies

	g = open()
	defer func() { require.NoError(t, g.close(ctx)) }()
	written := 0
	require.NoError(t, g.recover(ctx, func(_ context.Context, r *rows) error { written = r.ItemsCount(); return nil }, zap.NewNop()))
	assert.Equal(t, 4*2, written, "the recorded batch is written again as it was")
	assert.Equal(t, 4*3, g.dropDone(queuedBatch(t, 2, 3)).ItemsCount(), "item 2 is known written")
}
