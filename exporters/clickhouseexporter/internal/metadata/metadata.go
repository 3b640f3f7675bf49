// Package metadata holds the ClickHouse exporter's component type and
// stability, as declared in ../../metadata.yaml.
package metadata

import "go.opentelemetry.io/collector/component"

// Type is the exporter's name in configuration.
var Type = component.MustNewType("clickhouse")

// ScopeName names the instrumentation scope of the exporter's own metrics.
const ScopeName = "github.com/flowtrace/flowtrace/exporters/clickhouseexporter"

// Stability of each signal.
const (
	TracesStability  = component.StabilityLevelAlpha
	LogsStability    = component.StabilityLevelAlpha
	MetricsStability = component.StabilityLevelAlpha
)
