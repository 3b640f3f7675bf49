package kafkatapreceiver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configtls"
	"go.opentelemetry.io/collector/confmap"

	"github.com/flowtrace/flowtrace/internal/configtest"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	return configtest.Load(t, metadata.Type, name, createDefaultConfig)
}

func TestDefaultConfig(t *testing.T) {
	cfg := loadConfig(t, "")
	require.NoError(t, confmap.Validate(cfg))
	want := createDefaultConfig()
	want.Topics = []string{"orders"}
	assert.Equal(t, want, cfg)
	assert.Equal(t, []string{"127.0.0.1:9092"}, cfg.Brokers)
	assert.Equal(t, StartLatest, cfg.StartAt)
}

func TestCustomConfig(t *testing.T) {
	cfg := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(cfg))
	tlsCfg := configtls.NewDefaultClientConfig()
	tlsCfg.CAFile = "/etc/kafka/ca.pem"
	assert.Equal(t, &Config{
		Brokers:                 []string{"kafka-1:9092", "kafka-2:9092"},
		ClientID:                "tap-1",
		TLS:                     configoptional.Some(tlsCfg),
		SASL:                    configoptional.Some(SASLConfig{Mechanism: SASLScramSHA512, Username: "tap", Password: "secret"}),
		Topics:                  []string{"orders", "shipments"},
		TopicRegexes:            []string{`^orders\..*`},
		StartAt:                 StartEarliest,
		MetadataRefreshInterval: 30 * time.Second,
		ConsumerGroups:          []string{"billing", "shipping"},
		PollInterval:            2 * time.Second,
		Timeout:                 time.Second,
		MaxPendingRecords:       5000,
		RecordKey:               true,
		KeyHeaders:              map[string]string{"order_id": "order_id", "x-customer": "customer_id"},
		TraceparentHeader:       "x-traceparent",
		RetryTopics:             []string{"{topic}.retry.{attempt}"},
		DeadLetterTopics:        []string{"{topic}.dlq", "{topic}-dlt"},
		OriginalHeaders: OriginalHeaders{
			Topic: "x-orig-topic", Partition: "x-orig-partition", Offset: "x-orig-offset", ConsumerGroup: "x-orig-group",
		},
		Reconnect: tap.Backoff{Initial: time.Second, Max: time.Minute},
	}, cfg)
}

func TestInvalidConfigs(t *testing.T) {
	for name, wants := range map[string][]string{
		"no_topics": {
			"brokers: must name at least one broker",
			"topics: topics or topic_regexes must name at least one topic",
		},
		"bad_values": {
			`brokers[0]: "localhost" is not host:port`,
			"client_id: must not be empty",
			`topics[0]: "bad topic" is not a Kafka topic name`,
			"topic_regexes[0]: error parsing regexp",
			`start_at: must be "latest" or "earliest", got "middle"`,
			"metadata_refresh_interval: must be between 10ms and 1h0m0s, got 2h0m0s",
			"consumer_groups[0]: must not be empty",
			`consumer_groups[3]: "billing" is consumer_groups[1] again`,
			"poll_interval: must be at least 100ms, got 10ms",
			"timeout: must be positive",
			"max_pending_records: must be positive",
			`key_headers: "order_id": "": header and key kind must not be empty`,
			"traceparent_header: must not be empty",
			`retry_topics[0]: "{topic}.retry": needs {attempt} exactly once`,
			`retry_topics[1]: "{topic}{attempt}": needs a fixed part, else it matches every destination`,
			`dead_letter_topics[0]: "dlq": needs {topic} exactly once`,
			`dead_letter_topics[1]: "{topic}": needs a fixed part, else it matches every destination`,
			`sasl::mechanism: must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512, got "GSSAPI"`,
			"sasl::username: must not be empty",
			"reconnect::initial_interval: must be positive",
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

func TestTooManyGroups(t *testing.T) {
	cfg := createDefaultConfig()
	cfg.Topics = []string{"orders"}
	for i := range maxGroups + 1 {
		cfg.ConsumerGroups = append(cfg.ConsumerGroups, "g"+string(rune('a'+i%26))+string(rune('a'+i/26)))
	}
	assert.ErrorContains(t, cfg.Validate(), "consumer_groups: at most 64 groups, got 65")
}

// TestIntervalBounds: the client refuses a metadata age outside [10ms, 1h]
// (the collector would not start), and polls closer than 100ms would
// hammer the brokers.
func TestIntervalBounds(t *testing.T) {
	for _, tc := range []struct {
		metadata, poll time.Duration
		want           string
	}{
		{10 * time.Millisecond, 100 * time.Millisecond, ""},
		{time.Hour, time.Hour, ""},
		{9 * time.Millisecond, time.Second, "metadata_refresh_interval: must be between 10ms and 1h0m0s, got 9ms"},
		{time.Hour + time.Second, time.Second, "metadata_refresh_interval: must be between 10ms and 1h0m0s, got 1h0m1s"},
		{time.Minute, 99 * time.Millisecond, "poll_interval: must be at least 100ms, got 99ms"},
		{time.Minute, time.Nanosecond, "poll_interval: must be at least 100ms, got 1ns"},
	} {
		cfg := createDefaultConfig()
		cfg.Topics = []string{"orders"}
		cfg.MetadataRefreshInterval, cfg.PollInterval = tc.metadata, tc.poll
		err := cfg.Validate()
		if tc.want == "" {
			require.NoError(t, err)
			// The client takes what Validate accepts.
			tp := &kafkaTap{cfg: cfg}
			opts, err := tp.clientOpts(context.Background())
			require.NoError(t, err)
			client, err := kgo.NewClient(opts...)
			require.NoError(t, err)
			client.Close()
			continue
		}
		assert.EqualError(t, err, tc.want)
	}
}
