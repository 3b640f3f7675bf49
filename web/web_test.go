package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/extension/extensiontest"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/internal/configtest"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/flowstorage"
	"github.com/flowtrace/flowtrace/web/internal/metadata"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConfig(t *testing.T) {
	load := func(name string) *Config { return configtest.Load(t, metadata.Type, name, createDefaultConfig) }
	def := load("")
	require.NoError(t, confmap.Validate(def))
	assert.Equal(t, "127.0.0.1:8686", def.NetAddr.Endpoint)
	custom := load("custom")
	require.NoError(t, confmap.Validate(custom))
	assert.Equal(t, "0.0.0.0:9999", custom.NetAddr.Endpoint)
	assert.Equal(t, "central", custom.Backend)
	assert.Equal(t, []string{"flowtrace.internal"}, custom.AllowedHosts)
	assert.True(t, custom.TLS.HasValue())
	err := confmap.Validate(load("bad"))
	assert.ErrorContains(t, err, "endpoint: must not be empty")
	assert.ErrorContains(t, err, "backend: must not be empty")
}

type host struct {
	component.Host
	extensions map[component.ID]component.Component
}

func (h host) GetExtensions() map[component.ID]component.Component { return h.extensions }

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

// serve starts storage and the web extension on a free port, with data.
func serve(t *testing.T) string {
	t.Helper()
	sf := flowstorage.NewFactory()
	scfg := sf.CreateDefaultConfig().(*flowstorage.Config)
	ttl := time.Duration(0)
	scfg.Backends = map[string]flowstorage.BackendConfig{"default": {Chdb: &flowstorage.ChdbConfig{Path: t.TempDir()}, TTL: &ttl}}
	storageExt, err := sf.Create(context.Background(), extensiontest.NewNopSettings(sf.Type()), scfg)
	require.NoError(t, err)
	h := host{Host: componenttest.NewNopHost(), extensions: map[component.ID]component.Component{component.NewID(sf.Type()): storageExt}}
	require.NoError(t, storageExt.Start(context.Background(), h))
	t.Cleanup(func() { require.NoError(t, storageExt.Shutdown(context.Background())) })

	st, err := flowstorage.GetStore(h, "")
	require.NoError(t, err)
	writeSample(t, st)

	listener, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := listener.Addr().String()
	require.NoError(t, listener.Close())
	cfg := createDefaultConfig()
	cfg.NetAddr.Endpoint = addr
	ext, err := NewFactory().Create(context.Background(), extensiontest.NewNopSettings(metadata.Type), cfg)
	require.NoError(t, err)
	require.NoError(t, ext.Start(context.Background(), h))
	t.Cleanup(func() {
		require.NoError(t, ext.Shutdown(context.Background()))
		require.NoError(t, ext.Shutdown(context.Background()), "shutdown twice")
	})
	return "http://" + addr
}

func writeSample(t *testing.T, st storage.Store) {
	t.Helper()
	ctx := context.Background()
	var flows []model.Flow
	for i := range 5 {
		start := t0.Add(time.Duration(i) * time.Minute)
		flows = append(flows, model.Flow{
			ID: fmt.Sprint("f", i), Version: 1, FirstSeen: start, Name: []string{"checkout", "refund"}[i%2],
			Status: []model.FlowStatus{model.FlowCompleted, model.FlowDeadLettered}[i%2], Start: start,
			End: start.Add(time.Duration(i+1) * time.Second), HopCount: 1,
			Keys: []model.Key{{Kind: "order_id", Value: fmt.Sprint("o-", i)}},
		})
	}
	require.NoError(t, st.WriteFlows(ctx, flows))
	require.NoError(t, st.WriteHops(ctx, []model.Hop{
		{FlowID: "f0", HopID: "h0", Version: 1, FirstSeen: t0, System: "kafka", Producer: "api", Destination: "orders",
			Consumer: "billing", ConsumerGroup: "billing", MessageID: "orders/0/1", PublishTime: t0,
			DeliverTime: t0.Add(250 * time.Millisecond), SettleTime: t0.Add(time.Second), QueueWait: 250 * time.Millisecond,
			Processing: 750 * time.Millisecond, Attempts: 2, Outcome: model.HopAcked, Counted: true},
	}))
	require.NoError(t, st.WriteEvents(ctx, []model.Event{
		{Time: t0, Kind: model.EventPublish, System: "kafka", Destination: "orders", MessageID: "orders/0/1", Service: "api",
			Links: []model.SpanRef{{TraceID: "t", SpanID: "s"}}},
	}))
}

