package kafkatapreceiver

import (
	"encoding/binary"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

func testDecoder() *decoder {
	cfg := createDefaultConfig()
	cfg.KeyHeaders = map[string]string{"order_id": "order_id"}
	cfg.RecordKey = true
	cfg.RetryTopics = []string{"{topic}.retry.{attempt}"}
	cfg.DeadLetterTopics = []string{"{topic}.dlq"}
	return newDecoder(cfg)
}

type problem struct{ reason, err string }

// decodeOne decodes r, returning copies of its observations and the
// problems reported.
func decodeOne(d *decoder, r *kgo.Record) ([]tap.Observation, decoded, []problem) {
	var problems []problem
	obs, dec := d.decode(r, nil, func(reason string, err error) { problems = append(problems, problem{reason, err.Error()}) })
	for i := range obs {
		obs[i].Keys = append([]model.Key(nil), obs[i].Keys...)
	}
	return obs, dec, problems
}

func hdr(key string, value []byte) kgo.RecordHeader { return kgo.RecordHeader{Key: key, Value: value} }

func be32(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
func be64(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }

func TestDecodePublish(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	obs, dec, problems := decodeOne(testDecoder(), &kgo.Record{
		Topic: "orders", Partition: 3, Offset: 42, Timestamp: at, Key: []byte("order-7"), Value: []byte(`{"amount":1}`),
		Headers: []kgo.RecordHeader{
			hdr("traceparent", []byte(testTraceparent)), hdr("order_id", []byte("7")), hdr("other", []byte("x")),
			// Original-record headers mean nothing on a plain topic.
			hdr("kafka_dlt-original-topic", []byte("elsewhere")),
		},
	})
	assert.Empty(t, problems)
	assert.Equal(t, decoded{kind: recordPublish, messageID: "orders/3/42", traceParent: testTraceparent}, dec)
	assert.Equal(t, []tap.Observation{{
		Kind: tap.Publish, Time: at, System: "kafka", Destination: "orders", Partition: "3", MessageID: "orders/3/42",
		BodySize: 12, Keys: []model.Key{{Kind: "order_id", Value: "7"}}, TraceParent: testTraceparent,
		Attrs: []tap.Attr{tap.String(attrMessageKey, "order-7"), tap.Int(attrOffset, 42)},
	}}, obs)
}

func TestDecodeBadHeaders(t *testing.T) {
	for name, tc := range map[string]struct {
		record kgo.Record
		want   []string
	}{
		"traceparent": {kgo.Record{Headers: []kgo.RecordHeader{hdr("traceparent", []byte("00-zz-01"))}}, []string{reasonTraceparent}},
		"key":         {kgo.Record{Key: []byte{0xff, 0xfe}}, []string{reasonKey}},
		"key header": {kgo.Record{Headers: []kgo.RecordHeader{
			hdr("order_id", []byte{0xc3}), hdr("order_id", []byte(strings.Repeat("x", tap.MaxText+1))),
			hdr("order_id", []byte("7\n8")),
		}}, []string{reasonHeader, reasonHeader, reasonHeader}},
	} {
		t.Run(name, func(t *testing.T) {
			r := tc.record
			r.Topic = "orders"
			obs, _, problems := decodeOne(testDecoder(), &r)
			var reasons []string
			for _, p := range problems {
				reasons = append(reasons, p.reason)
			}
			assert.Equal(t, tc.want, reasons)
			require.Len(t, obs, 1)
			assert.Empty(t, obs[0].TraceParent)
			assert.Empty(t, obs[0].Keys)
			for _, a := range obs[0].Attrs {
				assert.NotEqual(t, attrMessageKey, a.Key)
			}
		})
	}
}

func TestDecodeRetryAndDeadLetter(t *testing.T) {
	d := testDecoder()
	at := time.UnixMilli(1_700_000_000_000)

	// A Spring retry copy of orders/1/7: binary coordinates.
	obs, dec, problems := decodeOne(d, &kgo.Record{
		Topic: "orders.retry.1", Partition: 0, Offset: 3, Timestamp: at,
		Headers: []kgo.RecordHeader{
			hdr("order_id", []byte("7")),
			hdr("kafka_dlt-original-topic", []byte("orders")),
			hdr("kafka_dlt-original-partition", be32(1)),
			hdr("kafka_dlt-original-offset", be64(7)),
			hdr("kafka_dlt-original-consumer-group", []byte("billing")),
			hdr("kafka_dlt-exception-fqcn", []byte("com.example.Timeout")),
		},
	})
	assert.Empty(t, problems)
	assert.Equal(t, decoded{kind: recordRetry, messageID: "orders/1/7", attempt: 2,
		failedGroup: "billing", failedTopic: "orders", failedPartition: 1, failedOffset: 7}, dec)
	assert.Equal(t, []tap.Observation{
		{
			Kind: tap.Publish, Time: at, System: "kafka", Destination: "orders.retry.1", Partition: "0",
			MessageID: "orders/1/7", Attempt: 2, Keys: []model.Key{{Kind: "order_id", Value: "7"}},
			Attrs: []tap.Attr{tap.Int(attrOffset, 3)},
		},
		{
			Kind: tap.Settle, Time: at, System: "kafka", Destination: "orders", Partition: "1",
			MessageID: "orders/1/7", ConsumerGroup: "billing", Outcome: tap.Nack, Inferred: true, Attempt: 1,
			Reason: "com.example.Timeout", Keys: []model.Key{},
		},
	}, fixKeys(obs))

	// The second retry copies the first, with decimal text coordinates.
	obs, dec, problems = decodeOne(d, &kgo.Record{
		Topic: "orders.retry.2", Partition: 0, Offset: 9, Timestamp: at,
		Headers: []kgo.RecordHeader{
			hdr("kafka_dlt-original-topic", []byte("orders.retry.1")),
			hdr("kafka_dlt-original-partition", []byte("0")),
			hdr("kafka_dlt-original-offset", []byte("3")),
		},
	})
	assert.Empty(t, problems)
	assert.Equal(t, decoded{kind: recordRetry, messageID: "orders/1/7", attempt: 3,
		failedTopic: "orders.retry.1", failedPartition: 0, failedOffset: 3}, dec)
	require.Len(t, obs, 1, "no group named: no failed attempt to report")

	// The dead-letter copy of the second retry is the same message,
	// dead-lettered by the group for the base topic.
	obs, dec, problems = decodeOne(d, &kgo.Record{
		Topic: "orders.dlq", Partition: 0, Offset: 0, Timestamp: at,
		Headers: []kgo.RecordHeader{
			hdr("kafka_dlt-original-topic", []byte("orders.retry.2")),
			hdr("kafka_dlt-original-partition", be32(0)),
			hdr("kafka_dlt-original-offset", be64(9)),
			hdr("kafka_dlt-original-consumer-group", []byte("billing")),
			hdr("kafka_dlt-exception-fqcn", []byte("com.example.First")),
			hdr("kafka_dlt-exception-fqcn", []byte("com.example.Declined")),
		},
	})
	assert.Empty(t, problems)
	assert.Equal(t, decoded{kind: recordDeadLetter, messageID: "orders/1/7",
		failedGroup: "billing", failedTopic: "orders.retry.2", failedPartition: 0, failedOffset: 9}, dec)
	assert.Equal(t, []tap.Observation{
		{
			Kind: tap.Settle, Time: at, System: "kafka", Destination: "orders.retry.2", Partition: "0",
			MessageID: "orders/1/7", ConsumerGroup: "billing", Outcome: tap.Reject, Inferred: true, Attempt: 3,
			Reason: "com.example.Declined", Keys: []model.Key{},
		},
		{
			Kind: tap.DeadLetter, Time: at, System: "kafka", Destination: "orders",
			MessageID: "orders/1/7", ConsumerGroup: "billing", Reason: "com.example.Declined", Keys: []model.Key{},
		},
	}, fixKeys(obs))
}

// TestDecodeAppendedOrigins reads Spring's appended header sets: the last
// set is the record copied now (and the group that failed it), the first
// names the first record — the identity when the tap has not seen the
// copied record.
func TestDecodeAppendedOrigins(t *testing.T) {
	headers := []kgo.RecordHeader{
		hdr("kafka_dlt-original-topic", []byte("orders")),
		hdr("kafka_dlt-original-partition", be32(1)),
		hdr("kafka_dlt-original-offset", be64(7)),
		hdr("kafka_dlt-original-consumer-group", []byte("billing")),
		hdr("kafka_dlt-original-topic", []byte("orders.retry.1")),
		hdr("kafka_dlt-original-partition", be32(0)),
		hdr("kafka_dlt-original-offset", be64(3)),
		hdr("kafka_dlt-original-consumer-group", []byte("billing-retry")),
	}
	_, dec, problems := decodeOne(testDecoder(), &kgo.Record{Topic: "orders.dlq", Headers: headers})
	assert.Empty(t, problems)
	assert.Equal(t, decoded{kind: recordDeadLetter, messageID: "orders/1/7",
		failedGroup: "billing-retry", failedTopic: "orders.retry.1", failedPartition: 0, failedOffset: 3}, dec)

	// With the copied record seen, its memory wins.
	d := testDecoder()
	d.remember("orders.retry.1/0/3", "orders/2/2")
	_, dec, _ = decodeOne(d, &kgo.Record{Topic: "orders.dlq", Headers: headers})
	assert.Equal(t, "orders/2/2", dec.messageID)
}

func TestPendingFail(t *testing.T) {
	started := time.Unix(100, 0)
	ps := newPartitionState("orders", 0)
	for offset := range int64(3) {
		ps.add(pendingRecord{offset: offset, published: started, messageID: "orders/0/" + strconv.FormatInt(offset, 10)}, false, 1)
	}
	ps.fail(0, 1)
	ps.fail(0, 9) // not pending: nothing
	obs := ps.settle(nil, 0, "billing", 3, time.Unix(110, 0), started)
	require.Len(t, obs, 2)
	assert.Equal(t, "orders/0/0", obs[0].MessageID)
	assert.Equal(t, "orders/0/2", obs[1].MessageID)
}

// fixKeys makes empty key lists comparable.
func fixKeys(obs []tap.Observation) []tap.Observation {
	for i := range obs {
		if len(obs[i].Keys) == 0 {
			obs[i].Keys = []model.Key{}
		}
	}
	return obs
}

func TestDecodeBadOrigin(t *testing.T) {
	for name, headers := range map[string][]kgo.RecordHeader{
		"short offset":   {hdr("kafka_dlt-original-topic", []byte("orders")), hdr("kafka_dlt-original-partition", be32(0)), hdr("kafka_dlt-original-offset", []byte{1, 2, 3})},
		"negative":       {hdr("kafka_dlt-original-topic", []byte("orders")), hdr("kafka_dlt-original-partition", be32(-1)), hdr("kafka_dlt-original-offset", be64(1))},
		"bad topic":      {hdr("kafka_dlt-original-topic", []byte("a/b")), hdr("kafka_dlt-original-partition", be32(0)), hdr("kafka_dlt-original-offset", be64(1))},
		"missing offset": {hdr("kafka_dlt-original-topic", []byte("orders")), hdr("kafka_dlt-original-partition", be32(0))},
	} {
		t.Run(name, func(t *testing.T) {
			obs, dec, problems := decodeOne(testDecoder(), &kgo.Record{Topic: "orders.dlq", Partition: 2, Offset: 5, Headers: headers})
			require.Len(t, problems, 1)
			assert.Equal(t, reasonOrigin, problems[0].reason)
			assert.Equal(t, "orders.dlq/2/5", dec.messageID, "its own identity, to join by keys or traceparent")
			require.Len(t, obs, 1)
			assert.Equal(t, tap.DeadLetter, obs[0].Kind)
			assert.Equal(t, "orders", obs[0].Destination)
		})
	}
}

func TestParseNumber(t *testing.T) {
	for _, tc := range []struct {
		in    []byte
		width int
		want  int64
		ok    bool
	}{
		{[]byte("0"), 4, 0, true},
		{[]byte("1234"), 4, 1234, true}, // decimal, though four bytes
		{be32(1234), 4, 1234, true},
		{be64(1 << 40), 8, 1 << 40, true},
		{be32(-5), 4, 0, false},
		{be64(-5), 8, 0, false},
		{[]byte{1, 2}, 4, 0, false},
		{[]byte(""), 4, 0, false},
		{[]byte("99999999999999999999"), 8, 0, false},
	} {
		got, err := parseNumber(tc.in, tc.width)
		if !tc.ok {
			assert.Error(t, err, "%q", tc.in)
			continue
		}
		require.NoError(t, err, "%q", tc.in)
		assert.Equal(t, tc.want, got)
	}
}

func TestOriginsBounded(t *testing.T) {
	d := testDecoder()
	for i := range maxOriginIDs + 1 {
		d.remember("orders.retry.1/0/"+strconv.Itoa(i), "orders/0/"+strconv.Itoa(i))
	}
	assert.Len(t, d.origins, maxOriginIDs)
	assert.Equal(t, "orders.retry.1/0/0", d.resolve("orders.retry.1/0/0"), "the oldest is forgotten")
	assert.Equal(t, "orders/0/1", d.resolve("orders.retry.1/0/1"))
}

// TestRecordKey: the record key is on spans only when asked for, and then
// cleaned.
func TestRecordKey(t *testing.T) {
	keyOf := func(d *decoder, key []byte) (string, bool) {
		obs, _, problems := decodeOne(d, &kgo.Record{Topic: "orders", Key: key})
		assert.Empty(t, problems)
		require.Len(t, obs, 1)
		for _, a := range obs[0].Attrs {
			if a.Key == attrMessageKey {
				return a.Str, true
			}
		}
		return "", false
	}
	cfg := createDefaultConfig()
	require.False(t, cfg.RecordKey, "off by default")
	_, ok := keyOf(newDecoder(cfg), []byte("alice@example.com"))
	assert.False(t, ok, "no key unless record_key is on")

	cfg.RecordKey = true
	key, ok := keyOf(newDecoder(cfg), []byte("alice\r\n@example.com"))
	require.True(t, ok)
	assert.Equal(t, "alice  @example.com", key, "control characters cleaned")
	key, _ = keyOf(newDecoder(cfg), []byte(strings.Repeat("é", tap.MaxText)))
	assert.Equal(t, strings.Repeat("é", tap.MaxText/2), key, "cut to tap.MaxText bytes, on a rune boundary")
}

// TestDeadLetterReasonCleaned: a reason is kept cleaned; one that is not
// UTF-8 is counted as bad input.
func TestDeadLetterReasonCleaned(t *testing.T) {
	obs, _, problems := decodeOne(testDecoder(), &kgo.Record{Topic: "orders.dlq", Headers: []kgo.RecordHeader{
		hdr("kafka_dlt-exception-fqcn", []byte("com.example.\x00Bad\xff")),
	}})
	assert.Equal(t, []problem{{reasonReason, errNotUTF8.Error()}}, problems)
	require.Len(t, obs, 1)
	assert.Equal(t, "com.example. Bad\uFFFD", obs[0].Reason)
}

func TestSettleTime(t *testing.T) {
	prev := time.Unix(100, 0)
	now := time.Unix(110, 0)
	published := time.Unix(50, 0)
	// Offsets 10..19 committed (to 20) between the polls: spread evenly.
	assert.Equal(t, time.Unix(101, 0), settleTime(prev, now, 10, 20, 10, published))
	assert.Equal(t, now, settleTime(prev, now, 10, 20, 19, published))
	// Never before it was published.
	assert.Equal(t, time.Unix(108, 0), settleTime(prev, now, 10, 20, 10, time.Unix(108, 0)))
}

func TestPendingSettleAndPrune(t *testing.T) {
	started := time.Unix(100, 0)
	ps := newPartitionState("orders", 0)
	for offset := range int64(4) {
		ps.add(pendingRecord{offset: offset, published: started.Add(time.Duration(offset) * time.Second), messageID: "orders/0/" + strconv.FormatInt(offset, 10)}, false, 2)
	}
	// Group 0 commits to 2 at 110: offsets 0 and 1 settle.
	obs := ps.settle(nil, 0, "billing", 2, time.Unix(110, 0), started)
	require.Len(t, obs, 2)
	assert.Equal(t, "orders/0/0", obs[0].MessageID)
	assert.Equal(t, time.Unix(105, 0), obs[0].Time)
	assert.Equal(t, time.Unix(110, 0), obs[1].Time)
	assert.True(t, obs[0].Inferred)
	assert.Equal(t, tap.Ack, obs[0].Outcome)
	assert.Equal(t, 2, ps.prune(2, time.Time{}))
	assert.Len(t, ps.live(), 2, "group 1 has not committed here: it does not hold records back")

	// Polled again with no new commit: nothing.
	assert.Empty(t, ps.settle(nil, 0, "billing", 2, time.Unix(120, 0), started))
	seconds, ok := ps.lagSeconds(2, time.Unix(130, 0))
	assert.True(t, ok)
	assert.InDelta(t, 28.0, seconds, 1e-9)

	// A record tapped after a commit already passed it settles at the
	// next poll, no later than the poll that saw the commit.
	ps2 := newPartitionState("orders", 0)
	ps2.settle(nil, 0, "billing", 5, time.Unix(110, 0), started)
	ps2.add(pendingRecord{offset: 4, published: time.Unix(105, 0), messageID: "orders/0/4"}, false, 1)
	obs = ps2.settle(nil, 0, "billing", 5, time.Unix(120, 0), started)
	require.Len(t, obs, 1)
	assert.Equal(t, time.Unix(110, 0), obs[0].Time)
}

func TestPendingBounded(t *testing.T) {
	ps := newPartitionState("orders", 0)
	ps.settle(nil, 0, "billing", 0, time.Unix(1, 0), time.Unix(0, 0))
	held, evicted := 0, 0
	for offset := range int64(100) {
		added, lost := ps.add(pendingRecord{offset: offset}, held >= 10, 1)
		held += added
		if lost {
			evicted++
		}
	}
	assert.Equal(t, 10, held)
	assert.Len(t, ps.live(), 10)
	assert.Equal(t, int64(90), ps.live()[0].offset)
	assert.Equal(t, 90, evicted)
	assert.LessOrEqual(t, len(ps.records), 20, "the buffer is compacted")

	// Full with nothing of its own to forget: the new record is not kept.
	empty := newPartitionState("orders", 1)
	empty.settle(nil, 0, "billing", 0, time.Unix(1, 0), time.Unix(0, 0))
	added, lost := empty.add(pendingRecord{offset: 0}, true, 1)
	assert.Zero(t, added)
	assert.True(t, lost)
	assert.Empty(t, empty.live())

	// No group consumes the partition: records go once old enough.
	idle := newPartitionState("orders", 2)
	for offset := range int64(4) {
		idle.add(pendingRecord{offset: offset, published: time.Unix(offset, 0)}, false, 1)
	}
	assert.Equal(t, 2, idle.prune(1, time.Unix(2, 0)))
	assert.Equal(t, int64(2), idle.live()[0].offset)
}
