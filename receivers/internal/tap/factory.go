package tap

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"
)

// Receiver is a tap the shared factory builds: a component with an Emitter.
type Receiver interface {
	component.Component
	Emitter() *Emitter
}

// NewFactory returns the factory of a tap with a traces and a metrics
// receiver that share one tap (one broker connection) per component.
// create builds the tap from its configuration.
func NewFactory[T Receiver](typ component.Type, stability component.StabilityLevel,
	createDefaultConfig component.CreateDefaultConfigFunc,
	create func(receiver.Settings, component.Config) (T, error),
) receiver.Factory {
	var shared Shared[T]
	handle := func(set receiver.Settings, cfg component.Config) (*Handle[T], error) {
		return shared.Get(set.ID, cfg, func() (T, error) { return create(set, cfg) })
	}
	return receiver.NewFactory(typ, createDefaultConfig,
		receiver.WithTraces(func(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Traces) (receiver.Traces, error) {
			h, err := handle(set, cfg)
			if err != nil {
				return nil, err
			}
			h.Tap.Emitter().traces = next
			return h, nil
		}, stability),
		receiver.WithMetrics(func(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
			h, err := handle(set, cfg)
			if err != nil {
				return nil, err
			}
			h.Tap.Emitter().metrics = next
			return h, nil
		}, stability),
	)
}
