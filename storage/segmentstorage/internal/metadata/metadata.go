// Package metadata holds the segment_storage extension's component type and
// stability, as declared in ../../metadata.yaml.
package metadata

import "go.opentelemetry.io/collector/component"

// Type is the extension's name in configuration.
var Type = component.MustNewType("segment_storage")

// ScopeName is the instrumentation scope of the extension's own metrics.
const ScopeName = "github.com/flowtrace/flowtrace/storage/segmentstorage"

// ExtensionStability is the extension's stability level.
const ExtensionStability = component.StabilityLevelAlpha
