package clickhouseexporter

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/exporter/exporterhelper"
	"go.opentelemetry.io/collector/exporter/exportertest"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowtrace/flowtrace/correlator/records"
	"github.com/flowtrace/flowtrace/exporters/clickhouseexporter/internal/metadata"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/segmentstorage"
)

// flakyStore fails every write while down: storage that went away.
type flakyStore struct {
	storage.Store
	down   atomic.Bool
	failed atomic.Int64
}

var errDown = errors.New("storage unavailable")

func (s *flakyStore) WriteFlows(ctx context.Context, flows []model.Flow) error {
	if s.down.Load() {
		s.failed.Add(1)
		return errDown
	}
	return s.Store.WriteFlows(ctx, flows)
}

// provider offers the flaky store as the storage extension would.
type provider struct {
	component.StartFunc
	component.ShutdownFunc
	store storage.Store
}

func (p provider) Store(string) (storage.Store, error) { return p.store, nil }

// TestStorageOutage: while storage is down, accepted batches wait in the
// persistent queue, which is bounded — past it the exporter refuses with a
// retryable error —, and once storage is back every accepted batch is
// written, once. The queue is kept by flowtrace's segment_storage, as by
// default, or by contrib's file_storage.
func TestStorageOutage(t *testing.T) {
	segments := segmentstorage.NewFactory()
	segmentsCfg := segments.CreateDefaultConfig().(*segmentstorage.Config)
	segmentsCfg.Directory = t.TempDir()
	files := filestorage.NewFactory()
	filesCfg := files.CreateDefaultConfig().(*filestorage.Config)
	filesCfg.Directory = t.TempDir()
	for _, queueStorage := range []struct {
		factory extension.Factory
		cfg     component.Config
	}{{segments, segmentsCfg}, {files, filesCfg}} {
		t.Run(queueStorage.factory.Type().String(), func(t *testing.T) {
			testStorageOutage(t, queueStorage.factory, queueStorage.cfg)
		})
	}
}

func testStorageOutage(t *testing.T, queueFactory extension.Factory, queueCfg component.Config) {
	_, backing := embeddedStore(t)
	flaky := &flakyStore{Store: backing}
	flaky.down.Store(true)

	queueStorage, err := queueFactory.Create(context.Background(), extensiontest.NewNopSettings(queueFactory.Type()), queueCfg)
	require.NoError(t, err)
	queueStorageID := component.NewID(queueFactory.Type())
	h := host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{
		queueStorageID:                     queueStorage,
		component.MustNewID("flowstorage"): provider{store: flaky},
	}}
	require.NoError(t, queueStorage.Start(context.Background(), h))
	defer func() { require.NoError(t, queueStorage.Shutdown(context.Background())) }()

	cfg := createDefaultConfig()
	queue := *cfg.QueueConfig.Get()
	queue.StorageID = &queueStorageID
	queue.QueueSize = 20 // requests
	queue.NumConsumers = 1
	queue.Batch = configoptional.None[exporterhelper.BatchConfig]()
	cfg.QueueConfig = configoptional.Some(queue)
	cfg.BackOffConfig.InitialInterval = 10 * time.Millisecond
	cfg.BackOffConfig.MaxInterval = 50 * time.Millisecond
	cfg.BackOffConfig.MaxElapsedTime = 0 // until storage is back
	exp, err := NewFactory().CreateLogs(context.Background(), exportertest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	require.NoError(t, exp.Start(context.Background(), h))

	batch := func(i int) plog.Logs {
		logs := plog.NewLogs()
		lrs := logs.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
		now := time.Now().UTC()
		records.AppendFlow(lrs, model.Flow{ID: fmt.Sprint("f", i), Version: 1, FirstSeen: now, Name: "n", Status: model.FlowRunning, Start: now}, now)
		return logs
	}
	accepted := 0
	var refused error
	for i := range 100 {
		if err := exp.ConsumeLogs(context.Background(), batch(i)); err != nil {
			refused = err
			break
		}
		accepted++
	}
	require.Error(t, refused, "the queue is bounded")
	assert.False(t, consumererror.IsPermanent(refused), "a full queue is a retryable refusal: %v", refused)
	assert.GreaterOrEqual(t, accepted, 20)
	assert.Less(t, accepted, 100)
	require.Eventually(t, func() bool { return flaky.failed.Load() > 0 }, 10*time.Second, 10*time.Millisecond, "writes are being retried")

	flaky.down.Store(false)
	require.Eventually(t, func() bool {
		page, err := backing.FindFlows(context.Background(), storage.FlowQuery{Limit: storage.MaxLimit})
		return err == nil && len(page.Flows) == accepted
	}, 30*time.Second, 50*time.Millisecond, "every accepted batch is written once storage is back")
	require.NoError(t, exp.Shutdown(context.Background()))

	page, err := backing.FindFlows(context.Background(), storage.FlowQuery{Limit: storage.MaxLimit})
	require.NoError(t, err)
	assert.Len(t, page.Flows, accepted, "and none twice")
}
