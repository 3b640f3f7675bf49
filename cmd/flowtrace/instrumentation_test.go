package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/plugin/kotel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// apiFlow is the part of the API's flow JSON these tests read.
type apiFlow struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	HopCount int    `json:"hop_count"`
	Retries  int    `json:"retries"`
}

type apiHop struct {
	System      string  `json:"system"`
	Producer    string  `json:"producer"`
	Destination string  `json:"destination"`
	Consumer    string  `json:"consumer"`
	QueueWaitMS float64 `json:"queue_wait_ms"`
	Attempts    int     `json:"attempts"`
	Outcome     string  `json:"outcome"`
}

// waitForFlows polls the API until want flows match query and are ready,
// and returns them with their hops.
func waitForFlows(t *testing.T, client *http.Client, api string, query url.Values, want int, ready func([]apiHop) bool) map[string][]apiHop {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + api + "/api/flows?" + query.Encode())
		require.NoError(t, err)
		var page struct {
			Flows []apiFlow `json:"flows"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
		resp.Body.Close()
		got := map[string][]apiHop{}
		for _, f := range page.Flows {
			resp, err := client.Get("http://" + api + "/api/flows/" + f.ID)
			require.NoError(t, err)
			var detail struct {
				Hops []apiHop `json:"hops"`
			}
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&detail))
			resp.Body.Close()
			if ready(detail.Hops) {
				got[f.Name+"/"+f.ID] = detail.Hops
			}
		}
		if len(got) == want {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %d flows matching %v, have %d of %d: %v", want, query, len(got), len(page.Flows), page.Flows)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// ackedHops is ready when a flow has n hops, every one acked: a hop is
// stored as soon as its publish is seen, and again, in full, once its
// consumer settles it.
func ackedHops(n int) func([]apiHop) bool {
	return func(hops []apiHop) bool {
		if len(hops) != n {
			return false
		}
		for _, h := range hops {
			if h.Outcome != "acked" {
				return false
			}
		}
		return true
	}
}

// tracerProvider is one service's OpenTelemetry SDK, exporting OTLP/HTTP to
// flowtrace.
func tracerProvider(t *testing.T, endpoint, service string) *sdktrace.TracerProvider {
	t.Helper()
	exporter, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithInsecure())
	require.NoError(t, err)
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exporter, sdktrace.WithBatchTimeout(100*time.Millisecond)),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))),
	)
}

// kafkaClient is a franz-go client traced by kotel with the service's SDK.
func kafkaClient(t *testing.T, brokers []string, tp *sdktrace.TracerProvider, opts ...kgo.Opt) (*kgo.Client, *kotel.Tracer) {
	t.Helper()
	tracer := kotel.NewTracer(kotel.TracerProvider(tp), kotel.TracerPropagator(propagation.TraceContext{}))
	client, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.WithHooks(kotel.NewKotel(kotel.WithTracer(tracer)).Hooks()...),
	}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(client.Close)
	return client, tracer
}

// TestKafkaServicesTracedWithKotel: three services instrumented with the
// OpenTelemetry Go SDK and franz-go's kotel plugin — checkout publishes
// orders, billing consumes each and publishes an invoice from its processing,
// mailer consumes invoices — through a Kafka-protocol broker (kfake). Their
// spans, sent to flowtrace over OTLP, become one two-hop flow per order.
func TestKafkaServicesTracedWithKotel(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "orders", "invoices"))
	require.NoError(t, err)
	defer cluster.Close()
	brokers := cluster.ListenAddrs()
	const orders = 5

	runFlowtrace(t, t.TempDir(), func(ep endpoints, client *http.Client) {
		ctx := context.Background()
		// Polls give up rather than hang the test if records never come.
		pollCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		checkoutTP, billingTP, mailerTP := tracerProvider(t, ep.otlpHTTP, "checkout"), tracerProvider(t, ep.otlpHTTP, "billing"), tracerProvider(t, ep.otlpHTTP, "mailer")
		defer func() {
			for _, tp := range []*sdktrace.TracerProvider{checkoutTP, billingTP, mailerTP} {
				require.NoError(t, tp.Shutdown(ctx))
			}
		}()

		checkout, _ := kafkaClient(t, brokers, checkoutTP)
		for i := range orders {
			require.NoError(t, checkout.ProduceSync(ctx, &kgo.Record{Topic: "orders", Key: []byte(fmt.Sprint("order-", i)), Value: []byte("{}")}).FirstErr())
		}

		billing, billingTracer := kafkaClient(t, brokers, billingTP,
			kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		for consumed := 0; consumed < orders; {
			fetches := billing.PollFetches(pollCtx)
			require.NoError(t, fetches.Err())
			fetches.EachRecord(func(r *kgo.Record) {
				processCtx, span := billingTracer.WithProcessSpan(r)
				time.Sleep(5 * time.Millisecond)
				require.NoError(t, billing.ProduceSync(processCtx, &kgo.Record{Topic: "invoices", Key: r.Key, Value: []byte("{}")}).FirstErr())
				span.End()
				consumed++
			})
		}

		mailer, mailerTracer := kafkaClient(t, brokers, mailerTP,
			kgo.ConsumerGroup("mailer"), kgo.ConsumeTopics("invoices"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		for consumed := 0; consumed < orders; {
			fetches := mailer.PollFetches(pollCtx)
			require.NoError(t, fetches.Err())
			fetches.EachRecord(func(r *kgo.Record) {
				_, span := mailerTracer.WithProcessSpan(r)
				span.End()
				consumed++
			})
		}
		for _, tp := range []*sdktrace.TracerProvider{checkoutTP, billingTP, mailerTP} {
			require.NoError(t, tp.ForceFlush(ctx))
		}

		flows := waitForFlows(t, client, ep.api, url.Values{"name": {"checkout orders"}}, orders, ackedHops(2))
		for name, hops := range flows {
			require.Len(t, hops, 2, name)
			byDestination := map[string]apiHop{}
			for _, h := range hops {
				byDestination[h.Destination] = h
			}
			order, invoice := byDestination["orders"], byDestination["invoices"]
			assert.Equal(t, apiHop{System: "kafka", Producer: "checkout", Destination: "orders", Consumer: "billing",
				QueueWaitMS: order.QueueWaitMS, Attempts: 1, Outcome: "acked"}, order, name)
			assert.Equal(t, apiHop{System: "kafka", Producer: "billing", Destination: "invoices", Consumer: "mailer",
				QueueWaitMS: invoice.QueueWaitMS, Attempts: 1, Outcome: "acked"}, invoice, name)
			assert.Greater(t, order.QueueWaitMS, 0.0, "a consumer receives after the producer published")
			assert.Greater(t, invoice.QueueWaitMS, 0.0)
		}
	})
}
