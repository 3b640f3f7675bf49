// Package metadata holds the correlator connector's component type and
// stability, as declared in ../../metadata.yaml.
package metadata

import "go.opentelemetry.io/collector/component"

// Type is the connector's name in configuration.
var Type = component.MustNewType("correlator")

// ScopeName names the instrumentation scope of the metrics it emits.
const ScopeName = "github.com/flowtrace/flowtrace/correlator/correlatorconnector"

// Stability of each of the connector's routes.
const (
	TracesToLogsStability    = component.StabilityLevelAlpha
	TracesToMetricsStability = component.StabilityLevelAlpha
)
