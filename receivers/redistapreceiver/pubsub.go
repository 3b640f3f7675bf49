package redistapreceiver

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// pubsubBatch bounds the messages gathered into one batch of spans, and
// pubsubLinger how long the first of them waits for more.
const (
	pubsubBatch  = 1000
	pubsubLinger = 200 * time.Millisecond
)

// runPubSub reports every message published on a channel matching the
// patterns. Pub/sub messages are fire-and-forget with opaque payloads: no
// id, no headers, no acknowledgement. Each gets the id
// "<channel>/<run>.<sequence>", unique to this run of the tap.
func (t *redisTap) runPubSub(ctx context.Context, ps *redis.PubSub) error {
	out := t.newBatch(ctx)
	defer t.flush(out)
	deadline := time.Time{}
	for {
		timeout := pubsubLinger
		if out.spans.Len() > 0 {
			timeout = max(time.Until(deadline), time.Millisecond)
		}
		msg, err := ps.ReceiveTimeout(ctx, timeout)
		var netErr interface{ Timeout() bool }
		switch {
		case err == nil:
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &netErr) && netErr.Timeout():
			t.flush(out)
			continue
		default:
			return fmt.Errorf("pubsub: %w", err)
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue // subscription changes, pongs
		}
		var dirty bool
		channel := cleanText(m.Channel, &dirty)
		if dirty {
			out.decodeError(&decodeError{reasonText, errText})
		}
		t.pubsubSeq++
		if out.spans.Len() == 0 {
			deadline = time.Now().Add(pubsubLinger)
		}
		out.add(&tap.Observation{
			Kind:        tap.Broadcast,
			Time:        time.Now(),
			System:      systemRedis,
			Destination: channel,
			MessageID:   channel + "/" + t.pubsubRun + "." + strconv.FormatUint(t.pubsubSeq, 10),
			BodySize:    int64(len(m.Payload)),
			Attrs:       []tap.Attr{tap.String("messaging.redis.pattern", m.Pattern)},
		})
		if out.spans.Len() >= pubsubBatch || !time.Now().Before(deadline) {
			t.flush(out)
		}
	}
}
