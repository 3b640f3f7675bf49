package redistapreceiver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/redistapreceiver/internal/metadata"
)

// The traces and metrics receivers of one component id share one tap;
// another id gets its own. Shutdown is safe without Start.
func TestFactorySharesOneTap(t *testing.T) {
	f := NewFactory()
	assert.Equal(t, metadata.Type, f.Type())
	assert.Equal(t, component.StabilityLevelAlpha, f.TracesStability())
	assert.Equal(t, component.StabilityLevelAlpha, f.MetricsStability())
	cfg := f.CreateDefaultConfig().(*Config)
	cfg.Streams.Names = []string{"orders"}

	set := receivertest.NewNopSettings(metadata.Type)
	tr, err := f.CreateTraces(context.Background(), set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	mr, err := f.CreateMetrics(context.Background(), set, cfg, consumertest.NewNop())
	require.NoError(t, err)
	assert.Same(t, tr.(*tap.Handle[*redisTap]).Tap, mr.(*tap.Handle[*redisTap]).Tap)

	other := receivertest.NewNopSettings(metadata.Type)
	other.ID = component.NewIDWithName(metadata.Type, "other")
	or, err := f.CreateTraces(context.Background(), other, cfg, consumertest.NewNop())
	require.NoError(t, err)
	assert.NotSame(t, tr.(*tap.Handle[*redisTap]).Tap, or.(*tap.Handle[*redisTap]).Tap)

	for _, r := range []component.Component{tr, mr, or} {
		require.NoError(t, r.Shutdown(context.Background()))
	}
	// The tap's own Shutdown, past the handle's, is safe again.
	tp := tr.(*tap.Handle[*redisTap]).Tap
	require.NoError(t, tp.Shutdown(context.Background()))
	require.NoError(t, tp.Shutdown(context.Background()))
}
