package kafkatapreceiver

import (
	"encoding/binary"
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

// fuzzTopics are the topics a fuzzed record may be on: a plain, a retry
// and a dead-letter topic. Topic names come from the broker, which checks
// them; headers and keys are the producers' bytes.
var fuzzTopics = []string{"orders", "orders.retry.1", "orders.retry.12", "orders.dlq"}

// encodeHeaders frames headers as [key length u8][key][value length
// u16][value], the fuzz input's form.
func encodeHeaders(headers []kgo.RecordHeader) []byte {
	var b []byte
	for _, h := range headers {
		b = append(b, byte(len(h.Key)))
		b = append(b, h.Key...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(h.Value)))
		b = append(b, h.Value...)
	}
	return b
}

func decodeHeaders(b []byte) []kgo.RecordHeader {
	var out []kgo.RecordHeader
	for len(b) > 0 {
		n := int(b[0])
		b = b[1:]
		if len(b) < n+2 {
			break
		}
		key := string(b[:n])
		b = b[n:]
		m := int(binary.BigEndian.Uint16(b))
		b = b[2:]
		m = min(m, len(b))
		out = append(out, kgo.RecordHeader{Key: key, Value: b[:m]})
		b = b[m:]
	}
	return out
}

// FuzzDecodeRecord feeds the decoder arbitrary keys and headers: it must
// never panic, must report what it cannot read rather than pass it on, and
// every observation must make a span with valid UTF-8 attributes.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range loadCaptured(f) {
		topic := 0
		for i, t := range fuzzTopics {
			if t == r.Topic {
				topic = i
			}
		}
		f.Add(uint8(topic), int32(r.Partition), r.Offset, r.Key, encodeHeaders(r.Headers))
	}
	f.Add(uint8(3), int32(0), int64(0), []byte{0xff}, encodeHeaders([]kgo.RecordHeader{
		{Key: "kafka_dlt-original-topic", Value: []byte("orders.retry.1")},
		{Key: "kafka_dlt-original-partition", Value: []byte("0")},
		{Key: "kafka_dlt-original-offset", Value: []byte{0x80, 0, 0, 0, 0, 0, 0, 0}},
		{Key: "traceparent", Value: []byte("00-00000000000000000000000000000000-0000000000000000-00")},
	}))

	d := testDecoder()
	f.Fuzz(func(t *testing.T, topic uint8, partition int32, offset int64, key, headers []byte) {
		r := &kgo.Record{
			Topic: fuzzTopics[int(topic)%len(fuzzTopics)], Partition: max(partition, 0), Offset: max(offset, 0),
			Timestamp: time.UnixMilli(1_700_000_000_000), Key: key, Headers: decodeHeaders(headers),
		}
		obs, dec := d.decode(r, nil, func(reason string, err error) {
			if reason == "" || err == nil {
				t.Fatalf("a decode error needs a reason and an error: %q %v", reason, err)
			}
		})
		if dec.messageID == "" || len(obs) == 0 {
			t.Fatalf("record without identity or observation: %+v", dec)
		}
		spans := tap.NewSpans(system, metadata.ScopeName)
		for i := range obs {
			if err := spans.Add(&obs[i]); err != nil {
				if errors.Is(err, tap.ErrBadTraceParent) {
					t.Fatalf("decoder passed on a bad traceparent %q", obs[i].TraceParent)
				}
				t.Fatal(err)
			}
		}
		td := spans.Take()
		ss := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
		for i := 0; i < ss.Len(); i++ {
			ss.At(i).Attributes().Range(func(k string, v pcommon.Value) bool {
				if v.Type() == pcommon.ValueTypeStr && !utf8.ValidString(v.Str()) {
					t.Fatalf("attribute %s is not UTF-8: %q", k, v.Str())
				}
				return true
			})
		}
	})
}
