package rabbitmqtapreceiver

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"math"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// The firehose's exchange and the prefixes of its routing keys
// (https://www.rabbitmq.com/docs/firehose).
const (
	traceExchange  = "amq.rabbitmq.trace"
	publishPrefix  = "publish."
	deliverPrefix  = "deliver."
	headerDeath    = "x-death"
	traceParentKey = "traceparent"
)

// decodeError is a frame the tap could not read; reason is a short fixed
// word for the decode error counter.
type decodeError struct {
	reason string
	msg    string
}

func (e *decodeError) Error() string { return e.reason + ": " + e.msg }

func badFrame(reason, msg string) error { return &decodeError{reason: reason, msg: msg} }

// reasonOf is the counter reason of err.
func reasonOf(err error) string {
	var de *decodeError
	if errors.As(err, &de) {
		return de.reason
	}
	return "frame"
}

type frameKind uint8

const (
	framePublish frameKind = iota + 1
	frameDeliver
)

// frame is one firehose notification: a message entering the broker
// through an exchange (publish) or leaving it from a queue (deliver).
type frame struct {
	kind  frameKind
	queue string // deliver: the queue the message left
	// redelivered is the broker's flag on a delivery: the message was
	// delivered before.
	redelivered  bool
	routedQueues []string // publish: the queues the message was routed to
	msg          message
}

// message is what the tap reads of one message: where it was published,
// its properties, and its body's size and digest (the body itself is never
// kept).
type message struct {
	exchange    string
	routingKeys []string
	props       properties
	bodySize    int
	bodySum     [sha256.Size]byte
}

// properties are the AMQP basic properties the tap reads.
type properties struct {
	contentType, contentEncoding string
	correlationID, replyTo       string
	messageID, typ, userID       string
	appID                        string
	deliveryMode, priority       int64
	timestamp                    int64 // seconds since the epoch
	headers                      amqp.Table
}

// decodeFrame reads a firehose delivery: its routing key, headers and body.
func decodeFrame(routingKey string, headers amqp.Table, body []byte) (frame, error) {
	var f frame
	switch {
	case strings.HasPrefix(routingKey, publishPrefix):
		f.kind = framePublish
	case strings.HasPrefix(routingKey, deliverPrefix):
		f.kind = frameDeliver
		f.queue = routingKey[len(deliverPrefix):]
		if f.queue == "" {
			return f, badFrame("routing_key", "deliver without a queue")
		}
	default:
		return f, badFrame("routing_key", "neither publish nor deliver")
	}
	exchange, ok := headers["exchange_name"].(string)
	if !ok {
		return f, badFrame("exchange_name", "missing or not a string")
	}
	f.msg.exchange = exchange
	keys, ok := stringList(headers["routing_keys"])
	if !ok {
		return f, badFrame("routing_keys", "missing or not a list of strings")
	}
	f.msg.routingKeys = keys
	props, ok := headers["properties"].(amqp.Table)
	if !ok {
		return f, badFrame("properties", "missing or not a table")
	}
	var err error
	if f.msg.props, err = decodeProperties(props); err != nil {
		return f, err
	}
	switch f.kind {
	case frameDeliver:
		switch v := headers["redelivered"].(type) {
		case bool:
			f.redelivered = v
		case nil:
		default:
			n, ok := integer(v)
			if !ok {
				return f, badFrame("redelivered", "not a flag")
			}
			f.redelivered = n != 0
		}
	case framePublish:
		if v, present := headers["routed_queues"]; present {
			if f.routedQueues, ok = stringList(v); !ok {
				return f, badFrame("routed_queues", "not a list of strings")
			}
		}
	}
	f.msg.bodySize = len(body)
	f.msg.bodySum = sha256.Sum256(body)
	return f, nil
}

