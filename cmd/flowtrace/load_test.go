package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// The end-to-end load test: flowtrace as a separate process on one core,
// OTLP/HTTP spans in, flows queryable through the API out. Run it with
//
//	FLOWTRACE_LOAD=1 FLOWTRACE_LOAD_RATE=100000 go test -run TestEndToEndLoad -v -timeout 20m ./cmd/flowtrace
//
// (with CHDB_LIB_PATH set, as make does). FLOWTRACE_LOAD_PIPELINE=nop runs
// the same binary and workload through a plain OTLP → batch → nop pipeline,
// for the overhead ratio; FLOWTRACE_LOAD_DATA_DIR=/dev/shm puts the data
// directory there; FLOWTRACE_LOAD_TRACE=1 logs every marker's latency and
// the CPU of every minute;
// FLOWTRACE_LOAD_SET='key=value;key=value' adds --set overrides (for tuning
// experiments); FLOWTRACE_LOAD_PPROF=127.0.0.1:1777 serves the
// loaded process's pprof there. Results go to the test log;
// docs/BENCHMARKS.md has the figures.

// spanBatch makes one OTLP batch of flows of two hops (checkout → orders →
// billing → invoices → mailer): publish, receive and process spans per hop,
// six spans a flow, each flow with fresh ids from seq.
func spanBatch(seq *atomic.Uint64, flows int, now time.Time, marker string) []byte {
	td := ptrace.NewTraces()
	services := []string{"checkout", "billing", "mailer"}
	scopes := make([]ptrace.SpanSlice, len(services))
	for i, s := range services {
		rs := td.ResourceSpans().AppendEmpty()
		rs.Resource().Attributes().PutStr("service.name", s)
		scopes[i] = rs.ScopeSpans().AppendEmpty().Spans()
	}
	for range flows {
		n := seq.Add(1)
		var trace pcommon.TraceID
		binary.BigEndian.PutUint64(trace[8:], n)
		spanID := func(k uint64) pcommon.SpanID {
			var id pcommon.SpanID
			binary.BigEndian.PutUint64(id[:], n<<4|k)
			return id
		}
		id := strconv.FormatUint(n, 36)
		if marker != "" {
			id = marker
		}
		for hop, dest := range []string{"orders", "invoices"} {
			msg := dest + "-" + id
			at := now.Add(time.Duration(hop) * 10 * time.Millisecond)
			add := func(service int, kind ptrace.SpanKind, op string, k uint64, start time.Time, d time.Duration) {
				span := scopes[service].AppendEmpty()
				span.SetTraceID(trace)
				span.SetSpanID(spanID(k))
				span.SetName(dest + " " + op)
				span.SetKind(kind)
				span.SetStartTimestamp(pcommon.NewTimestampFromTime(start))
				span.SetEndTimestamp(pcommon.NewTimestampFromTime(start.Add(d)))
				a := span.Attributes()
				a.PutStr("messaging.system", "kafka")
				a.PutStr("messaging.operation.type", op)
				a.PutStr("messaging.destination.name", dest)
				a.PutStr("messaging.message.id", msg)
				if kind == ptrace.SpanKindConsumer {
					a.PutStr("messaging.consumer.group.name", services[hop+1])
				}
			}
			add(hop, ptrace.SpanKindProducer, "send", uint64(hop*3+1), at, time.Millisecond)
			add(hop+1, ptrace.SpanKindConsumer, "receive", uint64(hop*3+2), at.Add(2*time.Millisecond), time.Millisecond)
			add(hop+1, ptrace.SpanKindConsumer, "process", uint64(hop*3+3), at.Add(3*time.Millisecond), 4*time.Millisecond)
		}
	}
	body, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		panic(err)
	}
	return body
}

const spansPerFlow = 6

