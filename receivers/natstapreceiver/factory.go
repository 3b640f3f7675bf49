package natstapreceiver

import (
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/natstapreceiver/internal/metadata"
)

// NewFactory returns the NATS tap's factory: its traces and metrics
// receivers of one component id share one tap.
func NewFactory() receiver.Factory {
	return tap.NewFactory(metadata.Type, metadata.Stability,
		func() component.Config { return createDefaultConfig() },
		func(set receiver.Settings, cfg component.Config) (*natsTap, error) {
			return newTap(cfg.(*Config), set)
		})
}
