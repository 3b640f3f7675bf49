package flowstorage

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/confmap"

	"github.com/flowtrace/flowtrace/internal/configtest"
	"github.com/flowtrace/flowtrace/storage/flowstorage/internal/metadata"
)

func loadConfig(t *testing.T, name string) *Config {
	t.Helper()
	return configtest.Load(t, metadata.Type, name, createDefaultConfig)
}

func TestDefaultConfig(t *testing.T) {
	cfg := loadConfig(t, "")
	require.NoError(t, confmap.Validate(cfg))
	backends := cfg.backends()
	require.Len(t, backends, 1)
	b := backends[DefaultBackend]
	assert.Equal(t, &ChdbConfig{Path: "./flowtrace-data"}, b.Chdb)
	assert.Nil(t, b.ClickHouse)
	assert.Equal(t, "flowtrace", b.Database)
	assert.Equal(t, 720*time.Hour, *b.TTL)
}

func TestCustomConfig(t *testing.T) {
	cfg := loadConfig(t, "custom")
	require.NoError(t, confmap.Validate(cfg))
	backends := cfg.backends()
	require.Len(t, backends, 2)

	local := backends["local"]
	assert.Equal(t, "/var/lib/flowtrace", local.Chdb.Path)
	assert.Equal(t, "flows", local.Database)
	assert.Equal(t, 168*time.Hour, *local.TTL)

	central := backends["central"]
	require.NotNil(t, central.ClickHouse)
	assert.Equal(t, []string{"ch-1:9440", "ch-2:9440"}, central.ClickHouse.Endpoints)
	assert.Equal(t, "flowtrace", central.ClickHouse.Username)
	assert.Equal(t, "secret", string(central.ClickHouse.Password))
	assert.Equal(t, "/etc/ssl/ca.pem", central.ClickHouse.TLS.CAFile)
	assert.Equal(t, 10*time.Second, central.ClickHouse.DialTimeout)
	assert.Equal(t, time.Duration(0), *central.TTL)
	schema := central.schema()
	assert.Equal(t, "prod", schema.Cluster)
	assert.Equal(t, "flowtrace", schema.Database)
}

func TestInvalidConfigs(t *testing.T) {
	for name, wants := range map[string][]string{
		"two_engines": {"backends::broken: set one of chdb or clickhouse, not both"},
		"two_chdb":    {"backends: at most one chdb backend"},
		"bad_names": {
			"backends::central::clickhouse::endpoints: at least one host:port is required",
			`backends::central::database: "x-y" is not a valid identifier`,
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
