package correlatorconnector

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"
)

// restore loads the last checkpoint, if checkpoints are on and one exists.
// A checkpoint that cannot be read is moved aside (to <path>.bad) and the
// engine starts empty: losing in-flight state beats not starting.
func (c *core) restore() error {
	path := c.cfg.Checkpoint.Path
	if path == "" {
		return nil
	}
	file, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("open checkpoint: %w", err)
	}
	defer file.Close()
	engine, err := newEngine(c.cfg)
	if err != nil {
		return err
	}
	if err := engine.Restore(bufio.NewReader(file)); err != nil {
		closeEngine(engine)
		c.logger.Error("Correlator checkpoint unreadable; starting without in-flight state",
			zap.String("path", path), zap.Error(err))
		if renameErr := os.Rename(path, path+".bad"); renameErr != nil {
			return fmt.Errorf("move unreadable checkpoint aside: %w", renameErr)
		}
		return nil
	}
	stats := engine.Stats()
	c.logger.Info("Correlator state restored", zap.String("path", path),
		zap.Int("flows", stats.InFlightFlows), zap.Int("hops", stats.InFlightHops))
	c.mu.Lock()
	closeEngine(c.engine)
	c.engine = engine
	c.mu.Unlock()
	return nil
}

// checkpoint saves the engine's in-flight state, if checkpoints are on. It
// writes a new file and renames it over the old one, so a crash mid-write
// leaves the previous checkpoint whole.
func (c *core) checkpoint() error {
	path := c.cfg.Checkpoint.Path
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name())
	started := time.Now()
	w := bufio.NewWriterSize(tmp, 1<<20)
	c.mu.Lock()
	err = c.engine.Checkpoint(w)
	c.mu.Unlock()
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
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	c.logger.Debug("Correlator checkpoint written", zap.String("path", path), zap.Duration("took", time.Since(started)))
	return nil
}
