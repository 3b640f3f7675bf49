package segmentstorage

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/collector/extension/xextension/storage"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/internal/configtest"
	"github.com/flowtrace/flowtrace/storage/segmentstorage/internal/metadata"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConfig(t *testing.T) {
	load := func(name string) *Config { return configtest.Load(t, metadata.Type, name, createDefaultConfig) }
	def := load("")
	require.NoError(t, confmap.Validate(def))
	assert.Equal(t, &Config{Directory: "/var/lib/flowtrace/queue", SegmentSize: 64 << 20}, def)
	custom := load("custom")
	require.NoError(t, confmap.Validate(custom))
	assert.Equal(t, &Config{Directory: "/data/queue", SegmentSize: 8 << 20, FSync: true}, custom)
	err := confmap.Validate(load("bad"))
	assert.ErrorContains(t, err, "directory: must not be empty")
	assert.ErrorContains(t, err, "segment_size: want at least 1024 bytes, got 10")
}

func start(t testing.TB, dir string) storage.Extension {
	t.Helper()
	cfg := createDefaultConfig()
	cfg.Directory = dir
	ext, err := NewFactory().Create(context.Background(), extensiontest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	require.NoError(t, ext.Start(context.Background(), componenttest.NewNopHost()))
	return ext.(storage.Extension)
}

var exporterID = component.MustNewIDWithName("clickhouse", "main")

// TestClientsKeepTheirDataAcrossRestarts: each component and signal has its
// own store, which a new process finds as it was left.
func TestClientsKeepTheirDataAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ext := start(t, dir)
	traces, err := ext.GetClient(ctx, component.KindExporter, exporterID, "traces")
	require.NoError(t, err)
	logs, err := ext.GetClient(ctx, component.KindExporter, exporterID, "logs")
	require.NoError(t, err)
	_, err = ext.GetClient(ctx, component.KindExporter, exporterID, "logs")
	require.ErrorContains(t, err, "already open", "one owner per store")

	require.NoError(t, traces.Set(ctx, "k", []byte("traces")))
	require.NoError(t, logs.Batch(ctx, storage.SetOperation("k", []byte("logs")), storage.SetOperation("gone", []byte("x"))))
	require.NoError(t, logs.Delete(ctx, "gone"))
	get := storage.GetOperation("k")
	require.NoError(t, logs.Batch(ctx, storage.SetOperation("k", []byte("logs2")), get))
	assert.Equal(t, []byte("logs2"), get.Value, "a get sees its batch's set")
	require.NoError(t, traces.Close(ctx))
	require.NoError(t, ext.Shutdown(ctx), "closes the client left open")

	ext = start(t, dir)
	defer func() { require.NoError(t, ext.Shutdown(ctx)) }()
	for signal, want := range map[string]string{"traces": "traces", "logs": "logs2"} {
		c, err := ext.GetClient(ctx, component.KindExporter, exporterID, signal)
		require.NoError(t, err)
		v, err := c.Get(ctx, "k")
		require.NoError(t, err)
		assert.Equal(t, want, string(v))
		gone, err := c.Get(ctx, "gone")
		require.NoError(t, err)
		assert.Nil(t, gone)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	c, err := ext.GetClient(ctx, component.KindReceiver, component.MustNewID("otlp"), "")
	require.NoError(t, err)
	require.ErrorIs(t, c.Set(canceled, "k", nil), context.Canceled)
}

// TestDamagedRecordsAreCounted: records a crash tore are cut off at start,
// logged and counted in flowtrace.segment_storage.dropped, and the client
// works on.
func TestDamagedRecordsAreCounted(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ext := start(t, dir)
	c, err := ext.GetClient(ctx, component.KindExporter, exporterID, "logs")
	require.NoError(t, err)
	require.NoError(t, c.Set(ctx, "kept", []byte("v")))
	require.NoError(t, c.Set(ctx, "torn", bytes.Repeat([]byte("x"), 100)))
	require.NoError(t, ext.Shutdown(ctx))
	segments, err := filepath.Glob(filepath.Join(dir, "exporter_clickhouse_main_logs", "*.seg"))
	require.NoError(t, err)
	require.Len(t, segments, 1)
	info, err := os.Stat(segments[0])
	require.NoError(t, err)
	require.NoError(t, os.Truncate(segments[0], info.Size()-10))

	tel := componenttest.NewTelemetry()
	defer tel.Shutdown(ctx)
	cfg := createDefaultConfig()
	cfg.Directory = dir
	set := extensiontest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = tel.NewTelemetrySettings()
	created, err := NewFactory().Create(ctx, set, cfg)
	require.NoError(t, err)
	ext = created.(storage.Extension)
	defer func() { require.NoError(t, ext.Shutdown(ctx)) }()
	c, err = ext.GetClient(ctx, component.KindExporter, exporterID, "logs")
	require.NoError(t, err)
	kept, err := c.Get(ctx, "kept")
	require.NoError(t, err)
	assert.Equal(t, []byte("v"), kept)
	torn, err := c.Get(ctx, "torn")
	require.NoError(t, err)
	assert.Nil(t, torn)

	m, err := tel.GetMetric("flowtrace.segment_storage.dropped")
	require.NoError(t, err)
	sum := m.Data.(metricdata.Sum[int64])
	require.Len(t, sum.DataPoints, 1)
	// What is left of the torn record: all past the first record (header,
	// op, key length, key, value).
	firstRecord := int64(8 + 1 + 1 + len("kept") + len("v"))
	assert.Equal(t, info.Size()-10-firstRecord, sum.DataPoints[0].Value)
}

// BenchmarkQueueCycle is one sending-queue item's life, as exporterhelper's
// persistent queue drives its storage: write it (with the queue's metadata),
// read it, delete it, with ten items waiting. Against contrib's file_storage.
func BenchmarkQueueCycle(b *testing.B) {
	for _, size := range []int{16 << 10, 256 << 10} {
		b.Run(fmt.Sprintf("segment_storage/%dKiB", size>>10), func(b *testing.B) {
			ext := start(b, b.TempDir())
			defer ext.Shutdown(context.Background())
			runQueueCycle(b, ext, size)
		})
		b.Run(fmt.Sprintf("file_storage/%dKiB", size>>10), func(b *testing.B) {
			f := filestorage.NewFactory()
			cfg := f.CreateDefaultConfig().(*filestorage.Config)
			cfg.Directory = b.TempDir()
			ext, err := f.Create(context.Background(), extensiontest.NewNopSettings(f.Type()), cfg)
			require.NoError(b, err)
			require.NoError(b, ext.Start(context.Background(), componenttest.NewNopHost()))
			defer ext.Shutdown(context.Background())
			runQueueCycle(b, ext.(storage.Extension), size)
		})
	}
}

func runQueueCycle(b *testing.B, ext storage.Extension, size int) {
	ctx := context.Background()
	c, err := ext.GetClient(ctx, component.KindExporter, exporterID, "traces")
	require.NoError(b, err)
	defer c.Close(ctx)
	item := bytes.Repeat([]byte("spans!"), size/6)
	meta := func(i int) *storage.Operation { return storage.SetOperation("qmv0", []byte(fmt.Sprint(i))) }
	b.SetBytes(int64(len(item)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Batch(ctx, meta(i), storage.SetOperation(fmt.Sprint(i), item)); err != nil {
			b.Fatal(err)
		}
		if i < 10 {
			continue
		}
		get := storage.GetOperation(fmt.Sprint(i - 10))
		if err := c.Batch(ctx, meta(i), get); err != nil || len(get.Value) != len(item) {
			b.Fatal(err, len(get.Value))
		}
		if err := c.Batch(ctx, meta(i), storage.DeleteOperation(fmt.Sprint(i-10))); err != nil {
			b.Fatal(err)
		}
	}
}
