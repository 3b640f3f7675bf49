package rabbitmqtapreceiver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver/internal/metadata"
)

// frameRecord is one frame of a batch: where it came from and what the
// tracker made of it.
type frameRecord struct {
	vhost  int
	tag    uint64
	digest uint64
	obs    []tap.Observation
}

// incoming is a delivery from the tap's queue of one vhost.
type incoming struct {
	vhost int
	d     amqp.Delivery
}

// vhostConn is the connection and channel reading one vhost's queue.
type vhostConn struct {
	conn *amqp.Connection
	ch   *amqp.Channel
}

// session reads the tap's queue in every vhost until a connection is lost
// or ctx ends.
func (t *rabbitTap) session(ctx context.Context, connected tap.Connected) error {
	// A lost connection ends the session's ctx with its cause, so a batch
	// waiting for the pipeline stops waiting: its frames come again.
	ctx, cancel := context.WithCancelCause(ctx)
	var forwarders sync.WaitGroup
	conns := make([]vhostConn, 0, len(t.cfg.VHosts))
	defer func() {
		cancel(nil)
		for _, c := range conns {
			// Not waiting long for a broker that does not answer.
			_ = c.conn.CloseDeadline(time.Now().Add(closeTimeout))
		}
		forwarders.Wait()
	}()

	in := make(chan incoming, t.cfg.Prefetch)
	for i, vhost := range t.cfg.VHosts {
		c, deliveries, closed, err := t.open(ctx, vhost)
		if err != nil {
			return fmt.Errorf("vhost %q: %w", vhost, err)
		}
		conns = append(conns, c)
		forwarders.Add(1)
		go func() {
			defer forwarders.Done()
			for d := range deliveries {
				select {
				case in <- incoming{vhost: i, d: d}:
				case <-ctx.Done():
					return
				}
			}
			// A closed channel or connection is notified before its
			// deliveries end; without a notice the broker cancelled the
			// consumer (its queue was deleted, say).
			var err error = errors.New("consumer cancelled by the broker")
			select {
			case e := <-closed:
				if e != nil {
					err = e
				}
			default:
			}
			cancel(fmt.Errorf("vhost %q: %w", vhost, err))
		}()
	}
	if t.cfg.EnableTracing {
		for _, vhost := range t.cfg.VHosts {
			switched, err := t.api.setTracing(ctx, vhost, true)
			if err != nil {
				return fmt.Errorf("enable tracing on vhost %q: %w", vhost, err)
			}
			if switched {
				t.tracingSwitched(vhost)
			}
		}
	}
	connected()
	t.logger.Info("rabbitmq tap reading the firehose", zap.Strings("vhosts", t.cfg.VHosts))
	err := t.consume(ctx, conns, in)
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return err
}

// dialTimeout bounds the TCP connection and the AMQP handshake;
// closeTimeout bounds the wait for the broker's answer to a close.
const (
	dialTimeout  = 10 * time.Second
	closeTimeout = 2 * time.Second
)

