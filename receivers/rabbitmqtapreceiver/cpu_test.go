package rabbitmqtapreceiver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
)

// The CPU measurement: FLOWTRACE_TAP_CPU=1 go test -run TestTapCPU -v
// ./receivers/rabbitmqtapreceiver/ runs a workload at a fixed rate
// (FLOWTRACE_TAP_CPU_RATE messages/s, default 2000; each message is
// published and consumed, two firehose frames) for FLOWTRACE_TAP_CPU_SECONDS
// (default 10) in a separate process, and reports the CPU of this process
// (the tap) and of the broker (beam.smp): first with the firehose off and
// no tap, then with the tap reading the firehose (its queue of
// FLOWTRACE_TAP_CPU_QUEUE_TYPE, default quorum).
const (
	envCPU     = "FLOWTRACE_TAP_CPU"
	envCPULoad = "FLOWTRACE_TAP_CPU_LOAD" // queue,rate,seconds: run as the load
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// cpuSeconds is the user and system CPU time of a process.
func cpuSeconds(t testing.TB, pid string) float64 {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "stat"))
	require.NoError(t, err)
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err := strconv.ParseFloat(fields[11], 64)
	require.NoError(t, err)
	stime, err := strconv.ParseFloat(fields[12], 64)
	require.NoError(t, err)
	return (utime + stime) / 100 // USER_HZ
}

func brokerPID(t testing.TB) string {
	entries, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, e := range entries {
		comm, err := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if err == nil && strings.TrimSpace(string(comm)) == "beam.smp" {
			return e.Name()
		}
	}
	t.Skip("no beam.smp process on this machine")
	return ""
}

func TestTapCPU(t *testing.T) {
	if os.Getenv(envCPULoad) != "" {
		runCPULoad(t)
		return
	}
	if os.Getenv(envCPU) == "" {
		t.Skip("set " + envCPU + "=1 to measure the tap's CPU")
	}
	rate, seconds := envInt("FLOWTRACE_TAP_CPU_RATE", 2000), envInt("FLOWTRACE_TAP_CPU_SECONDS", 10)
	broker := brokerPID(t)
	_, ch := dial(t)

	measure := func(name, queue string, observed func() float64) {
		_, err := ch.QueueDeclare(queue, false, true, false, false, nil)
		require.NoError(t, err)
		load := exec.Command(os.Args[0], "-test.run=^TestTapCPU$")
		load.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", envCPULoad, queue, rate, seconds))
		load.Stdout, load.Stderr = os.Stderr, os.Stderr
		self := strconv.Itoa(os.Getpid())
		tap0, broker0, start := cpuSeconds(t, self), cpuSeconds(t, broker), time.Now()
		before := observed()
		require.NoError(t, load.Run())
		// Let the tap finish what the broker holds for it.
		time.Sleep(2 * time.Second)
		elapsed := time.Since(start).Seconds()
		tapCPU, brokerCPU := cpuSeconds(t, self)-tap0, cpuSeconds(t, broker)-broker0
		// CPU seconds per 10,000 messages: the cores each needs at 10k msg/s.
		per10k := 10000 / float64(rate*seconds)
		t.Logf("%s: %d msg/s for %ds (%.1fs with the drain): tap %.2f CPU-s, %.3f cores per 10k msg/s; broker %.2f CPU-s, %.3f cores per 10k msg/s; observations %.0f",
			name, rate, seconds, elapsed, tapCPU, tapCPU*per10k, brokerCPU, brokerCPU*per10k, observed()-before)
	}

	api := testAPI(managementAddr(t))
	defer api.client.CloseIdleConnections()
	var vhost struct {
		Tracing bool `json:"tracing"`
	}
	require.NoError(t, api.do(context.Background(), "GET", "/api/vhosts/%2F", nil, &vhost))
	t.Cleanup(func() { _, _ = api.setTracing(context.Background(), "/", vhost.Tracing) })

	prefix := uniquePrefix("cpu")
	_, err := api.setTracing(context.Background(), "/", false)
	require.NoError(t, err)
	measure("no firehose, no tap", prefix+"baseline", func() float64 { return 0 })

	rt := startTapWith(t, "cpu", func(cfg *Config) {
		if qt := os.Getenv("FLOWTRACE_TAP_CPU_QUEUE_TYPE"); qt != "" {
			cfg.QueueType = qt
		}
	}, func(consumer.Traces) consumer.Traces { return consumertest.NewNop() })
	measure("firehose and tap, "+rt.cfg.QueueType+" queue", rt.prefix+"load", func() float64 { return counter(t, rt.tel, "flowtrace.tap.observations") })
}

// runCPULoad publishes and consumes at a fixed rate, as the load process.
func runCPULoad(t *testing.T) {
	parts := strings.Split(os.Getenv(envCPULoad), ",")
	require.Len(t, parts, 3)
	queue := parts[0]
	rate, err := strconv.Atoi(parts[1])
	require.NoError(t, err)
	seconds, err := strconv.Atoi(parts[2])
	require.NoError(t, err)
	_, pub := dial(t)
	_, sub := dial(t)
	require.NoError(t, sub.Qos(500, 0, false))
	ds, err := sub.Consume(queue, "", false, false, false, false, nil)
	require.NoError(t, err)
	total := rate * seconds
	done := make(chan struct{})
	go func() {
		defer close(done)
		for n := 0; n < total; n++ {
			d := <-ds
			_ = d.Ack(false)
		}
	}()
	const tick = 10 * time.Millisecond
	perTick := rate / int(time.Second/tick)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	body := []byte(`{"order":{"id":17,"items":[1,2,3],"note":"synthetic load"}}`)
	for sent := 0; sent < total; {
		<-ticker.C
		for i := 0; i < perTick && sent < total; i++ {
			require.NoError(t, pub.PublishWithContext(context.Background(), "", queue, false, false, amqp.Publishing{
				MessageId: "load-" + strconv.Itoa(sent), ContentType: "application/json", Body: body,
			}))
			sent++
		}
	}
	<-done
}
