package natstapreceiver

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/receivers/natstapreceiver/internal/metadata"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat times.
const clockTicks = 100

// cpuSeconds reads the user and system CPU time of a process so far.
func cpuSeconds(t *testing.T, pid string) float64 {
	raw, err := os.ReadFile("/proc/" + pid + "/stat")
	require.NoError(t, err)
	// The command name, in parentheses, may hold spaces: fields count from
	// after it.
	fields := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, err := strconv.ParseFloat(fields[11], 64)
	require.NoError(t, err)
	stime, err := strconv.ParseFloat(fields[12], 64)
	require.NoError(t, err)
	return (utime + stime) / clockTicks
}

// TestTapCPU measures the tap's CPU and its cost on the broker at a fixed
// rate: a workload (publish, one durable consumer acking everything) runs
// on a private server for a while without the tap, then as long with it.
// The tap's CPU is this process's CPU with it minus without it; its cost on
// the broker is the server's likewise. It runs only with
// FLOWTRACE_TAP_CPU=1 (FLOWTRACE_TAP_RATE messages per second, default
// 10000; FLOWTRACE_TAP_SECONDS per phase, default 10).
func TestTapCPU(t *testing.T) {
	if os.Getenv("FLOWTRACE_TAP_CPU") == "" {
		t.Skip("set FLOWTRACE_TAP_CPU=1 to measure the tap's CPU")
	}
	rate := envInt("FLOWTRACE_TAP_RATE", 10000)
	seconds := envInt("FLOWTRACE_TAP_SECONDS", 10)
	srv := startPrivateServer(t)
	serverPID := strconv.Itoa(srv.cmd.Process.Pid)

	nc, err := nats.Connect(srv.url())
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	name := uniqueName("FTCPU")
	ctx := context.Background()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"},
		Storage: jetstream.MemoryStorage, MaxMsgs: 100000})
	require.NoError(t, err)
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy})
	require.NoError(t, err)
	var acked atomic.Int64
	cc, err := cons.Consume(func(m jetstream.Msg) {
		_ = m.Ack()
		acked.Add(1)
	})
	require.NoError(t, err)
	t.Cleanup(cc.Stop)

	body := []byte(`{"order":"synthetic","amount":42}`)
	phase := func(label string) (self, server float64, published int) {
		const tick = 10 * time.Millisecond
		perTick := rate / int(time.Second/tick)
		ticker := time.NewTicker(tick)
		defer ticker.Stop()
		selfStart, serverStart := cpuSeconds(t, strconv.Itoa(os.Getpid())), cpuSeconds(t, serverPID)
		end := time.Now().Add(time.Duration(seconds) * time.Second)
		for time.Now().Before(end) {
			<-ticker.C
			for i := 0; i < perTick; i++ {
				require.NoError(t, nc.Publish(name+".orders", body))
				published++
			}
		}
		require.NoError(t, nc.Flush())
		selfCPU, serverCPU := cpuSeconds(t, strconv.Itoa(os.Getpid()))-selfStart, cpuSeconds(t, serverPID)-serverStart
		t.Logf("%s: %d messages in %ds (%.0f/s), this process %.2f s CPU, nats-server %.2f s CPU",
			label, published, seconds, float64(published)/float64(seconds), selfCPU, serverCPU)
		return selfCPU, serverCPU, published
	}

	baseSelf, baseServer, _ := phase("without the tap")

	cfg := streamConfig(srv.url(), name)
	set := receivertest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = componenttest.NewNopTelemetrySettings()
	spans := new(countingTraces)
	f := NewFactory()
	tr, err := f.CreateTraces(ctx, set, cfg, spans)
	require.NoError(t, err)
	require.NoError(t, tr.Start(ctx, componenttest.NewNopHost()))
	t.Cleanup(func() { require.NoError(t, tr.Shutdown(context.Background())) })
	time.Sleep(time.Second)

	tapSelf, tapServer, published := phase("with the tap")
	perSecond := float64(published) / float64(seconds)
	scale := 10000 / perSecond
	t.Logf("spans emitted: %d", spans.spans.Load())
	t.Logf("tap CPU: %.3f cores at %.0f msg/s = %.3f cores per 10k msg/s",
		(tapSelf-baseSelf)/float64(seconds), perSecond, (tapSelf-baseSelf)/float64(seconds)*scale)
	t.Logf("nats-server CPU: %.3f cores without the tap, %.3f with it: the tap adds %.3f cores per 10k msg/s",
		baseServer/float64(seconds), tapServer/float64(seconds), (tapServer-baseServer)/float64(seconds)*scale)
	t.Logf("acked by the workload: %d", acked.Load())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// countingTraces counts spans and drops them.
type countingTraces struct {
	spans atomic.Int64
}

func (c *countingTraces) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	c.spans.Add(int64(td.SpanCount()))
	return nil
}

func (c *countingTraces) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }
