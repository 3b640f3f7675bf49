package rabbitmqtapreceiver

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// FuzzFirehoseFrame reads arbitrary frames: the decoder either refuses one
// with a fixed reason or the tracker turns it into observations the span
// builder takes, never panicking.
func FuzzFirehoseFrame(f *testing.F) {
	for _, d := range loadFrames(f) {
		f.Add(fuzzFrame(&d))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		routingKey, exchange, headers, body := readFuzzFrame(data)
		tr := newTracker("own", false, 16, func(error) {})
		spans := tap.NewSpans(systemRabbitMQ, "fuzz")
		now := time.Unix(1795000000, 0)
		_ = frameDigest(&amqp.Delivery{Exchange: exchange, RoutingKey: routingKey, Headers: headers, Body: body})
		fr, err := decodeFrame(routingKey, headers, body)
		if err != nil {
			if reasonOf(err) == "" {
				t.Fatalf("no reason for %v", err)
			}
			// A dead-lettered copy is read from the same headers.
			m := message{exchange: exchange, routingKeys: []string{routingKey}}
			if props, ok := headers["properties"].(amqp.Table); ok {
				m.props, _ = decodeProperties(props)
			}
			_ = tr.deadCopy("/", &m, now)
		} else {
			// Twice: the second time it is a redelivery of the same message.
			_ = tr.frame("/", &fr, now)
			_ = tr.frame("/", &fr, now.Add(time.Second))
			tr.drain("/", fr.queue, time.Time{}, now.Add(time.Minute), now.Add(time.Minute))
		}
		for _, o := range tr.take() {
			if o.MessageID == "" && o.TraceParent == "" {
				t.Fatalf("observation without an identity: %+v", o)
			}
			_ = spans.Add(&o)
		}
	})
}

// FuzzCeleryHeaders reads arbitrary headers as Celery protocol 2: a task
// it accepts has an id, a name and a retry count in range.
func FuzzCeleryHeaders(f *testing.F) {
	for _, d := range loadFrames(f) {
		props, _ := d.Headers["properties"].(amqp.Table)
		if h, ok := props["headers"].(amqp.Table); ok {
			f.Add(fuzzTable(h))
		}
	}
	f.Add(fuzzTable(amqp.Table{"task": "t", "id": "a", "retries": int8(-1)}))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, _ := (&fuzzReader{b: data}).value().(amqp.Table)
		task, ok, err := decodeCelery(h)
		switch {
		case err != nil && (ok || reasonOf(err) != "celery_headers"):
			t.Fatalf("refused with ok=%v reason %q", ok, reasonOf(err))
		case ok && (task.id == "" || task.name == "" || task.retries < 0 || task.retries > maxCeleryRetries):
			t.Fatalf("accepted a malformed task: %+v", task)
		}
		if ok {
			_, _, _ = decodeDeath(h)
		}
	})
}
