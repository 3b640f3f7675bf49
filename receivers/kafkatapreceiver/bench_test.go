package kafkatapreceiver

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

const capturedRecords = "testdata/records.json"

// capturedRecord is a record as the broker served it, kept in testdata.
// Its values are synthetic test data.
type capturedRecord struct {
	Topic     string           `json:"topic"`
	Partition int32            `json:"partition"`
	Offset    int64            `json:"offset"`
	Timestamp int64            `json:"timestamp_ms"`
	Key       []byte           `json:"key,omitempty"`
	Value     []byte           `json:"value"`
	Headers   []capturedHeader `json:"headers,omitempty"`
}

type capturedHeader struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

func (c capturedRecord) record() *kgo.Record {
	r := &kgo.Record{Topic: c.Topic, Partition: c.Partition, Offset: c.Offset, Timestamp: time.UnixMilli(c.Timestamp), Key: c.Key, Value: c.Value}
	for _, h := range c.Headers {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: h.Key, Value: h.Value})
	}
	return r
}

func loadCaptured(tb testing.TB) []*kgo.Record {
	tb.Helper()
	b, err := os.ReadFile(capturedRecords)
	require.NoError(tb, err)
	var captured []capturedRecord
	require.NoError(tb, json.Unmarshal(b, &captured))
	out := make([]*kgo.Record, 0, len(captured))
	for _, c := range captured {
		out = append(out, c.record())
	}
	return out
}

// TestCaptureRecords writes testdata/records.json from a real broker: a
// mix of plain records (with and without traceparent and business key
// headers), Spring retry copies and dead-letter copies, as a direct
// consumer fetches them. Run once with FLOWTRACE_KAFKA_CAPTURE=1.
func TestCaptureRecords(t *testing.T) {
	if os.Getenv("FLOWTRACE_KAFKA_CAPTURE") == "" {
		t.Skip("set FLOWTRACE_KAFKA_CAPTURE=1 to capture testdata/records.json")
	}
	const orders, retry, dlq = "orders", "orders.retry.1", "orders.dlq"
	cluster := newCluster(t, kfake.SeedTopics(4, orders), kfake.SeedTopics(1, retry, dlq))
	brokers := cluster.ListenAddrs()
	ctx := context.Background()
	producer := newClient(t, brokers, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	var produced []*kgo.Record
	for i := range 48 {
		r := &kgo.Record{Topic: orders, Partition: int32(i % 4), Key: fmt.Appendf(nil, "order-%d", i),
			Value: fmt.Appendf(nil, `{"order":%d,"amount":%d,"currency":"EUR"}`, i, 10+i)}
		if i%3 != 0 {
			r.Headers = append(r.Headers,
				kgo.RecordHeader{Key: "traceparent", Value: fmt.Appendf(nil, "00-%032x-%016x-01", 0xabc000+i, 0xdef000+i)})
		}
		if i%4 != 3 {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: "order_id", Value: fmt.Appendf(nil, "%d", i)})
		}
		require.NoError(t, producer.ProduceSync(ctx, r).FirstErr())
		produced = append(produced, r)
	}
	for i, r := range produced[:12] {
		c := springCopy(retry, r, "billing", "com.example.PaymentTimeout", false)
		require.NoError(t, producer.ProduceSync(ctx, c).FirstErr())
		if i%3 == 0 {
			require.NoError(t, producer.ProduceSync(ctx, springCopy(dlq, c, "billing", "com.example.PaymentDeclined", false)).FirstErr())
		}
	}

	reader := newClient(t, brokers, kgo.ConsumeTopics(orders, retry, dlq), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var captured []capturedRecord
	pollCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for len(captured) < 48+12+4 {
		fetches := reader.PollFetches(pollCtx)
		require.NoError(t, pollCtx.Err())
		fetches.EachRecord(func(r *kgo.Record) {
			c := capturedRecord{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Timestamp: r.Timestamp.UnixMilli(), Key: r.Key, Value: r.Value}
			for _, h := range r.Headers {
				c.Headers = append(c.Headers, capturedHeader{Key: h.Key, Value: h.Value})
			}
			captured = append(captured, c)
		})
	}
	b, err := json.MarshalIndent(captured, "", " ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Clean(capturedRecords), append(b, '\n'), 0o644))
}

// BenchmarkDecode is the decoder alone: captured records into
// observations.
func BenchmarkDecode(b *testing.B) {
	records := loadCaptured(b)
	d := testDecoder()
	var obs []tap.Observation
	report := func(string, error) {}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		obs, _ = d.decode(records[i%len(records)], obs[:0], report)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkRecordToSpans is the tap's whole per-record work: decoding and
// building the spans, a batch of 1000 records at a time.
func BenchmarkRecordToSpans(b *testing.B) {
	records := loadCaptured(b)
	d := testDecoder()
	spans := tap.NewSpans(system, metadata.ScopeName)
	var obs []tap.Observation
	report := func(string, error) {}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		obs, _ = d.decode(records[i%len(records)], obs[:0], report)
		for j := range obs {
			_ = spans.Add(&obs[j])
		}
		if spans.Len() >= 1000 {
			spans.Take()
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
