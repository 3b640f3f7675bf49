package correlatorconnector

import (
	"errors"
	"fmt"
	"time"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/spanevent"
)

// Config is the correlator connector's configuration.
type Config struct {
	// The engine's settings: stuck_after, flow_idle, retain,
	// max_in_flight_hops, max_in_flight_flows, retry_destinations,
	// dead_letter_destinations (see the correlator package).
	correlator.Config `mapstructure:",squash"`
	// Spans configures how spans are read: callback_id_attributes,
	// key_attributes, flow_name_attributes.
	Spans spanevent.Config `mapstructure:"spans"`
	// TickInterval is how often stuck and idle flows are looked for.
	// Default 1s.
	TickInterval time.Duration `mapstructure:"tick_interval"`
	// MetricsFlushInterval is how often metrics are emitted. Default 15s.
	MetricsFlushInterval time.Duration `mapstructure:"metrics_flush_interval"`
	// MaxLabelValues bounds the distinct values of each metric label; more
	// fold into "other". Default 1000.
	MaxLabelValues int `mapstructure:"max_label_values"`
	// Workers is how many goroutines share the flows, each owning its part
	// of the state; a router keeps every flow on one worker. Above 1 it pays
	// once the engine, not span decoding, limits throughput. Default 1.
	Workers int `mapstructure:"workers"`
	// Checkpoint keeps in-flight state across restarts.
	Checkpoint CheckpointConfig `mapstructure:"checkpoint"`
	// RecordEncoding is how hop and flow records travel as logs:
	// "attributes", one log record of attributes per version, readable by
	// any logs backend; or "batch", one log record per send with every
	// version in its body in a compact binary form, which only the
	// ClickHouse exporter reads and which costs a fraction of the CPU.
	// Default "attributes".
	RecordEncoding string `mapstructure:"record_encoding"`
}

// Record encodings, for RecordEncoding.
const (
	EncodingAttributes = "attributes"
	EncodingBatch      = "batch"
)

// CheckpointConfig says where and how often in-flight state is saved.
type CheckpointConfig struct {
	// Path of the checkpoint file; empty disables checkpoints. Default empty.
	Path string `mapstructure:"path"`
	// Interval between checkpoints; one is also written at shutdown.
	// Default 30s.
	Interval time.Duration `mapstructure:"interval"`
}

func createDefaultConfig() *Config {
	return &Config{
		TickInterval:         time.Second,
		MetricsFlushInterval: 15 * time.Second,
		MaxLabelValues:       1000,
		Workers:              1,
		Checkpoint:           CheckpointConfig{Interval: 30 * time.Second},
		RecordEncoding:       EncodingAttributes,
	}
}

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	errs := []error{c.Config.Validate(), c.Spans.Validate()}
	if c.TickInterval <= 0 {
		errs = append(errs, fmt.Errorf("tick_interval: must be positive, got %s", c.TickInterval))
	}
	if c.MetricsFlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("metrics_flush_interval: must be positive, got %s", c.MetricsFlushInterval))
	}
	if c.Workers < 1 {
		errs = append(errs, fmt.Errorf("workers: must be at least 1, got %d", c.Workers))
	}
	if c.MaxLabelValues <= 0 {
		errs = append(errs, fmt.Errorf("max_label_values: must be positive, got %d", c.MaxLabelValues))
	}
	if c.RecordEncoding != EncodingAttributes && c.RecordEncoding != EncodingBatch {
		errs = append(errs, fmt.Errorf("record_encoding: must be %q or %q, got %q", EncodingAttributes, EncodingBatch, c.RecordEncoding))
	}
	if c.Checkpoint.Path != "" && c.Checkpoint.Interval <= 0 {
		errs = append(errs, fmt.Errorf("checkpoint::interval: must be positive, got %s", c.Checkpoint.Interval))
	}
	return errors.Join(errs...)
}
