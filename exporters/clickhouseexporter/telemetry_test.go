package clickhouseexporter

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flowtrace/flowtrace/model"
)

// TestRejectedCountsWhatWasRefused: flowtrace.exporter.rejected counts the
// items refused, by the rows they held; a span whose attribute is of the
// wrong type is still written, and counts in malformed_attributes instead.
func TestRejectedCountsWhatWasRefused(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	set := componenttest.NewNopTelemetrySettings()
	set.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	e, err := newExporter(createDefaultConfig(), set)
	require.NoError(t, err)
	ctx := context.Background()
	sum := func(name string) int64 {
		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(ctx, &rm))
		var total int64
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name == name {
					for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
						total += p.Value
					}
				}
			}
		}
		return total
	}

	td := benchSpans(1)
	spans := td.ResourceSpans().At(0).ScopeSpans().At(0).Spans()
	spans.At(0).Attributes().PutStr("messaging.message.body.size", "big")
	plain := spans.AppendEmpty() // not a messaging span, and read only for its status code
	plain.SetKind(ptrace.SpanKindServer)
	plain.Attributes().PutStr("http.response.status_code", "n/a")
	r, bad := e.eventRows(ctx, td)
	assert.Empty(t, bad)
	assert.Equal(t, spans.Len()-1, r.ItemsCount(), "every messaging span is written")
	assert.Zero(t, sum("flowtrace.exporter.rejected"), "nothing was refused")
	assert.Equal(t, int64(2), sum("flowtrace.exporter.malformed_attributes"), "the body size and the status code")

	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName(model.MetricBacklogDepth)
	points := m.SetEmptySum().DataPoints()
	for range 3 {
		points.AppendEmpty()
	}
	_, bad = e.backlogRows(ctx, md)
	require.Error(t, e.refuse(ctx, bad))
	assert.Equal(t, int64(3), sum("flowtrace.exporter.rejected"), "a backlog metric of the wrong type: each of its points")
}
