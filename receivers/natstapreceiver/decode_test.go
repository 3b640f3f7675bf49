package natstapreceiver

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

func TestParseAckSubject(t *testing.T) {
	stored := time.Unix(0, 1795687992857729346)
	for _, tc := range []struct {
		name    string
		subject string
		want    ackRef
	}{
		{"v1", "$JS.ACK.ORDERS.workers.2.10.12.1795687992857729346.3",
			ackRef{Stream: "ORDERS", Consumer: "workers", Delivered: 2, StreamSeq: 10, ConsumerSeq: 12, Stored: stored, Pending: 3}},
		{"v2 with domain and token", "$JS.ACK.hub.5dMpdnqFr6mzVYwS7lDy6X.ORDERS.workers.2.10.12.1795687992857729346.3.xK9Vb1",
			ackRef{V2: true, Domain: "hub", Stream: "ORDERS", Consumer: "workers", Delivered: 2, StreamSeq: 10, ConsumerSeq: 12, Stored: stored, Pending: 3}},
		{"v2 without domain", "$JS.ACK._.5dMpdnqFr6mzVYwS7lDy6X.ORDERS.workers.1.1.1.1795687992857729346.0.xK9Vb1",
			ackRef{V2: true, Stream: "ORDERS", Consumer: "workers", Delivered: 1, StreamSeq: 1, ConsumerSeq: 1, Stored: stored}},
		{"v2 without token", "$JS.ACK._.5dMpdnqFr6mzVYwS7lDy6X.ORDERS.workers.1.1.1.1795687992857729346.0",
			ackRef{V2: true, Stream: "ORDERS", Consumer: "workers", Delivered: 1, StreamSeq: 1, ConsumerSeq: 1, Stored: stored}},
		{"v2 with more tokens", "$JS.ACK._.hash.ORDERS.workers.1.1.1.1795687992857729346.0.tok.more",
			ackRef{V2: true, Stream: "ORDERS", Consumer: "workers", Delivered: 1, StreamSeq: 1, ConsumerSeq: 1, Stored: stored}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseAckSubject(tc.subject)
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParseAckSubjectRefuses(t *testing.T) {
	for _, subject := range []string{
		"",
		"$JS.ACK",
		"$JS.ACK.",
		"$JS.API.ORDERS.workers.2.10.12.1795687992857729346.3",
		"$JS.ACK.ORDERS.workers.2.10.12.1795687992857729346",         // 8 tokens
		"$JS.ACK.x.ORDERS.workers.2.10.12.1795687992857729346.3",     // 10 tokens
		"$JS.ACK.ORDERS..2.10.12.1795687992857729346.3",              // no consumer
		"$JS.ACK.ORDERS.workers.two.10.12.1795687992857729346.3",     // not a number
		"$JS.ACK.ORDERS.workers.2.-10.12.1795687992857729346.3",      // sign
		"$JS.ACK.ORDERS.workers.0.10.12.1795687992857729346.3",       // no delivery
		"$JS.ACK.ORDERS.workers.2.0.12.1795687992857729346.3",        // no sequence
		"$JS.ACK.ORDERS.workers.2.10.12.18446744073709551616.3",      // overflows
		"$JS.ACK.ORDERS.workers.2.10.12.9223372036854775808.3",       // beyond int64 ns
		"$JS.ACK.ORDERS.workers.2.10.12.1795687992857729346.",        // empty pending
		"$JS.ACK._.hash.ORDERS.workers.2.10.12.1795687992857729346.", // v2 empty pending
	} {
		_, err := parseAckSubject(subject)
		assert.ErrorIs(t, err, errAckSubject, subject)
	}
}

func TestParseAckBody(t *testing.T) {
	for _, tc := range []struct {
		body   string
		kind   ackKind
		reason string
	}{
		{"", ackAck, ""},
		{"+ACK", ackAck, ""},
		{"+OK", ackAck, ""},
		{"+NXT", ackAck, ""},
		{"+NXT 10", ackAck, ""},
		{`+NXT {"batch":5}`, ackAck, ""},
		{"-NAK", ackNak, ""},
		{`-NAK {"delay": 10000000}`, ackNak, ""},
		{"+WPI", ackProgress, ""},
		{"+TERM", ackTerm, ""},
		{"+TERM bad input", ackTerm, "bad input"},
		{"+TERM bad\x01input\xff ", ackTerm, "bad input\uFFFD"},
		{"+TERM " + strings.Repeat("é", 200), ackTerm, strings.Repeat("é", tap.MaxText/2)},
	} {
		kind, reason, err := parseAckBody([]byte(tc.body))
		require.NoError(t, err, tc.body)
		assert.Equal(t, tc.kind, kind, tc.body)
		assert.Equal(t, tc.reason, reason, tc.body)
	}
	for _, body := range []string{"ACK", "+ACKS", "-NAKED", "+WPI ", "+TERMINATE", "hello", "\x00"} {
		_, _, err := parseAckBody([]byte(body))
		assert.ErrorIs(t, err, errAckBody, body)
	}
}

func TestDecodeAdvisory(t *testing.T) {
	adv, err := decodeAdvisory([]byte(`{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-11-26T10:13:12.861180458Z","stream":"CAPTURE","consumer":"workers","stream_seq":3,"deliveries":2}`))
	require.NoError(t, err)
	assert.Equal(t, advisory{Type: advMaxDeliver, Timestamp: time.Date(2026, 11, 26, 10, 13, 12, 861180458, time.UTC),
		Stream: "CAPTURE", Consumer: "workers", StreamSeq: 3, Deliveries: 2}, adv)

	adv, err = decodeAdvisory([]byte(`{"type":"io.nats.jetstream.advisory.v1.terminated","timestamp":"2026-11-26T10:13:12Z","stream":"S","consumer":"c","consumer_seq":4,"stream_seq":4,"deliveries":1,"reason":" bad input "}`))
	require.NoError(t, err)
	assert.Equal(t, "bad input", adv.Reason)

	adv, err = decodeAdvisory([]byte(`{"type":"io.nats.jetstream.metric.v1.consumer_ack","timestamp":"2026-11-26T10:13:12Z","stream":"S","consumer":"c","stream_seq":1,"ack_time":1514617,"deliveries":1}`))
	require.NoError(t, err)
	assert.Equal(t, int64(1514617), adv.AckTime)

	for _, data := range []string{
		``, `null`, `[]`, `{`, `{}`,
		`{"type":"io.nats.jetstream.advisory.v1.consumer_action","timestamp":"2026-11-26T10:13:12Z","stream":"S","consumer":"c","stream_seq":1}`,
		`{"type":"io.nats.jetstream.advisory.v1.nak","timestamp":"2026-11-26T10:13:12Z","consumer":"c","stream_seq":1}`,
		`{"type":"io.nats.jetstream.advisory.v1.nak","timestamp":"2026-11-26T10:13:12Z","stream":"S","stream_seq":1}`,
		`{"type":"io.nats.jetstream.advisory.v1.nak","timestamp":"2026-11-26T10:13:12Z","stream":"S","consumer":"c"}`,
		`{"type":"io.nats.jetstream.advisory.v1.nak","stream":"S","consumer":"c","stream_seq":1}`,
		`{"type":"io.nats.jetstream.advisory.v1.nak","timestamp":"yesterday","stream":"S","consumer":"c","stream_seq":1}`,
		`{"type":"io.nats.jetstream.advisory.v1.nak","timestamp":"2026-11-26T10:13:12Z","stream":"S","consumer":"c","stream_seq":-1}`,
		`{"type":"io.nats.jetstream.metric.v1.consumer_ack","timestamp":"2026-11-26T10:13:12Z","stream":"S","consumer":"c","stream_seq":1,"ack_time":-5}`,
	} {
		_, err := decodeAdvisory([]byte(data))
		assert.ErrorIs(t, err, errAdvisory, data)
	}
}

// TestCapturedFrames decodes every frame captured from a real server.
func TestCapturedFrames(t *testing.T) {
	var acks, advisories, skipped int
	for _, f := range loadFrames(t) {
		switch {
		case strings.HasPrefix(f.Subject, "$JS.ACK."):
			_, err := parseAckSubject(f.Subject)
			require.NoError(t, err, f.Subject)
			_, _, err = parseAckBody([]byte(f.Data))
			require.NoError(t, err, f.Data)
			acks++
		case strings.Contains(f.Subject, ".CREATED."):
			_, err := decodeAdvisory([]byte(f.Data))
			assert.ErrorIs(t, err, errAdvisory, "a consumer action is not read")
			skipped++
		default:
			_, err := decodeAdvisory([]byte(f.Data))
			require.NoError(t, err, f.Data)
			advisories++
		}
	}
	assert.Positive(t, acks)
	assert.Positive(t, advisories)
	t.Logf("%d acks, %d advisories, %d skipped", acks, advisories, skipped)
}

func FuzzParseAckSubject(f *testing.F) {
	for _, fr := range loadFrames(f) {
		if strings.HasPrefix(fr.Subject, "$JS.ACK.") {
			f.Add(fr.Subject)
		}
	}
	f.Add("$JS.ACK._.5dMpdnqFr6mzVYwS7lDy6X.ORDERS.workers.2.10.12.1795687992857729346.3.xK9Vb1")
	f.Fuzz(func(t *testing.T, subject string) {
		ref, err := parseAckSubject(subject)
		if err != nil {
			return
		}
		if ref.Stream == "" || ref.Consumer == "" || ref.Delivered == 0 || ref.StreamSeq == 0 || ref.Stored.UnixNano() < 0 {
			t.Fatalf("accepted an incomplete subject %q: %+v", subject, ref)
		}
		if !strings.Contains(subject, "."+ref.Stream+"."+ref.Consumer+".") {
			t.Fatalf("stream and consumer %q %q not in %q", ref.Stream, ref.Consumer, subject)
		}
	})
}

func FuzzParseAckBody(f *testing.F) {
	for _, fr := range loadFrames(f) {
		if strings.HasPrefix(fr.Subject, "$JS.ACK.") {
			f.Add([]byte(fr.Data))
		}
	}
	f.Add([]byte("+TERM bad input"))
	f.Add([]byte(`+NXT {"batch":5}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		kind, reason, err := parseAckBody(body)
		if err != nil {
			return
		}
		if kind < ackAck || kind > ackTerm {
			t.Fatalf("unknown kind %d for %q", kind, body)
		}
		if len(reason) > tap.MaxText || !utf8.ValidString(reason) {
			t.Fatalf("reason %q not cleaned", reason)
		}
	})
}

func FuzzDecodeAdvisory(f *testing.F) {
	for _, fr := range loadFrames(f) {
		if !strings.HasPrefix(fr.Subject, "$JS.ACK.") {
			f.Add([]byte(fr.Data))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		adv, err := decodeAdvisory(data)
		if err != nil {
			return
		}
		if adv.Stream == "" || adv.Consumer == "" || adv.StreamSeq == 0 || adv.Timestamp.IsZero() || adv.AckTime < 0 {
			t.Fatalf("accepted an incomplete advisory %q: %+v", data, adv)
		}
		if len(adv.Reason) > tap.MaxText || !utf8.ValidString(adv.Reason) {
			t.Fatalf("reason %q not cleaned", adv.Reason)
		}
	})
}
