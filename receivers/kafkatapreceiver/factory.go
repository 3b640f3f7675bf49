package kafkatapreceiver

import (
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

// NewFactory returns the Kafka tap's factory: the traces and metrics
// receivers of one component id share one tap.
func NewFactory() receiver.Factory {
	return tap.NewFactory(metadata.Type, metadata.Stability,
		func() component.Config { return createDefaultConfig() },
		func(set receiver.Settings, cfg component.Config) (*kafkaTap, error) {
			return newTap(cfg.(*Config), set)
		})
}
