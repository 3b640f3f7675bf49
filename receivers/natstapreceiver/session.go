package natstapreceiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// Headers the tap reads. A headers-only delivery carries the body's size
// in Nats-Msg-Size instead of the body.
const (
	headerMsgID       = "Nats-Msg-Id"
	headerMsgSize     = "Nats-Msg-Size"
	headerTraceParent = "traceparent"
)

// Span attributes of their own that the tap adds.
const (
	attrStream    = "flowtrace.nats.stream"
	attrStreamSeq = "flowtrace.nats.stream_sequence"
	attrMsgID     = "flowtrace.nats.msg_id"
)

// Reasons of DeadLetter observations.
const reasonMaxDeliveries = "max_deliveries"

const (
	connectTimeout = 5 * time.Second
	requestTimeout = 10 * time.Second
)

// session is one connection to NATS: it lives until the connection is lost
// or the tap stops. Its goroutine owns attached; the subscriptions' and
// consumers' goroutines only read the session's fixed fields.
type session struct {
	t        *natsTap
	nc       *nats.Conn
	js       jetstream.JetStream
	broker   string
	attached map[*streamState]*attachment
}

// attachment is what a session holds for one stream.
type attachment struct {
	stream  jetstream.Stream
	subs    []*nats.Subscription
	consume jetstream.ConsumeContext
	// endSubs are the subscriptions to the advisories of messages that end
	// without an ack (terminated, dead lettered).
	endSubs []*nats.Subscription
}

// endsHandled reports whether no advisory of a message that ended without
// an ack is waiting to be handled.
func (a *attachment) endsHandled() bool {
	for _, sub := range a.endSubs {
		if n, _, err := sub.Pending(); err != nil || n > 0 {
			return false
		}
	}
	return true
}

// session runs one connection for tap.Run: connect, tap every stream and
// subject, poll the backlog until the connection is lost.
func (t *natsTap) session(ctx context.Context, connected tap.Connected) error {
	closed := make(chan struct{})
	var (
		mu   sync.Mutex
		lost error
	)
	opts := []nats.Option{
		nats.Name("flowtrace-nats-tap"),
		nats.NoReconnect(),
		nats.Timeout(t.connectTimeout),
		// Connecting ends with the tap: the dialer resolves and connects
		// under ctx, and a connection still in its handshake is closed
		// when ctx ends.
		nats.SetCustomDialer(&ctxDialer{ctx: ctx, dial: t.dial, timeout: t.connectTimeout}),
		nats.SkipHostLookup(),
		// A server that stops answering is given up after about a minute.
		nats.PingInterval(20 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				lost = err
			}
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				t.tel.DecodeError(ctx, "slow_consumer", err)
				return
			}
			t.logger.Debug("NATS error", zap.Error(err))
		}),
	}
	if t.cfg.Username != "" {
		opts = append(opts, nats.UserInfo(string(t.cfg.Username), string(t.cfg.Password)))
	}
	if t.cfg.Token != "" {
		opts = append(opts, nats.Token(string(t.cfg.Token)))
	}
	nc, err := nats.Connect(t.cfg.URL, opts...)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	s := &session{t: t, nc: nc, js: js, broker: brokerName(nc), attached: map[*streamState]*attachment{}}
	defer s.detachAll()

	for _, subject := range t.cfg.Subjects {
		if _, err := nc.Subscribe(subject, handle(t, func(m *nats.Msg) { t.onCore(ctx, m, time.Now()) })); err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
	}
	s.attachAll(ctx)
	fctx, cancel := context.WithTimeout(ctx, t.connectTimeout)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	connected()
	if t.onConnected != nil {
		t.onConnected()
	}
	t.logger.Info("NATS tap connected", zap.String("broker", s.broker), zap.Int("streams_attached", len(s.attached)))
	s.poll(ctx)

	ticker := time.NewTicker(t.cfg.PollInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-closed:
			mu.Lock()
			defer mu.Unlock()
			if lost == nil {
				lost = errors.New("connection closed")
			}
			return lost
		case <-ticker.C:
			s.attachAll(ctx)
			s.poll(ctx)
		}
	}
}

