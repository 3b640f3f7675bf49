package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/internal/brokertest"
	"github.com/flowtrace/flowtrace/storage"
)

// TestBrokerTapBuildsStoredFlows: flowtrace on its default configuration
// plus the NATS tap, and services that flowtrace knows nothing of — no
// tracing, only a JetStream stream and a consumer. The flows are built from
// the tap alone, stored, served by the API, and the consumer's backlog is
// stored as samples.
func TestBrokerTapBuildsStoredFlows(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	addr := brokertest.Addr(t, "FLOWTRACE_NATS", "127.0.0.1:4222")
	ctx := context.Background()
	nc, err := nats.Connect("nats://" + addr)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	name := fmt.Sprintf("E2E%d", time.Now().UnixNano())
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.MemoryStorage})
	require.NoError(t, err)
	defer func() { _ = js.DeleteStream(ctx, name) }()
	consumer, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "billing", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)

	dataDir := t.TempDir()
	runFlowtraceWith(t, dataDir, []string{
		"--set=receivers.nats_tap.url=nats://" + addr,
		"--set=receivers.nats_tap.streams=[{name: " + name + "}]",
		"--set=receivers.nats_tap.deliver_policy=all",
		"--set=receivers.nats_tap.poll_interval=200ms",
		"--set=service.pipelines.traces.receivers=[otlp, jaeger, zipkin, nats_tap]",
		"--set=service.pipelines.metrics/backlog.receivers=[nats_tap]",
		"--set=service.pipelines.metrics/backlog.exporters=[clickhouse, prometheus]",
	}, func(ep endpoints, client *http.Client) {
		const orders = 3
		for i := range orders {
			_, err := js.Publish(ctx, name+".orders", []byte(fmt.Sprintf(`{"order":%d}`, i)))
			require.NoError(t, err)
		}
		// The first message is refused once, then taken: a retry.
		refused := false
		for acked := 0; acked < orders; {
			batch, err := consumer.Fetch(orders, jetstream.FetchMaxWait(5*time.Second))
			require.NoError(t, err)
			for msg := range batch.Messages() {
				meta, err := msg.Metadata()
				require.NoError(t, err)
				if meta.Sequence.Stream == 1 && !refused {
					refused = true
					require.NoError(t, msg.Nak())
					continue
				}
				require.NoError(t, msg.DoubleAck(ctx))
				acked++
			}
		}

		flows := waitForFlows(t, client, ep.api, url.Values{"name": {name + ".orders"}}, orders, ackedHops(1))
		retries := 0
		for flow, hops := range flows {
			require.Len(t, hops, 1, flow)
			hop := hops[0]
			assert.Equal(t, "nats", hop.System, flow)
			assert.Equal(t, name, hop.Destination, flow)
			assert.Equal(t, "acked", hop.Outcome, flow)
			retries += hop.Attempts - 1
		}
		assert.Equal(t, 1, retries, "one message was delivered twice")
	})

	withStore(t, dataDir, func(st storage.Store) {
		samples, err := st.BacklogSeries(ctx, storage.BacklogQuery{Destination: name, From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Hour)})
		require.NoError(t, err)
		require.NotEmpty(t, samples, "the consumer's backlog was stored")
		var group bool
		for _, s := range samples {
			group = group || s.ConsumerGroup == "billing"
		}
		assert.True(t, group, "a sample for the consumer group billing")
	})
}

// TestTapsConfigValidates: deploy/flowtrace-taps.yaml on top of the
// default is a configuration flowtrace accepts.
func TestTapsConfigValidates(t *testing.T) {
	t.Setenv("RABBITMQ_TAP_PASSWORD", "guest")
	out, err := execute(t, "validate", "--config="+defaultURI, "--config=file:../../deploy/flowtrace-taps.yaml")
	require.NoError(t, err, out)

	_, err = execute(t, "validate", "--config=flowtrace:other")
	assert.ErrorContains(t, err, "knows only flowtrace:default")
}
