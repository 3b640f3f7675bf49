package natstapreceiver

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/natstapreceiver/internal/metadata"
)

func TestStampIndex(t *testing.T) {
	var x stampIndex
	base := time.Unix(1_800_000_000, 0)
	_, ok := x.storedAt(1)
	assert.False(t, ok, "empty")
	x.record(10, base.Add(100*time.Millisecond))
	x.record(11, base.Add(900*time.Millisecond)) // same second: not kept
	x.record(12, base.Add(2*time.Second+time.Millisecond))
	x.record(9, base.Add(3*time.Second)) // out of order: not kept
	_, ok = x.storedAt(9)
	assert.False(t, ok, "older than the index")
	for seq, want := range map[uint64]time.Time{10: base, 11: base, 12: base.Add(2 * time.Second), 1000: base.Add(2 * time.Second)} {
		got, ok := x.storedAt(seq)
		require.True(t, ok, seq)
		assert.Equal(t, want, got, seq)
	}
	x.forget(12)
	_, ok = x.storedAt(11)
	assert.False(t, ok, "forgotten")
	_, ok = x.storedAt(12)
	assert.True(t, ok, "the entry covering the floor stays")

	small := stampIndex{maxLen: 4}
	for i := 0; i < 10; i++ {
		small.record(uint64(i+1), base.Add(time.Duration(i)*time.Second))
	}
	assert.LessOrEqual(t, len(small.seqs), 4, "bounded")
	got, ok := small.storedAt(10)
	require.True(t, ok)
	assert.Equal(t, base.Add(9*time.Second), got)
}