// open connects to one vhost, declares and binds the tap's queue and
// starts consuming it. The end of ctx stops the connection attempt.
func (t *rabbitTap) open(ctx context.Context, vhost string) (vhostConn, <-chan amqp.Delivery, chan *amqp.Error, error) {
	var c vhostConn
	stop := func() bool { return false }
	dialer := &net.Dialer{Timeout: dialTimeout}
	conn, err := amqp.DialConfig(t.cfg.Endpoint, amqp.Config{
		Vhost:      vhost,
		SASL:       []amqp.Authentication{&amqp.PlainAuth{Username: t.cfg.Username, Password: string(t.cfg.Password)}},
		Heartbeat:  10 * time.Second,
		Properties: amqp.Table{"connection_name": "flowtrace " + metadata.Type.String()},
		Dial: func(network, addr string) (net.Conn, error) {
			nc, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			// The handshake has no heartbeat yet: bound it, and end it
			// with ctx. The client clears the deadline once open.
			if err := nc.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
				_ = nc.Close()
				return nil, err
			}
			stop = context.AfterFunc(ctx, func() { _ = nc.Close() })
			return nc, nil
		},
	})
	stop()
	if err == nil && ctx.Err() != nil {
		_ = conn.Close()
		err = ctx.Err()
	}
	if err != nil {
		return c, nil, nil, fmt.Errorf("dial: %w", err)
	}
	c.conn = conn
	fail := func(op string, err error) (vhostConn, <-chan amqp.Delivery, chan *amqp.Error, error) {
		_ = conn.CloseDeadline(time.Now().Add(closeTimeout))
		return c, nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	if c.ch, err = conn.Channel(); err != nil {
		return fail("channel", err)
	}
	if _, err := c.ch.QueueDeclare(t.cfg.Queue, true, false, false, false, t.queueArguments()); err != nil {
		var ae *amqp.Error
		if !errors.As(err, &ae) || ae.Code != amqp.PreconditionFailed {
			return fail("declare queue", err)
		}
		// The queue exists with other arguments (declared before its
		// bounds were set, or with other bounds): use it as it is.
		t.logger.Error("the tap's queue exists with other arguments than the tap's; "+
			"it is used as it is, possibly unbounded: delete it (its frames are lost) so the tap declares it with its bounds, "+
			"or bound it with a policy (max-length-bytes, max-length)",
			zap.String("vhost", vhost), zap.String("queue", t.cfg.Queue), zap.Error(err))
		if c.ch, err = conn.Channel(); err != nil {
			return fail("channel", err)
		}
		if _, err := c.ch.QueueDeclarePassive(t.cfg.Queue, true, false, false, false, nil); err != nil {
			return fail("declare queue", err)
		}
	}
	closed := c.ch.NotifyClose(make(chan *amqp.Error, 1))
	for _, key := range [...]string{publishPrefix + "#", deliverPrefix + "#"} {
		if err := c.ch.QueueBind(t.cfg.Queue, key, traceExchange, false, nil); err != nil {
			return fail("bind queue", err)
		}
	}
	if err := c.ch.Qos(t.cfg.Prefetch, 0, false); err != nil {
		return fail("qos", err)
	}
	// Exclusive: a second tap on the same queue would see half the frames
	// and infer wrongly from the rest.
	deliveries, err := c.ch.Consume(t.cfg.Queue, "flowtrace-tap", false, true, false, false, nil)
	if err != nil {
		return fail("consume", err)
	}
	return c, deliveries, closed, nil
}

// queueArguments declare the tap's queue: its type and its bounds.
func (t *rabbitTap) queueArguments() amqp.Table {
	args := amqp.Table{"x-queue-type": t.cfg.QueueType}
	if t.cfg.MaxQueueBytes > 0 {
		args["x-max-length-bytes"] = t.cfg.MaxQueueBytes
	}
	if t.cfg.MaxQueueLength > 0 {
		args["x-max-length"] = t.cfg.MaxQueueLength
	}
	if t.cfg.MaxQueueBytes > 0 || t.cfg.MaxQueueLength > 0 {
		args["x-overflow"] = "drop-head" // the only overflow every queue type has
	}
	return args
}

