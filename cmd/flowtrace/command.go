package main

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/spf13/cobra"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/otelcol"

	"github.com/flowtrace/flowtrace/storage/chdb"
)

// defaultConfig is the all-in-one configuration run when no --config is given.
//
//go:embed default-config.yaml
var defaultConfig string

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

const (
	configFlag  = "config"
	dataDirFlag = "data-dir"
	// dataDirEnv both seeds --data-dir and carries its resolved value to the
	// config, which refers to it as ${env:FLOWTRACE_DATA_DIR}.
	dataDirEnv     = "FLOWTRACE_DATA_DIR"
	defaultDataDir = "./flowtrace-data"
)

func init() {
	// --version prints through cobra's version template. Going through a
	// template function keeps versionText lazy: lines that are costly to
	// compute are only computed when someone asks for the version.
	cobra.AddTemplateFunc("versionText", versionText)
}

// newCommand builds the flowtrace command: the collector's own command
// (run, validate, components, print-config, featuregate) plus flowtrace's
// defaults and flags.
func newCommand() *cobra.Command {
	cmd := otelcol.NewCommand(otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "flowtrace",
			Description: "flowtrace: end-to-end flows of asynchronous messages",
			Version:     version,
		},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					envprovider.NewFactory(),
					fileprovider.NewFactory(),
					yamlprovider.NewFactory(),
					newDefaultProviderFactory(),
				},
			},
		},
	})
	cmd.Short = "Stitches asynchronous messages into end-to-end flows"
	cmd.Long = "flowtrace is an OpenTelemetry Collector distribution that stitches asynchronous " +
		"messages into end-to-end flows.\n\n" +
		"Without --config it runs an embedded all-in-one default that listens on 127.0.0.1 only; " +
		"`flowtrace print-config` shows it; --config=" + defaultURI + " names it, to add files of your own to it."
	cmd.SetVersionTemplate("{{versionText}}")

	cmd.PersistentFlags().String(dataDirFlag, defaultDataDir,
		"directory for flowtrace's local data; overrides $"+dataDirEnv)
	cmd.PersistentPreRunE = exportDataDir

	useDefaultConfig(cmd, true)
	for _, sub := range cmd.Commands() {
		switch sub.Name() {
		case "validate", "print-config":
			useDefaultConfig(sub, false)
		}
	}
	return cmd
}

// useDefaultConfig makes cmd fall back to the embedded default when no
// --config was given, so that a bare `flowtrace` is a working all-in-one and
// `flowtrace validate` checks what a bare `flowtrace` would run. --set
// overrides still apply on top of the default. With announce, the fallback is
// said on stderr, because nothing in the collector's own logs tells which
// config it runs.
func useDefaultConfig(cmd *cobra.Command, announce bool) {
	config := cmd.Flags().Lookup(configFlag)
	config.Usage += " Without --config, the embedded all-in-one default is used."
	runE := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if !config.Changed {
			if err := config.Value.Set("yaml:" + defaultConfig); err != nil {
				return fmt.Errorf("use default config: %w", err)
			}
			if announce {
				cmd.PrintErrln("flowtrace: no --config given, running the embedded all-in-one default (`flowtrace print-config` shows it)")
			}
		}
		return runE(cmd, args)
	}
}

// exportDataDir resolves the data directory and exports it: configs refer to
// it as ${env:FLOWTRACE_DATA_DIR}, so the environment is how --data-dir
// reaches them.
func exportDataDir(cmd *cobra.Command, _ []string) error {
	flag := cmd.Flags().Lookup(dataDirFlag)
	dir, err := resolveDataDir(flag.Value.String(), flag.Changed, os.Getenv(dataDirEnv))
	if err != nil {
		return err
	}
	if err := os.Setenv(dataDirEnv, dir); err != nil {
		return fmt.Errorf("set %s: %w", dataDirEnv, err)
	}
	return nil
}

// resolveDataDir picks the data directory: the --data-dir flag when given,
// else $FLOWTRACE_DATA_DIR when set and not empty, else ./flowtrace-data.
func resolveDataDir(flagValue string, flagGiven bool, envValue string) (string, error) {
	switch {
	case flagGiven && flagValue == "":
		return "", errors.New("--" + dataDirFlag + " must not be empty")
	case flagGiven:
		return flagValue, nil
	case envValue != "":
		return envValue, nil
	default:
		return defaultDataDir, nil
	}
}

// versionText is what `flowtrace --version` prints: flowtrace's version, the
// Go runtime's, and the embedded ClickHouse engine's, which it asks the loaded
// library for.
func versionText() string {
	text := fmt.Sprintf("flowtrace %s\n%s %s/%s\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	engine, err := chdb.Version()
	if err != nil {
		return text + fmt.Sprintf("embedded ClickHouse: unavailable: %v\n", err)
	}
	return text + fmt.Sprintf("embedded ClickHouse %s (chDB %s, %s)\n", engine, chdb.LibraryVersion, chdb.LibraryPath())
}
