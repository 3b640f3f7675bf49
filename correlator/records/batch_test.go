package records

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/model/modelcodec"
)

func TestBatchRoundTrip(t *testing.T) {
	records := plog.NewLogRecordSlice()
	pending := model.Hop{FlowID: "f", HopID: "pending", Version: 1}
	AppendBatch(records, []model.Hop{sampleHop(), pending}, []model.Flow{sampleFlow()}, t0)
	AppendBatch(records, nil, nil, t0)

	require.Equal(t, TypeBatch, Type(records.At(0)))
	earlier := []model.Hop{{FlowID: "kept"}}
	hops, flows, err := DecodeBatch(records.At(0), earlier, nil)
	require.NoError(t, err)
	assert.Equal(t, []model.Hop{{FlowID: "kept"}, sampleHop(), pending}, hops, "appended to what was there")
	assert.Equal(t, []model.Flow{sampleFlow()}, flows)

	hops, flows, err = DecodeBatch(records.At(1), nil, nil)
	require.NoError(t, err)
	assert.Empty(t, hops)
	assert.Empty(t, flows)

	// Read still encoded: the sections decode to the same versions.
	b, err := ReadBatch(records.At(0))
	require.NoError(t, err)
	assert.Equal(t, 2, b.HopCount)
	assert.Equal(t, 1, b.FlowCount)
	assert.Equal(t, []model.Hop{sampleHop(), pending}, decodeAll(t, b.Hops, b.HopCount, (*modelcodec.Decoder).Hop))
	assert.Equal(t, []model.Flow{sampleFlow()}, decodeAll(t, b.Flows, b.FlowCount, (*modelcodec.Decoder).Flow))
}

// decodeAll decodes n values that make up the whole of data.
func decodeAll[T any](t *testing.T, data []byte, n int, decode func(*modelcodec.Decoder, *T)) []T {
	t.Helper()
	d := modelcodec.NewDecoder(data)
	var out []T // nil for none, as DecodeBatch leaves it
	if n > 0 {
		out = make([]T, n)
	}
	for i := range out {
		decode(d, &out[i])
	}
	require.NoError(t, d.Err())
	require.Zero(t, d.Len(), "nothing after the last value")
	return out
}

func TestBatchRefusesWhatItCannotRead(t *testing.T) {
	batch := func() plog.LogRecord {
		records := plog.NewLogRecordSlice()
		AppendBatch(records, []model.Hop{sampleHop()}, []model.Flow{sampleFlow()}, t0)
		return records.At(0)
	}
	body := batch().Body().Bytes().AsRaw()
	for name, tc := range map[string]struct {
		mutate func(plog.LogRecord)
		want   string
	}{
		"a hop record": {func(r plog.LogRecord) { r.Attributes().PutStr(KeyType, TypeHop) }, `flowtrace.record: want "batch", got "hop"`},
		"string body":  {func(r plog.LogRecord) { r.Body().SetStr("hops") }, "body: want Bytes, got Str"},
		"empty body":   {func(r plog.LogRecord) { r.Body().SetEmptyBytes() }, "not a flowtrace batch"},
		"other format": {func(r plog.LogRecord) { r.Body().Bytes().SetAt(0, 2) }, "not a flowtrace batch"},
		"truncated":    {func(r plog.LogRecord) { r.Body().SetEmptyBytes().FromRaw(body[:len(body)-3]) }, "corrupt"},
		"trailing":     {func(r plog.LogRecord) { r.Body().Bytes().Append(0) }, "corrupt"},
		"huge counts":  {func(r plog.LogRecord) { r.Body().SetEmptyBytes().FromRaw([]byte{batchFormat, 0xff, 0xff, 0x7f, 1}) }, "corrupt"},
	} {
		t.Run(name, func(t *testing.T) {
			r := batch()
			tc.mutate(r)
			hops, flows, err := DecodeBatch(r, nil, nil)
			require.ErrorContains(t, err, tc.want)
			assert.Empty(t, hops, "a batch is refused whole")
			assert.Empty(t, flows)
			_, err = ReadBatch(r)
			require.ErrorContains(t, err, tc.want, "reading it still encoded refuses it too")
		})
	}
}

// FuzzDecodeBatch reads arbitrary bytes as a batch body: an error or the
// records, never a panic; and ReadBatch refuses exactly what DecodeBatch
// refuses.
func FuzzDecodeBatch(f *testing.F) {
	records := plog.NewLogRecordSlice()
	AppendBatch(records, []model.Hop{sampleHop()}, []model.Flow{sampleFlow()}, t0)
	f.Add(records.At(0).Body().Bytes().AsRaw())
	f.Add([]byte{batchFormat, 0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		records := plog.NewLogRecordSlice()
		r := records.AppendEmpty()
		r.Attributes().PutStr(KeyType, TypeBatch)
		r.Body().SetEmptyBytes().FromRaw(body)
		hops, flows, err := DecodeBatch(r, nil, nil)
		b, readErr := ReadBatch(r)
		require.Equal(t, err == nil, readErr == nil, "decode: %v, read: %v", err, readErr)
		if err == nil {
			assert.Equal(t, hops, decodeAll(t, b.Hops, b.HopCount, (*modelcodec.Decoder).Hop))
			assert.Equal(t, flows, decodeAll(t, b.Flows, b.FlowCount, (*modelcodec.Decoder).Flow))
		}
	})
}

// BenchmarkRecords reports what sending 1,000 hop and flow versions from the
// connector to the exporter costs, as a log record of attributes each and as
// one batch: built, then read back.
//
//	go test -run '^$' -bench Records -cpu 1 ./correlator/records
func BenchmarkRecords(b *testing.B) {
	hops := make([]model.Hop, 500)
	flows := make([]model.Flow, 500)
	for i := range hops {
		hops[i], flows[i] = sampleHop(), sampleFlow()
	}
	versions := float64(len(hops) + len(flows))
	b.Run("attributes", func(b *testing.B) {
		for range b.N {
			records := plog.NewLogRecordSlice()
			for i := range hops {
				AppendHop(records, hops[i], t0)
			}
			for i := range flows {
				AppendFlow(records, flows[i], t0)
			}
			for i := range records.Len() {
				var err error
				if Type(records.At(i)) == TypeHop {
					_, err = DecodeHop(records.At(i))
				} else {
					_, err = DecodeFlow(records.At(i))
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(versions*float64(b.N)/b.Elapsed().Seconds(), "versions/s")
	})
	b.Run("batch", func(b *testing.B) {
		for range b.N {
			records := plog.NewLogRecordSlice()
			AppendBatch(records, hops, flows, t0)
			if _, _, err := DecodeBatch(records.At(0), nil, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(versions*float64(b.N)/b.Elapsed().Seconds(), "versions/s")
	})
}
