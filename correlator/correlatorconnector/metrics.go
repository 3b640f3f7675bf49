package correlatorconnector

import (
	"sort"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/correlatorconnector/internal/metadata"
	"github.com/flowtrace/flowtrace/model"
)

// Bucket bounds of the duration histograms, in seconds: from a millisecond
// to an hour.
var durationBounds = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// otherValue replaces label values past the cardinality limit.
const otherValue = "other"

// labelLimiter keeps each label to at most limit distinct values; later
// values fold into "other". Owned by the metrics aggregator.
type labelLimiter struct {
	limit  int
	seen   map[string]map[string]bool
	folded uint64
}

func (l *labelLimiter) value(label, value string) string {
	values := l.seen[label]
	if values == nil {
		values = map[string]bool{}
		l.seen[label] = values
	}
	if values[value] {
		return value
	}
	if len(values) >= l.limit {
		l.folded++
		return otherValue
	}
	values[value] = true
	return value
}

type histogram struct {
	counts []uint64
	count  uint64
	sum    float64
}

func (h *histogram) observe(seconds float64) {
	if h.counts == nil {
		h.counts = make([]uint64, len(durationBounds)+1)
	}
	i := sort.SearchFloat64s(durationBounds, seconds)
	h.counts[i]++
	h.count++
	h.sum += seconds
}

type edgeKey struct{ system, producer, destination, consumer string }

type edgeStats struct {
	queueWait, processing histogram
	outcomes              map[model.HopOutcome]uint64
	retries, deadLetters  uint64
}

type flowKey struct{ name string }

type flowStats struct {
	duration histogram
	statuses map[model.FlowStatus]uint64
}

// aggregator accumulates cumulative metrics from the engine's changes.
// Owned by the connector, under its mutex.
type aggregator struct {
	start  pcommon.Timestamp
	labels labelLimiter
	edges  map[edgeKey]*edgeStats
	flows  map[flowKey]*flowStats
	// Adapter counters.
	malformed      uint64
	recordsDropped uint64
}

func newAggregator(maxLabelValues int, start time.Time) *aggregator {
	return &aggregator{
		start:  pcommon.NewTimestampFromTime(start),
		labels: labelLimiter{limit: maxLabelValues, seen: map[string]map[string]bool{}},
		edges:  map[edgeKey]*edgeStats{},
		flows:  map[flowKey]*flowStats{},
	}
}

// observe counts each hop once, on the version that first settled it
// (Hop.Counted), and each flow once, when it first finished.
func (a *aggregator) observe(c correlator.Changes) {
	for i := range c.Hops {
		h := &c.Hops[i]
		if !h.Counted {
			continue
		}
		key := edgeKey{
			system:      a.labels.value("system", h.System),
			producer:    a.labels.value("producer", h.Producer),
			destination: a.labels.value("destination", h.Destination),
			consumer:    a.labels.value("consumer", h.Consumer),
		}
		e := a.edges[key]
		if e == nil {
			e = &edgeStats{outcomes: map[model.HopOutcome]uint64{}}
			a.edges[key] = e
		}
		e.outcomes[h.Outcome]++
		if !h.DeliverTime.IsZero() && !h.PublishTime.IsZero() {
			e.queueWait.observe(h.QueueWait.Seconds())
		}
		if h.Processing > 0 {
			e.processing.observe(h.Processing.Seconds())
		}
		if h.Attempts > 1 {
			e.retries += uint64(h.Attempts - 1)
		}
		if h.Outcome == model.HopDeadLettered {
			e.deadLetters++
		}
	}
	for _, i := range c.Finished {
		f := &c.Flows[i]
		key := flowKey{name: a.labels.value("flow_name", f.Name)}
		s := a.flows[key]
		if s == nil {
			s = &flowStats{statuses: map[model.FlowStatus]uint64{}}
			a.flows[key] = s
		}
		s.statuses[f.Status]++
		s.duration.observe(f.Duration().Seconds())
	}
}

