// Package metadata holds the RabbitMQ tap's component type and stability, as
// declared in ../../metadata.yaml.
package metadata

import "go.opentelemetry.io/collector/component"

// Type is the receiver's name in configuration.
var Type = component.MustNewType("rabbitmq_tap")

// ScopeName names the instrumentation scope of the spans, gauges and
// counters the tap emits.
const ScopeName = "github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver"

// Stability of each signal.
const (
	TracesStability  = component.StabilityLevelAlpha
	MetricsStability = component.StabilityLevelAlpha
)
