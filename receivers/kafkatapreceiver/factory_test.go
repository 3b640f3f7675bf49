package kafkatapreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

func TestConfigStruct(t *testing.T) {
	require.NoError(t, componenttest.CheckConfigStruct(createDefaultConfig()))
}

// TestLifecycle: both signals of one id share a tap; Start does not wait
// for an absent broker; Shutdown is safe twice, through the receivers
// and on the tap itself, and without Start.
func TestLifecycle(t *testing.T) {
	f := NewFactory()
	assert.Equal(t, metadata.Type, f.Type())
	cfg := f.CreateDefaultConfig().(*Config)
	cfg.Brokers = []string{"127.0.0.1:1"} // nothing listens there
	cfg.Topics = []string{"orders"}
	cfg.Reconnect.Initial = 10 * time.Millisecond
	set := receivertest.NewNopSettings(metadata.Type)
	ctx := context.Background()

	traces, err := f.CreateTraces(ctx, set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	metrics, err := f.CreateMetrics(ctx, set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	assert.Same(t, traces, metrics, "one tap for both signals")

	require.NoError(t, traces.Start(ctx, componenttest.NewNopHost()))
	require.NoError(t, metrics.Start(ctx, componenttest.NewNopHost()))
	kt := traces.(*tap.Handle[*kafkaTap]).Tap
	require.NoError(t, traces.Shutdown(ctx))
	require.NoError(t, metrics.Shutdown(ctx))
	require.NoError(t, kt.Shutdown(ctx))
	require.NoError(t, kt.Shutdown(ctx))
	select {
	case <-kt.done:
	default:
		t.Fatal("Shutdown returned before the tap stopped")
	}

	unstarted, err := f.CreateTraces(ctx, receivertest.NewNopSettings(metadata.Type), cfg, consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, unstarted.Shutdown(ctx))
	require.NoError(t, unstarted.Shutdown(ctx))
	ut := unstarted.(*tap.Handle[*kafkaTap]).Tap
	require.NoError(t, ut.Shutdown(ctx))
	require.NoError(t, ut.Shutdown(ctx))
}
