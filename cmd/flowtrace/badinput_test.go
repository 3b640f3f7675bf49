package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
)

// rawCodec sends bytes as they are, to put garbage on the gRPC wire.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return v.([]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "proto" }

var _ encoding.Codec = rawCodec{}

// gzipBomb compresses n zero bytes: a small body that inflates enormously.
func gzipBomb(t *testing.T, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zeros := make([]byte, 1<<20)
	for written := 0; written < n; written += len(zeros) {
		_, err := zw.Write(zeros)
		require.NoError(t, err)
	}
	require.NoError(t, zw.Close())
	return buf.Bytes()
}

// TestBadInputAtEveryReceiver: malformed, oversized and compression-bomb
// bodies at each receiver get an error response and are counted, and
// flowtrace keeps serving.
func TestBadInputAtEveryReceiver(t *testing.T) {
	t.Setenv(dataDirEnv, "")
	bomb := gzipBomb(t, 200<<20)
	oversized := bytes.Repeat([]byte{0x0a}, 25<<20)
	runFlowtrace(t, t.TempDir(), func(ep endpoints, client *http.Client) {
		post := func(url, contentType string, body []byte, gzipped bool) int {
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", contentType)
			if gzipped {
				req.Header.Set("Content-Encoding", "gzip")
			}
			resp, err := client.Do(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp.StatusCode
		}
		otlp := "http://" + ep.otlpHTTP + "/v1/traces"
		jaegerURL := "http://" + ep.jaegerThrift + "/api/traces"
		zipkinURL := "http://" + ep.zipkin + "/api/v2/spans"
		for name, tc := range map[string]struct {
			url, contentType string
			body             []byte
			gzipped          bool
		}{
			"otlp json":        {otlp, "application/json", []byte(`{"resourceSpans": [{"scopeSpans": "nope"`), false},
			"otlp protobuf":    {otlp, "application/x-protobuf", []byte{0xff, 0xff, 0xff, 0x01, 0x02}, false},
			"otlp oversized":   {otlp, "application/x-protobuf", oversized, false},
			"otlp gzip bomb":   {otlp, "application/json", bomb, true},
			"jaeger thrift":    {jaegerURL, "application/x-thrift", []byte("not thrift at all"), false},
			"jaeger gzip bomb": {jaegerURL, "application/x-thrift", bomb, true},
			"zipkin json":      {zipkinURL, "application/json", []byte(`[{"traceId": 12`), false},
			"zipkin gzip bomb": {zipkinURL, "application/json", bomb, true},
		} {
			// An error status; the Jaeger receiver answers 500 to a body that
			// inflates past the limit, the others 4xx.
			assert.GreaterOrEqual(t, post(tc.url, tc.contentType, tc.body, tc.gzipped), 400, name)
		}

		// gRPC: garbage where an OTLP export request should be.
		conn, err := grpc.NewClient(fmt.Sprintf("127.0.0.1:%d", ep.otlpGRPCPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		var reply []byte
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = conn.Invoke(ctx, "/opentelemetry.proto.collector.trace.v1.TraceService/Export", []byte{0xff, 0xff, 0x01}, &reply, grpc.ForceCodec(rawCodec{}))
		cancel()
		require.Error(t, err)
		require.NoError(t, conn.Close())

		// Still serving.
		require.Equal(t, http.StatusOK, post(otlp, "application/json", []byte(`{"resourceSpans":[]}`), false))

		// Counted, per receiver port and status code.
		resp, err := client.Get("http://" + ep.metrics + "/metrics")
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		for _, hostport := range []string{ep.otlpHTTP, ep.jaegerThrift, ep.zipkin} {
			assert.Regexp(t, fmt.Sprintf(`http_server_request_duration_count\{[^}]*http_response_status_code="[45]\d\d"[^}]*server_port="%d"[^}]*\} [1-9]`, portOf(hostport)), string(body), hostport)
		}
	})
}

func portOf(hostport string) int {
	var port int
	_, _ = fmt.Sscanf(hostport[strings.LastIndex(hostport, ":")+1:], "%d", &port)
	return port
}
