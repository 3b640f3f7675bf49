package web

import (
	"errors"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/config/confighttp"
	"go.opentelemetry.io/collector/config/confignet"

	"github.com/flowtrace/flowtrace/storage/flowstorage"
)

// Config is the web extension's configuration.
type Config struct {
	// ServerConfig is the HTTP server: endpoint (default 127.0.0.1:8686),
	// tls, auth (an authenticator extension), cors, timeouts.
	confighttp.ServerConfig `mapstructure:",squash"`
	// Storage names the flowstorage extension to read through; it starts
	// first. Default flowstorage.
	Storage component.ID `mapstructure:"storage"`
	// Backend names the flowstorage backend to read. Default "default".
	Backend string `mapstructure:"backend"`
	// AllowedHosts are the host names (without port) browsers may reach
	// the server by. On loopback, loopback addresses and localhost are
	// always allowed and other names refused; elsewhere, any name is
	// allowed unless this is set.
	AllowedHosts []string `mapstructure:"allowed_hosts"`
}

func createDefaultConfig() *Config {
	server := confighttp.NewDefaultServerConfig()
	server.NetAddr = confignet.AddrConfig{Transport: confignet.TransportTypeTCP, Endpoint: "127.0.0.1:8686"}
	return &Config{ServerConfig: server, Storage: component.MustNewID("flowstorage"), Backend: flowstorage.DefaultBackend}
}

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	var errs []error
	if c.NetAddr.Endpoint == "" {
		errs = append(errs, errors.New("endpoint: must not be empty"))
	}
	if c.Backend == "" {
		errs = append(errs, errors.New("backend: must not be empty"))
	}
	return errors.Join(errs...)
}
