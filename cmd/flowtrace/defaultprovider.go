package main

import (
	"context"
	"fmt"

	"go.opentelemetry.io/collector/confmap"
)

// defaultURI names the embedded default configuration, so a file of one's
// own can add to it instead of copying it:
//
//	flowtrace --config=flowtrace:default --config=file:taps.yaml
const defaultURI = "flowtrace:default"

// defaultProvider serves the flowtrace: scheme: flowtrace:default is the
// embedded default configuration.
type defaultProvider struct{}

func newDefaultProviderFactory() confmap.ProviderFactory {
	return confmap.NewProviderFactory(func(confmap.ProviderSettings) confmap.Provider { return defaultProvider{} })
}

func (defaultProvider) Retrieve(_ context.Context, uri string, _ confmap.WatcherFunc) (*confmap.Retrieved, error) {
	if uri != defaultURI {
		return nil, fmt.Errorf("%q: flowtrace: knows only %s", uri, defaultURI)
	}
	return confmap.NewRetrievedFromYAML([]byte(defaultConfig))
}

func (defaultProvider) Scheme() string { return "flowtrace" }

func (defaultProvider) Shutdown(context.Context) error { return nil }
