// Package metadata holds the NATS tap's component type and stability, as
// declared in ../../metadata.yaml.
package metadata

import "go.opentelemetry.io/collector/component"

// Type is the receiver's name in configuration.
var Type = component.MustNewType("nats_tap")

// ScopeName names the instrumentation scope of the spans and metrics it
// emits.
const ScopeName = "github.com/flowtrace/flowtrace/receivers/natstapreceiver"

// Stability of the receiver, for traces and metrics alike.
const Stability = component.StabilityLevelAlpha
