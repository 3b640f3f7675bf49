package redistapreceiver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/redistapreceiver/internal/metadata"
)

// BenchmarkDecodeEntries decodes stream entries captured from Redis into
// publish spans, as the tap does for each entry XREAD returns.
func BenchmarkDecodeEntries(b *testing.B) {
	cfg := &createDefaultConfig().Streams
	cfg.KeyFields = map[string]string{"order_id": "order_id"}
	captured := readCapturedEntries(b)
	values := make([]map[string]any, len(captured))
	for i, c := range captured {
		values[i] = c.values()
	}
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	for b.Loop() {
		spans := tap.NewSpans(systemRedis, metadata.ScopeName)
		for i, c := range captured {
			e, _, err := decodeEntry(cfg, c.ID, values[i])
			if err != nil {
				b.Fatal(err)
			}
			o := tap.Observation{Kind: tap.Publish, Time: e.id.time(), System: systemRedis, Destination: "orders",
				MessageID: "orders/" + c.ID, BodySize: e.size, Keys: e.keys, TraceParent: e.traceParent}
			if err := spans.Add(&o); err != nil {
				b.Fatal(err)
			}
		}
		events += spans.Len()
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkXReadFrames reads the captured XREAD reply through go-redis,
// from a local server that replays it, into publish spans: the tap's whole
// read path for each entry, the RESP parsing included.
func BenchmarkXReadFrames(b *testing.B) {
	addr := replayServer(b)
	client := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true, MaxRetries: -1})
	b.Cleanup(func() { _ = client.Close() })
	ctx := context.Background()
	first, err := client.XRead(ctx, &redis.XReadArgs{Streams: []string{"s", "0-0"}, Count: 1000, Block: -1}).Result()
	require.NoError(b, err)
	require.Len(b, first, 1)
	cfg := createDefaultConfig()
	cfg.Streams.Names = []string{first[0].Stream}
	cfg.Streams.KeyFields = map[string]string{"order_id": "order_id"}
	tel := componenttest.NewTelemetry()
	b.Cleanup(func() { _ = tel.Shutdown(ctx) })
	set := receivertest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = tel.NewTelemetrySettings()
	rt, err := newRedisTap(cfg, set)
	require.NoError(b, err)
	st := rt.streams
	st.all[0].lastID = "0-0"
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	for b.Loop() {
		st.all[0].entries = st.all[0].entries[:0]
		out := rt.newBatch(ctx)
		if err := st.read(ctx, client, -1, out); err != nil {
			b.Fatal(err)
		}
		events += out.spans.Len()
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkDecodeJobs decodes Sidekiq jobs captured from Redis into publish
// spans, as the tap does for each job it reads from a queue.
func BenchmarkDecodeJobs(b *testing.B) {
	captured := readCapturedJobs(b)
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	for b.Loop() {
		spans := tap.NewSpans(systemSidekiq, metadata.ScopeName)
		for _, raw := range captured {
			j, err := decodeJob(raw)
			if err != nil {
				b.Fatal(err)
			}
			at, _ := j.enqueuedTime()
			o := tap.Observation{Kind: tap.Publish, Time: at, System: systemSidekiq, Destination: j.Queue,
				MessageID: j.JID, Operation: j.operation(), Attempt: j.enqueuedAttempt(), TraceParent: j.TraceParent}
			if err := spans.Add(&o); err != nil {
				b.Fatal(err)
			}
		}
		events += spans.Len()
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// cpuRate and cpuDuration set the CPU measurement's workload.
const (
	cpuRate     = 10_000 // entries per second
	cpuDuration = 10 * time.Second
)

// TestTapCPU measures the tap's CPU against redis-server's while a
// producer adds 10,000 entries a second to a stream for 10 s and a
// consumer group reads and acks them. The producer and consumer run in a
// child process, so this process's CPU is the tap's (and the span sink's).
// It runs only with FLOWTRACE_TAP_CPU=1, on a private redis-server.
func TestTapCPU(t *testing.T) {
	if os.Getenv("FLOWTRACE_TAP_CPU") != "1" {
		t.Skip("set FLOWTRACE_TAP_CPU=1 to measure the tap's CPU")
	}
	server := startPrivateRedis(t, false)
	ctx := context.Background()
	client := redis.NewClient(&redis.Options{Addr: server.addr, DisableIdentity: true})
	t.Cleanup(func() { _ = client.Close() })
	stream := uniqueName("cpu")
	require.NoError(t, client.XGroupCreateMkStream(ctx, stream, "workers", "$").Err())

	var spans atomic.Int64
	next, err := consumer.NewTraces(func(_ context.Context, td ptrace.Traces) error {
		spans.Add(int64(td.SpanCount()))
		return nil
	})
	require.NoError(t, err)
	cfg := createDefaultConfig()
	cfg.Endpoint = server.addr
	cfg.Streams.Names = []string{stream}
	tel := componenttest.NewTelemetry()
	set := receivertest.NewNopSettings(metadata.Type)
	set.TelemetrySettings = tel.NewTelemetrySettings()
	f := NewFactory()
	tr, err := f.CreateTraces(ctx, set, cfg, next)
	require.NoError(t, err)
	mr, err := f.CreateMetrics(ctx, set, cfg, new(consumertest.MetricsSink))
	require.NoError(t, err)
	require.NoError(t, tr.Start(ctx, componenttest.NewNopHost()))
	require.NoError(t, mr.Start(ctx, componenttest.NewNopHost()))
	t.Cleanup(func() {
		_ = tr.Shutdown(ctx)
		_ = mr.Shutdown(ctx)
		_ = tel.Shutdown(ctx)
	})
	(&runningTap{tel: tel}).waitConnected(t) // connected and resumed

	tapBefore, redisBefore := cpuTicks(t, "self"), cpuTicks(t, strconv.Itoa(server.cmd.Process.Pid))
	start := time.Now()
	child := exec.Command(os.Args[0], "-test.run", "^TestCPUWorkload$", "-test.count=1")
	child.Env = append(os.Environ(), "FLOWTRACE_CPU_WORKLOAD="+server.addr+","+stream)
	out, err := child.CombinedOutput()
	require.NoError(t, err, string(out))
	elapsed := time.Since(start)
	tapTicks, redisTicks := cpuTicks(t, "self")-tapBefore, cpuTicks(t, strconv.Itoa(server.cmd.Process.Pid))-redisBefore

	entries, err := client.XLen(ctx, stream).Result()
	require.NoError(t, err)
	require.Eventually(t, func() bool { return spans.Load() >= 3*entries }, 30*time.Second, 50*time.Millisecond,
		"spans: %d for %d entries", spans.Load(), entries)
	const ticksPerSecond = 100 // USER_HZ
	rate := float64(entries) / elapsed.Seconds()
	tapCPU := float64(tapTicks) / ticksPerSecond / elapsed.Seconds()
	redisCPU := float64(redisTicks) / ticksPerSecond / elapsed.Seconds()
	t.Logf("%d entries in %s (%.0f/s), %d spans; tap CPU %.1f%% of a core (%.1f%% per 10k msg/s); redis-server CPU %.1f%% (%.1f%% per 10k msg/s)",
		entries, elapsed.Round(time.Millisecond), rate, spans.Load(), 100*tapCPU, 100*tapCPU*10_000/rate, 100*redisCPU, 100*redisCPU*10_000/rate)
}

// TestCPUWorkload is TestTapCPU's child process: a producer at a fixed
// rate and a consumer group consumer that reads and acks.
func TestCPUWorkload(t *testing.T) {
	spec := os.Getenv("FLOWTRACE_CPU_WORKLOAD")
	if spec == "" {
		t.Skip("run by TestTapCPU")
	}
	addr, stream, _ := strings.Cut(spec, ",")
	ctx := context.Background()
	producer := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer producer.Close()
	consumerClient := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true})
	defer consumerClient.Close()

	done := make(chan struct{})
	consumed := make(chan error, 1)
	go func() {
		var err error
		defer func() { consumed <- err }()
		for {
			res, rerr := consumerClient.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "workers", Consumer: "c1", Streams: []string{stream, ">"}, Count: 1000, Block: 100 * time.Millisecond}).Result()
			if rerr == redis.Nil {
				select {
				case <-done:
					return
				default:
					continue
				}
			}
			if rerr != nil {
				err = rerr
				return
			}
			ids := make([]string, 0, len(res[0].Messages))
			for _, m := range res[0].Messages {
				ids = append(ids, m.ID)
			}
			if err = consumerClient.XAck(ctx, stream, "workers", ids...).Err(); err != nil {
				return
			}
		}
	}()

	const tick = 10 * time.Millisecond
	perTick := int(cpuRate * tick / time.Second)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	end := time.Now().Add(cpuDuration)
	n := 0
	for time.Now().Before(end) {
		<-ticker.C
		pipe := producer.Pipeline()
		for range perTick {
			n++
			// Synthetic bodies.
			pipe.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{"order_id", fmt.Sprintf("o-%d", n), "body", "synthetic-body-of-some-64-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}})
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
	}
	close(done)
	require.NoError(t, <-consumed)
}

// cpuTicks is the user and system CPU time of a process, in clock ticks
// (/proc/<pid>/stat fields 14 and 15).
func cpuTicks(t *testing.T, pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	require.NoError(t, err)
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	require.NoError(t, err)
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	require.NoError(t, err)
	return utime + stime
}
