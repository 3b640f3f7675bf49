package main

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
)

func TestComponents(t *testing.T) {
	factories, err := components()
	require.NoError(t, err)
	require.NotNil(t, factories.Telemetry)

	tests := []struct {
		kind  string
		types []component.Type
		want  []string
	}{
		{kind: "extensions", types: typesOf(factories.Extensions), want: []string{"health_check", "pprof", "file_storage", "flowstorage", "segment_storage", "flowtrace_web"}},
		{kind: "receivers", types: typesOf(factories.Receivers), want: []string{"otlp", "jaeger", "zipkin", "rabbitmq_tap", "kafka_tap", "nats_tap", "redis_tap"}},
		{kind: "processors", types: typesOf(factories.Processors), want: []string{"batch", "memory_limiter"}},
		{kind: "exporters", types: typesOf(factories.Exporters), want: []string{"debug"}},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			for _, name := range tt.want {
				require.Contains(t, tt.types, component.MustNewType(name))
			}
		})
	}
}

func typesOf[F component.Factory](factories map[component.Type]F) []component.Type {
	types := make([]component.Type, 0, len(factories))
	for typ := range factories {
		types = append(types, typ)
	}
	return types
}
