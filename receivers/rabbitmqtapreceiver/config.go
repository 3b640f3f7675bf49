package rabbitmqtapreceiver

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/collector/config/configopaque"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// Config is the RabbitMQ tap's configuration.
type Config struct {
	// Endpoint is the AMQP 0-9-1 address of the broker, without
	// credentials. Default "amqp://127.0.0.1:5672".
	Endpoint string `mapstructure:"endpoint"`
	// Username and Password log in to AMQP. Default guest/guest, which
	// RabbitMQ accepts from loopback only.
	Username string              `mapstructure:"username"`
	Password configopaque.String `mapstructure:"password"`
	// VHosts are the virtual hosts whose firehose is read. Default ["/"].
	VHosts []string `mapstructure:"vhosts"`
	// Queue is the durable queue, declared in every vhost, that the
	// firehose is bound to. Default "flowtrace.firehose".
	Queue string `mapstructure:"queue"`
	// QueueType is the type of that queue: quorum keeps the frames it holds
	// through a broker restart, classic (cheaper) loses them, as the
	// firehose's frames are transient. Default "quorum".
	QueueType string `mapstructure:"queue_type"`
	// MaxQueueBytes bounds the bodies of the frames the tap's queue holds
	// (x-max-length-bytes): past it the broker drops the oldest frames
	// (x-overflow drop-head) rather than let a tap that stopped reading
	// fill its disk or memory. 0: unbounded. Default 256 MiB.
	MaxQueueBytes int64 `mapstructure:"max_queue_bytes"`
	// MaxQueueLength bounds the frames the tap's queue holds (x-max-length),
	// as frames of small bodies cost more than their bodies. 0: unbounded.
	// Default 1000000.
	MaxQueueLength int64 `mapstructure:"max_queue_length"`
	// EnableTracing switches the firehose on for the vhosts through the
	// management API at every connection, and off again at shutdown if it
	// was the one to switch it on. Default false: run
	// `rabbitmqctl trace_on -p <vhost>` after every broker start.
	EnableTracing bool `mapstructure:"enable_tracing"`
	// IncludeCeleryControl keeps Celery's event (celeryev) and remote
	// control (*.pidbox) traffic, skipped by default. Default false.
	IncludeCeleryControl bool `mapstructure:"include_celery_control"`
	// Celery says how Celery's workers run tasks.
	Celery CeleryConfig `mapstructure:"celery"`
	// Prefetch is how many firehose frames the broker hands the tap before
	// it acks; at least batch::max_size. Default 500.
	Prefetch int `mapstructure:"prefetch"`
	// Batch bounds the frames per batch sent to the traces pipeline.
	Batch BatchConfig `mapstructure:"batch"`
	// MaxTrackedMessages bounds the deliveries remembered for attempts and
	// settlement inference; the least recently seen are forgotten first.
	// Default 100000, at most 10000000.
	MaxTrackedMessages int `mapstructure:"max_tracked_messages"`
	// Management configures the management API poller.
	Management ManagementConfig `mapstructure:"management"`
	// Reconnect bounds the waits between reconnection attempts.
	Reconnect tap.Backoff `mapstructure:"reconnect"`
}

// CeleryConfig says how Celery's workers run tasks.
type CeleryConfig struct {
	// AcksLate is Celery's task_acks_late: a task is acked after it ran,
	// not before. Without it a task that publishes a child is settled as
	// acked then; with it its settlement is left to queue drains and
	// redeliveries. Default false, Celery's default.
	AcksLate bool `mapstructure:"acks_late"`
}

// maxTrackedLimit bounds max_tracked_messages: the tracker allocates for a
// quarter of it up front.
const maxTrackedLimit = 10_000_000

// BatchConfig bounds a batch of frames.
type BatchConfig struct {
	// MaxSize is the most frames in one batch. Default 250.
	MaxSize int `mapstructure:"max_size"`
	// Timeout is the longest a frame waits for its batch. Default 200ms.
	Timeout time.Duration `mapstructure:"timeout"`
}

// ManagementConfig says where and how often the management API is read.
type ManagementConfig struct {
	// Endpoint of the management API; empty disables the poller (no
	// backlog gauges, no queue-drain settlement, no dead-letter bindings).
	// Default "http://127.0.0.1:15672".
	Endpoint string `mapstructure:"endpoint"`
	// Username and Password log in to the management API. Default
	// guest/guest.
	Username string              `mapstructure:"username"`
	Password configopaque.String `mapstructure:"password"`
	// Interval between polls. Default 10s.
	Interval time.Duration `mapstructure:"interval"`
	// Timeout of one request. Default 5s.
	Timeout time.Duration `mapstructure:"timeout"`
	// StatsDelay is how old the broker's queue statistics may be: a
	// drained queue settles only deliveries older than this. A queue
	// publishes its figures every collect_statistics_interval (5s unless
	// changed) and the management API serves them later still (1.7 to
	// 6.5 s after a delivery on an idle broker at 5s), so it must be well
	// over that interval. Default 15s.
	StatsDelay time.Duration `mapstructure:"stats_delay"`
	// DeadLetterBindings binds the tap's queue to the dead-letter exchange
	// of every queue that has one, with the bindings that exchange already
	// has, so dead letters are seen when they happen. Without it, a queue
	// with a dead-letter exchange settles nothing on a drain. Default true.
	DeadLetterBindings bool `mapstructure:"dead_letter_bindings"`
}

