package redistapreceiver

import (
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/redistapreceiver/internal/metadata"
)

// NewFactory returns the Redis tap's factory: the traces and metrics
// receivers of one component id share one tap, so one set of Redis
// connections feeds both pipelines.
func NewFactory() receiver.Factory {
	return tap.NewFactory(metadata.Type, metadata.TracesStability,
		func() component.Config { return createDefaultConfig() },
		func(set receiver.Settings, cfg component.Config) (*redisTap, error) {
			return newRedisTap(cfg.(*Config), set)
		})
}
