package correlatorconnector

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/correlatorconnector/internal/metadata"
	"github.com/flowtrace/flowtrace/correlator/spanevent"
	"github.com/flowtrace/flowtrace/internal/configtest"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	return configtest.Load(t, metadata.Type, name, createDefaultConfig)
}

func TestDefaultConfig(t *testing.T) {
	cfg := loadConfig(t, "")
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, createDefaultConfig(), cfg)
}

func TestCustomConfig(t *testing.T) {
	cfg := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, &Config{
		Config: correlator.Config{
			StuckAfter: time.Minute, FlowIdle: 3 * time.Minute, Retain: time.Hour,
			MaxInFlightHops: 5000, MaxInFlightFlows: 1000,
			RetryDestinations:      []string{"{topic}.retry.{attempt}"},
			DeadLetterDestinations: []string{"{topic}.dlq", "{topic}.DLT"},
		},
		Spans: spanevent.Config{
			CallbackIDAttributes: []string{"app.job_id"},
			KeyAttributes:        map[string]string{"app.order_id": "order_id"},
			FlowNameAttributes:   []string{"app.flow"},
		},
		TickInterval:         500 * time.Millisecond,
		MetricsFlushInterval: 10 * time.Second,
		MaxLabelValues:       50,
		Workers:              4,
		Checkpoint:           CheckpointConfig{Path: "/var/lib/flowtrace/correlator.checkpoint", Interval: time.Minute},
		RecordEncoding:       EncodingBatch,
	}, cfg)
}

func TestInvalidConfigs(t *testing.T) {
	for name, wants := range map[string][]string{
		"idle_before_stuck": {"flow_idle: must be at least stuck_after (10m0s), got 1m0s"},
		"bad_patterns": {
			`retry_destinations[0]: "{topic}.retry": needs {attempt} exactly once`,
			`dead_letter_destinations[0]: "dlq": needs {topic} exactly once`,
		},
		"bad_numbers": {
			"tick_interval: must be positive",
			"max_label_values: must be positive",
			"workers: must be at least 1",
			"max_in_flight_hops: must not be negative",
			"checkpoint::interval: must be positive",
			`record_encoding: must be "attributes" or "batch", got "protobuf"`,
		},
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
