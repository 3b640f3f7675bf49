package redistapreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"

	"github.com/flowtrace/flowtrace/internal/configtest"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/redistapreceiver/internal/metadata"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	return configtest.Load(t, metadata.Type, name, createDefaultConfig)
}

func TestDefaultConfig(t *testing.T) {
	cfg := loadConfig(t, "")
	assert.Equal(t, createDefaultConfig(), cfg)
	assert.Equal(t, "127.0.0.1:6379", cfg.Endpoint)
	assert.Equal(t, "{stream}.dlq", cfg.Streams.DeadLetter.Pattern)
	// The defaults tap nothing until something is named.
	assert.ErrorContains(t, confmap.Validate(cfg), "nothing to tap")
	cfg.Streams.Names = []string{"orders"}
	require.NoError(t, confmap.Validate(cfg))
}

func TestCustomConfig(t *testing.T) {
	cfg := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, &Config{
		Endpoint:     "redis.internal:6380",
		Username:     "flowtrace",
		Password:     "s3cret",
		DB:           2,
		PollInterval: 500 * time.Millisecond,
		Streams: StreamsConfig{
			Names:             []string{"orders", "payments"},
			KeyFields:         map[string]string{"order_id": "order_id"},
			TraceParentField:  "tp",
			ReadCount:         500,
			PendingScan:       200,
			MaxTrackedEntries: 5000,
			DeadLetter:        DeadLetterConfig{Pattern: "dlq:{stream}", OriginalIDField: "source_id", ReasonField: "error"},
		},
		PubSub:    PubSubConfig{Patterns: []string{"events.*"}},
		Sidekiq:   SidekiqConfig{Enabled: true, Namespace: "myapp", Queues: []string{"default", "mailers"}, ScanLimit: 100, SettleAfter: time.Minute, MaxTrackedJobs: 1000},
		Reconnect: tap.Backoff{Initial: time.Second, Max: time.Minute},
	}, cfg)
	assert.Equal(t, "dlq:orders", cfg.Streams.deadLetterStream("orders"))
	assert.NotContains(t, cfg.Password.String(), "s3cret", "the password prints masked")
}

func TestInvalidConfigs(t *testing.T) {
	for name, wants := range map[string][]string{
		"bad_numbers": {
			`endpoint: want host:port, got "localhost"`,
			"db: must not be negative",
			"poll_interval: must be at least 100ms, got 99ms",
			`streams::names[1]: "orders" is listed twice`,
			"streams::names[2]: must not be empty",
			`streams::key_fields: field "order_id" needs a key kind`,
			"streams::read_count: must be positive",
			"streams::pending_scan: must be positive",
			"streams::max_tracked_entries: must be positive",
			"sidekiq::queues[0]: must not be empty",
			`sidekiq::queues[2]: "mailers" is listed twice`,
			"sidekiq::scan_limit: must be positive",
			"sidekiq::settle_after: must be positive",
			"sidekiq::max_tracked_jobs: must be positive",
			"reconnect::initial_interval: must be positive",
		},
		"bad_dead_letter": {
			"streams::dead_letter::pattern: the dead-letter stream of streams::names[0] is a tapped stream",
			"streams::dead_letter::original_id_field: must be set with a pattern",
		},
		"bad_pattern": {`streams::dead_letter::pattern: "{stream}-{stream}" needs {stream} exactly once`},
		"bad_pubsub":  {"pubsub::patterns[0]: must not be empty", `pubsub::patterns[2]: "events.*" is listed twice`},
	} {
		t.Run(name, func(t *testing.T) {
			err := confmap.Validate(loadConfig(t, name))
			require.Error(t, err)
			for _, want := range wants {
				assert.ErrorContains(t, err, want)
			}
		})
	}
}
