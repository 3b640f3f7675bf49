package natstapreceiver

import (
	"context"
	"fmt"
	"net"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/internal/taptest"
)

func TestMatchSubject(t *testing.T) {
	for _, tc := range []struct {
		filter, subject string
		want            bool
	}{
		{"orders.eu", "orders.eu", true},
		{"orders.eu", "orders.us", false},
		{"orders.*", "orders.eu", true},
		{"orders.*", "orders.eu.paris", false},
		{"orders.*", "orders", false},
		{"orders.>", "orders.eu.paris", true},
		{"orders.>", "orders", false},
		{">", "orders", true},
		{"*.eu", "orders.eu", true},
		{"orders.eu.paris", "orders.eu", false},
	} {
		assert.Equal(t, tc.want, matchSubject(tc.filter, tc.subject), "%s ~ %s", tc.filter, tc.subject)
	}
	assert.True(t, matchesAny(nil, "anything"), "no filter: every subject")
	assert.True(t, matchesAny([]string{"a.>", "b.*"}, "b.x"))
	assert.False(t, matchesAny([]string{"a.>", "b.*"}, "c.x"))
}

// TestSettleTracker follows one consumer through polls: what goes below
// its floor unseen is acked once the grace has passed; what was seen
// acked, terminated or dead lettered is not, even when the advisory comes
// after the floor moved; subjects outside its filter are not its messages.
func TestSettleTracker(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	at := func(d time.Duration) time.Time { return base.Add(d) }
	x := newSettleTracker()
	for seq := uint64(1); seq <= 8; seq++ {
		subject := "orders.eu"
		if seq == 7 {
			subject = "orders.us"
		}
		x.readStored(seq, subject, at(0))
	}
	filters := []string{"orders.eu"}
	assert.Empty(t, x.poll("workers", filters, 0, nil, at(time.Second), true), "first sight: the floor is where tracking starts")

	x.saw("workers", 1, 1, true)  // acked
	x.saw("workers", 2, 3, false) // delivered three times, then acked unseen
	x.saw("workers", 3, 1, true)  // terminated, advisory before the floor moved
	assert.Empty(t, x.poll("workers", filters, 5, nil, at(2*time.Second), true), "nothing before the grace")
	x.saw("workers", 4, 3, true) // dead lettered, advisory after the floor moved
	assert.Empty(t, x.poll("workers", filters, 5, nil, at(3*time.Second), false), "advisories waiting: nothing yet")
	got := x.poll("workers", filters, 8, nil, at(2*time.Second+inferGrace), true)
	require.Len(t, got, 2, "2 and 5 acked unseen")
	assert.Equal(t, uint64(2), got[0].seq)
	assert.Equal(t, 3, got[0].attempt, "the last delivery attempt seen")
	assert.Equal(t, uint64(5), got[1].seq)
	assert.Equal(t, 1, got[1].attempt)
	assert.Equal(t, at(2*time.Second), got[1].at, "at the poll that saw the floor pass it")
	assert.True(t, got[0].at.After(at(time.Second)) && got[0].at.Before(got[1].at), "spread between the polls: %s", got[0].at)

	x.saw("workers", 6, 1, true)
	got = x.poll("workers", filters, 8, nil, at(time.Hour), true)
	require.Len(t, got, 1, "7 is not the consumer's; 6 was seen acked")
	assert.Equal(t, uint64(8), got[0].seq)
	assert.Empty(t, x.poll("workers", filters, 8, nil, at(2*time.Hour), true), "once")

	assert.Empty(t, x.poll("workers", filters, 2, nil, at(3*time.Hour), true), "a floor that goes back starts anew")
	x.forget(map[string]bool{})
	assert.Empty(t, x.consumers)
}

// TestSettlementsBeforeTheFirstPollAreKept: a consumer created after the
// tap started terminates a message before the tap first polls it. When its
// ack floor later passes the message, the terminate stands: no ack is
// inferred for it.
func TestSettlementsBeforeTheFirstPollAreKept(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	const first = 5_000_000 // a stream far along
	x := newSettleTracker()
	for seq := uint64(first); seq < first+2; seq++ {
		x.readStored(seq, "orders", base)
	}
	x.saw("workers", first+1, 1, true) // terminated, before the first poll
	assert.Empty(t, x.poll("workers", nil, first-1, nil, base.Add(time.Second), true), "first sight")
	assert.Empty(t, x.poll("workers", nil, first+1, nil, base.Add(2*time.Second), true))
	got := x.poll("workers", nil, first+1, nil, base.Add(2*time.Second+inferGrace), true)
	require.Len(t, got, 1, "the first acked unseen; the second was terminated")
	assert.Equal(t, uint64(first), got[0].seq)
}

