package correlatorconnector

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/correlatorconnector/internal/wal"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/model/modelcodec"
)

// A checkpoint file is the number of the first write-ahead log segment it
// does not cover (8 bytes, little-endian), then the engine's snapshot.
// Restoring loads the snapshot and replays the segments from that number on,
// so every event acknowledged before a crash is back in the engine.
//
// Beside it, <path>.unsent holds the hop and flow records waiting to be
// sent again when the checkpoint was taken: the engine counts them sent, and
// nothing else would send them. It is written first, so a crash between the
// two leaves records that the replay sends again too, never none.

func walDir(checkpointPath string) string { return checkpointPath + ".wal" }

// restore loads the last checkpoint and replays the write-ahead log after
// it, if checkpoints are on. A checkpoint that cannot be read stops the
// start: the log segments it covered are gone, so going on would split every
// flow in flight. The error says how to start afresh.
func (c *core) restore() error {
	path := c.cfg.Checkpoint.Path
	if path == "" {
		return nil
	}
	// Left by a crash while a checkpoint was being written.
	leftovers, _ := filepath.Glob(path + "*.tmp-*") // the checkpoint's, <path>.unsent's
	for _, name := range leftovers {
		if err := os.Remove(name); err != nil {
			c.logger.Warn("Removing a partial checkpoint failed", zap.String("path", name), zap.Error(err))
		}
	}
	log, err := wal.Open(walDir(path))
	if err != nil {
		return err
	}
	engine, err := newEngine(c.cfg)
	if err != nil {
		log.Close()
		return err
	}
	from, err := loadCheckpoint(path, engine)
	replayed, bad := 0, 0
	if err == nil {
		var last time.Time
		bad, err = log.Replay(from, func(now time.Time, ev *model.Event) {
			// Time moves as it did: flows that went quiet, finished or were
			// released between two batches are so again before the next,
			// or its events would join flows that were gone.
			if now.After(last) {
				engine.Advance(now)
				last = now
			}
			engine.Add(now, ev)
			replayed++
		})
	}
	if err != nil {
		log.Close()
		closeEngine(engine)
		return err
	}
	if bad > 0 {
		c.logger.Warn("Unreadable write-ahead log records skipped (torn by a crash)", zap.Int("records", bad))
	}
	unsent, err := loadUnsent(unsentPath(path))
	if err != nil {
		log.Close()
		closeEngine(engine)
		return err
	}
	c.sendMu.Lock()
	c.countDropped(c.unsent.add(unsent))
	c.sendMu.Unlock()
	stats := engine.Stats()
	c.logger.Info("Correlator state restored", zap.String("path", path), zap.Int("flows", stats.InFlightFlows),
		zap.Int("hops", stats.InFlightHops), zap.Int("replayed_events", replayed),
		zap.Int("records_to_send", len(unsent.Hops)+len(unsent.Flows)))
	c.mu.Lock()
	closeEngine(c.engine)
	c.engine, c.wal = engine, log
	c.mu.Unlock()
	return nil
}

// loadCheckpoint restores engine from the checkpoint at path and returns
// the first log segment to replay; 0 (all) without a checkpoint.
func loadCheckpoint(path string, engine engine) (uint64, error) {
	file, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open checkpoint: %w", err)
	}
	defer file.Close()
	r := bufio.NewReader(file)
	var header [8]byte
	_, err = io.ReadFull(r, header[:])
	if err == nil {
		err = engine.Restore(r)
	}
	if err != nil {
		return 0, fmt.Errorf("correlator checkpoint %s is unreadable (%w); to start without the flows in flight, "+
			"move it and %s aside", path, err, walDir(path))
	}
	return binary.LittleEndian.Uint64(header[:]), nil
}

// checkpoint saves the engine's in-flight state, if checkpoints are on, and
// drops the log segments it covers. It writes a new file and renames it over
// the old one, so a crash mid-write leaves the previous checkpoint whole.
// One goroutine at a time calls it: the timers', then Shutdown's.
func (c *core) checkpoint() error {
	path := c.cfg.Checkpoint.Path
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	started := time.Now()

	// Under the lock, the snapshot and the log agree: every event appended
	// so far is in the snapshot, every later one in the next segment. The
	// snapshot is the state already encoded (about 2 ms per 1,000 flows);
	// it is written after, outside the lock, so spans keep flowing
	// meanwhile.
	c.mu.Lock()
	next, err := c.wal.Rotate()
	var snap correlator.Snapshot
	if err == nil {
		snap = c.engine.Snapshot()
	}
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	locked := time.Since(started)

	c.sendMu.Lock()
	unsent := encodeUnsent(&c.unsent)
	c.sendMu.Unlock()
	if err := writeFileAtomic(unsentPath(path), func(w io.Writer) error { _, err := w.Write(unsent); return err }); err != nil {
		return fmt.Errorf("checkpoint: records to send again: %w", err)
	}

	err = writeFileAtomic(path, func(w io.Writer) error {
		var header [8]byte
		binary.LittleEndian.PutUint64(header[:], next)
		if _, err := w.Write(header[:]); err != nil {
			return err
		}
		return snap.Encode(w)
	})
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := c.wal.Remove(next); err != nil {
		return fmt.Errorf("checkpoint: drop covered log segments: %w", err)
	}
	c.logger.Debug("Correlator checkpoint written", zap.String("path", path),
		zap.Duration("engine_locked", locked), zap.Duration("took", time.Since(started)))
	return nil
}

func unsentPath(checkpoint string) string { return checkpoint + ".unsent" }

// encodeUnsent writes the records waiting to be sent again: their counts,
// then each in modelcodec's encoding.
func encodeUnsent(u *unsentRecords) []byte {
	b := modelcodec.AppendUvarint(nil, uint64(len(u.hops)))
	for _, h := range u.hops {
		b = modelcodec.AppendHop(b, &h)
	}
	b = modelcodec.AppendUvarint(b, uint64(len(u.flows)))
	for _, f := range u.flows {
		b = modelcodec.AppendFlow(b, &f)
	}
	return b
}

// loadUnsent reads the records a checkpoint kept to send again; none
// without the file (a checkpoint from before it was written).
func loadUnsent(path string) (correlator.Changes, error) {
	var c correlator.Changes
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read %s: %w", path, err)
	}
	d := modelcodec.NewDecoder(b)
	c.Hops = make([]model.Hop, d.Count())
	for i := range c.Hops {
		d.Hop(&c.Hops[i])
	}
	c.Flows = make([]model.Flow, d.Count())
	for i := range c.Flows {
		d.Flow(&c.Flows[i])
	}
	if d.Err() != nil || d.Len() != 0 {
		return correlator.Changes{}, fmt.Errorf("the records to send again in %s are unreadable; to start without them, move it aside", path)
	}
	return c, nil
}

// writeFileAtomic replaces path with what write writes: a new file,
// synced, renamed over it, the rename synced, so a crash leaves the old file
// or the new one whole.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	err = write(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if closeErr := tmp.Close(); err == nil {
		err = closeErr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return errors.Join(d.Sync(), d.Close())
}