func get(t *testing.T, base, path string, query url.Values, into any) int {
	t.Helper()
	u := base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	resp, err := http.Get(u)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if into != nil {
		require.NoError(t, json.Unmarshal(body, into), string(body))
	}
	return resp.StatusCode
}

func TestAPI(t *testing.T) {
	base := serve(t)
	defer http.DefaultClient.CloseIdleConnections()

	t.Run("flows by key", func(t *testing.T) {
		var page flowsResponse
		require.Equal(t, 200, get(t, base, "/api/flows", url.Values{"key": {"o-3"}}, &page))
		require.Len(t, page.Flows, 1)
		f := page.Flows[0]
		assert.Equal(t, "f3", f.ID)
		assert.Equal(t, "refund", f.Name)
		assert.Equal(t, "dead_lettered", f.Status)
		assert.Equal(t, 4000.0, f.DurationMS)
		assert.Equal(t, []keyJSON{{Kind: "order_id", Value: "o-3"}}, f.Keys)
	})
	t.Run("filters and pages", func(t *testing.T) {
		var page flowsResponse
		q := url.Values{"name": {"checkout"}, "status": {"completed,failed"}, "from": {t0.Format(time.RFC3339)},
			"to": {fmt.Sprint(t0.Add(time.Hour).UnixMilli())}, "min_duration_ms": {"2000"}, "limit": {"1"}}
		require.Equal(t, 200, get(t, base, "/api/flows", q, &page))
		require.Len(t, page.Flows, 1)
		assert.Equal(t, "f4", page.Flows[0].ID)
		require.NotEmpty(t, page.NextCursor)
		q.Set("cursor", page.NextCursor)
		require.Equal(t, 200, get(t, base, "/api/flows", q, &page))
		require.Len(t, page.Flows, 1)
		assert.Equal(t, "f2", page.Flows[0].ID)
		assert.Empty(t, page.NextCursor)
	})
	t.Run("a bad parameter is a 400 naming it", func(t *testing.T) {
		for name, q := range map[string]url.Values{
			"from":            {"from": {"yesterday"}},
			"to":              {"from": {"2026-11-20T10:00:00Z"}, "to": {"2026-11-20T09:00:00Z"}},
			"status":          {"status": {"completed,lost"}},
			"limit":           {"limit": {"0"}},
			"min_duration_ms": {"min_duration_ms": {"-1"}},
			"cursor":          {"cursor": {"nonsense"}},
			"key":             {"key": {string(make([]byte, 2000))}},
		} {
			var e errorJSON
			require.Equal(t, 400, get(t, base, "/api/flows", q, &e), name)
			assert.Equal(t, name, e.Parameter)
		}
		for _, from := range []string{"1969-12-31T23:59:59Z", "2300-01-01T00:00:00Z", "-1", "9223372036854775807"} {
			var e errorJSON
			require.Equal(t, 400, get(t, base, "/api/flows", url.Values{"from": {from}}, &e), from)
			assert.Equal(t, "from", e.Parameter)
			assert.Contains(t, e.Error, "want a time from 1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z")
		}
	})
	t.Run("a query string that does not read cleanly is a 400, not a dropped filter", func(t *testing.T) {
		for raw, name := range map[string]string{
			"key=100%off":                    "key",    // a bad escape
			"key=o-3;x":                      "key",    // a raw semicolon
			"status=completed&status=failed": "status", // given twice
			"stauts=running":                 "stauts", // not a parameter of this endpoint
		} {
			var e errorJSON
			require.Equal(t, 400, get(t, base, "/api/flows?"+raw, nil, &e), raw)
			assert.Equal(t, name, e.Parameter, raw)
		}
		var e errorJSON
		require.Equal(t, 400, get(t, base, "/api/topology?from=x&key=o-3", nil, &e))
		assert.Equal(t, "key", e.Parameter, "the flows' filters are not the topology's")
	})
	t.Run("a time offset's + may come unencoded", func(t *testing.T) {
		var page flowsResponse
		require.Equal(t, 200, get(t, base, "/api/flows?key=o-3&from="+t0.Add(-time.Hour).In(time.FixedZone("", 2*3600)).Format(time.RFC3339), nil, &page))
		require.Len(t, page.Flows, 1)
	})
	t.Run("names other than the server's are refused on loopback", func(t *testing.T) {
		port := strings.TrimPrefix(base, "http://127.0.0.1:")
		for host, want := range map[string]int{
			"127.0.0.1:" + port: 200, "localhost:" + port: 200, "LOCALHOST": 200, "ui.localhost:" + port: 200,
			"[::1]:" + port: 200, "attacker.example:" + port: 403, "127.0.0.1.attacker.example": 403,
		} {
			req, err := http.NewRequest(http.MethodGet, base+"/api/flows?key=o-3", nil)
			require.NoError(t, err)
			req.Host = host
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, want, resp.StatusCode, "Host %q: %s", host, body)
		}
	})
	t.Run("flow detail", func(t *testing.T) {
		var d flowDetailResponse
		require.Equal(t, 200, get(t, base, "/api/flows/f0", nil, &d))
		assert.Equal(t, "f0", d.Flow.ID)
		require.Len(t, d.Hops, 1)
		h := d.Hops[0]
		assert.Equal(t, "api", h.Producer)
		assert.Equal(t, "orders", h.Destination)
		assert.Equal(t, "billing", h.Consumer)
		assert.Equal(t, "kafka", h.System)
		assert.Equal(t, 250.0, h.QueueWaitMS)
		assert.Equal(t, 750.0, h.ProcessingMS)
		assert.Equal(t, uint16(2), h.Attempts)
		assert.Equal(t, "acked", h.Outcome)
		require.NotNil(t, h.PublishTime)
		assert.Equal(t, t0, *h.PublishTime)
		require.Len(t, d.Events, 1)
		assert.Equal(t, []spanRefJSON{{TraceID: "t", SpanID: "s"}}, d.Events[0].Links)

		var e errorJSON
		require.Equal(t, 404, get(t, base, "/api/flows/nope", nil, &e))
		assert.Contains(t, e.Error, "no flow")
	})
	t.Run("topology", func(t *testing.T) {
		var topo topologyResponse
		q := url.Values{"from": {t0.Add(-time.Hour).Format(time.RFC3339)}, "to": {t0.Add(time.Hour).Format(time.RFC3339)}}
		require.Equal(t, 200, get(t, base, "/api/topology", q, &topo))
		assert.ElementsMatch(t, []nodeJSON{
			{ID: "service:api", Kind: "service", Name: "api"},
			{ID: "queue:kafka/orders", Kind: "queue", Name: "orders", System: "kafka"},
			{ID: "service:billing", Kind: "service", Name: "billing"},
		}, topo.Nodes)
		require.Len(t, topo.Edges, 2)
		in, out := topo.Edges[0], topo.Edges[1]
		assert.Equal(t, edgeJSON{Source: "service:api", Target: "queue:kafka/orders", Count: 1}, in)
		assert.Equal(t, "queue:kafka/orders", out.Source)
		assert.Equal(t, "service:billing", out.Target)
		assert.Equal(t, uint64(1), out.Count)
		assert.Equal(t, uint64(1), out.Retries)
		assert.InDelta(t, 250.0, out.QueueWaitP95MS, 1)

		var e errorJSON
		require.Equal(t, 400, get(t, base, "/api/topology", url.Values{"from": {"x"}}, &e))
		assert.Equal(t, "from", e.Parameter)
	})
	t.Run("placeholder UI", func(t *testing.T) {
		resp, err := http.Get(base + "/")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, 200, resp.StatusCode)
	})
}

