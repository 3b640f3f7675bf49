package natstapreceiver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// natsServerBin is the server binary the restart test runs privately
// (NATS_SERVER_BIN).
func natsServerBin(t *testing.T) string {
	bin := os.Getenv("NATS_SERVER_BIN")
	if bin == "" {
		bin = "/usr/sbin/nats-server"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no nats-server at %s (NATS_SERVER_BIN): %v", bin, err)
		}
		t.Skipf("no nats-server at %s (set NATS_SERVER_BIN): %v", bin, err)
	}
	return bin
}

// privateServer is a nats-server of the test's own, with JetStream
// storage that survives its restarts.
type privateServer struct {
	t    *testing.T
	bin  string
	port int
	dir  string
	cmd  *exec.Cmd
}

func startPrivateServer(t *testing.T) *privateServer {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := l.Addr().(*net.TCPAddr).Port
	require.NoError(t, l.Close())
	s := &privateServer{t: t, bin: natsServerBin(t), port: port, dir: t.TempDir()}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *privateServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

func (s *privateServer) start() {
	s.cmd = exec.Command(s.bin, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port), "-js", "-sd", s.dir)
	require.NoError(s.t, s.cmd.Start())
	eventually(s.t, "the private server to listen", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.port), time.Second)
		if err != nil {
			return false
		}
		_ = c.Close()
		return true
	})
}

// stop kills the server at once, as a crash would.
func (s *privateServer) stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// TestBrokerRestart kills the tap's server mid-stream and starts it again:
// the tap reconnects, counts one gap, and reads every stored message once —
// those stored before the crash and those stored before it was back.
func TestBrokerRestart(t *testing.T) {
	srv := startPrivateServer(t)
	name := uniqueName("FTRESTART")
	nc, err := nats.Connect(srv.url(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	createStream(t, js, name)

	cfg := streamConfig(srv.url(), name)
	cfg.DeliverPolicy = DeliverAll
	cfg.PollInterval = 100 * time.Millisecond
	// The tap comes back well after the workload client, so messages are
	// stored while it is away.
	cfg.Reconnect = tap.Backoff{Initial: time.Second, Max: time.Second}
	r := startTap(t, cfg)

	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			eventually(t, "a publish to be stored", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				defer cancel()
				_, err := js.Publish(ctx, fmt.Sprintf("%s.jobs.%d", name, i), []byte("synthetic job"))
				return err == nil
			})
		}
	}
	sends := func() int { return r.count(map[string]any{tap.AttrOperationType: "send"}) }
	publish(1, 5)
	eventually(t, "the first five publishes", func() bool { return sends() == 5 })

	srv.stop()
	srv.start()
	publish(6, 10)
	r.waitConnected(t)
	eventually(t, "all ten publishes", func() bool { return sends() >= 10 })
	r.flush(t)

	for seq := 1; seq <= 10; seq++ {
		assert.Equal(t, 1, r.count(map[string]any{tap.AttrMessageID: messageID(name, uint64(seq))}), "stream message %d seen once", seq)
	}
	assert.Equal(t, 10, sends(), "nothing read twice")

	gaps, err := r.tel.GetMetric("flowtrace.tap.gaps")
	require.NoError(t, err)
	sum, ok := gaps.Data.(metricdata.Sum[int64])
	require.True(t, ok, "gaps is a counter")
	var total int64
	for _, dp := range sum.DataPoints {
		total += dp.Value
	}
	assert.Equal(t, int64(1), total, "one gap")
	gapSeconds, err := r.tel.GetMetric("flowtrace.tap.gap_seconds")
	require.NoError(t, err)
	assert.Greater(t, gapSeconds.Data.(metricdata.Sum[float64]).DataPoints[0].Value, 0.0)
}
