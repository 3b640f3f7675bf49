package kafkatapreceiver

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"

	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configoptional"
	"go.opentelemetry.io/collector/config/configtls"

	"github.com/flowtrace/flowtrace/correlator/destpattern"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// Where the tap starts reading a partition it has not read before.
const (
	// StartLatest reads the records produced since the tap started.
	StartLatest = "latest"
	// StartEarliest reads every record the broker still holds.
	StartEarliest = "earliest"
)

// SASL mechanisms.
const (
	SASLPlain       = "PLAIN"
	SASLScramSHA256 = "SCRAM-SHA-256"
	SASLScramSHA512 = "SCRAM-SHA-512"
)

// Config is the Kafka tap's configuration.
type Config struct {
	// Brokers are the seed brokers. Default ["127.0.0.1:9092"].
	Brokers []string `mapstructure:"brokers"`
	// ClientID is the client id the tap presents to the brokers. Default
	// "flowtrace-kafka-tap".
	ClientID string `mapstructure:"client_id"`
	// TLS, when set, connects with TLS. Default: plaintext.
	TLS configoptional.Optional[configtls.ClientConfig] `mapstructure:"tls"`
	// SASL, when set, authenticates with a username and password. Default:
	// none.
	SASL configoptional.Optional[SASLConfig] `mapstructure:"sasl"`

	// Topics are tapped by name. Default none; topics or topic_regexes must
	// name at least one.
	Topics []string `mapstructure:"topics"`
	// TopicRegexes tap every topic whose name matches one of these regular
	// expressions (Go syntax, unanchored unless written with ^ and $).
	// Default none.
	TopicRegexes []string `mapstructure:"topic_regexes"`
	// StartAt is where a partition is first read: "latest" (the records
	// produced since the tap started) or "earliest" (every record the broker
	// holds). Default "latest".
	StartAt string `mapstructure:"start_at"`
	// MetadataRefreshInterval is how often the tap looks for new topics
	// and partitions, from 10ms to 1h. Default 1m.
	MetadataRefreshInterval time.Duration `mapstructure:"metadata_refresh_interval"`

	// ConsumerGroups are the groups whose committed offsets the tap polls:
	// a commit that passes a tapped record settles it for the group, and
	// the group's lag is reported. At most 64, each once. Default none.
	ConsumerGroups []string `mapstructure:"consumer_groups"`
	// PollInterval is how often committed and end offsets are polled, and
	// the broker's reachability checked; at least 100ms. Default 10s.
	PollInterval time.Duration `mapstructure:"poll_interval"`
	// Timeout bounds each offset poll and reachability check. Default 5s.
	Timeout time.Duration `mapstructure:"timeout"`
	// MaxPendingRecords bounds the tapped records kept, over all
	// partitions, until every watched group's commit has passed them (about
	// 150 bytes each); past it a partition forgets its oldest as it takes a
	// new one, and the records forgotten unsettled are counted. Default
	// 1000000.
	MaxPendingRecords int `mapstructure:"max_pending_records"`

	// RecordKey puts each record's key on its spans as
	// messaging.kafka.message.key (cleaned: valid UTF-8 without control
	// characters, cut to 256 bytes). Keys are often user ids or e-mail
	// addresses, so it is off unless asked for. Default false.
	RecordKey bool `mapstructure:"record_key"`
	// KeyHeaders maps a record header to the flow key kind its value
	// becomes, e.g. {order_id: order_id}. Default none.
	KeyHeaders map[string]string `mapstructure:"key_headers"`
	// TraceparentHeader is the header carrying the W3C traceparent.
	// Default "traceparent".
	TraceparentHeader string `mapstructure:"traceparent_header"`
	// RetryTopics are patterns of retry topics, with {topic} for the base
	// topic and {attempt} for the retry number, e.g.
	// "{topic}.retry.{attempt}": a record on "orders.retry.1" is attempt 2
	// of a message of "orders". Default none.
	RetryTopics []string `mapstructure:"retry_topics"`
	// DeadLetterTopics are patterns of dead-letter topics, with {topic} for
	// the base topic, e.g. "{topic}.dlq". A pattern needs some literal
	// text besides its placeholders. Default none.
	DeadLetterTopics []string `mapstructure:"dead_letter_topics"`
	// OriginalHeaders name the headers with which a retried or
	// dead-lettered record names the record it copies. Default: Spring
	// Kafka's.
	OriginalHeaders OriginalHeaders `mapstructure:"original_headers"`

	// Reconnect bounds the waits between attempts to reach the brokers
	// again. Default 500ms doubling to 30s.
	Reconnect tap.Backoff `mapstructure:"reconnect"`
}

// SASLConfig authenticates the tap.
type SASLConfig struct {
	// Mechanism is PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Default PLAIN.
	Mechanism string `mapstructure:"mechanism"`
	// Username. Required.
	Username string `mapstructure:"username"`
	// Password. Never logged.
	Password configopaque.String `mapstructure:"password"`
}

// OriginalHeaders name the headers of a retry or dead-letter record that
// point at the record it copies. Each copy may append a set: the last names
// the record copied now, the first the first record. Partition and offset
// are read as 4- and 8-byte big-endian integers (as Spring Kafka writes
// them) or as decimal text. An empty name turns that header off.
type OriginalHeaders struct {
	// Topic. Default "kafka_dlt-original-topic".
	Topic string `mapstructure:"topic"`
	// Partition. Default "kafka_dlt-original-partition".
	Partition string `mapstructure:"partition"`
	// Offset. Default "kafka_dlt-original-offset".
	Offset string `mapstructure:"offset"`
	// ConsumerGroup is the group that failed the copied record; the last
	// occurrence is used. Default "kafka_dlt-original-consumer-group".
	ConsumerGroup string `mapstructure:"consumer_group"`
	// Reason is a short failure reason, e.g. an exception class. The last
	// occurrence is used. Default "kafka_dlt-exception-fqcn".
	Reason string `mapstructure:"reason"`
}

