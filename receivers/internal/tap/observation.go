package tap

import (
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// Kind says what a broker did with a message.
type Kind uint8

// The kinds of Observation.
const (
	Publish    Kind = iota + 1 // the broker accepted the message
	Deliver                    // the broker handed it to a consumer
	Process                    // a consumer worked on it (Time and Duration known)
	Settle                     // the consumer acked, nacked, rejected or terminated it
	DeadLetter                 // it moved to a dead-letter destination
	Expire                     // it expired before it was consumed
	// Broadcast is a publish on pub/sub (Redis PUBLISH, NATS core
	// subjects): handed to whoever is subscribed at that moment, nothing
	// kept, nothing to acknowledge.
	Broadcast
)

var kindNames = [...]string{Publish: "publish", Deliver: "deliver", Process: "process", Settle: "settle", DeadLetter: "dead_letter", Expire: "expire", Broadcast: "broadcast"}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// Outcomes of a Settle observation.
const (
	Ack    = "ack"
	Nack   = "nack"
	Reject = "reject"
	Term   = "term"
)

// Observation is one thing a tap saw a broker do with one message. The
// message is named by MessageID (the broker's own identity, or a
// fingerprint of the message where it has none); the body is never part of
// an observation.
type Observation struct {
	Kind Kind
	Time time.Time
	// Duration is the processing time of a Process observation.
	Duration time.Duration

	System      string // rabbitmq, kafka, nats, redis, celery, sidekiq
	Destination string // exchange, topic, subject, stream or queue
	Partition   string
	MessageID   string
	// ConsumerGroup is who received the message: a queue, a consumer group,
	// a durable consumer. Empty on the publish side.
	ConsumerGroup string
	// Service is the service.name of the producer (publish) or consumer
	// (otherwise), where the broker tells it; usually empty.
	Service   string
	Operation string // e.g. a task name
	Attempt   int    // delivery attempt, 1 for the first; 0 when unknown
	Outcome   string // Ack, Nack, Reject or Term, for Settle
	// Inferred marks a settlement the tap inferred from what followed
	// rather than saw.
	Inferred bool
	Reason   string // dead-letter reason
	BodySize int64  // -1 or 0 when unknown

	// Keys are flow keys: correlation ids, task ids, business keys.
	Keys []model.Key
	// TraceParent is the W3C traceparent that travelled with the message,
	// if any: the tap's spans then join the application's trace.
	TraceParent string
	// TraceKey, without a traceparent, names the trace the message belongs
	// to, e.g. a Celery root task id: messages with the same TraceKey share
	// a trace, so the correlator finds which hop each was published from.
	// Empty: the message gets a trace of its own.
	TraceKey string
	// Attrs are extra span attributes, e.g. an offset or a stream sequence.
	Attrs []Attr
}

// Attr is one extra span attribute: a string, an integer or a boolean.
type Attr struct {
	Key  string
	Str  string
	Int  int64
	Bool bool
	Type AttrType
}

// AttrType says which of an Attr's values it holds.
type AttrType uint8

// The types of Attr.
const (
	StringAttr AttrType = iota
	IntAttr
	BoolAttr
)

// String is a string attribute.
func String(key, value string) Attr { return Attr{Key: key, Str: value} }

// Int is an integer attribute.
func Int(key string, value int64) Attr { return Attr{Key: key, Int: value, Type: IntAttr} }

// Bool is a boolean attribute.
func Bool(key string, value bool) Attr { return Attr{Key: key, Bool: value, Type: BoolAttr} }