// build renders every metric at now.
func (a *aggregator) build(now time.Time, stats correlator.Stats) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := md.ResourceMetrics().AppendEmpty()
	rm.Resource().Attributes().PutStr("service.name", "flowtrace")
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(metadata.ScopeName)
	metrics := sm.Metrics()
	ts := pcommon.NewTimestampFromTime(now)

	queueWait := newHistogram(metrics, "flowtrace.hop.queue_wait", "Time messages waited in a destination before their first delivery, per edge.")
	processing := newHistogram(metrics, "flowtrace.hop.processing", "Time consumers worked on a message (its last attempt), per edge.")
	hops := newSum(metrics, "flowtrace.hops", "{hop}", "Hops settled, per edge and outcome.")
	retries := newSum(metrics, "flowtrace.hop.retries", "{retry}", "Redeliveries of settled hops, per edge.")
	deadLetters := newSum(metrics, "flowtrace.hop.dead_letters", "{hop}", "Hops that ended in a dead-letter destination, per edge.")
	edgeKeys := make([]edgeKey, 0, len(a.edges))
	for k := range a.edges {
		edgeKeys = append(edgeKeys, k)
	}
	sort.Slice(edgeKeys, func(i, j int) bool { return lessEdge(edgeKeys[i], edgeKeys[j]) })
	for _, k := range edgeKeys {
		e := a.edges[k]
		if e.queueWait.count > 0 {
			a.histogramPoint(queueWait, ts, &e.queueWait, k)
		}
		if e.processing.count > 0 {
			a.histogramPoint(processing, ts, &e.processing, k)
		}
		for _, outcome := range sortedKeys(e.outcomes) {
			p := a.sumPoint(hops, ts, e.outcomes[outcome])
			putEdge(p.Attributes(), k)
			p.Attributes().PutStr("outcome", string(outcome))
		}
		putEdge(a.sumPoint(retries, ts, e.retries).Attributes(), k)
		putEdge(a.sumPoint(deadLetters, ts, e.deadLetters).Attributes(), k)
	}

	duration := newHistogram(metrics, "flowtrace.flow.duration", "End-to-end latency of finished flows, per flow name.")
	flows := newSum(metrics, "flowtrace.flows", "{flow}", "Flows finished, per flow name and final status.")
	flowKeys := make([]flowKey, 0, len(a.flows))
	for k := range a.flows {
		flowKeys = append(flowKeys, k)
	}
	sort.Slice(flowKeys, func(i, j int) bool { return flowKeys[i].name < flowKeys[j].name })
	for _, k := range flowKeys {
		s := a.flows[k]
		p := duration.Histogram().DataPoints().AppendEmpty()
		fillHistogram(p, a.start, ts, &s.duration)
		p.Attributes().PutStr("flow_name", k.name)
		for _, status := range sortedKeys(s.statuses) {
			sp := a.sumPoint(flows, ts, s.statuses[status])
			sp.Attributes().PutStr("flow_name", k.name)
			sp.Attributes().PutStr("status", string(status))
		}
	}

	newGauge(metrics, "flowtrace.flows.in_flight", "{flow}", "Flows held in memory, finished ones kept for late events included.", ts, int64(stats.InFlightFlows))
	newGauge(metrics, "flowtrace.hops.in_flight", "{hop}", "Hops held in memory.", ts, int64(stats.InFlightHops))
	newGauge(metrics, "flowtrace.flows.stuck", "{flow}", "Quiet flows with stuck hops.", ts, int64(stats.StuckFlows))

	evictions := newSum(metrics, "flowtrace.correlator.evictions", "{flow}", "In-flight flows forced out of memory, per limit.")
	a.sumPoint(evictions, ts, stats.EvictedByHops).Attributes().PutStr("reason", "max_in_flight_hops")
	a.sumPoint(evictions, ts, stats.EvictedByFlows).Attributes().PutStr("reason", "max_in_flight_flows")
	early := newSum(metrics, "flowtrace.correlator.flows_finished_early", "{flow}", "Flows whose hops had all settled, finished before flow_idle to keep within the in-flight limits.")
	a.sumPoint(early, ts, stats.FinishedEarly)
	released := newSum(metrics, "flowtrace.correlator.flows_released", "{flow}", "Finished flows forgotten after retain.")
	a.sumPoint(released, ts, stats.FlowsReleased)
	reopened := newSum(metrics, "flowtrace.correlator.flows_reopened", "{flow}", "Finished flows reopened by a late event.")
	a.sumPoint(reopened, ts, stats.FlowsReopened)
	events := newSum(metrics, "flowtrace.correlator.events", "{event}", "Events read from spans: added, or ignored (unknown kind, no identity).")
	a.sumPoint(events, ts, stats.EventsAdded).Attributes().PutStr("result", "added")
	a.sumPoint(events, ts, stats.EventsIgnored).Attributes().PutStr("result", "ignored")
	malformed := newSum(metrics, "flowtrace.correlator.malformed_attributes", "{attribute}", "Span attributes of the wrong form, read as absent.")
	a.sumPoint(malformed, ts, a.malformed)
	folded := newSum(metrics, "flowtrace.correlator.folded_label_values", "{value}", "Metric label values folded into \"other\" by max_label_values.")
	a.sumPoint(folded, ts, a.labels.folded)
	dropped := newSum(metrics, "flowtrace.correlator.records_dropped", "{record}", "Hop and flow records dropped: the next consumer refused them for good, or for too long.")
	a.sumPoint(dropped, ts, a.recordsDropped)
	return md
}