// ctxDialer connects under the tap's context: a dial in progress ends
// with it, and so does the connection, so nothing in the client waits on
// a server after the tap stopped.
type ctxDialer struct {
	ctx     context.Context
	dial    func(ctx context.Context, network, address string) (net.Conn, error)
	timeout time.Duration
}

func (d *ctxDialer) Dial(network, address string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(d.ctx, d.timeout)
	defer cancel()
	c, err := d.dial(ctx, network, address)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(d.ctx, func() { _ = c.Close() })
	return &ctxConn{Conn: c, stop: stop}, nil
}

// ctxConn is a connection closed when the tap's context ends.
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// brokerName is the server's name when it was given one, else the host and
// port connected to.
func brokerName(nc *nats.Conn) string {
	if name := nc.ConnectedServerName(); name != "" && name != nc.ConnectedServerId() {
		return name
	}
	if u, err := url.Parse(nc.ConnectedUrlRedacted()); err == nil && u.Host != "" {
		return u.Host
	}
	return ""
}

func (s *session) attachAll(ctx context.Context) {
	for _, st := range s.t.streams {
		if s.attached[st] != nil {
			continue
		}
		a, err := s.attach(ctx, st)
		if err != nil {
			s.t.logger.Warn("cannot tap stream; retrying at the next poll", zap.String("stream", st.name), zap.Error(err))
			continue
		}
		s.attached[st] = a
	}
}

func (s *session) detachAll() {
	for _, a := range s.attached {
		if a.consume != nil {
			a.consume.Stop()
		}
	}
}

// attach taps one stream: its stored messages from where the tap left off,
// its acks and its consumer advisories.
func (s *session) attach(ctx context.Context, st *streamState) (*attachment, error) {
	t := s.t
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	stream, err := s.js.Stream(rctx, st.name)
	if err != nil {
		return nil, fmt.Errorf("stream info: %w", err)
	}
	a := &attachment{stream: stream}
	info := stream.CachedInfo()
	if info.Config.Retention == jetstream.WorkQueuePolicy {
		// A work queue allows no second consumer of the same messages:
		// only the consumer side is seen.
		t.logger.Info("stream is a work queue: its publishes are not seen, only acks and advisories", zap.String("stream", st.name))
	} else {
		if st.next.Load() == 0 {
			start := uint64(1)
			if t.cfg.DeliverPolicy == DeliverNew {
				start = info.State.LastSeq + 1
			}
			st.next.CompareAndSwap(0, start)
		}
		cfg := jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:   st.next.Load(),
			HeadersOnly:   true,
			// A name of its own per attach: the reader of a lost
			// connection stays on the server until it expires, and a
			// reader of the same name cannot start again at another
			// sequence.
			NamePrefix: "flowtrace_tap_" + t.runID + "_" + strconv.FormatUint(t.attaches.Add(1), 10),
			// Gone soon after the tap is: on an interest stream it holds
			// messages back only that long.
			InactiveThreshold: time.Minute,
		}
		if st.filter != "" {
			cfg.FilterSubjects = []string{st.filter}
		}
		cons, err := s.js.OrderedConsumer(rctx, st.name, cfg)
		if err != nil {
			return nil, fmt.Errorf("ordered consumer: %w", err)
		}
		a.consume, err = cons.Consume(handle(t, func(m jetstream.Msg) { t.onStored(ctx, st, m) }),
			jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
				t.logger.Debug("stream reader", zap.String("stream", st.name), zap.Error(err))
			}))
		if err != nil {
			return nil, fmt.Errorf("consume: %w", err)
		}
	}
	subscribe := func(subject string, handler nats.MsgHandler) error {
		sub, err := s.nc.Subscribe(subject, handler)
		if err != nil {
			return fmt.Errorf("subscribe %s: %w", subject, err)
		}
		a.subs = append(a.subs, sub)
		return nil
	}
	onAckV1 := handle(t, func(m *nats.Msg) { t.onAck(ctx, st, false, m, time.Now()) })
	onAckV2 := handle(t, func(m *nats.Msg) { t.onAck(ctx, st, true, m, time.Now()) })
	onAdvisory := handle(t, func(m *nats.Msg) { t.onAdvisory(ctx, st, m) })
	for _, sub := range []struct {
		subject string
		handler nats.MsgHandler
		ends    bool // tells of messages settled for good
	}{
		{"$JS.ACK." + st.name + ".>", onAckV1, false},
		{"$JS.ACK.*.*." + st.name + ".>", onAckV2, false},
		{"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES." + st.name + ".*", onAdvisory, true},
		{"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + st.name + ".*", onAdvisory, true},
		{"$JS.EVENT.ADVISORY.CONSUMER.MSG_NAKED." + st.name + ".*", onAdvisory, false},
		{"$JS.EVENT.METRIC.CONSUMER.ACK." + st.name + ".*", onAdvisory, false},
	} {
		if err := subscribe(sub.subject, sub.handler); err != nil {
			a.detach()
			return nil, err
		}
		if sub.ends {
			a.endSubs = append(a.endSubs, a.subs[len(a.subs)-1])
		}
	}
	return a, nil
}

