package records

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/model"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 123, time.UTC)

func sampleHop() model.Hop {
	return model.Hop{
		FlowID: "f", HopID: "h", Version: 7, Deleted: true, FirstSeen: t0, ParentHopID: "p", System: "kafka",
		Producer: "api", Destination: "orders", Consumer: "billing", ConsumerGroup: "g", Operation: "charge",
		MessageID: "orders/0/1", TraceID: "abc", PublishTime: t0, DeliverTime: t0.Add(time.Second),
		SettleTime: t0.Add(2 * time.Second), QueueWait: time.Second, Processing: time.Second, Attempts: 3,
		Outcome: model.HopAcked, Reason: "r", Counted: true,
	}
}

func sampleFlow() model.Flow {
	return model.Flow{
		ID: "f", Version: 9, FirstSeen: t0, Name: "api orders", Status: model.FlowCompleted, Start: t0,
		End: t0.Add(3 * time.Second), HopCount: 2, Retries: 1, DeadLetters: 1,
		Keys:         []model.Key{{Kind: "trace_id", Value: "abc"}, {Kind: "order_id", Value: "o-1"}},
		CriticalPath: []string{"h1", "h2"},
	}
}

func TestRoundTrip(t *testing.T) {
	logs := plog.NewLogs()
	records := logs.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	AppendHop(records, sampleHop(), t0)
	AppendFlow(records, sampleFlow(), t0)
	AppendHop(records, model.Hop{FlowID: "f", HopID: "pending", Version: 1}, t0)

	require.Equal(t, TypeHop, Type(records.At(0)))
	h, err := DecodeHop(records.At(0))
	require.NoError(t, err)
	assert.Equal(t, sampleHop(), h)

	require.Equal(t, TypeFlow, Type(records.At(1)))
	f, err := DecodeFlow(records.At(1))
	require.NoError(t, err)
	assert.Equal(t, sampleFlow(), f)

	h, err = DecodeHop(records.At(2))
	require.NoError(t, err)
	assert.Equal(t, model.Hop{FlowID: "f", HopID: "pending", Version: 1}, h)
}

func TestDecodeErrorsNameTheAttribute(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(plog.LogRecord)
		want   string
	}{
		"not a record":   {func(r plog.LogRecord) { r.Attributes().Remove(KeyType) }, "not a flowtrace record"},
		"wrong type":     {func(r plog.LogRecord) { r.Attributes().PutStr(KeyType, TypeFlow) }, `flowtrace.record: want "hop", got "flow"`},
		"missing id":     {func(r plog.LogRecord) { r.Attributes().Remove(KeyHopID) }, "flowtrace.hop_id: missing"},
		"string version": {func(r plog.LogRecord) { r.Attributes().PutStr(KeyVersion, "7") }, "flowtrace.version: want Int, got Str"},
		"huge attempts":  {func(r plog.LogRecord) { r.Attributes().PutInt(KeyAttempts, 1<<20) }, "flowtrace.attempts: 1048576 out of range"},
		"negative":       {func(r plog.LogRecord) { r.Attributes().PutInt(KeyVersion, -1) }, "flowtrace.version: -1 out of range"},
	} {
		t.Run(name, func(t *testing.T) {
			records := plog.NewLogRecordSlice()
			AppendHop(records, sampleHop(), t0)
			tc.mutate(records.At(0))
			_, err := DecodeHop(records.At(0))
			require.ErrorContains(t, err, tc.want)
		})
	}
	records := plog.NewLogRecordSlice()
	AppendFlow(records, sampleFlow(), t0)
	records.At(0).Attributes().PutEmptySlice(KeyKeys).AppendEmpty().SetStr("x")
	_, err := DecodeFlow(records.At(0))
	require.ErrorContains(t, err, "flowtrace.keys[0]: want Map, got Str")
}

// FuzzDecode reads arbitrary OTLP/JSON logs as records: never a panic.
func FuzzDecode(f *testing.F) {
	logs := plog.NewLogs()
	records := logs.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	AppendHop(records, sampleHop(), t0)
	AppendFlow(records, sampleFlow(), t0)
	seed, err := (&plog.JSONMarshaler{}).MarshalLogs(logs)
	require.NoError(f, err)
	f.Add(seed)
	f.Fuzz(func(t *testing.T, data []byte) {
		logs, err := (&plog.JSONUnmarshaler{}).UnmarshalLogs(data)
		if err != nil {
			return
		}
		rls := logs.ResourceLogs()
		for i := 0; i < rls.Len(); i++ {
			sls := rls.At(i).ScopeLogs()
			for j := 0; j < sls.Len(); j++ {
				lrs := sls.At(j).LogRecords()
				for k := 0; k < lrs.Len(); k++ {
					_, _ = DecodeHop(lrs.At(k))
					_, _ = DecodeFlow(lrs.At(k))
				}
			}
		}
	})
}