// decodeProperties reads the properties table of a firehose frame; its
// keys are the AMQP property names in snake case.
func decodeProperties(t amqp.Table) (properties, error) {
	var p properties
	for k, v := range t {
		var s *string
		var n *int64
		switch k {
		case "content_type":
			s = &p.contentType
		case "content_encoding":
			s = &p.contentEncoding
		case "correlation_id":
			s = &p.correlationID
		case "reply_to":
			s = &p.replyTo
		case "message_id":
			s = &p.messageID
		case "type":
			s = &p.typ
		case "user_id":
			s = &p.userID
		case "app_id":
			s = &p.appID
		case "delivery_mode":
			n = &p.deliveryMode
		case "priority":
			n = &p.priority
		case "timestamp":
			if tm, ok := v.(time.Time); ok {
				p.timestamp = tm.Unix()
				continue
			}
			n = &p.timestamp
		case "headers":
			h, ok := v.(amqp.Table)
			if !ok && v != nil {
				return p, badFrame("properties", "headers is not a table")
			}
			p.headers = h
			continue
		default:
			continue // expiration, cluster_id: not part of what the tap reads
		}
		var ok bool
		switch {
		case s != nil:
			*s, ok = v.(string)
		case n != nil:
			*n, ok = integer(v)
		}
		if !ok && v != nil {
			return p, badFrame("properties", k+" has the wrong type")
		}
	}
	return p, nil
}

// propertiesOf reads the properties of a message the tap's queue received
// itself (a dead-lettered copy).
func propertiesOf(d *amqp.Delivery) properties {
	p := properties{
		contentType: d.ContentType, contentEncoding: d.ContentEncoding,
		correlationID: d.CorrelationId, replyTo: d.ReplyTo,
		messageID: d.MessageId, typ: d.Type, userID: d.UserId, appID: d.AppId,
		deliveryMode: int64(d.DeliveryMode), priority: int64(d.Priority),
		headers: d.Headers,
	}
	if !d.Timestamp.IsZero() {
		p.timestamp = d.Timestamp.Unix()
	}
	return p
}

// death is the newest entry of a message's x-death header: the queue it
// was last dead-lettered from and why.
type death struct {
	queue, reason string
	count         int64
	time          time.Time
	// origin is where the message was first published: the exchange and
	// routing keys of the oldest entry.
	originExchange string
	originKeys     []string
	// counts are the times the message was dead-lettered from each queue,
	// one per entry.
	counts []deathCount
}

type deathCount struct {
	queue string
	count int64
}

// decodeDeath reads the x-death header; found is false when it is absent.
func decodeDeath(h amqp.Table) (d death, found bool, err error) {
	v, present := h[headerDeath]
	if !present {
		return d, false, nil
	}
	entries, ok := v.([]interface{})
	if !ok || len(entries) == 0 {
		return d, false, badFrame("x_death", "not a list of tables")
	}
	for i, e := range entries {
		t, ok := e.(amqp.Table)
		if !ok {
			return d, false, badFrame("x_death", "entry is not a table")
		}
		queue, ok := t["queue"].(string)
		if !ok || queue == "" {
			return d, false, badFrame("x_death", "entry without a queue")
		}
		count, _ := integer(t["count"])
		d.counts = append(d.counts, deathCount{queue: queue, count: count})
		if i == 0 {
			d.queue, d.count = queue, count
			if d.reason, ok = t["reason"].(string); !ok {
				return d, false, badFrame("x_death", "entry without a reason")
			}
			d.time, _ = t["time"].(time.Time)
		}
		if i == len(entries)-1 {
			d.originExchange, _ = t["exchange"].(string)
			d.originKeys, _ = stringList(t["routing-keys"])
		}
	}
	return d, true, nil
}

// stringList reads an AMQP array of strings.
func stringList(v interface{}) ([]string, bool) {
	list, ok := v.([]interface{})
	if !ok {
		return nil, false
	}
	out := make([]string, len(list))
	for i, e := range list {
		if out[i], ok = e.(string); !ok {
			return nil, false
		}
	}
	return out, true
}

