package correlatorconnector

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/model"
)

func TestLabelValuesPastTheLimitFoldIntoOther(t *testing.T) {
	agg := newAggregator(3, time.Now())
	var hops []model.Hop
	for i := range 10 {
		hops = append(hops, model.Hop{
			System: "kafka", Producer: "api", Destination: fmt.Sprintf("orders-%d", i), Consumer: "billing",
			Outcome: model.HopAcked, Counted: true, Attempts: 1, Processing: time.Millisecond,
		})
	}
	agg.observe(correlator.Changes{Hops: hops})
	md := agg.build(time.Now(), correlator.Stats{})
	destinations := map[string]int64{}
	points := metricNames(md)["flowtrace.hops"].Sum().DataPoints()
	for i := 0; i < points.Len(); i++ {
		dest, _ := points.At(i).Attributes().Get("destination")
		destinations[dest.Str()] += points.At(i).IntValue()
	}
	assert.Equal(t, map[string]int64{"orders-0": 1, "orders-1": 1, "orders-2": 1, "other": 7}, destinations)
	assert.Equal(t, int64(7), sumOf(md, "flowtrace.correlator.folded_label_values"))
}

func TestEachHopAndFlowCountsOnce(t *testing.T) {
	agg := newAggregator(100, time.Now())
	hop := model.Hop{System: "nats", Producer: "api", Destination: "orders", Consumer: "billing", Outcome: model.HopDeadLettered,
		Attempts: 3, QueueWait: 2 * time.Second, Processing: time.Second, PublishTime: time.Unix(100, 0), DeliverTime: time.Unix(102, 0)}
	counted, again := hop, hop
	counted.Counted = true
	flow := model.Flow{Name: "api orders", Status: model.FlowDeadLettered, Start: time.Unix(100, 0), End: time.Unix(105, 0)}
	agg.observe(correlator.Changes{Hops: []model.Hop{counted, again}, Flows: []model.Flow{flow, flow}, Finished: []int{0}})
	agg.observe(correlator.Changes{Hops: []model.Hop{again}, Flows: []model.Flow{flow}})
	md := agg.build(time.Now(), correlator.Stats{EvictedByFlows: 2, InFlightFlows: 5})

	assert.Equal(t, int64(1), sumOf(md, "flowtrace.hops"))
	assert.Equal(t, int64(2), sumOf(md, "flowtrace.hop.retries"))
	assert.Equal(t, int64(1), sumOf(md, "flowtrace.hop.dead_letters"))
	assert.Equal(t, int64(1), sumOf(md, "flowtrace.flows"))
	assert.Equal(t, int64(2), sumOf(md, "flowtrace.correlator.evictions"))

	names := metricNames(md)
	wait := names["flowtrace.hop.queue_wait"].Histogram().DataPoints()
	require.Equal(t, 1, wait.Len())
	assert.Equal(t, uint64(1), wait.At(0).Count())
	assert.InDelta(t, 2.0, wait.At(0).Sum(), 1e-9)
	duration := names["flowtrace.flow.duration"].Histogram().DataPoints()
	require.Equal(t, 1, duration.Len())
	assert.InDelta(t, 5.0, duration.At(0).Sum(), 1e-9)
	gauge := names["flowtrace.flows.in_flight"]
	require.Equal(t, pmetric.MetricTypeGauge, gauge.Type())
	assert.Equal(t, int64(5), gauge.Gauge().DataPoints().At(0).IntValue())
}
