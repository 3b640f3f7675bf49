package main

import (
	"fmt"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/prometheusexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/healthcheckextension"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/pprofextension"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/storage/filestorage"
	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/jaegerreceiver"
	"github.com/open-telemetry/opentelemetry-collector-contrib/receiver/zipkinreceiver"
	"go.opentelemetry.io/collector/exporter/debugexporter"
	"go.opentelemetry.io/collector/exporter/nopexporter"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor/batchprocessor"
	"go.opentelemetry.io/collector/processor/memorylimiterprocessor"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"

	"github.com/flowtrace/flowtrace/correlator/correlatorconnector"
	"github.com/flowtrace/flowtrace/exporters/clickhouseexporter"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver"
	"github.com/flowtrace/flowtrace/receivers/natstapreceiver"
	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver"
	"github.com/flowtrace/flowtrace/receivers/redistapreceiver"
	"github.com/flowtrace/flowtrace/storage/flowstorage"
	"github.com/flowtrace/flowtrace/storage/segmentstorage"
	"github.com/flowtrace/flowtrace/web"
)

// components lists every component compiled into flowtrace. A component
// missing here cannot be named in any config, the embedded default included.
func components() (otelcol.Factories, error) {
	var err error
	factories := otelcol.Factories{
		// The collector refuses to start without a telemetry factory; this one
		// serves service::telemetry (own logs and the /metrics endpoint).
		Telemetry: otelconftelemetry.NewFactory(),
	}

	factories.Extensions, err = otelcol.MakeFactoryMap(
		healthcheckextension.NewFactory(),
		pprofextension.NewFactory(),
		filestorage.NewFactory(),
		flowstorage.NewFactory(),
		segmentstorage.NewFactory(),
		web.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, fmt.Errorf("extensions: %w", err)
	}

	factories.Receivers, err = otelcol.MakeFactoryMap(
		otlpreceiver.NewFactory(),
		jaegerreceiver.NewFactory(),
		zipkinreceiver.NewFactory(),
		rabbitmqtapreceiver.NewFactory(),
		kafkatapreceiver.NewFactory(),
		natstapreceiver.NewFactory(),
		redistapreceiver.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, fmt.Errorf("receivers: %w", err)
	}

	factories.Processors, err = otelcol.MakeFactoryMap(
		batchprocessor.NewFactory(),
		memorylimiterprocessor.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, fmt.Errorf("processors: %w", err)
	}

	factories.Exporters, err = otelcol.MakeFactoryMap(
		debugexporter.NewFactory(),
		nopexporter.NewFactory(),
		clickhouseexporter.NewFactory(),
		prometheusexporter.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, fmt.Errorf("exporters: %w", err)
	}

	factories.Connectors, err = otelcol.MakeFactoryMap(
		correlatorconnector.NewFactory(),
	)
	if err != nil {
		return otelcol.Factories{}, fmt.Errorf("connectors: %w", err)
	}

	return factories, nil
}
