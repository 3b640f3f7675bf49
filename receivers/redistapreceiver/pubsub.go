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

// A pub/sub connection silent for pubsubPingAfter is pinged; without a
// reply within pubsubPongWait it is taken as lost (a half-open connection
// would otherwise look like quiet channels for good).
const (
	pubsubPingAfter = 10 * time.Second
	pubsubPongWait  = 10 * time.Second
)

// runPubSub reports every message published on a channel matching the
// patterns. Pub/sub messages are fire-and-forget with opaque payloads: no
// id, no headers, no acknowledgement. Each gets the id
// "<channel>/<run>.<sequence>", unique to this run of the tap.
func (t *redisTap) runPubSub(ctx context.Context, ps *redis.PubSub) error {
	out := t.newBatch(ctx)
	defer t.flush(out)
	deadline := time.Time{}
	heard := time.Now() // when the connection last brought anything
	var pinged time.Time
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
			switch {
			case pinged.IsZero() && time.Since(heard) >= t.pingAfter:
				if err := ps.Ping(ctx); err != nil {
					return fmt.Errorf("pubsub ping: %w", err)
				}
				pinged = time.Now()
			case !pinged.IsZero() && time.Since(pinged) >= t.pongWait:
				return fmt.Errorf("pubsub: no reply to a ping in %s", t.pongWait)
			}
			continue
		default:
			return fmt.Errorf("pubsub: %w", err)
		}
		heard, pinged = time.Now(), time.Time{}
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