// Defaults.
const (
	defaultBroker                  = "127.0.0.1:9092"
	defaultClientID                = "flowtrace-kafka-tap"
	defaultMetadataRefreshInterval = time.Minute
	defaultPollInterval            = 10 * time.Second
	defaultTimeout                 = 5 * time.Second
	defaultMaxPendingRecords       = 1_000_000
	defaultTraceparentHeader       = "traceparent"
)

// Bounds. The client refuses metadata ages outside
// [minMetadataRefreshInterval, maxMetadataRefreshInterval]; each poll costs
// the brokers a few requests, so polls are spaced by minPollInterval at
// least.
const (
	minMetadataRefreshInterval = 10 * time.Millisecond
	maxMetadataRefreshInterval = time.Hour
	minPollInterval            = 100 * time.Millisecond
)

func createDefaultConfig() *Config {
	return &Config{
		Brokers:                 []string{defaultBroker},
		ClientID:                defaultClientID,
		StartAt:                 StartLatest,
		MetadataRefreshInterval: defaultMetadataRefreshInterval,
		PollInterval:            defaultPollInterval,
		Timeout:                 defaultTimeout,
		MaxPendingRecords:       defaultMaxPendingRecords,
		TraceparentHeader:       defaultTraceparentHeader,
		OriginalHeaders: OriginalHeaders{
			Topic:         "kafka_dlt-original-topic",
			Partition:     "kafka_dlt-original-partition",
			Offset:        "kafka_dlt-original-offset",
			ConsumerGroup: "kafka_dlt-original-consumer-group",
			Reason:        "kafka_dlt-exception-fqcn",
		},
		Reconnect: tap.DefaultBackoff,
	}
}

// Validate checks the configuration; errors name the key. The tls and
// reconnect sections validate themselves.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, errors.New("brokers: must name at least one broker"))
	}
	for i, b := range c.Brokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("brokers[%d]: %q is not host:port", i, b))
		}
	}
	if c.ClientID == "" {
		errs = append(errs, errors.New("client_id: must not be empty"))
	}
	if s := c.SASL.Get(); s != nil {
		switch s.Mechanism {
		case "", SASLPlain, SASLScramSHA256, SASLScramSHA512:
		default:
			errs = append(errs, fmt.Errorf("sasl::mechanism: must be %s, %s or %s, got %q", SASLPlain, SASLScramSHA256, SASLScramSHA512, s.Mechanism))
		}
		if s.Username == "" {
			errs = append(errs, errors.New("sasl::username: must not be empty"))
		}
	}
	if len(c.Topics) == 0 && len(c.TopicRegexes) == 0 {
		errs = append(errs, errors.New("topics: topics or topic_regexes must name at least one topic"))
	}
	for i, topic := range c.Topics {
		if !validTopic(topic) {
			errs = append(errs, fmt.Errorf("topics[%d]: %q is not a Kafka topic name", i, topic))
		}
	}
	for i, expr := range c.TopicRegexes {
		if _, err := regexp.Compile(expr); err != nil {
			errs = append(errs, fmt.Errorf("topic_regexes[%d]: %w", i, err))
		}
	}
	if c.StartAt != StartLatest && c.StartAt != StartEarliest {
		errs = append(errs, fmt.Errorf("start_at: must be %q or %q, got %q", StartLatest, StartEarliest, c.StartAt))
	}
	if c.MetadataRefreshInterval < minMetadataRefreshInterval || c.MetadataRefreshInterval > maxMetadataRefreshInterval {
		errs = append(errs, fmt.Errorf("metadata_refresh_interval: must be between %v and %v, got %v",
			minMetadataRefreshInterval, maxMetadataRefreshInterval, c.MetadataRefreshInterval))
	}
	if len(c.ConsumerGroups) > maxGroups {
		errs = append(errs, fmt.Errorf("consumer_groups: at most %d groups, got %d", maxGroups, len(c.ConsumerGroups)))
	}
	seen := make(map[string]int, len(c.ConsumerGroups))
	for i, g := range c.ConsumerGroups {
		if g == "" {
			errs = append(errs, fmt.Errorf("consumer_groups[%d]: must not be empty", i))
		} else if first, ok := seen[g]; ok {
			errs = append(errs, fmt.Errorf("consumer_groups[%d]: %q is consumer_groups[%d] again", i, g, first))
		} else {
			seen[g] = i
		}
	}
	if c.PollInterval < minPollInterval {
		errs = append(errs, fmt.Errorf("poll_interval: must be at least %v, got %v", minPollInterval, c.PollInterval))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("timeout: must be positive"))
	}
	if c.MaxPendingRecords <= 0 {
		errs = append(errs, errors.New("max_pending_records: must be positive"))
	}
	for header, kind := range c.KeyHeaders {
		if header == "" || kind == "" {
			errs = append(errs, fmt.Errorf("key_headers: %q: %q: header and key kind must not be empty", header, kind))
		}
	}
	if c.TraceparentHeader == "" {
		errs = append(errs, errors.New("traceparent_header: must not be empty"))
	}
	for i, p := range c.RetryTopics {
		if _, err := destpattern.Compile(p, true); err != nil {
			errs = append(errs, fmt.Errorf("retry_topics[%d]: %w", i, err))
		}
	}
	for i, p := range c.DeadLetterTopics {
		if _, err := destpattern.Compile(p, false); err != nil {
			errs = append(errs, fmt.Errorf("dead_letter_topics[%d]: %w", i, err))
		}
	}
	return errors.Join(errs...)
}