func createDefaultConfig() *Config {
	return &Config{
		Endpoint:           "amqp://127.0.0.1:5672",
		Username:           "guest",
		Password:           "guest",
		VHosts:             []string{"/"},
		Queue:              "flowtrace.firehose",
		QueueType:          "quorum",
		MaxQueueBytes:      256 << 20,
		MaxQueueLength:     1000000,
		Prefetch:           500,
		Batch:              BatchConfig{MaxSize: 250, Timeout: 200 * time.Millisecond},
		MaxTrackedMessages: 100000,
		Management: ManagementConfig{
			Endpoint:           "http://127.0.0.1:15672",
			Username:           "guest",
			Password:           "guest",
			Interval:           10 * time.Second,
			Timeout:            5 * time.Second,
			StatsDelay:         15 * time.Second,
			DeadLetterBindings: true,
		},
		Reconnect: tap.DefaultBackoff,
	}
}

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	if u, err := url.Parse(c.Endpoint); err != nil || (u.Scheme != "amqp" && u.Scheme != "amqps") || u.Host == "" {
		errs = append(errs, fmt.Errorf("endpoint: want amqp://host:port or amqps://host:port, got %s", redacted(c.Endpoint, u, err)))
	} else if u.User != nil {
		errs = append(errs, errors.New("endpoint: put credentials in username and password, not in the address"))
	} else if u.Path != "" && u.Path != "/" {
		errs = append(errs, fmt.Errorf("endpoint: name vhosts in vhosts, not in the address (got path %q)", u.Path))
	}
	if len(c.VHosts) == 0 {
		errs = append(errs, errors.New("vhosts: must name at least one vhost"))
	}
	seen := map[string]bool{}
	for i, v := range c.VHosts {
		if v == "" {
			errs = append(errs, fmt.Errorf("vhosts[%d]: must not be empty", i))
		}
		if seen[v] {
			errs = append(errs, fmt.Errorf("vhosts[%d]: %q is listed twice", i, v))
		}
		seen[v] = true
	}
	if c.Queue == "" || strings.HasPrefix(c.Queue, "amq.") {
		errs = append(errs, fmt.Errorf("queue: must be a name not starting with amq., got %q", c.Queue))
	}
	if c.QueueType != "quorum" && c.QueueType != "classic" {
		errs = append(errs, fmt.Errorf("queue_type: must be quorum or classic, got %q", c.QueueType))
	}
	if c.MaxQueueBytes < 0 {
		errs = append(errs, fmt.Errorf("max_queue_bytes: must not be negative (0: unbounded), got %d", c.MaxQueueBytes))
	}
	if c.MaxQueueLength < 0 {
		errs = append(errs, fmt.Errorf("max_queue_length: must not be negative (0: unbounded), got %d", c.MaxQueueLength))
	}
	if c.Batch.MaxSize < 1 {
		errs = append(errs, fmt.Errorf("batch::max_size: must be at least 1, got %d", c.Batch.MaxSize))
	}
	if c.Batch.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("batch::timeout: must be positive, got %s", c.Batch.Timeout))
	}
	if c.Prefetch < c.Batch.MaxSize || c.Prefetch > 65535 {
		errs = append(errs, fmt.Errorf("prefetch: must be between batch::max_size (%d) and 65535, got %d", c.Batch.MaxSize, c.Prefetch))
	}
	if c.MaxTrackedMessages < 1 || c.MaxTrackedMessages > maxTrackedLimit {
		errs = append(errs, fmt.Errorf("max_tracked_messages: must be between 1 and %d, got %d", maxTrackedLimit, c.MaxTrackedMessages))
	}
	if m := c.Management; m.Endpoint != "" {
		if u, err := url.Parse(m.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("management::endpoint: want http://host:port or https://host:port, got %s", redacted(m.Endpoint, u, err)))
		} else if u.User != nil {
			errs = append(errs, errors.New("management::endpoint: put credentials in username and password, not in the address"))
		}
		if m.Interval <= 0 {
			errs = append(errs, fmt.Errorf("management::interval: must be positive, got %s", m.Interval))
		}
		if m.Timeout <= 0 {
			errs = append(errs, fmt.Errorf("management::timeout: must be positive, got %s", m.Timeout))
		}
		if m.StatsDelay <= 0 {
			errs = append(errs, fmt.Errorf("management::stats_delay: must be positive (well over the broker's collect_statistics_interval), got %s", m.StatsDelay))
		}
	} else if c.EnableTracing {
		errs = append(errs, errors.New("enable_tracing: needs management::endpoint"))
	}
	errs = append(errs, c.Reconnect.Validate())
	return errors.Join(errs...)
}

// redacted quotes an address for an error without its credentials: with
// its password masked when it parses, not at all when it does not.
func redacted(raw string, u *url.URL, err error) string {
	if err != nil || u == nil {
		return "an address that does not parse"
	}
	return strconv.Quote(u.Redacted())
}
