// Package metadata holds the Kafka tap's component type and stability, as
// declared in ../../metadata.yaml.
package metadata

import "go.opentelemetry.io/collector/component"

// Type is the receiver's name in configuration.
var Type = component.MustNewType("kafka_tap")

// ScopeName names the instrumentation scope of the spans and metrics it
// emits.
const ScopeName = "github.com/flowtrace/flowtrace/receivers/kafkatapreceiver"

// Stability of both of the receiver's signals, traces and metrics.
const Stability = component.StabilityLevelAlpha