// TestAFloorAheadOfTheReader: the ack floor passes messages the stream
// reader has not read yet (it waits while the pipeline refuses spans).
// They are inferred acked once read, as the others are.
func TestAFloorAheadOfTheReader(t *testing.T) {
	base := time.Unix(1_800_000_000, 0)
	x := newSettleTracker()
	for seq := uint64(1); seq <= 3; seq++ {
		x.readStored(seq, "orders", base)
	}
	assert.Empty(t, x.poll("workers", nil, 0, nil, base, true), "first sight")
	assert.Empty(t, x.poll("workers", nil, 6, nil, base.Add(time.Second), true), "before the grace")
	for seq := uint64(4); seq <= 6; seq++ {
		x.readStored(seq, "orders", base.Add(2*time.Second))
	}
	var inferred []uint64
	for _, poll := range []time.Duration{3 * time.Second, 3*time.Second + inferGrace, 4*time.Second + 2*inferGrace} {
		for _, a := range x.poll("workers", nil, 6, nil, base.Add(poll), true) {
			inferred = append(inferred, a.seq)
		}
	}
	assert.Equal(t, []uint64{1, 2, 3, 4, 5, 6}, inferred)
}

func TestSettleTrackerBounded(t *testing.T) {
	x := newSettleTracker()
	now := time.Unix(1_800_000_000, 0)
	for seq := uint64(1); seq <= maxTracked+10; seq++ {
		x.readStored(seq, "s", now)
	}
	assert.LessOrEqual(t, len(x.read), maxTracked)
	first := x.read[0].seq

	x.poll("c", nil, first, nil, now, true)
	far := first + maxSetBits + 100
	x.saw("c", far, 1, true) // too far above the floor to be kept
	for seq := first + 1; seq <= maxTracked+10; seq++ {
		x.saw("c", seq, 2, false)
	}
	c := x.consumers["c"]
	assert.LessOrEqual(t, len(c.attempts), maxTracked)
	assert.LessOrEqual(t, len(c.settled.words), maxSetBits/64)
	assert.Equal(t, far, c.blind)
	x.poll("c", nil, maxTracked+10, nil, now, true)
	assert.Empty(t, x.poll("c", nil, maxTracked+10, nil, now.Add(inferGrace), true),
		"nothing inferred where a settlement may not have been kept")
}

func TestSeqSet(t *testing.T) {
	var b seqSet
	b.dropBelow(100)
	assert.Equal(t, uint64(64), b.base)
	for _, seq := range []uint64{100, 101, 164, 300} {
		require.True(t, b.add(seq))
	}
	assert.False(t, b.add(64+maxSetBits), "too far")
	assert.True(t, b.has(100) && b.has(164) && b.has(300))
	assert.False(t, b.has(102) || b.has(50) || b.has(10_000))
	b.dropBelow(165)
	assert.Equal(t, uint64(128), b.base)
	assert.False(t, b.has(100), "dropped")
	assert.True(t, b.has(164) && b.has(300), "kept")
	b.dropBelow(1 << 30)
	assert.Empty(t, b.words)
	assert.False(t, b.has(300))
}

// cutter lets a test cut the tap's connections and hold its reconnection.
type cutter struct {
	mu    sync.Mutex
	conns []net.Conn
	gate  chan struct{}
}

func (c *cutter) dial(ctx context.Context, network, address string) (net.Conn, error) {
	c.mu.Lock()
	gate := c.gate
	c.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, address)
	if err == nil {
		c.mu.Lock()
		c.conns = append(c.conns, conn)
		c.mu.Unlock()
	}
	return conn, err
}

// cut closes the tap's connections and holds new ones until reopen.
func (c *cutter) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gate = make(chan struct{})
	for _, conn := range c.conns {
		_ = conn.Close()
	}
	c.conns = nil
}

func (c *cutter) reopen() {
	c.mu.Lock()
	defer c.mu.Unlock()
	close(c.gate)
	c.gate = nil
}

// waitFloor waits until the server has consumer's ack floor at seq.
func waitFloor(t *testing.T, c jetstream.Consumer, seq uint64) {
	t.Helper()
	eventually(t, fmt.Sprintf("the ack floor at %d", seq), func() bool {
		info, err := c.Info(context.Background())
		return err == nil && info.AckFloor.Stream == seq
	})
}

// hopsByGroup correlates the tap's spans and returns, per message, its
// hops' outcomes by consumer group.
func hopsByGroup(t *testing.T, r *running) map[string]map[string]model.HopOutcome {
	t.Helper()
	r.flush(t)
	res := taptest.Correlate(t, correlator.Config{}, r.traces.AllTraces()...)
	out := map[string]map[string]model.HopOutcome{}
	for _, h := range res.Hops {
		if out[h.MessageID] == nil {
			out[h.MessageID] = map[string]model.HopOutcome{}
		}
		out[h.MessageID][h.ConsumerGroup] = h.Outcome
	}
	return out
}

