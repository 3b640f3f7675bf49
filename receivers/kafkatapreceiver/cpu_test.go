package kafkatapreceiver

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

// The CPU measurement runs the broker and the load in processes of their
// own, so each one's CPU is read from /proc apart from the tap's.
const (
	cpuTopic   = "cpu-orders"
	cpuGroup   = "cpu-billing"
	cpuRate    = 10_000 // records per second
	cpuSeconds = 10
	clockTicks = 100 // USER_HZ
)

// TestHelperProcess is the broker or the load of TestTapCPU, when run as a
// child process by it.
func TestHelperProcess(t *testing.T) {
	switch os.Getenv("FLOWTRACE_KAFKA_HELPER") {
	case "broker":
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, cpuTopic))
		require.NoError(t, err)
		defer c.Close()
		fmt.Println("ADDR", c.ListenAddrs()[0])
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the parent is done
	case "load":
		runLoad(t, os.Getenv("FLOWTRACE_KAFKA_BROKER"))
	default:
		t.Skip("a child process of TestTapCPU")
	}
}

// runLoad produces cpuRate records a second for cpuSeconds, with a
// business key and a traceparent header, while a group consumes and
// commits them.
func runLoad(t *testing.T, broker string) {
	ctx := context.Background()
	producer := newClient(t, []string{broker}, kgo.ProducerLinger(5*time.Millisecond))
	group := newClient(t, []string{broker}, kgo.ConsumerGroup(cpuGroup), kgo.ConsumeTopics(cpuTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.AutoCommitInterval(500*time.Millisecond))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			pollCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
			fetches := group.PollFetches(pollCtx)
			cancel()
			if fetches.IsClientClosed() || producerDone.Load() && fetches.NumRecords() == 0 {
				return
			}
		}
	}()
	const tick = 10 * time.Millisecond
	perTick := cpuRate * int(tick) / int(time.Second)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	var n int
	for end := time.Now().Add(cpuSeconds * time.Second); time.Now().Before(end); <-ticker.C {
		for range perTick {
			n++
			r := &kgo.Record{Topic: cpuTopic, Key: fmt.Appendf(nil, "order-%d", n), Value: []byte(`{"amount":10,"currency":"EUR"}`),
				Headers: []kgo.RecordHeader{
					{Key: "traceparent", Value: fmt.Appendf(nil, "00-%032x-%016x-01", n+1, n+1)},
					{Key: "order_id", Value: strconv.AppendInt(nil, int64(n), 10)},
				}}
			producer.Produce(ctx, r, func(_ *kgo.Record, err error) {
				if err != nil {
					t.Errorf("produce: %v", err)
				}
			})
		}
	}
	require.NoError(t, producer.Flush(ctx))
	producerDone.Store(true)
	<-done
	require.NoError(t, group.CommitUncommittedOffsets(ctx))
}

var producerDone atomic.Bool

// cpuTime is a process's user and system CPU from /proc/<pid>/stat.
func cpuTime(t *testing.T, pid string) time.Duration {
	t.Helper()
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	require.NoError(t, err)
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	require.NoError(t, err)
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	require.NoError(t, err)
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// TestTapCPU measures the tap's CPU while the load produces 10k records a
// second, against the broker's, each in its own process. Run with
// FLOWTRACE_TAP_CPU=1; it reports, it asserts nothing about speed.
func TestTapCPU(t *testing.T) {
	if os.Getenv("FLOWTRACE_TAP_CPU") == "" {
		t.Skip("set FLOWTRACE_TAP_CPU=1 to measure the tap's CPU")
	}
	broker := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	broker.Env = append(os.Environ(), "FLOWTRACE_KAFKA_HELPER=broker")
	stdin, err := broker.StdinPipe()
	require.NoError(t, err)
	stdout, err := broker.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, broker.Start())
	t.Cleanup(func() {
		_ = stdin.Close()
		_ = broker.Wait()
	})
	var addr string
	lines := bufio.NewScanner(stdout)
	for addr == "" && lines.Scan() {
		if a, ok := strings.CutPrefix(lines.Text(), "ADDR "); ok {
			addr = a
		}
	}
	require.NotEmpty(t, addr)
	go func() {
		for lines.Scan() { // drain
		}
	}()

	var spans atomic.Int64
	sink, err := consumer.NewTraces(func(_ context.Context, td ptrace.Traces) error {
		spans.Add(int64(td.SpanCount()))
		return nil
	})
	require.NoError(t, err)
	cfg := testConfig([]string{addr}, cpuTopic)
	cfg.ConsumerGroups = []string{cpuGroup}
	cfg.PollInterval = time.Second
	cfg.KeyHeaders = map[string]string{"order_id": "order_id"}
	set := receivertest.NewNopSettings(metadata.Type)
	f := NewFactory()
	traces, err := f.CreateTraces(context.Background(), set, cfg, sink)
	require.NoError(t, err)
	metrics, err := f.CreateMetrics(context.Background(), set, cfg, new(consumertest.MetricsSink))
	require.NoError(t, err)
	require.NoError(t, traces.Start(context.Background(), componenttest.NewNopHost()))
	require.NoError(t, metrics.Start(context.Background(), componenttest.NewNopHost()))
	t.Cleanup(func() {
		require.NoError(t, traces.Shutdown(context.Background()))
		require.NoError(t, metrics.Shutdown(context.Background()))
	})
	time.Sleep(time.Second) // the tap has its partitions

	self, brokerPID := strconv.Itoa(os.Getpid()), strconv.Itoa(broker.Process.Pid)
	tapBefore, brokerBefore := cpuTime(t, self), cpuTime(t, brokerPID)
	start := time.Now()
	load := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	load.Env = append(os.Environ(), "FLOWTRACE_KAFKA_HELPER=load", "FLOWTRACE_KAFKA_BROKER="+addr)
	out, err := load.CombinedOutput()
	require.NoError(t, err, "%s", out)
	loadCPU := load.ProcessState.UserTime() + load.ProcessState.SystemTime()
	// The tap catches up: one publish and one settlement per record.
	want := int64(2 * cpuRate * cpuSeconds)
	require.Eventually(t, func() bool { return spans.Load() >= want }, time.Minute, 100*time.Millisecond,
		"the tap emitted %d spans, want %d", spans.Load(), want)
	elapsed := time.Since(start)
	tapCPU, brokerCPU := cpuTime(t, self)-tapBefore, cpuTime(t, brokerPID)-brokerBefore

	perTenK := func(cpu time.Duration) float64 {
		return cpu.Seconds() / float64(cpuSeconds) * 10_000 / cpuRate
	}
	t.Logf("%d records at %d/s over %s (tap caught up after %s): tap %s CPU (%.3f cores per 10k msg/s), broker %s (%.3f), load %s (producer and committing group)",
		cpuRate*cpuSeconds, cpuRate, time.Duration(cpuSeconds)*time.Second, elapsed.Round(time.Millisecond),
		tapCPU, perTenK(tapCPU), brokerCPU, perTenK(brokerCPU), loadCPU)
}
