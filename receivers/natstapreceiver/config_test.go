package natstapreceiver

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"

	"github.com/flowtrace/flowtrace/internal/configtest"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/natstapreceiver/internal/metadata"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	return configtest.Load(t, metadata.Type, name, createDefaultConfig)
}

func TestConfigStruct(t *testing.T) {
	require.NoError(t, componenttest.CheckConfigStruct(createDefaultConfig()))
}

func TestDefaultConfig(t *testing.T) {
	cfg := loadConfig(t, "")
	require.NoError(t, confmap.Validate(cfg))
	want := createDefaultConfig()
	want.Streams = []StreamConfig{{Name: "ORDERS"}}
	assert.Equal(t, want, cfg)
	assert.Equal(t, "nats://127.0.0.1:4222", cfg.URL, "loopback by default")
}

func TestCustomConfig(t *testing.T) {
	cfg := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(cfg))
	assert.Equal(t, &Config{
		URL:           "nats://broker-1:4222,nats://broker-2:4222",
		Username:      "flowtrace",
		Password:      "secret",
		Streams:       []StreamConfig{{Name: "ORDERS", FilterSubject: "orders.eu.>"}, {Name: "PAYMENTS"}},
		Subjects:      []string{"audit.>", "alerts.*.raised"},
		DeliverPolicy: DeliverAll,
		PollInterval:  5 * time.Second,
		Reconnect:     tap.Backoff{Initial: time.Second, Max: time.Minute},
	}, cfg)

	tok := loadConfig(t, "token")
	require.NoError(t, confmap.Validate(tok))
	assert.Equal(t, "s3cret", string(tok.Token))
}

func TestInvalidConfigs(t *testing.T) {
	for name, wants := range map[string][]string{
		"nothing": {"streams, subjects: nothing to tap"},
		"bad_values": {
			`url: "http://127.0.0.1:4222": scheme must be nats, tls, ws or wss`,
			"username, password: set both or neither",
			`streams[0]::name: "ORDERS.EU" may not contain`,
			"streams[1]::name: must not be empty",
			`streams[2]::filter_subject: "payments.>.eu": '>' must be the last token`,
			`streams[3]::name: "PAYMENTS" is listed twice`,
			`subjects[0]: "audit..x" has an empty token`,
			`subjects[1]: "a b" contains white space`,
			`subjects[2]: "ab*": wildcards must be whole tokens`,
			`subjects[4]: "audit.>" is listed twice`,
			`deliver_policy: must be "new" or "all", got "last"`,
			"poll_interval: must be at least 100ms, got 50ms",
			"reconnect::initial_interval: must be positive",
		},
		"url_credentials": {
			"credentials belong in username and password or token",
			"token: not together with username and password",
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

func TestConfigDoesNotLeakSecrets(t *testing.T) {
	cfg := loadConfig(t, "url_credentials")
	err := cfg.Validate()
	require.Error(t, err)
	assert.NotContains(t, err.Error(), ":pw@", "a password in the URL is not repeated in the error")
}
