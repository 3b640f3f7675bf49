package modelcodec

import (
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 123456789, time.UTC)

func sampleEvent() model.Event {
	return model.Event{
		Time: t0, Kind: model.EventProcess, System: "kafka", Destination: "orders", Partition: "1",
		MessageID: "orders/1/7", Operation: "charge", Attempt: 2, Service: "billing", ConsumerGroup: "g",
		TraceID: "t", SpanID: "s", ParentSpanID: "p", Links: []model.SpanRef{{TraceID: "lt", SpanID: "ls"}},
		Keys: []model.Key{{Kind: "order_id", Value: "o-1"}}, Outcome: "error", Reason: "boom\x00\n",
		BodySize: 42, Duration: time.Millisecond, FlowName: "checkout",
	}
}

func sampleHop() model.Hop {
	return model.Hop{
		FlowID: "f", HopID: "h", Version: 7, FirstSeen: t0, Deleted: true, ParentHopID: "p", System: "rabbitmq",
		Producer: "api", Destination: "orders", Consumer: "billing", ConsumerGroup: "g", Operation: "charge",
		MessageID: "m", TraceID: "t", PublishTime: t0, DeliverTime: t0.Add(time.Second), SettleTime: t0.Add(2 * time.Second),
		QueueWait: time.Second, Processing: -time.Second, Attempts: 65535, Outcome: model.HopDeadLettered,
		Reason: "rejected", Counted: true,
	}
}

func sampleFlow() model.Flow {
	return model.Flow{
		ID: "f", Version: 1 << 40, FirstSeen: t0, Deleted: true, Name: "checkout orders", Status: model.FlowFailed,
		Start: t0, End: t0.Add(time.Minute), HopCount: 3, Retries: 4, DeadLetters: 1 << 31,
		Keys: []model.Key{{Kind: "trace_id", Value: "t"}, {Kind: "message_id", Value: "m"}}, CriticalPath: []string{"h1", "h2"},
	}
}

func sampleBacklog() model.BacklogSample {
	return model.BacklogSample{
		Time: t0, System: "kafka", Broker: "c1", Destination: "orders", ConsumerGroup: "billing", Depth: 12,
		Unacked: -1, LagMessages: 40, LagSeconds: 3.5, Consumers: 2, PublishRate: 1e9, DeliverRate: 0.25,
	}
}

// requireEveryFieldSet keeps the samples complete: a field added to the
// model and not to the codec fails the round trip below.
func requireEveryFieldSet(t *testing.T, v any) {
	t.Helper()
	rv := reflect.ValueOf(v)
	for i := range rv.NumField() {
		require.False(t, rv.Field(i).IsZero(), "%T.%s is zero in the sample", v, rv.Type().Field(i).Name)
	}
}

func TestRoundTrip(t *testing.T) {
	e, h, f, b := sampleEvent(), sampleHop(), sampleFlow(), sampleBacklog()
	for _, v := range []any{e, h, f, b} {
		requireEveryFieldSet(t, v)
	}
	var buf []byte
	buf = AppendEvent(buf, &e)
	buf = AppendHop(buf, &h)
	buf = AppendFlow(buf, &f)
	buf = AppendBacklogSample(buf, &b)
	empty := model.Event{}
	buf = AppendEvent(buf, &empty)
	buf = AppendString(buf, "tail")

	d := NewDecoder(buf)
	var e2, empty2 model.Event
	var h2 model.Hop
	var f2 model.Flow
	var b2 model.BacklogSample
	d.Event(&e2)
	d.Hop(&h2)
	d.Flow(&f2)
	d.BacklogSample(&b2)
	d.Event(&empty2)
	tail := d.String()
	require.NoError(t, d.Err())
	assert.Equal(t, e, e2)
	assert.Equal(t, h, h2)
	assert.Equal(t, f, f2)
	assert.Equal(t, b, b2)
	assert.Equal(t, empty, empty2, "zero times and nil slices stay zero")
	assert.Equal(t, "tail", tail)
	assert.Zero(t, d.Len())

	d.Uvarint()
	assert.ErrorIs(t, d.Err(), ErrCorrupt, "reading past the end")
}

func TestTruncatedIsCorrupt(t *testing.T) {
	h := sampleHop()
	buf := AppendHop(nil, &h)
	for n := range len(buf) {
		d := NewDecoder(buf[:n])
		var got model.Hop
		d.Hop(&got)
		require.ErrorIs(t, d.Err(), ErrCorrupt, "cut at %d of %d", n, len(buf))
	}
}

func TestCheckerReadsWithoutKeeping(t *testing.T) {
	f := sampleFlow()
	buf := AppendFlow(AppendFlow(nil, &f), &f)
	c := NewChecker(buf)
	var scratch model.Flow
	c.Flow(&scratch)
	keys := &scratch.Keys[0]
	c.Flow(&scratch)
	require.NoError(t, c.Err())
	assert.Zero(t, c.Len(), "read to the end")
	assert.Empty(t, scratch.ID, "strings are not kept")
	assert.Equal(t, f.Version, scratch.Version, "numbers are")
	assert.Same(t, keys, &scratch.Keys[0], "the second flow reuses the first one's keys")
	assert.Zero(t, testing.AllocsPerRun(100, func() {
		c := NewChecker(buf)
		c.Flow(&scratch)
		c.Flow(&scratch)
	}), "checking allocates nothing once the scratch flow has room")

	for n := range len(buf) {
		c := NewChecker(buf[:n])
		c.Flow(&scratch)
		c.Flow(&scratch)
		require.ErrorIs(t, c.Err(), ErrCorrupt, "cut at %d of %d", n, len(buf))
	}
}

// FuzzDecode: no bytes make a decoder panic or allocate past its input.
func FuzzDecode(f *testing.F) {
	e, h, fl := sampleEvent(), sampleHop(), sampleFlow()
	f.Add(AppendEvent(nil, &e))
	f.Add(AppendHop(nil, &h))
	f.Add(AppendFlow(nil, &fl))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev model.Event
		var hop model.Hop
		var flow model.Flow
		var sample model.BacklogSample
		NewDecoder(b).BacklogSample(&sample)
		NewDecoder(b).Event(&ev)
		NewDecoder(b).Hop(&hop)
		NewDecoder(b).Flow(&flow)
		// A checker agrees with a decoder on what is corrupt and where a
		// value ends.
		d, c := NewDecoder(b), NewChecker(b)
		d.Flow(&flow)
		c.Flow(&flow)
		d.Hop(&hop)
		c.Hop(&hop)
		assert.Equal(t, d.Err(), c.Err())
		assert.Equal(t, d.Len(), c.Len())
		d = NewDecoder(b)
		d.Event(&ev)
		if d.Err() == nil {
			again := AppendEvent(nil, &ev)
			var ev2 model.Event
			NewDecoder(again).Event(&ev2)
			assert.Equal(t, ev, ev2, "what decodes re-encodes to itself")
		}
	})
}