func TestLinkCache(t *testing.T) {
	tp := func(n int) string { return fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b%d-01", n) }
	c := newLinkCache(2)
	c.put("S/1", tp(1))
	c.put("S/2", tp(2))
	c.put("S/2", tp(9))
	assert.Equal(t, tp(1), c.get("S/1"))
	assert.Equal(t, tp(2), c.get("S/2"))
	c.put("S/3", tp(3))
	assert.Empty(t, c.get("S/1"), "the oldest went first")
	assert.Equal(t, tp(3), c.get("S/3"))
	c.put("S/4", "00-not-a-traceparent"+strings.Repeat("x", 4096))
	assert.Empty(t, c.get("S/4"), "a malformed traceparent is not kept")
	assert.Equal(t, tp(3), c.get("S/3"), "nor does it push out a valid one")
}

func TestStreamStateAdvance(t *testing.T) {
	var s streamState
	s.advance(5)
	s.advance(3)
	assert.Equal(t, uint64(6), s.next.Load(), "never back")
}

func TestLifecycleWithoutBroker(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.URL = "nats://127.0.0.1:1" // nothing listens there
	cfg.Subjects = []string{"x"}
	set := receivertest.NewNopSettings(metadata.Type)
	f := NewFactory()
	tr, err := f.CreateTraces(context.Background(), set, cfg, nil)
	require.NoError(t, err)
	require.NoError(t, tr.Shutdown(context.Background()), "shutdown without start")
	tr, err = f.CreateTraces(context.Background(), set, cfg, nil)
	require.NoError(t, err)
	require.NoError(t, tr.Start(context.Background(), nil), "start does not wait for the broker")
	require.NoError(t, tr.Shutdown(context.Background()))
	require.NoError(t, tr.Shutdown(context.Background()), "twice")

	// The tap itself, not only the handle that stops it once.
	tr, err = f.CreateTraces(context.Background(), set, cfg, nil)
	require.NoError(t, err)
	nt := tr.(*tap.Handle[*natsTap]).Tap
	require.NoError(t, nt.Start(context.Background(), nil))
	require.NoError(t, nt.Shutdown(context.Background()))
	require.NoError(t, nt.Shutdown(context.Background()), "the tap's own Shutdown twice")
	require.NoError(t, tr.Shutdown(context.Background()))
}

// TestBadFramesCounted sends malformed acks and advisories on the
// subjects the tap reads: each is counted by reason, none is a span.
func TestBadFramesCounted(t *testing.T) {
	addr := localNATS(t)
	name := uniqueName("FTBAD")
	cfg := streamConfig(addr, name)
	nc, js := client(t, addr)
	createStream(t, js, name)
	r := startTap(t, cfg)

	require.NoError(t, nc.Publish(fmt.Sprintf("$JS.ACK.%s.workers.x.1.1.1795687992857729346.0", name), []byte("+ACK")))
	require.NoError(t, nc.Publish(fmt.Sprintf("$JS.ACK.%s.workers.1.1.1.1795687992857729346.0", name), []byte("+MAYBE")))
	require.NoError(t, nc.Publish(fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.workers", name), []byte(`{"type":`)))
	require.NoError(t, nc.Flush())

	want := map[string]int64{"ack_subject": 1, "ack_body": 1, "advisory": 1}
	eventually(t, "three decode errors", func() bool {
		m, err := r.tel.GetMetric("flowtrace.tap.decode_errors")
		if err != nil {
			return false
		}
		got := map[string]int64{}
		for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
			reason, _ := dp.Attributes.Value(attribute.Key("reason"))
			got[reason.AsString()] += dp.Value
		}
		return assert.ObjectsAreEqual(want, got)
	})
	r.flush(t)
	assert.Empty(t, r.spans(), "no span from bad input")
}

// TestNewerAckSubjectForm routes an ack in the newer subject form (with
// domain and account hash) through a real server: the tap reads it once.
func TestNewerAckSubjectForm(t *testing.T) {
	addr := localNATS(t)
	name := uniqueName("FTV2")
	cfg := streamConfig(addr, name)
	nc, js := client(t, addr)
	createStream(t, js, name)
	r := startTap(t, cfg)

	require.NoError(t, nc.Publish(fmt.Sprintf("$JS.ACK.hub.5dMpdnqFr6mzVYwS7lDy6X.%s.workers.2.7.9.1795687992857729346.0.xK9Vb1", name), []byte("+ACK")))
	require.NoError(t, nc.Publish(fmt.Sprintf("$JS.ACK.%s.workers.1.8.10.1795687992857729346.0", name), []byte("+ACK")))
	require.NoError(t, nc.Flush())
	settled := func(seq int) map[string]any {
		return map[string]any{tap.AttrMessageID: fmt.Sprintf("%s/%d", name, seq), tap.AttrOutcome: tap.Ack, tap.AttrConsumerGroup: "workers"}
	}
	eventually(t, "both acks", func() bool { return r.has(settled(7)) && r.has(settled(8)) })
	r.flush(t)
	assert.Equal(t, 1, r.count(settled(7)), "the newer form, once")
	assert.Equal(t, 1, r.count(settled(8)), "the older form, once")
	assert.True(t, r.has(map[string]any{tap.AttrMessageID: name + "/7", tap.AttrAttempt: 2}))
}

// TestMsgIDCleaned publishes with a Nats-Msg-Id that is not fit for a span:
// the span carries it cleaned, and it is counted.
func TestMsgIDCleaned(t *testing.T) {
	addr := localNATS(t)
	name := uniqueName("FTMSGID")
	cfg := streamConfig(addr, name)
	cfg.Subjects = []string{"core" + name + ".>"}
	nc, js := client(t, addr)
	createStream(t, js, name)
	r := startTap(t, cfg)

	raw := "id-\xff-" + strings.Repeat("x", 400)
	clean, _ := tap.CleanText(raw, tap.MaxText)
	for _, subject := range []string{name + ".orders", "core" + name + ".orders"} {
		m := nats.NewMsg(subject)
		m.Header.Set(headerMsgID, raw)
		m.Data = []byte("synthetic")
		require.NoError(t, nc.PublishMsg(m))
	}
	require.NoError(t, nc.Flush())
	eventually(t, "both publishes", func() bool { return r.count(map[string]any{tap.AttrOperationType: "send"}) == 2 })
	r.flush(t)
	assert.True(t, r.has(map[string]any{tap.AttrMessageID: clean}), "the core message is named by the cleaned id")
	assert.True(t, r.has(map[string]any{attrMsgID: clean}), "the stored message carries the cleaned id")
	for _, s := range r.spans() {
		for _, v := range s.Attributes().AsRaw() {
			if str, ok := v.(string); ok {
				assert.LessOrEqual(t, len(str), tap.MaxText)
				assert.True(t, utf8.ValidString(str))
			}
		}
	}
	m, err := r.tel.GetMetric("flowtrace.tap.decode_errors")
	require.NoError(t, err)
	var n int64
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		if reason, _ := dp.Attributes.Value(attribute.Key("reason")); reason.AsString() == "msg_id" {
			n += dp.Value
		}
	}
	assert.Equal(t, int64(2), n, "each changed id counted")
}

// TestShutdownDuringHandshake stops a tap while a server that accepted its
// connection never answers: Shutdown does not wait for the connect
// timeout (an hour here).
func TestShutdownDuringHandshake(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()

	cfg := createDefaultConfig()
	cfg.URL = "nats://" + l.Addr().String()
	cfg.Subjects = []string{"x"}
	set := receivertest.NewNopSettings(metadata.Type)
	nt, err := newTap(cfg, set)
	require.NoError(t, err)
	nt.connectTimeout = time.Hour
	require.NoError(t, nt.Start(context.Background(), nil))
	var conn net.Conn
	select {
	case conn = <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the tap did not connect")
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, nt.Shutdown(ctx), "the handshake ends with the tap")
	// The tap closed its side.
	_, err = conn.Read(make([]byte, 1))
	assert.Error(t, err)
}

// TestShutdownWaitsForHandlers has a message handler still running when
// the tap stops: its span is in the last batch, not lost after it.
func TestShutdownWaitsForHandlers(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.URL = "nats://127.0.0.1:1" // nothing listens there
	cfg.Subjects = []string{"x"}
	sink := new(consumertest.TracesSink)
	tr, err := NewFactory().CreateTraces(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)
	nt := tr.(*tap.Handle[*natsTap]).Tap
	require.NoError(t, tr.Start(context.Background(), nil))

	entered := make(chan struct{})
	handled := make(chan struct{})
	h := handle(nt, func(id string) {
		close(entered)
		// Still at work when Shutdown has closed the door.
		eventually(t, "the tap stopping", func() bool {
			nt.handlersMu.Lock()
			defer nt.handlersMu.Unlock()
			return nt.stopped
		})
		nt.observe(context.Background(), &tap.Observation{Kind: tap.Broadcast, Time: time.Now(), System: system, Destination: "x", MessageID: id})
	})
	go func() {
		defer close(handled)
		h("late")
	}()
	<-entered
	require.NoError(t, tr.Shutdown(context.Background()))
	<-handled
	assert.Equal(t, 1, sink.SpanCount(), "the late handler's span was sent")
	handle(nt, func(string) { t.Error("a handler ran after Shutdown") })("after")
}
