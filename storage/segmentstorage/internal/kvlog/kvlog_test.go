package kvlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func open(t testing.TB, dir string, opts Options) *Log {
	t.Helper()
	l, rec, err := Open(dir, opts)
	require.NoError(t, err)
	require.Zero(t, rec.Dropped)
	return l
}

func get(t testing.TB, l *Log, key string) []byte {
	t.Helper()
	ops := []Op{{Type: Get, Key: key}}
	require.NoError(t, l.Batch(ops))
	return ops[0].Value
}

func set(t testing.TB, l *Log, key string, value []byte) {
	t.Helper()
	require.NoError(t, l.Batch([]Op{{Type: Set, Key: key, Value: value}}))
}

func TestBatchAppliesOpsInOrder(t *testing.T) {
	l := open(t, t.TempDir(), Options{})
	defer l.Close()
	assert.Nil(t, get(t, l, "missing"))
	set(t, l, "a", []byte("1"))

	ops := []Op{
		{Type: Get, Key: "a"},
		{Type: Set, Key: "a", Value: []byte("2")},
		{Type: Get, Key: "a"},
		{Type: Delete, Key: "a"},
		{Type: Get, Key: "a"},
		{Type: Set, Key: "b", Value: []byte{}},
		{Type: Get, Key: "b"},
		{Type: Delete, Key: "never-there"},
	}
	require.NoError(t, l.Batch(ops))
	assert.Equal(t, []byte("1"), ops[0].Value)
	assert.Equal(t, []byte("2"), ops[2].Value)
	assert.Nil(t, ops[4].Value)
	assert.Equal(t, []byte{}, ops[6].Value, "an empty value is not a missing one")
	assert.Nil(t, get(t, l, "a"))
	assert.Equal(t, []byte{}, get(t, l, "b"))
	assert.Equal(t, 1, l.Len())

	value := get(t, l, "b")
	value = append(value, 'x')
	assert.Equal(t, []byte{}, get(t, l, "b"), "values returned are copies")
	_ = value
}

// TestReopenKeepsTheLatestOfEveryKey writes, overwrites and deletes across
// many small segments, and reopens: what is read back is the last word on
// every key, deletes included.
func TestReopenKeepsTheLatestOfEveryKey(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 512}
	l := open(t, dir, opts)
	want := map[string][]byte{}
	for i := range 400 {
		key := fmt.Sprint("k", i%37)
		switch i % 5 {
		case 3:
			require.NoError(t, l.Batch([]Op{{Type: Delete, Key: key}}))
			delete(want, key)
		default:
			v := bytes.Repeat([]byte{byte(i)}, i%50)
			set(t, l, key, v)
			want[key] = v
		}
	}
	set(t, l, "written-once", []byte("kept"))
	want["written-once"] = []byte("kept")
	for i := range 200 { // enough rotations to compact "written-once" forward
		set(t, l, "busy", bytes.Repeat([]byte{1}, 100+i%3))
	}
	want["busy"] = bytes.Repeat([]byte{1}, 100+199%3)
	require.NoError(t, l.Close())

	l = open(t, dir, opts)
	defer l.Close()
	assert.Equal(t, len(want), l.Len())
	for key, v := range want {
		assert.Equal(t, v, get(t, l, key), key)
	}
	assert.Less(t, l.Segments(), 10, "dead segments are removed")
}

// TestQueueWorkloadReclaimsDisk drives the store as the sending queue does:
// a metadata key rewritten with every operation, items added, read and
// deleted in order. Once drained, only the newest segments remain.
func TestQueueWorkloadReclaimsDisk(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, Options{SegmentSize: 64 << 10})
	defer l.Close()
	item := bytes.Repeat([]byte("span"), 2000)
	meta := func(i int) Op { return Op{Type: Set, Key: "qmv0", Value: []byte(fmt.Sprint(i))} }
	for i := range 500 {
		key := fmt.Sprint(i)
		require.NoError(t, l.Batch([]Op{meta(i), {Type: Set, Key: key, Value: item}}))
		if i >= 10 { // ten items waiting
			old := fmt.Sprint(i - 10)
			read := []Op{meta(i), {Type: Get, Key: old}}
			require.NoError(t, l.Batch(read))
			require.Equal(t, item, read[1].Value)
			require.NoError(t, l.Batch([]Op{meta(i), {Type: Delete, Key: old}}))
		}
	}
	assert.Equal(t, 11, l.Len())
	files, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
	require.NoError(t, err)
	assert.LessOrEqual(t, len(files), 3, "500 items of 8 KB written, about 80 KB live")
}

