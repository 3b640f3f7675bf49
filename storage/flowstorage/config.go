package flowstorage

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"go.opentelemetry.io/collector/config/configopaque"
	"go.opentelemetry.io/collector/config/configtls"

	"github.com/flowtrace/flowtrace/storage/chstore"
)

// DefaultBackend is the backend components use when they name none, and the
// one created when the configuration lists none.
const DefaultBackend = "default"

// Defaults.
const (
	defaultDataDir  = "./flowtrace-data"
	defaultDatabase = "flowtrace"
	defaultTTL      = 30 * 24 * time.Hour
	defaultTimeout  = 10 * time.Second
)

// Config is the flowstorage extension's configuration.
type Config struct {
	// Backends maps a backend name to its configuration. Default: one backend
	// named "default" on the embedded engine in ./flowtrace-data.
	Backends map[string]BackendConfig `mapstructure:"backends"`
}

// BackendConfig is one storage backend: exactly one engine, and where its
// tables live.
type BackendConfig struct {
	// Chdb runs ClickHouse embedded in the flowtrace process.
	Chdb *ChdbConfig `mapstructure:"chdb"`
	// ClickHouse reaches a ClickHouse server or cluster.
	ClickHouse *ClickHouseConfig `mapstructure:"clickhouse"`
	// Database holds flowtrace's tables. Default: flowtrace.
	Database string `mapstructure:"database"`
	// TTL drops data older than this; 0 keeps it forever. Default: 720h (30 days).
	TTL *time.Duration `mapstructure:"ttl"`
}

// ChdbConfig configures the embedded engine.
type ChdbConfig struct {
	// Path is the data directory, created if missing. Default: ./flowtrace-data.
	Path string `mapstructure:"path"`
}

// ClickHouseConfig configures the server engine.
type ClickHouseConfig struct {
	// Endpoints are host:port addresses of the native protocol (9000, or
	// 9440 with TLS). Required.
	Endpoints []string `mapstructure:"endpoints"`
	// Username and Password authenticate. Default: the server's default user.
	Username string              `mapstructure:"username"`
	Password configopaque.String `mapstructure:"password"`
	// TLS, when set, secures the connection. Default: unset, plain TCP.
	TLS *configtls.ClientConfig `mapstructure:"tls"`
	// Cluster, when set, creates tables ON CLUSTER with Replicated engines
	// behind Distributed tables. Default: none (a single server).
	Cluster string `mapstructure:"cluster"`
	// DialTimeout bounds connecting. Default: 10s.
	DialTimeout time.Duration `mapstructure:"dial_timeout"`
}

func createDefaultConfig() *Config {
	return &Config{}
}

// backends returns the configured backends, or the default one when none is
// configured, with defaults filled in.
func (c *Config) backends() map[string]BackendConfig {
	if len(c.Backends) == 0 {
		return withDefaults(map[string]BackendConfig{DefaultBackend: {}})
	}
	return withDefaults(c.Backends)
}

func withDefaults(m map[string]BackendConfig) map[string]BackendConfig {
	out := make(map[string]BackendConfig, len(m))
	for name, b := range m {
		if b.Chdb == nil && b.ClickHouse == nil {
			b.Chdb = &ChdbConfig{}
		}
		if b.Chdb != nil && b.Chdb.Path == "" {
			b.Chdb = &ChdbConfig{Path: defaultDataDir}
		}
		if b.ClickHouse != nil && b.ClickHouse.DialTimeout == 0 {
			ch := *b.ClickHouse
			ch.DialTimeout = defaultTimeout
			b.ClickHouse = &ch
		}
		if b.Database == "" {
			b.Database = defaultDatabase
		}
		if b.TTL == nil {
			ttl := defaultTTL
			b.TTL = &ttl
		}
		out[name] = b
	}
	return out
}

// schema is where the backend's tables live.
func (b BackendConfig) schema() chstore.Schema {
	s := chstore.Schema{Database: b.Database, TTL: *b.TTL}
	if b.ClickHouse != nil {
		s.Cluster = b.ClickHouse.Cluster
	}
	return s
}

// Validate checks every backend; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	embedded := 0
	names := make([]string, 0, len(c.Backends))
	for name := range c.Backends {
		names = append(names, name)
	}
	sort.Strings(names)
	backends := c.backends()
	for _, name := range names {
		b := backends[name]
		key := "backends::" + name
		if c.Backends[name].Chdb != nil && c.Backends[name].ClickHouse != nil {
			errs = append(errs, fmt.Errorf("%s: set one of chdb or clickhouse, not both", key))
			continue
		}
		if b.Chdb != nil {
			embedded++
		}
		if b.ClickHouse != nil {
			if len(b.ClickHouse.Endpoints) == 0 {
				errs = append(errs, fmt.Errorf("%s::clickhouse::endpoints: at least one host:port is required", key))
			}
			if b.ClickHouse.DialTimeout < 0 {
				errs = append(errs, fmt.Errorf("%s::clickhouse::dial_timeout: must not be negative", key))
			}
			if b.ClickHouse.TLS != nil {
				if err := b.ClickHouse.TLS.Validate(); err != nil {
					errs = append(errs, fmt.Errorf("%s::clickhouse::tls: %w", key, err))
				}
			}
		}
		if err := b.schema().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("%s::%w", key, err))
		}
	}
	if embedded > 1 {
		errs = append(errs, errors.New("backends: at most one chdb backend: the embedded engine runs one session per process"))
	}
	return errors.Join(errs...)
}
