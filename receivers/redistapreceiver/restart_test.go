package redistapreceiver

import (
	"context"
	"net"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// privateRedis is a redis-server of the test's own, on a free loopback
// port, persisting to an append-only file so it can be killed and started
// again with its streams.
type privateRedis struct {
	t    *testing.T
	bin  string
	addr string
	port string
	dir  string
	// persistent servers keep an append-only file, synced at every write.
	persistent bool
	cmd        *exec.Cmd
}

func startPrivateRedis(t *testing.T, persistent bool) *privateRedis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	require.NoError(t, l.Close())
	r := &privateRedis{t: t, bin: bin, addr: "127.0.0.1:" + port, port: port, dir: t.TempDir(), persistent: persistent}
	r.start()
	t.Cleanup(r.kill)
	return r
}

func (r *privateRedis) start() {
	r.t.Helper()
	args := []string{"--port", r.port, "--bind", "127.0.0.1", "--dir", r.dir, "--save", ""}
	if r.persistent {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	}
	r.cmd = exec.Command(r.bin, args...)
	require.NoError(r.t, r.cmd.Start())
	client := redis.NewClient(&redis.Options{Addr: r.addr, DisableIdentity: true, MaxRetries: -1})
	defer client.Close()
	require.Eventually(r.t, func() bool { return client.Ping(context.Background()).Err() == nil },
		30*time.Second, 10*time.Millisecond, "redis-server does not start")
}

// kill stops the server at once, as a crash would.
func (r *privateRedis) kill() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// The server is killed and started again mid-stream: the tap reconnects,
// counts one gap, and reports every entry the server holds, those added
// while it was away included.
func TestStreamsBrokerRestart(t *testing.T) {
	server := startPrivateRedis(t, true)
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: server.addr, DisableIdentity: true})
	t.Cleanup(func() { _ = client.Close() })
	stream := uniqueName("restart")
	require.NoError(t, client.XGroupCreateMkStream(ctx, stream, "g", "$").Err())

	// The tap reaches the server through a proxy that refuses it from the
	// crash until the test lets it in again, so the entries added after
	// the restart are added while it is away, however slow the machine.
	p := startProxy(t, server.addr)
	cfg := testConfig(p.addr)
	cfg.Streams.Names = []string{stream}
	rt := startTap(t, cfg)

	var ids []string
	add := func(n int) {
		for range n {
			id, err := client.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"body", "synthetic"}}).Result()
			require.NoError(t, err)
			ids = append(ids, id)
		}
	}
	add(5)
	waitForSpan(t, rt.traces, "the last entry before the restart", hasSpan("send", stream+"/"+ids[4]))

	p.down.Store(true)
	server.kill()
	require.Eventually(t, func() bool { return rt.connected() == 0 }, defaultWait, pollEvery, "the tap notices")
	server.start()
	add(5)
	p.down.Store(false)
	waitForSpan(t, rt.traces, "the last entry after the restart", hasSpan("send", stream+"/"+ids[9]))

	published := map[string]int{}
	for _, s := range spansOf(rt.traces) {
		if s.event == "send" {
			published[s.messageID]++
		}
	}
	for _, id := range ids {
		assert.Equal(t, 1, published[stream+"/"+id], "entry %s reported once", id)
	}
	assert.Len(t, published, len(ids))

	m, err := rt.tel.GetMetric("flowtrace.tap.gaps")
	require.NoError(t, err)
	gaps := m.Data.(metricdata.Sum[int64]).DataPoints
	require.Len(t, gaps, 1)
	assert.Equal(t, int64(1), gaps[0].Value)
	m, err = rt.tel.GetMetric("flowtrace.tap.gap_seconds")
	require.NoError(t, err)
	assert.Greater(t, m.Data.(metricdata.Sum[float64]).DataPoints[0].Value, 0.0)
}
