package tap_test

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

func TestBacklog(t *testing.T) {
	b := tap.NewBacklog("test", "scope")
	orders := tap.Destination{System: "rabbitmq", Broker: "/", Destination: "orders", ConsumerGroup: "orders"}
	b.Int(model.MetricBacklogDepth, t0, orders, 12)
	b.Int(model.MetricBacklogDepth, t0, tap.Destination{System: "rabbitmq", Destination: "audit"}, -1)
	b.Float(model.MetricBacklogPublishRate, t0, orders, math.NaN())
	b.Int(tap.MetricPartitionLag, t0, tap.Destination{System: "kafka", Destination: "orders", ConsumerGroup: "billing", Partition: "3"}, 40)
	require.Equal(t, 4, b.Len())

	md := b.Take()
	assert.Equal(t, 0, b.Len(), "Take starts anew")
	ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
	require.Equal(t, 3, ms.Len(), "one gauge per name")

	depth := ms.At(0)
	assert.Equal(t, model.MetricBacklogDepth, depth.Name())
	require.Equal(t, pmetric.MetricTypeGauge, depth.Type())
	points := depth.Gauge().DataPoints()
	require.Equal(t, 2, points.Len())
	assert.Equal(t, int64(12), points.At(0).IntValue())
	assert.Equal(t, map[string]any{"system": "rabbitmq", "broker": "/", "destination": "orders", "consumer_group": "orders"}, points.At(0).Attributes().AsRaw())
	assert.Equal(t, int64(0), points.At(1).IntValue(), "a negative count is clamped")
	assert.Equal(t, 0.0, ms.At(1).Gauge().DataPoints().At(0).DoubleValue(), "NaN is clamped")
	partition, _ := ms.At(2).Gauge().DataPoints().At(0).Attributes().Get("partition")
	assert.Equal(t, "3", partition.Str())
}
