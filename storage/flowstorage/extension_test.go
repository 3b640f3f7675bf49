package flowstorage

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage/flowstorage/internal/metadata"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// host offers the extensions it holds, as the collector's host does.
type host struct {
	component.Host
	extensions map[component.ID]component.Component
}

func (h host) GetExtensions() map[component.ID]component.Component { return h.extensions }

func start(t *testing.T, cfg *Config) (extension.Extension, component.Host) {
	t.Helper()
	ext, err := NewFactory().Create(context.Background(), extensiontest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	h := host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{component.NewID(metadata.Type): ext}}
	require.NoError(t, ext.Start(context.Background(), h))
	return ext, h
}

func TestDataSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	cfg := &Config{Backends: map[string]BackendConfig{DefaultBackend: {Chdb: &ChdbConfig{Path: dir}}}}
	ctx := context.Background()
	now := time.Now().UTC()
	flow := model.Flow{ID: "survivor", Version: 1, FirstSeen: now, Name: "checkout", Status: model.FlowCompleted,
		Start: now, End: now.Add(time.Second), HopCount: 1, Keys: []model.Key{{Kind: "order_id", Value: "o-1"}}}

	ext, h := start(t, cfg)
	st, err := GetStore(h, "")
	require.NoError(t, err)
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{flow}))
	require.NoError(t, ext.Shutdown(ctx))
	require.NoError(t, ext.Shutdown(ctx), "shutdown twice")

	ext, h = start(t, cfg)
	t.Cleanup(func() { require.NoError(t, ext.Shutdown(ctx)) })
	st, err = GetStore(h, DefaultBackend)
	require.NoError(t, err)
	got, err := st.GetFlow(ctx, "survivor")
	require.NoError(t, err)
	assert.Equal(t, flow.Keys, got.Flow.Keys)
	assert.Equal(t, flow.Name, got.Flow.Name)

	_, err = GetStore(h, "nope")
	require.ErrorContains(t, err, `no storage backend named "nope"`)
}

func TestShutdownWithoutStart(t *testing.T) {
	ext, err := NewFactory().Create(context.Background(), extensiontest.NewNopSettings(metadata.Type), createDefaultConfig())
	require.NoError(t, err)
	require.NoError(t, ext.Shutdown(context.Background()))
}

func TestGetStoreWithoutExtension(t *testing.T) {
	_, err := GetStore(componenttest.NewNopHost(), "")
	require.ErrorIs(t, err, ErrNoExtension)
}

func TestStartFailsClearlyOnUnreachableServer(t *testing.T) {
	cfg := &Config{Backends: map[string]BackendConfig{"central": {ClickHouse: &ClickHouseConfig{
		Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second}}}}
	ext, err := NewFactory().Create(context.Background(), extensiontest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	err = ext.Start(context.Background(), componenttest.NewNopHost())
	require.ErrorContains(t, err, `storage backend "central"`)
	require.NoError(t, ext.Shutdown(context.Background()))
}