// TestAckAllInferred has an AckAll consumer ack only the last message of
// a batch and an AckNone consumer read them all: every hop is acked.
func TestAckAllInferred(t *testing.T) {
	addr := localNATS(t)
	name := uniqueName("FTACKALL")
	cfg := streamConfig(addr, name)
	cfg.PollInterval = 100 * time.Millisecond
	_, js := client(t, addr)
	stream := createStream(t, js, name)
	ctx := context.Background()
	batch, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "batch", AckPolicy: jetstream.AckAllPolicy, AckWait: time.Minute})
	require.NoError(t, err)
	firehose, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "firehose", AckPolicy: jetstream.AckNonePolicy})
	require.NoError(t, err)
	r := startTap(t, cfg)

	const n = 5
	for i := 1; i <= n; i++ {
		_, err := js.Publish(ctx, fmt.Sprintf("%s.jobs.%d", name, i), []byte("synthetic job"))
		require.NoError(t, err)
	}
	eventually(t, "the publishes", func() bool { return r.count(map[string]any{tap.AttrOperationType: "send"}) == n })
	var last jetstream.Msg
	got := 0
	for got < n {
		msgs, err := batch.Fetch(n-got, jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		for m := range msgs.Messages() {
			last = m
			got++
		}
	}
	require.NoError(t, last.DoubleAck(ctx), "one ack for the whole batch")
	waitFloor(t, batch, n)
	got = 0
	for got < n {
		msgs, err := firehose.Fetch(n-got, jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		for range msgs.Messages() {
			got++
		}
	}
	waitFloor(t, firehose, n)

	inferred := func(group string) int {
		return r.count(map[string]any{tap.AttrConsumerGroup: group, tap.AttrOutcome: tap.Ack, tap.AttrInferred: true})
	}
	eventually(t, "the acks the floors tell of", func() bool { return inferred("batch") >= n-1 && inferred("firehose") == n })
	hops := hopsByGroup(t, r)
	require.Len(t, hops, n)
	for seq := 1; seq <= n; seq++ {
		id := messageID(name, uint64(seq))
		assert.Equal(t, map[string]model.HopOutcome{"batch": model.HopAcked, "firehose": model.HopAcked}, hops[id], id)
	}
	seen := 0
	for _, s := range r.spans() {
		if _, inferred := s.Attributes().Get(tap.AttrInferred); !inferred &&
			spanMatches(s, map[string]any{tap.AttrConsumerGroup: "batch", tap.AttrOutcome: tap.Ack, tap.AttrMessageID: messageID(name, n)}) {
			seen++
		}
	}
	assert.Equal(t, 1, seen, "the one ack sent was seen")
}

// TestAcksWhileDisconnected acks messages while the tap has lost its
// connection: once back, it infers the acks from the ack floor, and no hop
// is left unsettled.
func TestAcksWhileDisconnected(t *testing.T) {
	addr := localNATS(t)
	name := uniqueName("FTAWAY")
	cfg := streamConfig(addr, name)
	cfg.PollInterval = 100 * time.Millisecond
	cfg.Reconnect = tap.Backoff{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	_, js := client(t, addr)
	stream := createStream(t, js, name)
	ctx := context.Background()
	workers, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, AckWait: time.Minute})
	require.NoError(t, err)
	cut := &cutter{}
	r := startTap(t, cfg, func(nt *natsTap) { nt.dial = cut.dial })

	const n = 3
	for i := 1; i <= n; i++ {
		_, err := js.Publish(ctx, fmt.Sprintf("%s.jobs.%d", name, i), []byte("synthetic job"))
		require.NoError(t, err)
	}
	eventually(t, "the publishes", func() bool { return r.count(map[string]any{tap.AttrOperationType: "send"}) == n })
	var msgs []jetstream.Msg
	for len(msgs) < n {
		b, err := workers.Fetch(n-len(msgs), jetstream.FetchMaxWait(time.Second))
		require.NoError(t, err)
		for m := range b.Messages() {
			msgs = append(msgs, m)
		}
	}

	cut.cut()
	for _, m := range msgs {
		require.NoError(t, m.DoubleAck(ctx))
	}
	waitFloor(t, workers, n)
	cut.reopen()
	r.waitConnected(t)

	eventually(t, "the acks made while away", func() bool {
		return r.count(map[string]any{tap.AttrConsumerGroup: "workers", tap.AttrOutcome: tap.Ack, tap.AttrInferred: true}) == n
	})
	hops := hopsByGroup(t, r)
	var ids []string
	for id, groups := range hops {
		ids = append(ids, id)
		assert.Equal(t, map[string]model.HopOutcome{"workers": model.HopAcked}, groups, id)
	}
	sort.Strings(ids)
	assert.Equal(t, []string{messageID(name, 1), messageID(name, 2), messageID(name, 3)}, ids)
	assert.Equal(t, n, r.count(map[string]any{tap.AttrConsumerGroup: "workers", tap.AttrOutcome: tap.Ack}), "no ack was seen")

	// The stream is read again where the tap left it.
	_, err = js.Publish(ctx, name+".jobs.4", []byte("synthetic job"))
	require.NoError(t, err)
	eventually(t, "the publish after the reconnect", func() bool {
		return r.has(map[string]any{tap.AttrOperationType: "send", tap.AttrMessageID: messageID(name, 4)})
	})
	r.flush(t)
	assert.Equal(t, n+1, r.count(map[string]any{tap.AttrOperationType: "send"}), "each publish once")
}
