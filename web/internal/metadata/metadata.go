// Package metadata holds the web extension's component type and stability,
// as declared in ../../metadata.yaml.
package metadata

import "go.opentelemetry.io/collector/component"

// Type is the extension's name in configuration.
var Type = component.MustNewType("flowtrace_web")

// ExtensionStability is the extension's stability level.
const ExtensionStability = component.StabilityLevelAlpha
