package natstapreceiver

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/collector/config/configopaque"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// Where the tap starts reading a stream it has not read before.
const (
	DeliverNew = "new" // messages stored from the moment the tap attaches
	DeliverAll = "all" // every message the stream still holds
)

// Config is the NATS tap's configuration.
type Config struct {
	// URL of the NATS server; several, comma-separated, for a cluster.
	// Default nats://127.0.0.1:4222.
	URL string `mapstructure:"url"`
	// Username and Password authenticate with user and password. Default
	// none.
	Username configopaque.String `mapstructure:"username"`
	Password configopaque.String `mapstructure:"password"`
	// Token authenticates with a token. Default none.
	Token configopaque.String `mapstructure:"token"`
	// Streams are the JetStream streams to tap. Default none.
	Streams []StreamConfig `mapstructure:"streams"`
	// Subjects are core NATS subjects (wildcards allowed) whose publishes
	// are tapped. Each is a subscription of its own: subjects that overlap
	// (orders.> and orders.eu) see a publish matching both twice. Default
	// none.
	Subjects []string `mapstructure:"subjects"`
	// DeliverPolicy says where the tap starts reading a stream the first
	// time: "new" (messages stored from then on) or "all" (everything the
	// stream holds). After a reconnect it always resumes after the last
	// message it read. Default "new".
	DeliverPolicy string `mapstructure:"deliver_policy"`
	// PollInterval is how often consumer state is read for the backlog
	// gauges and the acks inferred from ack floors. Default 15s, at least
	// 100ms.
	PollInterval time.Duration `mapstructure:"poll_interval"`
	// Reconnect bounds the waits between connection attempts:
	// initial_interval (default 500ms), max_interval (default 30s).
	Reconnect tap.Backoff `mapstructure:"reconnect"`
}

// StreamConfig names one stream to tap.
type StreamConfig struct {
	// Name of the stream. Required.
	Name string `mapstructure:"name"`
	// FilterSubject limits the tapped publishes to the stream's subjects
	// matching it; acks, advisories and backlog cover the whole stream.
	// Default empty: every subject.
	FilterSubject string `mapstructure:"filter_subject"`
}

// minPollInterval bounds the requests the poll makes.
const minPollInterval = 100 * time.Millisecond

func createDefaultConfig() *Config {
	return &Config{
		URL:           "nats://127.0.0.1:4222",
		DeliverPolicy: DeliverNew,
		PollInterval:  15 * time.Second,
		Reconnect:     tap.DefaultBackoff,
	}
}

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("url: must not be empty"))
	}
	for _, u := range strings.Split(c.URL, ",") {
		if c.URL == "" {
			break
		}
		if err := validateURL(strings.TrimSpace(u)); err != nil {
			errs = append(errs, fmt.Errorf("url: %w", err))
		}
	}
	if (c.Username == "") != (c.Password == "") {
		errs = append(errs, errors.New("username, password: set both or neither"))
	}
	if c.Token != "" && c.Username != "" {
		errs = append(errs, errors.New("token: not together with username and password"))
	}
	if len(c.Streams) == 0 && len(c.Subjects) == 0 {
		errs = append(errs, errors.New("streams, subjects: nothing to tap; name at least one stream or subject"))
	}
	seen := map[string]bool{}
	for i, s := range c.Streams {
		switch {
		case s.Name == "":
			errs = append(errs, fmt.Errorf("streams[%d]::name: must not be empty", i))
		case strings.ContainsAny(s.Name, ".*> \t\r\n"):
			errs = append(errs, fmt.Errorf("streams[%d]::name: %q may not contain '.', '*', '>' or white space", i, s.Name))
		case seen[s.Name]:
			errs = append(errs, fmt.Errorf("streams[%d]::name: %q is listed twice", i, s.Name))
		}
		seen[s.Name] = true
		if s.FilterSubject != "" {
			if err := validateSubject(s.FilterSubject); err != nil {
				errs = append(errs, fmt.Errorf("streams[%d]::filter_subject: %w", i, err))
			}
		}
	}
	seenSubject := map[string]bool{}
	for i, s := range c.Subjects {
		if err := validateSubject(s); err != nil {
			errs = append(errs, fmt.Errorf("subjects[%d]: %w", i, err))
		}
		if seenSubject[s] {
			// One publish would be seen twice.
			errs = append(errs, fmt.Errorf("subjects[%d]: %q is listed twice", i, s))
		}
		seenSubject[s] = true
	}
	if c.DeliverPolicy != DeliverNew && c.DeliverPolicy != DeliverAll {
		errs = append(errs, fmt.Errorf("deliver_policy: must be %q or %q, got %q", DeliverNew, DeliverAll, c.DeliverPolicy))
	}
	if c.PollInterval < minPollInterval {
		errs = append(errs, fmt.Errorf("poll_interval: must be at least %s, got %s", minPollInterval, c.PollInterval))
	}
	errs = append(errs, c.Reconnect.Validate())
	return errors.Join(errs...)
}

func validateURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
	default:
		return fmt.Errorf("%q: scheme must be nats, tls, ws or wss", u.Redacted())
	}
	if u.Host == "" {
		return fmt.Errorf("%q: no host", u.Redacted())
	}
	if u.User != nil {
		return fmt.Errorf("%q: credentials belong in username and password or token, not in the URL", u.Redacted())
	}
	return nil
}

// validateSubject checks a subject or subject filter: dot-separated
// non-empty tokens without white space, '*' a whole token, '>' only as the
// last token.
func validateSubject(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return fmt.Errorf("%q contains white space", s)
	}
	tokens := strings.Split(s, ".")
	for i, tok := range tokens {
		switch {
		case tok == "":
			return fmt.Errorf("%q has an empty token", s)
		case tok == ">" && i != len(tokens)-1:
			return fmt.Errorf("%q: '>' must be the last token", s)
		case len(tok) > 1 && strings.ContainsAny(tok, "*>"):
			return fmt.Errorf("%q: wildcards must be whole tokens", s)
		}
	}
	return nil
}
