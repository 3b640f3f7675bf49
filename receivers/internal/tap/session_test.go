package tap_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// A session that works, is lost, fails to come back once and then works
// again: one gap, counted with its length.
func TestRunCountsGaps(t *testing.T) {
	tel := componenttest.NewTelemetry()
	defer func() { require.NoError(t, tel.Shutdown(context.Background())) }()
	counters, err := tap.NewTelemetry(tel.NewTelemetrySettings(), "test", "scope")
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lost := errors.New("connection reset")
	attempts := 0
	tap.Run(ctx, zap.NewNop(), counters, tap.Backoff{Initial: time.Millisecond, Max: 2 * time.Millisecond},
		func(_ context.Context, connected tap.Connected) error {
			attempts++
			switch attempts {
			case 1: // works, then is lost
				connected()
				return lost
			case 2: // cannot reconnect
				return errors.New("connection refused")
			default: // back
				connected()
				cancel()
				return nil
			}
		})
	assert.Equal(t, 3, attempts)

	m, err := tel.GetMetric("flowtrace.tap.gaps")
	require.NoError(t, err)
	gaps := m.Data.(metricdata.Sum[int64])
	require.Len(t, gaps.DataPoints, 1)
	assert.Equal(t, int64(1), gaps.DataPoints[0].Value)

	m, err = tel.GetMetric("flowtrace.tap.gap_seconds")
	require.NoError(t, err)
	seconds := m.Data.(metricdata.Sum[float64])
	require.Len(t, seconds.DataPoints, 1)
	assert.Greater(t, seconds.DataPoints[0].Value, 0.0)

	m, err = tel.GetMetric("flowtrace.tap.connected")
	require.NoError(t, err)
	connected := m.Data.(metricdata.Gauge[int64])
	require.Len(t, connected.DataPoints, 1)
	assert.Equal(t, int64(1), connected.DataPoints[0].Value, "connected at the end")
}

func TestBackoffValidate(t *testing.T) {
	assert.NoError(t, tap.DefaultBackoff.Validate())
	assert.ErrorContains(t, tap.Backoff{}.Validate(), "initial_interval")
	assert.ErrorContains(t, tap.Backoff{Initial: time.Second, Max: time.Millisecond}.Validate(), "max_interval")
}
