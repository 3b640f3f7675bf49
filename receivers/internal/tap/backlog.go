package tap

import (
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
)

// Destination names what a backlog point is about.
type Destination struct {
	System        string
	Broker        string // broker instance, cluster or vhost
	Destination   string // queue, topic, stream
	ConsumerGroup string
	// Partition, where set, is put on the point too; the ClickHouse exporter
	// stores only points without it (one per destination and group), so a
	// tap that reports per partition uses the Partition* metric names.
	Partition string
}

// Per-partition backlog gauges: Prometheus only, not stored as samples.
const (
	MetricPartitionLag        = "flowtrace.backlog.partition.lag"
	MetricPartitionLagSeconds = "flowtrace.backlog.partition.lag_seconds"
)

// Backlog gathers gauge points into one pmetric.Metrics.
type Backlog struct {
	tap, scope string
	md         pmetric.Metrics
	gauges     map[string]pmetric.NumberDataPointSlice
	n          int
}

// NewBacklog returns an empty set of gauges for the named tap.
func NewBacklog(tap, scope string) *Backlog {
	b := &Backlog{tap: tap, scope: scope}
	b.reset()
	return b
}

func (b *Backlog) reset() {
	b.md = pmetric.NewMetrics()
	b.gauges = map[string]pmetric.NumberDataPointSlice{}
	b.n = 0
}

// Len is the number of points gathered.
func (b *Backlog) Len() int { return b.n }

// Take returns the gathered metrics and starts anew.
func (b *Backlog) Take() pmetric.Metrics {
	md := b.md
	b.reset()
	return md
}

// Int adds an integer point of the gauge name (e.g.
// model.MetricBacklogDepth). Negative values are clamped to 0: a broker
// briefly reporting -1 is not a backlog.
func (b *Backlog) Int(name string, at time.Time, d Destination, v int64) {
	b.point(name, at, d).SetIntValue(max(v, 0))
}

// Float adds a floating-point point of the gauge name.
func (b *Backlog) Float(name string, at time.Time, d Destination, v float64) {
	if !(v >= 0) { // also NaN
		v = 0
	}
	b.point(name, at, d).SetDoubleValue(v)
}

func (b *Backlog) point(name string, at time.Time, d Destination) pmetric.NumberDataPoint {
	points, ok := b.gauges[name]
	if !ok {
		if b.md.ResourceMetrics().Len() == 0 {
			rm := b.md.ResourceMetrics().AppendEmpty()
			rm.Resource().Attributes().PutStr(AttrTap, b.tap)
			rm.ScopeMetrics().AppendEmpty().Scope().SetName(b.scope)
		}
		m := b.md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics().AppendEmpty()
		m.SetName(name)
		points = m.SetEmptyGauge().DataPoints()
		b.gauges[name] = points
	}
	b.n++
	p := points.AppendEmpty()
	p.SetTimestamp(pcommon.NewTimestampFromTime(at))
	attrs := p.Attributes()
	attrs.PutStr("system", d.System)
	if d.Broker != "" {
		attrs.PutStr("broker", d.Broker)
	}
	attrs.PutStr("destination", d.Destination)
	if d.ConsumerGroup != "" {
		attrs.PutStr("consumer_group", d.ConsumerGroup)
	}
	if d.Partition != "" {
		attrs.PutStr("partition", d.Partition)
	}
	return p
}
