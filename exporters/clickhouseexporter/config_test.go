package clickhouseexporter

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"

	"github.com/flowtrace/flowtrace/exporters/clickhouseexporter/internal/metadata"
	"github.com/flowtrace/flowtrace/internal/configtest"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	return configtest.Load(t, metadata.Type, name, createDefaultConfig)
}

func TestConfigs(t *testing.T) {
	def := loadConfig(t, "")
	require.NoError(t, confmap.Validate(def))
	assert.Equal(t, "default", def.Backend)

	custom := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(custom))
	assert.Equal(t, "central", custom.Backend)
	assert.Equal(t, 10*time.Second, custom.Timeout)
	assert.Equal(t, map[string]string{"app.order_id": "order_id"}, custom.Spans.KeyAttributes)
	queue := custom.QueueConfig.Get()
	require.NotNil(t, queue)
	require.NotNil(t, queue.StorageID)
	assert.Equal(t, "file_storage", queue.StorageID.String())
	assert.Equal(t, int64(5000), queue.QueueSize)
	assert.Equal(t, 10*time.Minute, custom.BackOffConfig.MaxElapsedTime)

	require.ErrorContains(t, confmap.Validate(loadConfig(t, "bad")), "backend: must not be empty")
	require.ErrorContains(t, confmap.Validate(loadConfig(t, "bytes")), "sending_queue::batch::sizer: batches are sized in items (rows), not bytes")
}

// The exporter reads what it is given into rows of its own, which its queue
// batches: it must not declare that it mutates data, or every fanout ahead
// of it copies each request for it.
func TestDeclaresItReadsOnly(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.QueueConfig.Get().Batch = configoptional.Some(exporterhelper.BatchConfig{
		FlushTimeout: time.Second, Sizer: exporterhelper.RequestSizerTypeItems, MinSize: 1000})
	f := NewFactory()
	set := exportertest.NewNopSettings(metadata.Type)
	traces, err := f.CreateTraces(context.Background(), set, cfg)
	require.NoError(t, err)
	logs, err := f.CreateLogs(context.Background(), set, cfg)
	require.NoError(t, err)
	metrics, err := f.CreateMetrics(context.Background(), set, cfg)
	require.NoError(t, err)
	for _, c := range []consumer.Capabilities{traces.Capabilities(), logs.Capabilities(), metrics.Capabilities()} {
		assert.False(t, c.MutatesData)
	}
}
