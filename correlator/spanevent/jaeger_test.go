package spanevent

import (
	"testing"
	"time"

	jaegermodel "github.com/jaegertracing/jaeger-idl/model/v1"
	jaegertranslator "github.com/open-telemetry/opentelemetry-collector-contrib/pkg/translator/jaeger"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
)

// TestJaegerFollowsFromIsALink: a Jaeger consumer span that FOLLOWS_FROM the
// producer span reaches the adapter, through the collector's own Jaeger
// translator, as a span link, and counts as one.
func TestJaegerFollowsFromIsALink(t *testing.T) {
	producer := jaegermodel.NewSpanID(0xaa)
	trace := jaegermodel.NewTraceID(1, 2)
	batch := &jaegermodel.Batch{
		Process: &jaegermodel.Process{ServiceName: "billing"},
		Spans: []*jaegermodel.Span{{
			TraceID:       jaegermodel.NewTraceID(3, 4),
			SpanID:        jaegermodel.NewSpanID(0xbb),
			OperationName: "orders process",
			StartTime:     start,
			Duration:      time.Millisecond,
			References:    []jaegermodel.SpanRef{{TraceID: trace, SpanID: producer, RefType: jaegermodel.SpanRefType_FOLLOWS_FROM}},
			Tags: []jaegermodel.KeyValue{
				jaegermodel.String("span.kind", "consumer"),
				jaegermodel.String("messaging.system", "rabbitmq"),
				jaegermodel.String("messaging.operation", "process"),
			},
		}},
	}
	td, err := jaegertranslator.ProtoToTraces([]*jaegermodel.Batch{batch})
	require.NoError(t, err)
	events, _ := convert(t, Config{}, td)
	require.Len(t, events, 1)
	assert.Equal(t, model.EventProcess, events[0].Kind)
	assert.Equal(t, "billing", events[0].Service)
	assert.Equal(t, []model.SpanRef{{TraceID: "00000000000000010000000000000002", SpanID: "00000000000000aa"}}, events[0].Links)
}
