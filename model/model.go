// Package model holds the domain types that every flowtrace component shares:
// events observed about messages, the hops and flows the correlator builds from
// them, per-edge statistics and broker backlog samples.
//
// The types carry no behaviour beyond small helpers; the correlator produces
// them, storage persists them, the web API serves them.
package model

import (
	"strings"
	"time"
)

// EventKind says what an Event observed about a message.
type EventKind string

// The kinds of Event.
const (
	EventPublish         EventKind = "publish"          // a producer created or sent the message
	EventBroadcast       EventKind = "broadcast"        // published to whoever subscribed at that moment (pub/sub): nothing to acknowledge
	EventDeliver         EventKind = "deliver"          // the broker handed the message to a consumer
	EventProcess         EventKind = "process"          // a consumer worked on the message (start and duration)
	EventSettle          EventKind = "settle"           // ack, nack, reject or term
	EventDeadLetter      EventKind = "dead_letter"      // the message moved to a dead-letter destination
	EventExpire          EventKind = "expire"           // the message expired before it was consumed
	EventCallbackRequest EventKind = "callback_request" // an async HTTP request was accepted (202) with a callback id
	EventCallbackReceive EventKind = "callback_receive" // the callback for that id arrived
)

// Known reports whether k is one of the kinds above.
func (k EventKind) Known() bool {
	switch k {
	case EventPublish, EventBroadcast, EventDeliver, EventProcess, EventSettle, EventDeadLetter,
		EventExpire, EventCallbackRequest, EventCallbackReceive:
		return true
	}
	return false
}

// Key is a correlation key of a flow: a trace id, a message id, a task id, a
// correlation id or a configured business key such as an order id.
type Key struct {
	Kind  string // "trace_id", "message_id", "task_id", "correlation_id" or a business key name
	Value string
}

// SpanRef names a span: hex trace and span ids.
type SpanRef struct {
	TraceID string
	SpanID  string
}

// String is the ref as "<trace id>-<span id>".
func (r SpanRef) String() string { return r.TraceID + "-" + r.SpanID }

// ParseSpanRef is the inverse of SpanRef.String.
func ParseSpanRef(s string) (SpanRef, bool) {
	traceID, spanID, ok := strings.Cut(s, "-")
	if !ok || traceID == "" || spanID == "" {
		return SpanRef{}, false
	}
	return SpanRef{TraceID: traceID, SpanID: spanID}, true
}

// Event is one observation about one message.
type Event struct {
	Time          time.Time
	Kind          EventKind
	System        string // rabbitmq, kafka, nats, redis, celery, sidekiq, http, ...
	Destination   string // exchange, queue, topic, subject or stream
	Partition     string // Kafka partition, empty where the broker has none
	MessageID     string // broker-native identity: message_id, topic/partition/offset, stream sequence, task id, jid
	Operation     string // task name or operation name, where the system has one
	Attempt       uint16 // delivery attempt, 1 for the first
	Service       string
	ConsumerGroup string
	TraceID       string // hex
	SpanID        string // hex
	ParentSpanID  string // hex
	// Links are the creation contexts the span links to (span links and
	// Jaeger FOLLOWS_FROM references).
	Links    []SpanRef
	Keys     []Key
	Outcome  string // for settle events: ack, nack, reject, term; for others empty
	Reason   string // dead-letter reason or error text
	BodySize uint64
	Duration time.Duration // processing time, for process events
	// FlowName names the flow the event belongs to, where a configured rule
	// matched one of the span's attributes; empty otherwise.
	FlowName string
}

// HopOutcome is where a hop stands.
type HopOutcome string

// The outcomes of a Hop.
const (
	HopAcked        HopOutcome = "acked"
	HopRetried      HopOutcome = "retried"
	HopDeadLettered HopOutcome = "dead_lettered"
	HopExpired      HopOutcome = "expired"
	HopRejected     HopOutcome = "rejected" // rejected or terminated without a dead-letter destination
	HopInFlight     HopOutcome = "in_flight"
	HopStuck        HopOutcome = "stuck"
	HopEvicted      HopOutcome = "evicted"
)