// integer reads any AMQP integer field.
func integer(v interface{}) (int64, bool) {
	switch n := v.(type) {
	case int8:
		return int64(n), true
	case uint8:
		return int64(n), true
	case int16:
		return int64(n), true
	case uint16:
		return int64(n), true
	case int32:
		return int64(n), true
	case uint32:
		return int64(n), true
	case int64:
		return n, true
	case int:
		return int64(n), true
	}
	return 0, false
}

// brokerHeaders are headers the broker adds or removes on its way, left out
// of a fingerprint so a message keeps it through dead-lettering and
// redelivery.
func brokerHeader(k string) bool {
	switch k {
	case headerDeath, "x-delivery-count", "x-received-from", "CC", "BCC":
		return true
	}
	return strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-")
}

// fingerprint names a message without a message_id: a digest of where it
// was first published, its properties and its body's digest.
func fingerprint(m *message, d *death) string {
	h := sha256.New()
	exchange, keys := m.exchange, m.routingKeys
	if d != nil && d.originKeys != nil {
		exchange, keys = d.originExchange, d.originKeys
	}
	writeString(h, exchange)
	writeInt(h, int64(len(keys)))
	for _, k := range keys {
		writeString(h, k)
	}
	p := &m.props
	for _, s := range [...]string{p.contentType, p.contentEncoding, p.correlationID, p.replyTo, p.typ, p.userID, p.appID} {
		writeString(h, s)
	}
	writeInt(h, p.deliveryMode)
	writeInt(h, p.priority)
	writeInt(h, p.timestamp)
	writeTable(h, p.headers, true)
	h.Write(m.bodySum[:])
	var sum [sha256.Size]byte
	return "fp:" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

func writeString(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	_, _ = h.Write([]byte(s))
}

func writeInt(h hash.Hash, n int64) {
	var b [9]byte
	b[0] = 'i'
	binary.BigEndian.PutUint64(b[1:], uint64(n))
	_, _ = h.Write(b[:])
}

// writeTable hashes a table with its keys in order, so the digest does not
// depend on map order; top leaves out the broker's own headers.
func writeTable(h hash.Hash, t amqp.Table, top bool) {
	keys := make([]string, 0, len(t))
	for k := range t {
		if !top || !brokerHeader(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	_, _ = h.Write([]byte{'T'})
	writeInt(h, int64(len(keys)))
	for _, k := range keys {
		writeString(h, k)
		writeValue(h, t[k])
	}
}

func writeValue(h hash.Hash, v interface{}) {
	if n, ok := integer(v); ok {
		writeInt(h, n)
		return
	}
	switch x := v.(type) {
	case nil:
		_, _ = h.Write([]byte{'V'})
	case bool:
		if x {
			_, _ = h.Write([]byte{'t', 1})
		} else {
			_, _ = h.Write([]byte{'t', 0})
		}
	case string:
		_, _ = h.Write([]byte{'S'})
		writeString(h, x)
	case []byte:
		_, _ = h.Write([]byte{'x'})
		writeString(h, string(x))
	case float32:
		writeFloat(h, float64(x))
	case float64:
		writeFloat(h, x)
	case time.Time:
		_, _ = h.Write([]byte{'D'})
		writeInt(h, x.Unix())
	case amqp.Decimal:
		_, _ = h.Write([]byte{'d', x.Scale})
		writeInt(h, int64(x.Value))
	case amqp.Table:
		writeTable(h, x, false)
	case []interface{}:
		_, _ = h.Write([]byte{'A'})
		writeInt(h, int64(len(x)))
		for _, e := range x {
			writeValue(h, e)
		}
	default:
		_, _ = h.Write([]byte{'?'})
	}
}

func writeFloat(h hash.Hash, f float64) {
	_, _ = h.Write([]byte{'f'})
	writeInt(h, int64(math.Float64bits(f)))
}
