package correlator

import (
	"bytes"
	"encoding/gob"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gobCheckpoint writes e's state as checkpoints of gobFormat did.
func gobCheckpoint(t *testing.T, e *Engine) []byte {
	t.Helper()
	aliases := e.aliasesByMessage()
	snap := snapshot{Format: gobFormat, Now: e.now, Version: e.version, Symbols: e.syms.names, Stats: e.stats}
	for state := flowActive; state < flowReleased; state++ {
		for f := e.lists[state].head; f != nil; f = f.next {
			snap.Flows = append(snap.Flows, e.snapshotFlow(f, aliases))
		}
	}
	var buf bytes.Buffer
	require.NoError(t, gob.NewEncoder(&buf).Encode(&snap))
	return buf.Bytes()
}

// A checkpoint written before the binary form, in gob, restores to the same
// state as one in the binary form: an upgrade keeps the flows in flight.
func TestRestoreReadsGobCheckpoints(t *testing.T) {
	events := chain()
	want := shape(final(t, Config{}, events))
	for cut := 0; cut <= len(events); cut++ {
		first, all := runUntil(t, events, cut)
		resumeFrom(t, bytes.NewReader(gobCheckpoint(t, first)), events, cut, &all)
		require.Equal(t, want, shape(latest(all)), "restart after %d events", cut)
	}
}

// chainCheckpoint is a checkpoint of an engine fed chain's events.
func chainCheckpoint(t testing.TB) []byte {
	e, err := New(Config{})
	require.NoError(t, err)
	events := chain()
	for i := range events {
		e.Add(at(i), &events[i])
	}
	var buf bytes.Buffer
	require.NoError(t, e.Checkpoint(&buf))
	return buf.Bytes()
}

// Every counter of Stats survives a checkpoint: a field added to Stats
// and forgotten by statsCounters fails here.
func TestCheckpointKeepsEveryCounter(t *testing.T) {
	e, err := New(Config{})
	require.NoError(t, err)
	counters := 0
	fields := reflect.ValueOf(&e.stats).Elem()
	for i := range fields.NumField() {
		if fields.Field(i).Kind() == reflect.Uint64 {
			counters++
			fields.Field(i).SetUint(uint64(i + 1))
		}
	}
	require.Len(t, statsCounters(&e.stats), counters)
	var buf bytes.Buffer
	require.NoError(t, e.Checkpoint(&buf))
	restored, err := New(Config{})
	require.NoError(t, err)
	require.NoError(t, restored.Restore(&buf))
	assert.Equal(t, e.stats, restored.stats)
}

func TestRestoreRefusesDamagedCheckpoints(t *testing.T) {
	whole := chainCheckpoint(t)
	for name, data := range map[string][]byte{
		"truncated":    whole[:len(whole)-5],
		"trailing":     append(append([]byte(nil), whole...), 0),
		"other format": append([]byte{snapshotMagic, 9}, whole[2:]...),
	} {
		t.Run(name, func(t *testing.T) {
			fresh, err := New(Config{})
			require.NoError(t, err)
			assert.ErrorContains(t, fresh.Restore(bytes.NewReader(data)), "read checkpoint")
		})
	}
}

// FuzzRestore reads arbitrary bytes as a checkpoint: an error or an engine,
// never a panic.
func FuzzRestore(f *testing.F) {
	f.Add(chainCheckpoint(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 || data[0] != snapshotMagic {
			return // gob's own decoder reads the rest
		}
		fresh, err := New(Config{})
		require.NoError(t, err)
		_ = fresh.Restore(bytes.NewReader(data))
	})
}