func lessEdge(a, b edgeKey) bool {
	if a.system != b.system {
		return a.system < b.system
	}
	if a.producer != b.producer {
		return a.producer < b.producer
	}
	if a.destination != b.destination {
		return a.destination < b.destination
	}
	return a.consumer < b.consumer
}

func sortedKeys[K ~string, V any](m map[K]V) []K {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

func putEdge(attrs pcommon.Map, k edgeKey) {
	attrs.PutStr("system", k.system)
	attrs.PutStr("producer", k.producer)
	attrs.PutStr("destination", k.destination)
	attrs.PutStr("consumer", k.consumer)
}

func newHistogram(metrics pmetric.MetricSlice, name, description string) pmetric.Metric {
	m := metrics.AppendEmpty()
	m.SetName(name)
	m.SetUnit("s")
	m.SetDescription(description)
	m.SetEmptyHistogram().SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	return m
}

func newSum(metrics pmetric.MetricSlice, name, unit, description string) pmetric.Metric {
	m := metrics.AppendEmpty()
	m.SetName(name)
	m.SetUnit(unit)
	m.SetDescription(description)
	sum := m.SetEmptySum()
	sum.SetIsMonotonic(true)
	sum.SetAggregationTemporality(pmetric.AggregationTemporalityCumulative)
	return m
}

func newGauge(metrics pmetric.MetricSlice, name, unit, description string, ts pcommon.Timestamp, value int64) {
	m := metrics.AppendEmpty()
	m.SetName(name)
	m.SetUnit(unit)
	m.SetDescription(description)
	p := m.SetEmptyGauge().DataPoints().AppendEmpty()
	p.SetTimestamp(ts)
	p.SetIntValue(value)
}

func (a *aggregator) sumPoint(m pmetric.Metric, ts pcommon.Timestamp, value uint64) pmetric.NumberDataPoint {
	p := m.Sum().DataPoints().AppendEmpty()
	p.SetStartTimestamp(a.start)
	p.SetTimestamp(ts)
	p.SetIntValue(int64(value))
	return p
}

func (a *aggregator) histogramPoint(m pmetric.Metric, ts pcommon.Timestamp, h *histogram, k edgeKey) {
	p := m.Histogram().DataPoints().AppendEmpty()
	fillHistogram(p, a.start, ts, h)
	putEdge(p.Attributes(), k)
}

func fillHistogram(p pmetric.HistogramDataPoint, start, ts pcommon.Timestamp, h *histogram) {
	p.SetStartTimestamp(start)
	p.SetTimestamp(ts)
	p.SetCount(h.count)
	p.SetSum(h.sum)
	p.ExplicitBounds().FromRaw(durationBounds)
	p.BucketCounts().FromRaw(h.counts)
}
