package tap

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.uber.org/zap"
)

// A session that connects and fails at once (the broker refuses what the
// tap asks once connected) backs off as one that cannot connect; one that
// held for a while starts the backoff anew.
func TestRunBacksOffSessionsThatFailAtOnce(t *testing.T) {
	tel, err := NewTelemetry(componenttest.NewNopTelemetrySettings(), "test", "scope")
	require.NoError(t, err)
	var waits []time.Duration
	saved := sleep
	defer func() { sleep = saved }()
	sleep = func(_ context.Context, d time.Duration) bool {
		waits = append(waits, d)
		return true
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := Backoff{Initial: time.Millisecond, Max: 8 * time.Millisecond}
	attempts := 0
	Run(ctx, zap.NewNop(), tel, b, func(_ context.Context, connected Connected) error {
		attempts++
		connected()
		switch attempts {
		case 6: // this one holds past Max
			time.Sleep(b.Max)
		case 8:
			cancel()
		}
		return errors.New("WRONGTYPE")
	})
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{ms, 2 * ms, 4 * ms, 8 * ms, 8 * ms, ms, 2 * ms}, waits)
}