func TestEndToEndLoad(t *testing.T) {
	if os.Getenv("FLOWTRACE_LOAD") == "" {
		t.Skip("set FLOWTRACE_LOAD=1 to run the end-to-end load test")
	}
	rate, _ := strconv.Atoi(os.Getenv("FLOWTRACE_LOAD_RATE"))
	if rate == 0 {
		rate = 100_000
	}
	duration := 30 * time.Second
	if d, err := time.ParseDuration(os.Getenv("FLOWTRACE_LOAD_DURATION")); err == nil {
		duration = d
	}
	nop := os.Getenv("FLOWTRACE_LOAD_PIPELINE") == "nop"
	trace := os.Getenv("FLOWTRACE_LOAD_TRACE") != ""
	dataDir := t.TempDir()
	if parent := os.Getenv("FLOWTRACE_LOAD_DATA_DIR"); parent != "" { // e.g. on tmpfs, to leave the disk out
		var err error
		dataDir, err = os.MkdirTemp(parent, "flowtrace-load-")
		require.NoError(t, err)
		t.Cleanup(func() { os.RemoveAll(dataDir) })
	}
	ports := freePorts(t, 9)
	var extra []string
	if nop {
		cfg := dataDir + "/nop.yaml"
		require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
processors:
  batch: {}
exporters:
  nop: {}
extensions:
  health_check:
    endpoint: 127.0.0.1:%d
service:
  extensions: [health_check]
  telemetry:
    metrics:
      level: none
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [nop]
`, ports[1], ports[5])), 0o600))
		extra = []string{"--config=file:" + cfg}
	}
	if !nop {
		// Flows go quiet, finish and are released within the run, as in a
		// steady state: the default ten minutes of flow_idle and retain would
		// keep every flow of the run in memory.
		extra = append(extra, "--set=connectors.correlator.stuck_after=5s",
			"--set=connectors.correlator.flow_idle=5s", "--set=connectors.correlator.retain=5s")
	}
	if endpoint := os.Getenv("FLOWTRACE_LOAD_PPROF"); endpoint != "" && !nop {
		// Profiles of the loaded process: go tool pprof http://<endpoint>/debug/pprof/profile
		extra = append(extra, "--set=extensions.pprof.endpoint="+endpoint,
			"--set=service.extensions=[health_check, segment_storage, flowstorage, flowtrace_web, pprof]")
	}
	// Tuning experiments: FLOWTRACE_LOAD_SET='exporters.clickhouse.timeout=10s;...'
	for _, set := range strings.Split(os.Getenv("FLOWTRACE_LOAD_SET"), ";") {
		if set = strings.TrimSpace(set); set != "" {
			extra = append(extra, "--set="+set)
		}
	}
	child := startChildWith(t, dataDir, ports, true, extra...) // on CPU 0 alone, GOMAXPROCS=1

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
	defer client.CloseIdleConnections()
	var seq atomic.Uint64
	const flowsPerBatch = 200 // 1,200 spans
	batchesPerSecond := float64(rate) / (flowsPerBatch * spansPerFlow)
	interval := time.Duration(float64(time.Second) / batchesPerSecond)

	// Batches of load and of markers both count as acked or refused; only
	// load spans count towards the throughput.
	type batch struct {
		body []byte
		load bool
	}
	var sent, acked, refused, loadAcked atomic.Int64
	var wg sync.WaitGroup
	work := make(chan batch, 64)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range work {
				resp, err := client.Post("http://"+child.ep.otlpHTTP+"/v1/traces", "application/x-protobuf", bytes.NewReader(b.body))
				if err != nil {
					refused.Add(1)
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					acked.Add(1)
					if b.load {
						loadAcked.Add(1)
					}
				} else {
					refused.Add(1)
				}
			}
		}()
	}

	loadStart := time.Now()
	// Markers: one flow every 250 ms, timed from send to queryable. They are
	// written in the order sent, so one poller waits for each in turn: the
	// probe costs one query at a time, however far behind flowtrace falls.
	type marker struct {
		name   string
		sentAt time.Time
	}
	var latencies []time.Duration
	var markers sync.WaitGroup
	stopMarkers := make(chan struct{})
	if !nop {
		sentMarkers := make(chan marker, 1<<16)
		markers.Add(2)
		go func() {
			defer markers.Done()
			defer close(sentMarkers)
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stopMarkers:
					return
				case <-tick.C:
				}
				m := marker{name: fmt.Sprintf("marker%d", i), sentAt: time.Now()}
				work <- batch{body: spanBatch(&seq, 1, m.sentAt, m.name)}
				sentMarkers <- m
			}
		}()
		go func() {
			defer markers.Done()
			for m := range sentMarkers {
				if latency, ok := waitQueryable(client, child.ep.api, m.name, m.sentAt, 10*time.Minute); ok {
					latencies = append(latencies, latency)
					if trace {
						t.Logf("marker %s sent at +%.1fs: %s", m.name, m.sentAt.Sub(loadStart).Seconds(), latency)
					}
				}
			}
		}()
	}

	cpuBefore := cpuSeconds(t, child.cmd.Process.Pid)
	start := time.Now()
	next := start
	// With tracing, the CPU of every minute too: large merges show as
	// minutes that cost more.
	minuteStart, minuteCPU := start, cpuBefore
	for time.Since(start) < duration {
		work <- batch{body: spanBatch(&seq, flowsPerBatch, time.Now(), ""), load: true}
		sent.Add(1)
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		if trace && time.Since(minuteStart) >= time.Minute {
			now := cpuSeconds(t, child.cmd.Process.Pid)
			t.Logf("minute to +%.0fs: %.2f cores", time.Since(start).Seconds(), (now-minuteCPU)/time.Since(minuteStart).Seconds())
			minuteStart, minuteCPU = time.Now(), now
		}
	}
	elapsed := time.Since(start)
	cpu := cpuSeconds(t, child.cmd.Process.Pid) - cpuBefore
	close(stopMarkers)
	// The last marker is queryable once everything sent before it is
	// written: the time to it is what the whole load took end to end.
	var drained time.Duration
	if !nop {
		work <- batch{body: spanBatch(&seq, 1, time.Now(), "last")}
		var ok bool
		drained, ok = waitQueryable(client, child.ep.api, "last", start, duration+10*time.Minute)
		require.True(t, ok, "the last marker never became queryable")
	}
	markers.Wait()
	close(work)
	wg.Wait()

	spans := float64(loadAcked.Load()) * flowsPerBatch * spansPerFlow
	t.Logf("pipeline %s, target %d spans/s for %s: sent %d load batches; acked %d, refused %d batches (markers included); accepted %.0f spans/s, using %.2f cores",
		map[bool]string{true: "nop", false: "flowtrace"}[nop], rate, duration, sent.Load(), acked.Load(), refused.Load(), spans/elapsed.Seconds(), cpu/elapsed.Seconds())
	if !nop {
		t.Logf("all of it queryable after %s: %.0f spans/s end to end", drained.Round(time.Millisecond), spans/drained.Seconds())
	}
	if len(latencies) > 0 {
		slices.Sort(latencies)
		p := func(q float64) time.Duration { return latencies[int(q*float64(len(latencies)-1))] }
		t.Logf("ingest to queryable over %d markers: p50 %s, p99 %s, max %s", len(latencies), p(0.5), p(0.99), latencies[len(latencies)-1])
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", child.cmd.Process.Pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmHWM") || strings.HasPrefix(line, "VmRSS") {
			t.Logf("flowtrace memory: %s", strings.Join(strings.Fields(line), " "))
		}
	}
}

// markerPoll is how often a marker's flow is looked for. Every look is a
// query on the loaded process: polling every 20 ms took 7 % of its core at
// 30,000 spans/s. Polling every 100 ms overstates a latency by 50 ms on
// average, 100 ms at most.
const markerPoll = 100 * time.Millisecond

// waitQueryable polls the API until marker's flow is queryable with both
// hops, and returns the time since sentAt; false after limit.
func waitQueryable(client *http.Client, api, marker string, sentAt time.Time, limit time.Duration) (time.Duration, bool) {
	for time.Since(sentAt) < limit {
		resp, err := client.Get("http://" + api + "/api/flows?" + url.Values{"key": {"invoices-" + marker}}.Encode())
		if err == nil {
			var page struct {
				Flows []struct {
					HopCount int `json:"hop_count"`
				} `json:"flows"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			if len(page.Flows) == 1 && page.Flows[0].HopCount == 2 {
				return time.Since(sentAt), true
			}
		}
		time.Sleep(markerPoll)
	}
	return 0, false
}

// cpuSeconds is the user and system CPU time process pid has used.
func cpuSeconds(t *testing.T, pid int) float64 {
	t.Helper()
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	// The command name, in parentheses, may hold spaces: count from after it.
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100 // clock ticks at 100 Hz
}
