package redistapreceiver

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.opentelemetry.io/collector/config/configopaque"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// Config is the Redis tap's configuration.
type Config struct {
	// Endpoint is the Redis server's host:port. Default 127.0.0.1:6379.
	Endpoint string `mapstructure:"endpoint"`
	// Username for Redis ACLs. Default empty (the default user).
	Username string `mapstructure:"username"`
	// Password for AUTH. Default empty.
	Password configopaque.String `mapstructure:"password"`
	// DB is the database number: 0 or more, below the server's
	// "databases" setting (16 unless configured; Redis Cluster has only 0).
	// Default 0.
	DB int `mapstructure:"db"`
	// PollInterval is how often consumer groups, Sidekiq's queues and the
	// backlog are polled; it is also the longest an XREAD blocks. At least
	// 100ms. Default 1s.
	PollInterval time.Duration `mapstructure:"poll_interval"`
	// Streams configures the streams tapped.
	Streams StreamsConfig `mapstructure:"streams"`
	// PubSub configures the pub/sub channels tapped.
	PubSub PubSubConfig `mapstructure:"pubsub"`
	// Sidekiq configures the Sidekiq queues tapped.
	Sidekiq SidekiqConfig `mapstructure:"sidekiq"`
	// Reconnect bounds the waits between reconnection attempts:
	// initial_interval (default 500ms), max_interval (default 30s).
	Reconnect tap.Backoff `mapstructure:"reconnect"`
}

// StreamsConfig names the streams tapped and what is read from their
// entries.
type StreamsConfig struct {
	// Names are the stream keys tapped. Default none.
	Names []string `mapstructure:"names"`
	// KeyFields maps entry fields to flow key kinds, e.g. order_id:
	// order_id. Their values are kept as flow keys; no other field value is
	// kept. Default none.
	KeyFields map[string]string `mapstructure:"key_fields"`
	// TraceParentField is the entry field holding a W3C traceparent.
	// Default "traceparent".
	TraceParentField string `mapstructure:"traceparent_field"`
	// ReadCount is the most entries one XREAD returns. Default 1000.
	ReadCount int64 `mapstructure:"read_count"`
	// PendingScan is the most pending entries read per consumer group and
	// poll (XPENDING ... COUNT). Default 1000.
	PendingScan int64 `mapstructure:"pending_scan"`
	// MaxTrackedEntries bounds the entries remembered per stream to infer
	// deliveries and acks between polls. Default 100000.
	MaxTrackedEntries int `mapstructure:"max_tracked_entries"`
	// DeadLetter recognises dead-letter streams.
	DeadLetter DeadLetterConfig `mapstructure:"dead_letter"`
}

// DeadLetterConfig describes the streams consumers dead-letter entries to.
type DeadLetterConfig struct {
	// Pattern names the dead-letter stream of each tapped stream, with
	// {stream} for the stream's name, e.g. "{stream}.dlq". Empty: no
	// dead-letter streams. Default "{stream}.dlq".
	Pattern string `mapstructure:"pattern"`
	// OriginalIDField is the dead-letter entry's field holding the id of
	// the original entry. Default "original_id".
	OriginalIDField string `mapstructure:"original_id_field"`
	// ReasonField is the field holding the reason, if any. Default
	// "reason".
	ReasonField string `mapstructure:"reason_field"`
	// GroupField is the field holding the consumer group that gave up on
	// the entry, if any. Default "group".
	GroupField string `mapstructure:"group_field"`
}

// PubSubConfig names the channel patterns tapped.
type PubSubConfig struct {
	// Patterns are PSUBSCRIBE glob patterns. Default none.
	Patterns []string `mapstructure:"patterns"`
}

// SidekiqConfig configures the Sidekiq tap.
type SidekiqConfig struct {
	// Enabled turns the Sidekiq tap on. Default false.
	Enabled bool `mapstructure:"enabled"`
	// Namespace is the redis-namespace prefix of Sidekiq's keys, if any
	// (keys are "<namespace>:queue:<name>"). Default empty.
	Namespace string `mapstructure:"namespace"`
	// Queues are the queues tapped; empty: every queue in the "queues" set.
	// Default empty.
	Queues []string `mapstructure:"queues"`
	// ScanLimit is the most jobs read per queue end, retry set and dead set
	// on each poll. Default 1000.
	ScanLimit int64 `mapstructure:"scan_limit"`
	// SettleAfter is how long a job must have left its queue, without
	// showing up running, in the retry set or in the dead set, before it
	// is taken as done. Longer than Sidekiq's heartbeat (10s). Default 30s.
	SettleAfter time.Duration `mapstructure:"settle_after"`
	// MaxTrackedJobs bounds the jobs remembered. Default 100000.
	MaxTrackedJobs int `mapstructure:"max_tracked_jobs"`
}

// minPollInterval bounds how often the tap polls, so its cost on the
// server stays small.
const minPollInterval = 100 * time.Millisecond