// consume batches frames: a batch goes to the traces pipeline when it is
// full or its oldest frame has waited batch::timeout, and its frames are
// acked once the pipeline took it (or refused it for good). While the
// pipeline refuses it for now, the emitter retries and the tap reads
// nothing more: the broker keeps the rest.
func (t *rabbitTap) consume(ctx context.Context, conns []vhostConn, in <-chan incoming) error {
	var batch []frameRecord
	defer func() {
		// Not acked: the broker gives these again to the next session.
		t.replay.keep(batch)
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	timing := false
	spans := tap.NewSpans(systemRabbitMQ, metadata.ScopeName)
	ack := func(vhost int, tag uint64) error { return conns[vhost].ch.Ack(tag, true) }
	for {
		select {
		case <-ctx.Done():
			return nil
		case item := <-in:
			batch = append(batch, t.handle(ctx, item))
			if len(batch) < t.cfg.Batch.MaxSize {
				if !timing {
					timer.Reset(t.cfg.Batch.Timeout)
					timing = true
				}
				continue
			}
		case <-timer.C:
			timing = false
		}
		if timing {
			timer.Stop()
			timing = false
		}
		if err := t.flush(ctx, ack, &batch, spans); err != nil {
			return err
		}
		batch = batch[:0]
	}
}

// frameDigest tells frames apart well enough to check that a frame given
// again is the one remembered: its exchange, routing key, the message's
// properties (message id, headers...) and body.
func frameDigest(d *amqp.Delivery) uint64 {
	h := xxhash.New()
	_, _ = h.WriteString(d.Exchange + "\x00" + d.RoutingKey + "\x00")
	if n, ok := integer(d.Headers["redelivered"]); ok && n != 0 {
		_, _ = h.WriteString("r")
	}
	digestValue(h, d.Headers["properties"])
	_, _ = h.Write(d.Body)
	return h.Sum64()
}

// digestValue writes a field value of a header table to h, tables with
// their keys sorted, each value prefixed by its kind.
func digestValue(h *xxhash.Digest, v any) {
	var buf [8]byte
	num := func(kind byte, n uint64) {
		binary.LittleEndian.PutUint64(buf[:], n)
		_, _ = h.Write([]byte{kind})
		_, _ = h.Write(buf[:])
	}
	str := func(kind byte, s string) {
		num(kind, uint64(len(s)))
		_, _ = h.WriteString(s)
	}
	switch v := v.(type) {
	case nil:
		_, _ = h.Write([]byte{'V'})
	case string:
		str('S', v)
	case []byte:
		str('x', string(v))
	case bool:
		if v {
			num('t', 1)
		} else {
			num('t', 0)
		}
	case float32:
		num('f', uint64(math.Float32bits(v)))
	case float64:
		num('d', math.Float64bits(v))
	case time.Time:
		num('T', uint64(v.Unix()))
	case amqp.Decimal:
		num('D', uint64(v.Scale)<<32|uint64(uint32(v.Value)))
	case []any:
		num('A', uint64(len(v)))
		for _, e := range v {
			digestValue(h, e)
		}
	case amqp.Table:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		num('F', uint64(len(keys)))
		for _, k := range keys {
			str('k', k)
			digestValue(h, v[k])
		}
	default:
		if n, ok := integer(v); ok {
			num('I', uint64(n))
		} else {
			str('?', fmt.Sprintf("%T", v))
		}
	}
}

// handle reads one delivery from the tap's queue.
func (t *rabbitTap) handle(ctx context.Context, item incoming) frameRecord {
	d := &item.d
	rec := frameRecord{vhost: item.vhost, tag: d.DeliveryTag, digest: frameDigest(d)}
	if d.Redelivered {
		if obs, ok := t.replay.take(item.vhost, rec.digest); ok {
			rec.obs = obs
			return rec
		}
	}
	vhost := t.cfg.VHosts[item.vhost]
	now := t.now()
	var err error
	switch {
	case d.Exchange == traceExchange:
		var f frame
		if f, err = decodeFrame(d.RoutingKey, d.Headers, d.Body); err == nil {
			err = t.tracker.frame(vhost, &f, now)
		}
	case d.Exchange == "" && d.RoutingKey == t.cfg.Queue:
		err = t.marker(vhost, d.Body)
	default:
		m := message{exchange: d.Exchange, routingKeys: []string{d.RoutingKey}, props: propertiesOf(d),
			bodySize: len(d.Body), bodySum: sha256.Sum256(d.Body)}
		err = t.tracker.deadCopy(vhost, &m, now)
	}
	switch {
	case errors.Is(err, errNotDeadLetter):
		t.logger.Debug("skipped a message from a dead-letter exchange that was not dead-lettered", zap.String("exchange", d.Exchange))
	case err != nil:
		t.tel.DecodeError(ctx, reasonOf(err), err)
	}
	rec.obs = t.tracker.take()
	return rec
}

// drainMarker is what the poller puts in the tap's queue when queues had
// no unacknowledged message: deliveries from them seen before Cutoff (and
// not before the queue's Since, where set) are settled, at At.
type drainMarker struct {
	// Token is the tap's own: anyone who may publish to the tap's queue
	// could otherwise settle deliveries.
	Token  string               `json:"token"`
	At     time.Time            `json:"at"`
	Cutoff time.Time            `json:"cutoff"`
	Queues []string             `json:"queues"`
	Since  map[string]time.Time `json:"since,omitempty"`
}

func (t *rabbitTap) marker(vhost string, body []byte) error {
	var m drainMarker
	if err := json.Unmarshal(body, &m); err != nil {
		return badFrame("marker", err.Error())
	}
	if subtle.ConstantTimeCompare([]byte(m.Token), []byte(t.markerToken)) != 1 {
		return badFrame("marker", "not the tap's token")
	}
	for _, q := range m.Queues {
		t.tracker.drain(vhost, q, m.Since[q], m.Cutoff, m.At)
	}
	return nil
}

// flush sends a batch's spans and acks its frames once the pipeline took
// them or refused them for good. An error is the end of ctx or a lost
// channel: the frames not acked stay in *batch (those of vhosts acked
// before the failure are dropped from it), the broker gives them again.
func (t *rabbitTap) flush(ctx context.Context, ack func(vhost int, tag uint64) error, batch *[]frameRecord, spans *tap.Spans) error {
	if len(*batch) == 0 {
		return nil
	}
	for i := range *batch {
		r := &(*batch)[i]
		for j := range r.obs {
			switch err := spans.Add(&r.obs[j]); {
			case errors.Is(err, tap.ErrNoIdentity):
				t.tel.DecodeError(ctx, "identity", err)
			case errors.Is(err, tap.ErrBadTraceParent):
				t.tel.DecodeError(ctx, "traceparent", err)
			}
		}
	}
	if err := t.emitter.Traces(ctx, spans); err != nil && !consumererror.IsPermanent(err) {
		return err
	}
	last := make([]uint64, len(t.cfg.VHosts))
	for _, r := range *batch {
		last[r.vhost] = max(last[r.vhost], r.tag)
	}
	for i, tag := range last {
		if tag == 0 {
			continue
		}
		if err := ack(i, tag); err != nil {
			// The vhosts before were acked: their frames do not come
			// again, so they must not be replayed.
			*batch = slices.DeleteFunc(*batch, func(r frameRecord) bool { return r.vhost < i })
			return fmt.Errorf("ack frames: %w", err)
		}
	}
	return nil
}

// replayCache holds the observations of frames handed out but not acked
// when a connection was lost, by vhost and digest: when the broker gives
// such a frame again, its observations are sent as they were, not inferred
// twice.
type replayCache struct {
	frames map[replayKey][][]tap.Observation
	n, max int
}

type replayKey struct {
	vhost  int
	digest uint64
}

func newReplayCache(maxFrames int) *replayCache {
	return &replayCache{frames: map[replayKey][][]tap.Observation{}, max: maxFrames}
}

// keep remembers the frames of a batch that was not acked.
func (c *replayCache) keep(batch []frameRecord) {
	if c.n+len(batch) > c.max {
		// Far more than the broker can have handed out: these are frames
		// of a queue that was purged or deleted meanwhile.
		clear(c.frames)
		c.n = 0
	}
	for _, r := range batch {
		k := replayKey{r.vhost, r.digest}
		c.frames[k] = append(c.frames[k], r.obs)
		c.n++
	}
}

// take returns the observations of a frame given again, if it is known.
func (c *replayCache) take(vhost int, digest uint64) ([]tap.Observation, bool) {
	k := replayKey{vhost, digest}
	list := c.frames[k]
	if len(list) == 0 {
		return nil, false
	}
	if len(list) == 1 {
		delete(c.frames, k)
	} else {
		c.frames[k] = list[1:]
	}
	c.n--
	return list[0], true
}
