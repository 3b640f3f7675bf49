package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/opentracing/opentracing-go"
	"github.com/opentracing/opentracing-go/ext"
	"github.com/openzipkin/zipkin-go"
	zipkinmodel "github.com/openzipkin/zipkin-go/model"
	zipkinhttp "github.com/openzipkin/zipkin-go/reporter/http"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	jaeger "github.com/uber/jaeger-client-go"
	"github.com/uber/jaeger-client-go/transport"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TestJaegerClientFollowsFrom: two services traced with jaeger-client-go,
// the consumer's span FOLLOWS_FROM the producer's, sent to the Jaeger
// receiver (Thrift over HTTP) — one flow per message.
func TestJaegerClientFollowsFrom(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	runFlowtrace(t, t.TempDir(), func(ep endpoints, client *http.Client) {
		newTracer := func(service string) (opentracing.Tracer, func()) {
			reporter := jaeger.NewRemoteReporter(transport.NewHTTPTransport("http://"+ep.jaegerThrift+"/api/traces"),
				jaeger.ReporterOptions.BufferFlushInterval(50*time.Millisecond))
			tracer, closer := jaeger.NewTracer(service, jaeger.NewConstSampler(true), reporter)
			return tracer, func() { require.NoError(t, closer.Close()) }
		}
		payments, closePayments := newTracer("payments")
		ledger, closeLedger := newTracer("ledger")
		for i := range 3 {
			id := fmt.Sprint("payment-", i)
			publish := payments.StartSpan("payments send", ext.SpanKindProducer, opentracing.Tags{
				"messaging.system": "rabbitmq", "messaging.operation": "publish",
				"messaging.destination.name": "payments", "messaging.message.id": id,
			})
			publish.Finish()
			time.Sleep(20 * time.Millisecond)
			process := ledger.StartSpan("payments process", opentracing.FollowsFrom(publish.Context()), ext.SpanKindConsumer, opentracing.Tags{
				"messaging.system": "rabbitmq", "messaging.operation": "process",
				"messaging.destination.name": "payments", "messaging.message.id": id,
			})
			process.Finish()
		}
		closePayments()
		closeLedger()

		flows := waitForFlows(t, client, ep.api, url.Values{"name": {"payments payments"}}, 3, ackedHops(1))
		for name, hops := range flows {
			require.Len(t, hops, 1, name)
			h := hops[0]
			assert.Equal(t, "payments", h.Producer, name)
			assert.Equal(t, "ledger", h.Consumer, name)
			assert.Equal(t, "acked", h.Outcome, name)
			assert.GreaterOrEqual(t, h.QueueWaitMS, 20.0, name)
		}
	})
}

// TestZipkinClient: the same shape through zipkin-go to the Zipkin receiver,
// as Istio and Envoy meshes send spans: the consumer span is a child of the
// producer span, in one trace.
func TestZipkinClient(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	runFlowtrace(t, t.TempDir(), func(ep endpoints, client *http.Client) {
		reporter := zipkinhttp.NewReporter("http://"+ep.zipkin+"/api/v2/spans", zipkinhttp.BatchInterval(50*time.Millisecond))
		newTracer := func(service string) *zipkin.Tracer {
			endpoint, err := zipkin.NewEndpoint(service, "127.0.0.1:0")
			require.NoError(t, err)
			tracer, err := zipkin.NewTracer(reporter, zipkin.WithLocalEndpoint(endpoint))
			require.NoError(t, err)
			return tracer
		}
		shop, warehouse := newTracer("shop"), newTracer("warehouse")
		for i := range 3 {
			id := fmt.Sprint("pick-", i)
			tags := map[string]string{
				"messaging.system": "nats", "messaging.destination.name": "picking", "messaging.message.id": id,
			}
			publish := shop.StartSpan("picking send", zipkin.Kind(zipkinmodel.Producer), zipkin.Tags(tags))
			publish.Finish()
			time.Sleep(20 * time.Millisecond)
			process := warehouse.StartSpan("picking process", zipkin.Kind(zipkinmodel.Consumer), zipkin.Parent(publish.Context()), zipkin.Tags(tags))
			process.Finish()
		}
		require.NoError(t, reporter.Close())

		flows := waitForFlows(t, client, ep.api, url.Values{"name": {"shop picking"}}, 3, ackedHops(1))
		for name, hops := range flows {
			require.Len(t, hops, 1, name)
			assert.Equal(t, "warehouse", hops[0].Consumer, name)
			assert.Equal(t, "nats", hops[0].System, name)
			assert.GreaterOrEqual(t, hops[0].QueueWaitMS, 20.0, name)
		}
	})
}

