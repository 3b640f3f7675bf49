package clickhouseexporter

import (
	"fmt"
	"math"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/flowtrace/flowtrace/model"
)

// maxBacklogValue bounds a backlog value: counts must fit an int64 column.
const maxBacklogValue float64 = 1 << 62

type sampleKey struct {
	time                                       pcommon.Timestamp
	system, broker, destination, consumerGroup string
}

// backlogSamples gathers the backlog gauges into one sample per time and
// destination. A point of another shape is reported, not guessed at.
func backlogSamples(md pmetric.Metrics) ([]model.BacklogSample, []error) {
	var bad []error
	samples := map[sampleKey]*model.BacklogSample{}
	var order []sampleKey
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		sms := rms.At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				m := ms.At(k)
				set := setter(m.Name())
				if set == nil {
					continue
				}
				if m.Type() != pmetric.MetricTypeGauge {
					err := fmt.Errorf("%s: want a gauge, got %s", m.Name(), m.Type())
					for range pointCount(m) { // each point is a refused sample
						bad = append(bad, err)
					}
					continue
				}
				points := m.Gauge().DataPoints()
				for p := 0; p < points.Len(); p++ {
					dp := points.At(p)
					key := sampleKey{time: dp.Timestamp()}
					attrs := dp.Attributes()
					for name, field := range map[string]*string{"system": &key.system, "broker": &key.broker, "destination": &key.destination, "consumer_group": &key.consumerGroup} {
						if v, ok := attrs.Get(name); ok {
							*field = v.AsString()
						}
					}
					if key.destination == "" {
						bad = append(bad, fmt.Errorf("%s: a point without a destination attribute", m.Name()))
						continue
					}
					var v float64
					switch dp.ValueType() {
					case pmetric.NumberDataPointValueTypeInt:
						v = float64(dp.IntValue())
					case pmetric.NumberDataPointValueTypeDouble:
						v = dp.DoubleValue()
					default:
						bad = append(bad, fmt.Errorf("%s: a point without a value", m.Name()))
						continue
					}
					if math.IsNaN(v) || v < 0 || v > maxBacklogValue {
						bad = append(bad, fmt.Errorf("%s: want a value from 0 to %g, got %g", m.Name(), maxBacklogValue, v))
						continue
					}
					s := samples[key]
					if s == nil {
						s = &model.BacklogSample{Time: dp.Timestamp().AsTime().UTC(), System: key.system, Broker: key.broker,
							Destination: key.destination, ConsumerGroup: key.consumerGroup}
						samples[key] = s
						order = append(order, key)
					}
					set(s, v)
				}
			}
		}
	}
	out := make([]model.BacklogSample, 0, len(order))
	for _, k := range order {
		out = append(out, *samples[k])
	}
	return out, bad
}

func setter(name string) func(*model.BacklogSample, float64) {
	switch name {
	case model.MetricBacklogDepth:
		return func(s *model.BacklogSample, v float64) { s.Depth = int64(v) }
	case model.MetricBacklogUnacked:
		return func(s *model.BacklogSample, v float64) { s.Unacked = int64(v) }
	case model.MetricBacklogLag:
		return func(s *model.BacklogSample, v float64) { s.LagMessages = int64(v) }
	case model.MetricBacklogLagSeconds:
		return func(s *model.BacklogSample, v float64) { s.LagSeconds = v }
	case model.MetricBacklogConsumers:
		return func(s *model.BacklogSample, v float64) { s.Consumers = int64(v) }
	case model.MetricBacklogPublishRate:
		return func(s *model.BacklogSample, v float64) { s.PublishRate = v }
	case model.MetricBacklogDeliverRate:
		return func(s *model.BacklogSample, v float64) { s.DeliverRate = v }
	}
	return nil
}

// pointCount is the number of data points a metric of any type holds.
func pointCount(m pmetric.Metric) int {
	switch m.Type() {
	case pmetric.MetricTypeGauge:
		return m.Gauge().DataPoints().Len()
	case pmetric.MetricTypeSum:
		return m.Sum().DataPoints().Len()
	case pmetric.MetricTypeHistogram:
		return m.Histogram().DataPoints().Len()
	case pmetric.MetricTypeExponentialHistogram:
		return m.ExponentialHistogram().DataPoints().Len()
	case pmetric.MetricTypeSummary:
		return m.Summary().DataPoints().Len()
	}
	return 0
}
