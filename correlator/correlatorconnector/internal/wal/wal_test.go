package wal

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/model/modelcodec"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 123, time.UTC)

func sample(i int) model.Event {
	return model.Event{
		Time: t0.Add(time.Duration(i) * time.Second), Kind: model.EventProcess, System: "kafka", Destination: "orders",
		Partition: "1", MessageID: "orders/1/" + string(rune('a'+i)), Operation: "charge", Attempt: 2, Service: "billing",
		ConsumerGroup: "g", TraceID: "t", SpanID: "s", ParentSpanID: "p",
		Links:   []model.SpanRef{{TraceID: "lt", SpanID: "ls"}},
		Keys:    []model.Key{{Kind: "order_id", Value: "o-1"}},
		Outcome: "error", Reason: "boom", BodySize: 42, Duration: time.Millisecond, FlowName: "checkout",
	}
}

type replayed struct {
	now time.Time
	ev  model.Event
}

func replayAll(t *testing.T, l *Log, from uint64) ([]replayed, int) {
	t.Helper()
	var out []replayed
	bad, err := l.Replay(from, func(now time.Time, ev *model.Event) {
		out = append(out, replayed{now, *ev})
	})
	require.NoError(t, err)
	return out, bad
}

func TestAppendReplayRotateRemove(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	require.NoError(t, l.Append(t0, []model.Event{sample(0), sample(1)}))
	require.NoError(t, l.Append(t0.Add(time.Second), []model.Event{{Kind: model.EventPublish}}))
	next, err := l.Rotate()
	require.NoError(t, err)
	require.NoError(t, l.Append(t0.Add(2*time.Second), []model.Event{sample(2)}))
	require.NoError(t, l.Close())

	// A new process opens the log; what was appended is replayed.
	l, err = Open(dir)
	require.NoError(t, err)
	defer l.Close()
	all, bad := replayAll(t, l, 0)
	require.Zero(t, bad)
	require.Len(t, all, 4)
	assert.Equal(t, replayed{t0, sample(0)}, all[0])
	assert.Equal(t, replayed{t0, sample(1)}, all[1])
	assert.Equal(t, replayed{t0.Add(time.Second), model.Event{Kind: model.EventPublish}}, all[2])
	assert.Equal(t, replayed{t0.Add(2 * time.Second), sample(2)}, all[3])

	after, _ := replayAll(t, l, next)
	assert.Equal(t, []replayed{{t0.Add(2 * time.Second), sample(2)}}, after)
	require.NoError(t, l.Remove(next))
	all, _ = replayAll(t, l, 0)
	assert.Equal(t, after, all)
}

// TestLargeBatchesAreSplit: a batch past the record limit is written as
// several records, cut between events, and replayed whole; an event that
// fits no record refuses its batch, writing nothing.
func TestLargeBatchesAreSplit(t *testing.T) {
	defer func(old int) { maxRecord = old }(maxRecord)
	maxRecord = 300
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	batch := make([]model.Event, 12)
	for i := range batch {
		batch[i] = sample(i)
	}
	require.NoError(t, l.Append(t0, batch))
	huge := sample(99)
	huge.Destination = strings.Repeat("x", 400)
	require.ErrorIs(t, l.Append(t0, []model.Event{sample(0), huge}), ErrTooLarge)
	require.NoError(t, l.Close())

	data, err := os.ReadFile(filepath.Join(dir, "1.wal"))
	require.NoError(t, err)
	records := 0
	for rest := data; len(rest) > 0; records++ {
		size := binary.LittleEndian.Uint32(rest[:4])
		require.LessOrEqual(t, int(size), maxRecord)
		rest = rest[8+size:]
	}
	assert.Greater(t, records, 1, "split into several records")

	l, err = Open(dir)
	require.NoError(t, err)
	defer l.Close()
	all, bad := replayAll(t, l, 0)
	require.Zero(t, bad)
	require.Len(t, all, len(batch), "the refused batch left nothing")
	for i := range batch {
		assert.Equal(t, replayed{t0, batch[i]}, all[i])
	}
}

func TestTornAndCorruptRecordsEndTheirSegment(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir)
	require.NoError(t, err)
	require.NoError(t, l.Append(t0, []model.Event{sample(0)}))
	require.NoError(t, l.Append(t0, []model.Event{sample(1)}))
	require.NoError(t, l.Close())
	path := filepath.Join(dir, "1.wal")
	data, err := os.ReadFile(path)
	require.NoError(t, err)

	for name, mutate := range map[string]func([]byte) []byte{
		"torn":    func(b []byte) []byte { return b[:len(b)-3] },
		"bad crc": func(b []byte) []byte { c := append([]byte(nil), b...); c[len(c)-1] ^= 0xff; return c },
		"huge size": func(b []byte) []byte {
			c := append([]byte(nil), b...)
			size := binary.LittleEndian.Uint32(c[:4])
			binary.LittleEndian.PutUint32(c[8+size:], 1<<30)
			return c
		},
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(path, mutate(data), 0o600))
			l, err := Open(dir)
			require.NoError(t, err)
			defer l.Close()
			got, bad := replayAll(t, l, 0)
			assert.Equal(t, 1, bad)
			require.Len(t, got, 1, "the record before the damage survives")
			assert.Equal(t, sample(0), got[0].ev)
		})
	}
}

// FuzzDecode: whatever a segment holds, replay never panics.
func FuzzDecode(f *testing.F) {
	e := sample(3)
	f.Add(modelcodec.AppendEvent(nil, &e))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var ev model.Event
		_ = decodeBatch(payload, &ev, func(time.Time, *model.Event) {})
	})
}
