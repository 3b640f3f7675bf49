package correlatorconnector

import (
	"context"
	"sync"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/consumer"

	"github.com/flowtrace/flowtrace/correlator/correlatorconnector/internal/metadata"
)

// NewFactory returns the correlator connector's factory.
func NewFactory() connector.Factory {
	f := &factory{cores: map[component.ID]*core{}}
	return connector.NewFactory(
		metadata.Type,
		func() component.Config { return createDefaultConfig() },
		connector.WithTracesToLogs(f.createTracesToLogs, metadata.TracesToLogsStability),
		connector.WithTracesToMetrics(f.createTracesToMetrics, metadata.TracesToMetricsStability),
	)
}

// factory hands the logs and metrics routes of one component id the same
// core, so both see one engine.
type factory struct {
	mu    sync.Mutex
	cores map[component.ID]*core
}

func (f *factory) coreFor(set connector.Settings, cfg component.Config) (*core, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cores[set.ID]
	if !ok {
		var err error
		if c, err = newCore(cfg.(*Config), set.Logger); err != nil {
			return nil, err
		}
		f.cores[set.ID] = c
		c.release = func() {
			f.mu.Lock()
			defer f.mu.Unlock()
			delete(f.cores, set.ID)
		}
	}
	c.lifecycle.Lock()
	c.routes++
	c.lifecycle.Unlock()
	return c, nil
}

func (f *factory) createTracesToLogs(_ context.Context, set connector.Settings, cfg component.Config, next consumer.Logs) (connector.Traces, error) {
	c, err := f.coreFor(set, cfg)
	if err != nil {
		return nil, err
	}
	c.logs = next
	return &route{core: c}, nil
}

func (f *factory) createTracesToMetrics(_ context.Context, set connector.Settings, cfg component.Config, next consumer.Metrics) (connector.Traces, error) {
	c, err := f.coreFor(set, cfg)
	if err != nil {
		return nil, err
	}
	c.metrics = next
	return &route{core: c, metrics: true}, nil
}