func TestStartFailsWithoutStorage(t *testing.T) {
	ext, err := NewFactory().Create(context.Background(), extensiontest.NewNopSettings(metadata.Type), createDefaultConfig())
	require.NoError(t, err)
	require.ErrorIs(t, ext.Start(context.Background(), componenttest.NewNopHost()), flowstorage.ErrNoExtension)
	require.NoError(t, ext.Shutdown(context.Background()))
}

func TestHostGuard(t *testing.T) {
	ok := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	status := func(h http.Handler, host string) int {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodGet, "/api/flows", nil)
		req.Host = host
		h.ServeHTTP(rec, req)
		return rec.Code
	}
	anyAddr := &net.TCPAddr{IP: net.IPv4zero, Port: 8686}
	open := newHostGuard(anyAddr, nil, ok)
	assert.Equal(t, 200, status(open, "flowtrace.example:8686"), "off loopback, any name by default")

	named := newHostGuard(anyAddr, []string{"Flowtrace.Internal"}, ok)
	assert.Equal(t, 200, status(named, "flowtrace.internal:8686"))
	assert.Equal(t, 403, status(named, "127.0.0.1:8686"), "only the listed names")

	local := newHostGuard(&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8686}, []string{"flowtrace.internal"}, ok)
	assert.Equal(t, 200, status(local, "flowtrace.internal"))
	assert.Equal(t, 200, status(local, "127.0.0.2:8686"))
	assert.Equal(t, 403, status(local, "other.internal"))
}
