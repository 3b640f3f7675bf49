package kafkatapreceiver

import (
	"context"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

// NewFactory returns the Kafka tap's factory.
func NewFactory() receiver.Factory {
	f := &factory{}
	return receiver.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		receiver.WithTraces(f.createTraces, metadata.TracesStability),
		receiver.WithMetrics(f.createMetrics, metadata.MetricsStability),
	)
}

// factory hands the traces and metrics receivers of one component id the
// same tap.
type factory struct {
	shared tap.Shared[*kafkaTap]
}

func (f *factory) handle(set receiver.Settings, cfg component.Config) (*tap.Handle[*kafkaTap], error) {
	return f.shared.Get(set.ID, func() (*kafkaTap, error) { return newTap(cfg.(*Config), set) })
}

func (f *factory) createTraces(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Traces) (receiver.Traces, error) {
	h, err := f.handle(set, cfg)
	if err != nil {
		return nil, err
	}
	h.Tap.traces = next
	return h, nil
}

func (f *factory) createMetrics(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
	h, err := f.handle(set, cfg)
	if err != nil {
		return nil, err
	}
	h.Tap.metrics = next
	return h, nil
}