func (a *attachment) detach() {
	if a.consume != nil {
		a.consume.Stop()
	}
	for _, sub := range a.subs {
		_ = sub.Unsubscribe()
	}
}

// onStored turns a message the stream stored into a publish.
func (t *natsTap) onStored(ctx context.Context, st *streamState, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		t.tel.DecodeError(ctx, "metadata", err)
		return
	}
	seq := md.Sequence.Stream
	headers := m.Headers()
	id := messageID(st.name, seq)
	o := tap.Observation{
		Kind:        tap.Publish,
		Time:        md.Timestamp,
		System:      system,
		Destination: m.Subject(),
		MessageID:   id,
		BodySize:    -1,
		TraceParent: traceParent(headers),
		Attrs:       []tap.Attr{tap.String(attrStream, st.name), tap.Int(attrStreamSeq, int64(min(seq, 1<<63-1)))},
	}
	if size := headers.Get(headerMsgSize); size != "" {
		if n, err := strconv.ParseInt(size, 10, 64); err == nil && n >= 0 {
			o.BodySize = n
		} else {
			t.tel.DecodeError(ctx, "msg_size", errors.New("malformed Nats-Msg-Size"))
		}
	}
	if msgID := headers.Get(headerMsgID); msgID != "" {
		o.Attrs = append(o.Attrs, tap.String(attrMsgID, t.cleanMsgID(ctx, msgID)))
	}
	if o.TraceParent != "" {
		t.links.put(id, o.TraceParent)
	}
	st.stamps.record(seq, md.Timestamp)
	st.settle.readStored(seq, m.Subject(), md.Timestamp)
	t.observe(ctx, &o)
	st.advance(seq)
}

