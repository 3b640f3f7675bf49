// Package metadata holds the flowstorage extension's component type and
// stability, as declared in ../../metadata.yaml.
package metadata

import "go.opentelemetry.io/collector/component"

// Type is the extension's name in configuration.
var Type = component.MustNewType("flowstorage")

// ExtensionStability is the extension's stability level.
const ExtensionStability = component.StabilityLevelAlpha
