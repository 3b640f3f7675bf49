package rabbitmqtapreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"

	"github.com/flowtrace/flowtrace/internal/configtest"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver/internal/metadata"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	return configtest.Load(t, metadata.Type, name, createDefaultConfig)
}

func TestDefaultConfig(t *testing.T) {
	cfg := loadConfig(t, "")
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, createDefaultConfig(), cfg)
	assert.Equal(t, "amqp://127.0.0.1:5672", cfg.Endpoint)
	assert.Equal(t, "http://127.0.0.1:15672", cfg.Management.Endpoint)
}

func TestCustomConfig(t *testing.T) {
	cfg := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, &Config{
		Endpoint:             "amqps://rabbit.internal:5671",
		Username:             "flowtrace",
		Password:             "s3cret",
		VHosts:               []string{"/", "orders"},
		Queue:                "flowtrace.tap",
		QueueType:            "classic",
		EnableTracing:        true,
		IncludeCeleryControl: true,
		MaxQueueBytes:        1 << 20,
		MaxQueueLength:       0,
		Celery:               CeleryConfig{AcksLate: true},
		Prefetch:             500,
		Batch:                BatchConfig{MaxSize: 100, Timeout: 50 * time.Millisecond},
		MaxTrackedMessages:   5000,
		Management: ManagementConfig{
			Endpoint: "https://rabbit.internal:15671/", Username: "monitor", Password: "m0nitor",
			Interval: 30 * time.Second, Timeout: 2 * time.Second, StatsDelay: 10 * time.Second,
			DeadLetterBindings: false,
		},
		Reconnect: tap.Backoff{Initial: time.Second, Max: time.Minute},
	}, cfg)
}

func TestConfigWithoutManagement(t *testing.T) {
	cfg := loadConfig(t, "no_management")
	require.NoError(t, confmap.Validate(cfg))
	assert.Empty(t, cfg.Management.Endpoint)
}

func TestInvalidConfigs(t *testing.T) {
	for name, wants := range map[string][]string{
		"bad_addresses": {
			`endpoint: want amqp://host:port or amqps://host:port, got "http://guest:xxxxx@127.0.0.1:5672"`,
			`management::endpoint: want http://host:port or https://host:port, got "amqp://127.0.0.1:15672"`,
		},
		"credentials_in_address": {"endpoint: put credentials in username and password"},
		"vhost_in_address": {
			`endpoint: name vhosts in vhosts, not in the address (got path "/orders")`,
			"management::endpoint: want http://host:port or https://host:port, got an address that does not parse",
		},
		"bad_numbers": {
			"vhosts[1]: must not be empty",
			`vhosts[2]: "/" is listed twice`,
			`queue: must be a name not starting with amq., got "amq.mine"`,
			`queue_type: must be quorum or classic, got "stream"`,
			"prefetch: must be between batch::max_size (100) and 65535, got 10",
			"batch::timeout: must be positive",
			"max_tracked_messages: must be between 1 and 10000000, got 0",
			"max_queue_bytes: must not be negative",
			"max_queue_length: must not be negative",
			"management::interval: must be positive",
			"management::timeout: must be positive",
			"management::stats_delay: must be positive",
			"reconnect::initial_interval: must be positive",
		},
		"tracing_without_management": {"enable_tracing: needs management::endpoint"},
		"no_vhosts":                  {"vhosts: must name at least one vhost"},
	} {
		t.Run(name, func(t *testing.T) {
			err := confmap.Validate(loadConfig(t, name))
			require.Error(t, err)
			for _, want := range wants {
				assert.ErrorContains(t, err, want)
			}
			// Never a password in an error.
			assert.NotContains(t, err.Error(), "s3cret")
			assert.NotContains(t, err.Error(), "m0nitor")
		})
	}
}

func TestPasswordsAreOpaque(t *testing.T) {
	cfg := loadConfig(t, "custom")
	assert.NotContains(t, cfg.Password.String(), "s3cret")
	assert.NotContains(t, cfg.Management.Password.String(), "m0nitor")
}