// Hop is one message's journey from one producer through one destination to one
// consumer (group). The correlator rewrites a hop as it learns more; the newest
// Version wins.
type Hop struct {
	FlowID  string
	HopID   string
	Version uint64
	// FirstSeen is when the correlator first saw the hop. It never changes
	// between versions, so every version lands in the same storage partition.
	FirstSeen     time.Time
	Deleted       bool // the hop moved to another flow; this row retires the old placement
	ParentHopID   string
	System        string
	Producer      string // producing service
	Destination   string
	Consumer      string // consuming service
	ConsumerGroup string
	Operation     string
	MessageID     string
	TraceID       string
	PublishTime   time.Time // zero when not observed
	DeliverTime   time.Time // zero when not observed
	SettleTime    time.Time // zero when not observed
	QueueWait     time.Duration
	Processing    time.Duration
	Attempts      uint16
	Outcome       HopOutcome
	Reason        string // dead-letter reason or last error
	// Counted is set on exactly one version of a hop: the first with a final
	// outcome. Edge statistics aggregate only that version, so rewriting a hop
	// never counts it twice.
	Counted bool
}

// FlowStatus is where a flow stands.
type FlowStatus string

// The statuses of a Flow.
const (
	FlowRunning      FlowStatus = "running"
	FlowCompleted    FlowStatus = "completed"
	FlowFailed       FlowStatus = "failed"
	FlowDeadLettered FlowStatus = "dead_lettered"
	FlowStuck        FlowStatus = "stuck"
	FlowEvicted      FlowStatus = "evicted"
)

// Flow is the connected set of hops joined by causality and keys.
type Flow struct {
	ID        string
	Version   uint64
	FirstSeen time.Time // as for Hop: stable between versions
	Deleted   bool      // the flow was merged into another
	Name      string
	Status    FlowStatus
	Start     time.Time
	End       time.Time
	HopCount  uint32
	Retries   uint32
	// DeadLetters counts hops that ended in a dead-letter destination.
	DeadLetters  uint32
	Keys         []Key
	CriticalPath []string // hop ids, in order
}

// Duration is the flow's end-to-end latency.
func (f Flow) Duration() time.Duration {
	if f.Start.IsZero() || f.End.Before(f.Start) {
		return 0
	}
	return f.End.Sub(f.Start)
}

// Edge names a (producer, destination, consumer) triple of the topology.
type Edge struct {
	System      string
	Producer    string
	Destination string
	Consumer    string
}

// EdgeStats are an edge's statistics over a time range.
type EdgeStats struct {
	Edge
	Count         uint64
	QueueWaitP50  time.Duration
	QueueWaitP95  time.Duration
	QueueWaitP99  time.Duration
	ProcessingP50 time.Duration
	ProcessingP95 time.Duration
	ProcessingP99 time.Duration
	Retries       uint64
	DeadLetters   uint64
}

// EdgePoint is one step of an edge's time series.
type EdgePoint struct {
	Time time.Time
	EdgeStats
}

// Backlog metric names: the broker taps emit them as gauges, one point per
// destination (and consumer group), with the attributes system, broker,
// destination and consumer_group; the ClickHouse exporter stores them as
// BacklogSamples. docs/METRICS.md documents them.
const (
	MetricBacklogDepth       = "flowtrace.backlog.depth"        // BacklogSample.Depth
	MetricBacklogUnacked     = "flowtrace.backlog.unacked"      // BacklogSample.Unacked
	MetricBacklogLag         = "flowtrace.backlog.lag"          // BacklogSample.LagMessages
	MetricBacklogLagSeconds  = "flowtrace.backlog.lag_seconds"  // BacklogSample.LagSeconds
	MetricBacklogConsumers   = "flowtrace.backlog.consumers"    // BacklogSample.Consumers
	MetricBacklogPublishRate = "flowtrace.backlog.publish_rate" // BacklogSample.PublishRate
	MetricBacklogDeliverRate = "flowtrace.backlog.deliver_rate" // BacklogSample.DeliverRate
)

// BacklogSample is broker-side state of one destination (and consumer group),
// sampled at one time.
type BacklogSample struct {
	Time          time.Time
	System        string
	Broker        string // broker instance, cluster or vhost
	Destination   string
	ConsumerGroup string
	Depth         int64 // messages ready
	Unacked       int64 // delivered, not yet settled (ack pending)
	LagMessages   int64
	LagSeconds    float64
	Consumers     int64
	PublishRate   float64 // messages per second
	DeliverRate   float64 // messages per second
}