// onAck turns an ack seen at now into a delivery and, for an ack or a
// nak, its settlement. A terminate's settlement comes from its advisory:
// servers that do not understand a terminate with a reason ignore it. Each
// subject form has its own subscription (v2 or not); a subject the other
// form's pattern also matched is left to that subscription.
func (t *natsTap) onAck(ctx context.Context, st *streamState, v2 bool, m *nats.Msg, now time.Time) {
	ref, err := parseAckSubject(m.Subject)
	if err != nil {
		t.tel.DecodeError(ctx, "ack_subject", err)
		return
	}
	if ref.V2 != v2 || ref.Stream != st.name {
		return
	}
	kind, _, err := parseAckBody(m.Data)
	if err != nil {
		t.tel.DecodeError(ctx, "ack_body", err)
		return
	}
	id := messageID(ref.Stream, ref.StreamSeq)
	o := tap.Observation{
		Kind:          tap.Deliver,
		Time:          now,
		System:        system,
		Destination:   ref.Stream,
		MessageID:     id,
		ConsumerGroup: ref.Consumer,
		Attempt:       attempt(ref.Delivered),
		TraceParent:   t.links.get(id),
	}
	// A terminate is settled for good here already: the floor passes it.
	st.settle.saw(ref.Consumer, ref.StreamSeq, o.Attempt, kind == ackAck || kind == ackTerm)
	t.observe(ctx, &o)
	switch kind {
	case ackAck:
		o.Kind, o.Outcome = tap.Settle, tap.Ack
	case ackNak:
		o.Kind, o.Outcome = tap.Settle, tap.Nack
	default:
		return
	}
	t.observe(ctx, &o)
}

// onAdvisory turns a consumer advisory into a dead letter or settlement,
// or an ack metric into the time of the delivery it acked.
func (t *natsTap) onAdvisory(ctx context.Context, st *streamState, m *nats.Msg) {
	adv, err := decodeAdvisory(m.Data)
	if err != nil {
		t.tel.DecodeError(ctx, "advisory", err)
		return
	}
	if adv.Stream != st.name {
		return
	}
	id := messageID(adv.Stream, adv.StreamSeq)
	o := tap.Observation{
		Time:          adv.Timestamp,
		System:        system,
		Destination:   adv.Stream,
		MessageID:     id,
		ConsumerGroup: adv.Consumer,
		Attempt:       attempt(adv.Deliveries),
		TraceParent:   t.links.get(id),
	}
	switch adv.Type {
	case advMaxDeliver:
		o.Kind, o.Reason = tap.DeadLetter, reasonMaxDeliveries
	case advTerminated:
		o.Kind, o.Outcome, o.Reason = tap.Settle, tap.Term, adv.Reason
	case advNak:
		o.Kind, o.Outcome = tap.Settle, tap.Nack
	case advAckMetric:
		o.Kind = tap.Deliver
		o.Time = adv.Timestamp.Add(-time.Duration(adv.AckTime))
	}
	st.settle.saw(adv.Consumer, adv.StreamSeq, o.Attempt, adv.Type == advMaxDeliver || adv.Type == advTerminated)
	t.observe(ctx, &o)
}

// onCore turns a message published on a core subject into a publish. It is
// named by its Nats-Msg-Id, else by the tap's own sequence.
func (t *natsTap) onCore(ctx context.Context, m *nats.Msg, now time.Time) {
	id := m.Header.Get(headerMsgID)
	if id == "" {
		id = t.runID + "." + strconv.FormatUint(t.coreSeq.Add(1), 10)
	} else {
		id = t.cleanMsgID(ctx, id)
	}
	o := tap.Observation{
		Kind:        tap.Broadcast,
		Time:        now,
		System:      system,
		Destination: m.Subject,
		MessageID:   id,
		BodySize:    int64(len(m.Data)),
		TraceParent: traceParent(m.Header),
	}
	t.observe(ctx, &o)
}

// cleanMsgID makes a Nats-Msg-Id, which any publisher sets, fit for a
// span: one that had to change is counted.
func (t *natsTap) cleanMsgID(ctx context.Context, id string) string {
	clean, ok := tap.CleanText(id, tap.MaxText)
	if !ok {
		t.tel.DecodeError(ctx, "msg_id", errMsgID)
	}
	return clean
}

var errMsgID = errors.New("unprintable or overlong Nats-Msg-Id")

func traceParent(h nats.Header) string {
	if v := h.Get(headerTraceParent); v != "" {
		return v
	}
	return h.Get("Traceparent")
}
