package segmentstorage

import (
	"errors"
	"fmt"
)

// Config is the segment_storage extension's configuration.
type Config struct {
	// Directory holds one subdirectory of segments per client (component
	// and signal). Created if missing.
	Directory string `mapstructure:"directory"`
	// SegmentSize is the size in bytes at which a client starts a new
	// segment file; whole segments are removed once nothing in them is
	// live. Default 64 MiB.
	SegmentSize int64 `mapstructure:"segment_size"`
	// FSync makes every write reach the disk before it returns. Without it
	// writes survive a crash of flowtrace but not of the machine. Default
	// false.
	FSync bool `mapstructure:"fsync"`
}

func createDefaultConfig() *Config {
	return &Config{SegmentSize: 64 << 20}
}

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	if c.Directory == "" {
		errs = append(errs, errors.New("directory: must not be empty"))
	}
	if c.SegmentSize < 1<<10 {
		errs = append(errs, fmt.Errorf("segment_size: want at least 1024 bytes, got %d", c.SegmentSize))
	}
	return errors.Join(errs...)
}