// TestAsyncHTTPCallback: a jobs API answers 202 with a job id and, when the
// job is done, a worker calls the client's webhook with that id. Both are
// real HTTP servers, traced with the OpenTelemetry SDK; the request and its
// callback make one hop of system http.
func TestAsyncHTTPCallback(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	runFlowtrace(t, t.TempDir(), func(ep endpoints, client *http.Client) {
		ctx := context.Background()
		apiTP, clientTP := tracerProvider(t, ep.otlpHTTP, "jobs-api"), tracerProvider(t, ep.otlpHTTP, "shop")
		serverSpan := func(tp *sdktrace.TracerProvider, next http.HandlerFunc) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				ctx, span := tp.Tracer("http").Start(r.Context(), r.Method+" "+r.URL.Path, trace.WithSpanKind(trace.SpanKindServer))
				rec := &statusRecorder{ResponseWriter: w, status: 200}
				next(rec, r.WithContext(ctx))
				span.SetAttributes(attribute.Int("http.response.status_code", rec.status), attribute.String("http.route", r.URL.Path))
				span.End()
			}
		}
		called := make(chan struct{})
		handleCallback := serverSpan(clientTP, func(w http.ResponseWriter, r *http.Request) {
			trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("flowtrace.callback.id", r.URL.Query().Get("job")))
			time.Sleep(3 * time.Millisecond)
		})
		webhook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handleCallback(w, r)
			close(called) // its span has ended
		}))
		defer webhook.Close()
		jobs := httptest.NewServer(serverSpan(apiTP, func(w http.ResponseWriter, r *http.Request) {
			job := r.URL.Query().Get("job")
			trace.SpanFromContext(r.Context()).SetAttributes(attribute.String("flowtrace.callback.id", job))
			w.WriteHeader(http.StatusAccepted)
			go func() {
				time.Sleep(30 * time.Millisecond)
				resp, err := http.Post(webhook.URL+"/hooks/job-done?job="+job, "text/plain", nil)
				if err == nil {
					resp.Body.Close()
				}
			}()
		}))
		defer jobs.Close()

		resp, err := http.Post(jobs.URL+"/jobs?job=job-42", "text/plain", nil)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		select {
		case <-called:
		case <-time.After(10 * time.Second):
			t.Fatal("the worker never called the webhook")
		}
		require.NoError(t, apiTP.Shutdown(ctx))
		require.NoError(t, clientTP.Shutdown(ctx))
		http.DefaultClient.CloseIdleConnections()

		flows := waitForFlows(t, client, ep.api, url.Values{"key": {"job-42"}}, 1, ackedHops(1))
		for name, hops := range flows {
			require.Len(t, hops, 1, name)
			h := hops[0]
			assert.Equal(t, "http", h.System)
			assert.Equal(t, "jobs-api", h.Producer)
			assert.Equal(t, "shop", h.Consumer)
			assert.Equal(t, "acked", h.Outcome)
			assert.GreaterOrEqual(t, h.QueueWaitMS, 30.0, "the callback came about 30 ms after the request")
		}
	})
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(status int) {
	r.status = status
	r.ResponseWriter.WriteHeader(status)
}