func createDefaultConfig() *Config {
	return &Config{
		Endpoint:     "127.0.0.1:6379",
		PollInterval: time.Second,
		Streams: StreamsConfig{
			TraceParentField:  "traceparent",
			ReadCount:         1000,
			PendingScan:       1000,
			MaxTrackedEntries: 100_000,
			DeadLetter: DeadLetterConfig{
				Pattern:         "{stream}.dlq",
				OriginalIDField: "original_id",
				ReasonField:     "reason",
				GroupField:      "group",
			},
		},
		Sidekiq: SidekiqConfig{
			ScanLimit:      1000,
			SettleAfter:    30 * time.Second,
			MaxTrackedJobs: 100_000,
		},
		Reconnect: tap.DefaultBackoff,
	}
}

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	if _, port, err := net.SplitHostPort(c.Endpoint); err != nil || port == "" {
		errs = append(errs, fmt.Errorf("endpoint: want host:port, got %q", c.Endpoint))
	}
	if c.DB < 0 {
		errs = append(errs, fmt.Errorf("db: must not be negative, got %d", c.DB))
	}
	if c.PollInterval < minPollInterval {
		errs = append(errs, fmt.Errorf("poll_interval: must be at least %s, got %s", minPollInterval, c.PollInterval))
	}
	if len(c.Streams.Names) == 0 && len(c.PubSub.Patterns) == 0 && !c.Sidekiq.Enabled {
		errs = append(errs, errors.New("nothing to tap: set streams::names, pubsub::patterns or sidekiq::enabled"))
	}
	errs = append(errs, c.Streams.validate(), c.PubSub.validate(), c.Sidekiq.validate(), c.Reconnect.Validate())
	return errors.Join(errs...)
}

// checkNames reports the empty and the repeated names of the list key, and
// returns the names seen.
func checkNames(key string, names []string) (errs []error, seen map[string]bool) {
	seen = map[string]bool{}
	for i, name := range names {
		switch {
		case name == "":
			errs = append(errs, fmt.Errorf("%s[%d]: must not be empty", key, i))
		case seen[name]:
			errs = append(errs, fmt.Errorf("%s[%d]: %q is listed twice", key, i, name))
		}
		seen[name] = true
	}
	return errs, seen
}

func (s *StreamsConfig) validate() error {
	errs, seen := checkNames("streams::names", s.Names)
	for field, kind := range s.KeyFields {
		if field == "" || kind == "" {
			errs = append(errs, fmt.Errorf("streams::key_fields: field %q needs a key kind", field))
		}
	}
	if s.ReadCount <= 0 {
		errs = append(errs, fmt.Errorf("streams::read_count: must be positive, got %d", s.ReadCount))
	}
	if s.PendingScan <= 0 {
		errs = append(errs, fmt.Errorf("streams::pending_scan: must be positive, got %d", s.PendingScan))
	}
	if s.MaxTrackedEntries <= 0 {
		errs = append(errs, fmt.Errorf("streams::max_tracked_entries: must be positive, got %d", s.MaxTrackedEntries))
	}
	if d := s.DeadLetter; d.Pattern != "" {
		if strings.Count(d.Pattern, "{stream}") != 1 || d.Pattern == "{stream}" {
			errs = append(errs, fmt.Errorf("streams::dead_letter::pattern: %q needs {stream} exactly once and more", d.Pattern))
		} else {
			for i, name := range s.Names {
				if seen[s.deadLetterStream(name)] {
					errs = append(errs, fmt.Errorf("streams::dead_letter::pattern: the dead-letter stream of streams::names[%d] is a tapped stream", i))
				}
			}
		}
		if d.OriginalIDField == "" {
			errs = append(errs, errors.New("streams::dead_letter::original_id_field: must be set with a pattern"))
		}
	}
	return errors.Join(errs...)
}

// deadLetterStream is the dead-letter stream of stream, "" without a
// pattern.
func (s *StreamsConfig) deadLetterStream(stream string) string {
	if s.DeadLetter.Pattern == "" {
		return ""
	}
	return strings.Replace(s.DeadLetter.Pattern, "{stream}", stream, 1)
}

func (p *PubSubConfig) validate() error {
	errs, _ := checkNames("pubsub::patterns", p.Patterns)
	return errors.Join(errs...)
}

func (s *SidekiqConfig) validate() error {
	if !s.Enabled {
		return nil
	}
	errs, _ := checkNames("sidekiq::queues", s.Queues)
	if s.ScanLimit <= 0 {
		errs = append(errs, fmt.Errorf("sidekiq::scan_limit: must be positive, got %d", s.ScanLimit))
	}
	if s.SettleAfter <= 0 {
		errs = append(errs, fmt.Errorf("sidekiq::settle_after: must be positive, got %s", s.SettleAfter))
	}
	if s.MaxTrackedJobs <= 0 {
		errs = append(errs, fmt.Errorf("sidekiq::max_tracked_jobs: must be positive, got %d", s.MaxTrackedJobs))
	}
	return errors.Join(errs...)
}