// TestDamagedRecordsEndTheirSegment: a crash tears the last record; a flipped
// byte breaks a checksum. What precedes the damage is kept, the damage is
// reported and cut off, and the store takes writes again.
func TestDamagedRecordsEndTheirSegment(t *testing.T) {
	for name, damage := range map[string]func([]byte) []byte{
		"torn":       func(b []byte) []byte { return b[:len(b)-3] },
		"bad crc":    func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b },
		"huge size":  func(b []byte) []byte { b[len(b)-20] = 0xff; return b },
		"wrong op":   func(b []byte) []byte { return append(b, 5, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9) },
		"zero bytes": func(b []byte) []byte { return append(b, make([]byte, 64)...) },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l := open(t, dir, Options{})
			set(t, l, "first", []byte("kept"))
			set(t, l, "second", bytes.Repeat([]byte("v"), 30))
			require.NoError(t, l.Close())
			files, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
			require.NoError(t, err)
			require.Len(t, files, 1)
			data, err := os.ReadFile(files[0])
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(files[0], damage(data), 0o600))

			l, rec, err := Open(dir, Options{})
			require.NoError(t, err)
			defer l.Close()
			assert.Positive(t, rec.Dropped)
			assert.Equal(t, []string{filepath.Base(files[0])}, rec.Segments)
			assert.Equal(t, []byte("kept"), get(t, l, "first"))
			set(t, l, "third", []byte("new"))
			assert.Equal(t, []byte("new"), get(t, l, "third"))
		})
	}
}

// TestFailedAppendChangesNothing: when the disk refuses a batch, none of it
// is in the index, and the store works once the disk is back.
func TestFailedAppendChangesNothing(t *testing.T) {
	dir := t.TempDir()
	l := open(t, dir, Options{})
	defer l.Close()
	set(t, l, "a", []byte("1"))

	active := l.active()
	writable := active.file
	readOnly, err := os.Open(writable.Name())
	require.NoError(t, err)
	active.file = readOnly // every write now fails
	err = l.Batch([]Op{{Type: Set, Key: "a", Value: []byte("2")}, {Type: Set, Key: "b", Value: []byte("3")}})
	require.ErrorContains(t, err, "kvlog: append")
	assert.Equal(t, []byte("1"), get(t, l, "a"))
	assert.Nil(t, get(t, l, "b"))

	active.file = writable
	require.NoError(t, readOnly.Close())
	set(t, l, "b", []byte("3"))
	require.NoError(t, l.Close())
	l2 := open(t, dir, Options{})
	defer l2.Close()
	assert.Equal(t, []byte("1"), get(t, l2, "a"))
	assert.Equal(t, []byte("3"), get(t, l2, "b"))
}

func TestClosedLogRefuses(t *testing.T) {
	l := open(t, t.TempDir(), Options{})
	require.NoError(t, l.Close())
	require.NoError(t, l.Close(), "twice")
	require.ErrorIs(t, l.Batch([]Op{{Type: Get, Key: "a"}}), ErrClosed)
}

// FuzzOpen: whatever bytes a segment holds, Open neither fails nor panics,
// reports what it could not read, and the store then works.
func FuzzOpen(f *testing.F) {
	seed := t0Segment(f)
	f.Add(seed)
	f.Add(seed[:len(seed)-1])
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, segmentName(1)), data, 0o600))
		l, rec, err := Open(dir, Options{})
		require.NoError(t, err)
		assert.LessOrEqual(t, rec.Dropped, int64(len(data)))
		set(t, l, "after", []byte("ok"))
		n := l.Len()
		require.NoError(t, l.Close())
		l, rec, err = Open(dir, Options{})
		require.NoError(t, err)
		defer l.Close()
		assert.Zero(t, rec.Dropped, "damage was cut off the first time")
		assert.Equal(t, n, l.Len())
		assert.Equal(t, []byte("ok"), get(t, l, "after"))
	})
}

// t0Segment is a well-formed segment with sets and deletes.
func t0Segment(t testing.TB) []byte {
	dir := t.TempDir()
	l := open(t, dir, Options{})
	set(t, l, "a", []byte("1"))
	set(t, l, "b", []byte("22"))
	require.NoError(t, l.Batch([]Op{{Type: Delete, Key: "a"}, {Type: Set, Key: "c", Value: nil}}))
	require.NoError(t, l.Close())
	data, err := os.ReadFile(filepath.Join(dir, segmentName(1)))
	require.NoError(t, err)
	return data
}
