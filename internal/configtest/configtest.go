// Package configtest loads a component's configuration from its
// testdata/config.yaml, as the collector would: the defaults, then what the
// file sets under the component's id.
package configtest

import (
	"path/filepath"
	"testing"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap/confmaptest"
)

// Load returns the configuration of the component typ (with name, unless
// empty) in testdata/config.yaml, on top of defaults().
func Load[C any](t testing.TB, typ component.Type, name string, defaults func() C) C {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	id := component.NewID(typ)
	if name != "" {
		id = component.NewIDWithName(typ, name)
	}
	sub, err := cm.Sub(id.String())
	if err != nil {
		t.Fatal(err)
	}
	cfg := defaults()
	if err := sub.Unmarshal(cfg); err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	return cfg
}
