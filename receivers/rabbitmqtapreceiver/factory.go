package rabbitmqtapreceiver

import (
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver/internal/metadata"
)

// NewFactory returns the RabbitMQ tap's factory: the traces and metrics
// receivers of one component id share one tap.
func NewFactory() receiver.Factory {
	return tap.NewFactory(metadata.Type, metadata.TracesStability,
		func() component.Config { return createDefaultConfig() },
		func(set receiver.Settings, cfg component.Config) (*rabbitTap, error) {
			return newRabbitTap(cfg.(*Config), set)
		})
}
