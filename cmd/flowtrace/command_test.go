package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/chdb"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

func TestResolveDataDir(t *testing.T) {
	tests := []struct {
		name      string
		flagValue string
		flagGiven bool
		envValue  string
		want      string
		wantErr   string
	}{
		{name: "default", flagValue: defaultDataDir, want: defaultDataDir},
		{name: "env over default", flagValue: defaultDataDir, envValue: "/var/lib/flowtrace", want: "/var/lib/flowtrace"},
		{name: "flag over env", flagValue: "/srv/flowtrace", flagGiven: true, envValue: "/var/lib/flowtrace", want: "/srv/flowtrace"},
		{name: "flag over default", flagValue: "data", flagGiven: true, want: "data"},
		{name: "flag equal to default still wins over env", flagValue: defaultDataDir, flagGiven: true, envValue: "/var/lib/flowtrace", want: defaultDataDir},
		{name: "empty flag", flagValue: "", flagGiven: true, envValue: "/var/lib/flowtrace", wantErr: "--data-dir must not be empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveDataDir(tt.flagValue, tt.flagGiven, tt.envValue)
			if tt.wantErr != "" {
				require.EqualError(t, err, tt.wantErr)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestDataDirExported(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
		want string
	}{
		{name: "default", want: defaultDataDir},
		{name: "env", env: "/from/env", want: "/from/env"},
		{name: "flag", env: "/from/env", args: []string{"--data-dir=/from/flag"}, want: "/from/flag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(dataDirEnv, tt.env)
			_, err := execute(t, append([]string{"validate"}, tt.args...)...)
			require.NoError(t, err)
			require.Equal(t, tt.want, os.Getenv(dataDirEnv))
		})
	}
}

func TestValidateDefaultConfig(t *testing.T) {
	t.Setenv(dataDirEnv, t.TempDir())
	_, err := execute(t, "validate")
	require.NoError(t, err)
}

// TestValidateChecksConfig guards the test above: validate must reject a
// broken config rather than succeed on anything.
func TestValidateChecksConfig(t *testing.T) {
	t.Setenv(dataDirEnv, t.TempDir())
	_, err := execute(t, "validate", "--set=service.pipelines.traces.exporters=[missing]")
	require.ErrorContains(t, err, `references exporter "missing" which is not configured`)
}

func TestPrintDefaultConfig(t *testing.T) {
	t.Setenv(dataDirEnv, t.TempDir())
	out, err := execute(t, "print-config")
	require.NoError(t, err)
	require.Contains(t, out, "endpoint: 127.0.0.1:4318")
}

func TestComponentsCommand(t *testing.T) {
	out, err := execute(t, "components")
	require.NoError(t, err)
	for _, name := range []string{"otlp", "jaeger", "zipkin", "batch", "memory_limiter", "debug", "health_check", "flowstorage", "correlator", "clickhouse", "file_storage", "segment_storage", "prometheus", "flowtrace_web", "nop"} {
		require.Contains(t, out, "name: "+name)
	}
}

func TestVersion(t *testing.T) {
	out, err := execute(t, "--version")
	require.NoError(t, err)
	require.Equal(t, versionText(), out)
	require.True(t, strings.HasPrefix(out, "flowtrace "+version+"\n"), out)
	require.Regexp(t, `embedded ClickHouse \d+\.\d+\.\d+\S* \(chDB 26\.5\.3, /\S+/libchdb\.so\)`, out)
}

// TestDefaultConfigBindsLoopbackOnly keeps the promise that a bare flowtrace
// is not reachable from the network.
func TestDefaultConfigBindsLoopbackOnly(t *testing.T) {
	for line := range strings.Lines(defaultConfig) {
		key, value, found := strings.Cut(strings.TrimSpace(line), ":")
		if !found || (key != "endpoint" && key != "host") {
			continue
		}
		require.True(t, strings.HasPrefix(strings.TrimSpace(value), "127.0.0.1"), "%s binds beyond loopback", strings.TrimSpace(line))
	}
}

// TestRunDefaultConfig runs flowtrace in-process on the embedded default,
// moved to free ports, and sends it a span the way an application would.
func TestRunDefaultConfig(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	dataDir := t.TempDir()
	stderr := runFlowtrace(t, dataDir, func(endpoints endpoints, client *http.Client) {
		const span = `{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
		"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
		"name":"orders publish","kind":4,"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001000000"}]}]}]}`
		resp, err := client.Post("http://"+endpoints.otlpHTTP+"/v1/traces", "application/json", strings.NewReader(span))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)

		resp, err = client.Get("http://" + endpoints.metrics + "/metrics")
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
	})
	require.Contains(t, stderr, "running the embedded all-in-one default")
	// The storage extension created the schema in the data directory.
	withStore(t, dataDir, func(st storage.Store) {
		_, err := st.FindFlows(t.Context(), storage.FlowQuery{})
		require.NoError(t, err)
	})
}

// TestSpansBecomeStoredFlows: a messaging span sent to the default pipeline
// ends up, through the correlator and the ClickHouse exporter, as a flow in
// storage, with the span's event.
func TestSpansBecomeStoredFlows(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	dataDir := t.TempDir()
	start := time.Now().UnixNano()
	span := fmt.Sprintf(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
		"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
		"name":"orders publish","kind":4,"startTimeUnixNano":"%d","endTimeUnixNano":"%d",
		"attributes":[{"key":"messaging.system","value":{"stringValue":"rabbitmq"}},
		{"key":"messaging.operation.type","value":{"stringValue":"send"}},
		{"key":"messaging.destination.name","value":{"stringValue":"orders"}},
		{"key":"messaging.message.id","value":{"stringValue":"m-1"}}]}]}]}]}`, start, start+1_000_000)
	runFlowtrace(t, dataDir, func(endpoints endpoints, client *http.Client) {
		resp, err := client.Post("http://"+endpoints.otlpHTTP+"/v1/traces", "application/json", strings.NewReader(span))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		get := func(url string) string {
			resp, err := client.Get(url)
			if err != nil {
				return err.Error()
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			return string(body)
		}
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			body := get("http://" + endpoints.flowMetrics + "/metrics")
			assert.Contains(c, body, `flowtrace_flows_in_flight{job="flowtrace"} 1`)
			assert.Contains(c, body, `flowtrace_correlator_events_total{job="flowtrace",result="added"} 1`)
		}, 20*time.Second, 100*time.Millisecond)

		// The API finds the flow by its message id while flowtrace runs.
		var page struct {
			Flows []struct {
				Name string `json:"name"`
			} `json:"flows"`
		}
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			page.Flows = nil
			assert.NoError(c, json.Unmarshal([]byte(get("http://"+endpoints.api+"/api/flows?key=m-1")), &page))
			assert.Len(c, page.Flows, 1)
		}, 20*time.Second, 100*time.Millisecond)
		assert.Equal(t, "checkout orders", page.Flows[0].Name)
	})
	withStore(t, dataDir, func(st storage.Store) {
		page, err := st.FindFlows(t.Context(), storage.FlowQuery{Key: "m-1"})
		require.NoError(t, err)
		require.Len(t, page.Flows, 1)
		assert.Equal(t, "checkout orders", page.Flows[0].Name)
		detail, err := st.GetFlow(t.Context(), page.Flows[0].ID)
		require.NoError(t, err)
		require.Len(t, detail.Hops, 1)
		assert.Equal(t, "m-1", detail.Hops[0].MessageID)
		require.Len(t, detail.Events, 1)
		assert.Equal(t, model.EventPublish, detail.Events[0].Kind)
	})
}

// TestDataDirSurvivesRestart stops flowtrace, writes into its data directory,
// and starts it again on the same directory: the data is still there and the
// schema is not applied twice.
func TestDataDirSurvivesRestart(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	dataDir := t.TempDir()
	noop := func(endpoints, *http.Client) {}
	runFlowtrace(t, dataDir, noop)

	flow := model.Flow{ID: "kept", Version: 1, FirstSeen: time.Now(), Name: "checkout", Status: model.FlowCompleted}
	withStore(t, dataDir, func(st storage.Store) {
		require.NoError(t, st.WriteFlows(t.Context(), []model.Flow{flow}))
	})

	runFlowtrace(t, dataDir, noop)

	withStore(t, dataDir, func(st storage.Store) {
		got, err := st.GetFlow(t.Context(), "kept")
		require.NoError(t, err)
		require.Equal(t, "checkout", got.Flow.Name)
	})
}

// withStore opens the default config's storage on dataDir while flowtrace is
// not running (the embedded engine allows one session per process).
func withStore(t *testing.T, dataDir string, fn func(storage.Store)) {
	t.Helper()
	conn, err := chdb.Open(dataDir)
	require.NoError(t, err)
	st, err := chstore.New(conn, chstore.Schema{Database: "flowtrace"})
	require.NoError(t, err)
	defer st.Close()
	fn(st)
}

type endpoints struct {
	otlpHTTP, healthCheck, metrics, flowMetrics, api string
	jaegerThrift, zipkin                             string
	otlpGRPCPort                                     int
}

// runFlowtrace runs flowtrace on the embedded default with every port moved
// to a free one, calls fn once it is healthy, stops it and returns its stderr.
func runFlowtrace(t *testing.T, dataDir string, fn func(endpoints, *http.Client)) string {
	t.Helper()
	return runFlowtraceWith(t, dataDir, nil, fn)
}

// runFlowtraceWith is runFlowtrace with more flags, e.g. --set of more keys.
func runFlowtraceWith(t *testing.T, dataDir string, extra []string, fn func(endpoints, *http.Client)) string {
	t.Helper()
	ports := freePorts(t, 9)
	ep := endpoints{
		otlpHTTP:     fmt.Sprintf("127.0.0.1:%d", ports[1]),
		healthCheck:  fmt.Sprintf("127.0.0.1:%d", ports[5]),
		metrics:      fmt.Sprintf("127.0.0.1:%d", ports[6]),
		flowMetrics:  fmt.Sprintf("127.0.0.1:%d", ports[7]),
		api:          fmt.Sprintf("127.0.0.1:%d", ports[8]),
		jaegerThrift: fmt.Sprintf("127.0.0.1:%d", ports[3]),
		zipkin:       fmt.Sprintf("127.0.0.1:%d", ports[4]),
		otlpGRPCPort: ports[0],
	}
	cmd := newCommand()
	stderr := new(syncBuffer)
	cmd.SetErr(stderr)
	cmd.SetArgs(append([]string{
		"--data-dir=" + dataDir,
		fmt.Sprintf("--set=receivers.otlp.protocols.grpc.endpoint=127.0.0.1:%d", ports[0]),
		"--set=receivers.otlp.protocols.http.endpoint=" + ep.otlpHTTP,
		fmt.Sprintf("--set=receivers.jaeger.protocols.grpc.endpoint=127.0.0.1:%d", ports[2]),
		"--set=receivers.jaeger.protocols.thrift_http.endpoint=" + ep.jaegerThrift,
		"--set=receivers.zipkin.endpoint=" + ep.zipkin,
		"--set=extensions.health_check.endpoint=" + ep.healthCheck,
		fmt.Sprintf("--set=service.telemetry.metrics.readers=[{pull: {exporter: {prometheus: {host: 127.0.0.1, port: %d}}}}]", ports[6]),
		"--set=exporters.prometheus.endpoint=" + ep.flowMetrics,
		"--set=extensions.flowtrace_web.endpoint=" + ep.api,
		"--set=connectors.correlator.metrics_flush_interval=200ms",
	}, extra...))

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	stopped := false
	stop := func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("flowtrace did not stop after its context was cancelled")
		}
	}
	// When fn fails, flowtrace still stops before the next test starts.
	t.Cleanup(func() { _ = stop() })

	client := &http.Client{Timeout: 5 * time.Second}
	defer client.CloseIdleConnections()
	waitHealthy(t, client, "http://"+ep.healthCheck+"/", done, stderr)
	fn(ep, client)

	require.NoError(t, stop(), stderr.String())
	return stderr.String()
}

// syncBuffer is a bytes.Buffer that flowtrace may write to from its own
// goroutines while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitHealthy polls the health check until it answers 200, failing fast when
// the command exits first.
func waitHealthy(t *testing.T, client *http.Client, url string, done <-chan error, stderr *syncBuffer) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			t.Fatalf("flowtrace exited before it became healthy: %v\nstderr:\n%s", err, stderr)
		case <-deadline:
			t.Fatal("flowtrace did not become healthy within 20s")
		case <-tick.C:
			resp, err := client.Get(url)
			if err != nil {
				continue
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
}

// execute runs the flowtrace command with args and returns what it printed.
func execute(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

// freePorts returns n distinct loopback ports that were free a moment ago.
// All n listeners are held until the end so that the kernel hands out
// distinct ports.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, 0, n)
	for range n {
		listener, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		defer listener.Close()
		ports = append(ports, listener.Addr().(*net.TCPAddr).Port)
	}
	return ports
}
