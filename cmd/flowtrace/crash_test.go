package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator/flowsim"
)

// child is flowtrace running as a separate process, which a test can kill.
type child struct {
	cmd    *exec.Cmd
	ep     endpoints
	exited chan struct{}
}

func startChild(t *testing.T, dataDir string, ports []int, extra ...string) *child {
	t.Helper()
	return startChildWith(t, dataDir, ports, false, extra...)
}

// startChildWith starts flowtrace; pinned, it runs on CPU 0 alone with
// GOMAXPROCS=1, and takes only the flags in extra (its own config).
func startChildWith(t *testing.T, dataDir string, ports []int, pinned bool, extra ...string) *child {
	t.Helper()
	ep := endpoints{
		otlpHTTP:    fmt.Sprintf("127.0.0.1:%d", ports[1]),
		healthCheck: fmt.Sprintf("127.0.0.1:%d", ports[5]),
		api:         fmt.Sprintf("127.0.0.1:%d", ports[8]),
	}
	args := []string{
		"--data-dir=" + dataDir,
		fmt.Sprintf("--set=receivers.otlp.protocols.grpc.endpoint=127.0.0.1:%d", ports[0]),
		"--set=receivers.otlp.protocols.http.endpoint=" + ep.otlpHTTP,
		fmt.Sprintf("--set=receivers.jaeger.protocols.grpc.endpoint=127.0.0.1:%d", ports[2]),
		fmt.Sprintf("--set=receivers.jaeger.protocols.thrift_http.endpoint=127.0.0.1:%d", ports[3]),
		fmt.Sprintf("--set=receivers.zipkin.endpoint=127.0.0.1:%d", ports[4]),
		"--set=extensions.health_check.endpoint=" + ep.healthCheck,
		fmt.Sprintf("--set=service.telemetry.metrics.readers=[{pull: {exporter: {prometheus: {host: 127.0.0.1, port: %d}}}}]", ports[6]),
		fmt.Sprintf("--set=exporters.prometheus.endpoint=127.0.0.1:%d", ports[7]),
		"--set=extensions.flowtrace_web.endpoint=" + ep.api,
	}
	if pinned && len(extra) > 0 && strings.HasPrefix(extra[0], "--config=") {
		args = []string{"--data-dir=" + dataDir}
	}
	args = append(args, extra...)
	encoded, err := json.Marshal(args)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	if pinned {
		cmd = exec.Command("taskset", "-c", "0", os.Args[0], "-test.run", "^$")
	}
	cmd.Env = append(os.Environ(), childArgs+"="+string(encoded))
	if pinned {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	// The child dies with the test process, however that ends.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	logs := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = logs, logs
	require.NoError(t, cmd.Start())
	c := &child{cmd: cmd, ep: ep, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() { _ = c.cmd.Process.Kill(); <-c.exited })
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-c.exited:
			t.Fatalf("flowtrace exited before it became healthy:\n%s", logs.String())
		default:
		}
		resp, err := http.Get("http://" + ep.healthCheck + "/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c
			}
		}
		require.True(t, time.Now().Before(deadline), "flowtrace did not become healthy:\n%s", logs.String())
		time.Sleep(100 * time.Millisecond)
	}
}

func (c *child) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, c.cmd.Process.Signal(syscall.SIGKILL))
	<-c.exited
}

// send posts one batch of spans as OTLP/protobuf; true when flowtrace
// acknowledged it.
func send(client *http.Client, endpoint string, td ptrace.Traces) bool {
	body, err := (&ptrace.ProtoMarshaler{}).MarshalTraces(td)
	if err != nil {
		return false
	}
	resp, err := client.Post("http://"+endpoint+"/v1/traces", "application/x-protobuf", bytes.NewReader(body))
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestKillNineLosesAndDoublesNothing sends a known workload, kills flowtrace
// with SIGKILL halfway, starts it again on the same data directory, resends
// what was not acknowledged, and checks storage through the API: every flow
// once, with exactly its hops.
func TestKillNineLosesAndDoublesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("runs flowtrace as a separate process")
	}
	var scenarios []flowsim.Scenario
	for _, s := range flowsim.Scenarios() {
		if s != flowsim.ScenarioLinksOnly { // found below by broker message id
			scenarios = append(scenarios, s)
		}
	}
	w := flowsim.Generate(flowsim.Config{Seed: 21, Flows: 6, Scenarios: scenarios, Start: time.Now().Add(-10 * time.Minute)})
	batches := w.Spans(10)
	sent := map[string]int{} // spans by id, as many times as the workload has them
	for _, b := range batches {
		rss := b.Traces.ResourceSpans()
		for i := 0; i < rss.Len(); i++ {
			sss := rss.At(i).ScopeSpans()
			for j := 0; j < sss.Len(); j++ {
				spans := sss.At(j).Spans()
				for k := 0; k < spans.Len(); k++ {
					sent[spans.At(k).SpanID().String()]++
				}
			}
		}
	}
	dataDir := t.TempDir()
	ports := freePorts(t, 9)
	flags := []string{
		`--set=connectors.correlator.retry_destinations=["` + flowsim.RetryPattern + `"]`,
		`--set=connectors.correlator.dead_letter_destinations=["` + flowsim.DeadLetterPattern + `"]`,
		"--set=connectors.correlator.spans.key_attributes={celery.root_id: task_id, celery.parent_id: task_id}",
		"--set=connectors.correlator.checkpoint.interval=1s",
	}
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()

	first := startChild(t, dataDir, ports, flags...)
	var pending []ptrace.Traces
	for i, b := range batches {
		if i == len(batches)/2 {
			first.kill(t)
		}
		if i < len(batches)/2 {
			if !send(client, first.ep.otlpHTTP, b.Traces) {
				pending = append(pending, b.Traces)
			}
			continue
		}
		pending = append(pending, b.Traces) // flowtrace is down: the sender keeps them
	}
	client.CloseIdleConnections()

	second := startChild(t, dataDir, ports, flags...)
	for _, td := range pending {
		require.True(t, send(client, second.ep.otlpHTTP, td), "flowtrace acknowledges once it is back")
	}

	// Every truth flow: found once by one of its messages, with its hops.
	deadline := time.Now().Add(60 * time.Second)
	for _, truth := range w.Truth {
		want := map[hopKey]bool{}
		for _, h := range truth.Hops {
			want[hopKey{h.System, h.MessageID, h.ConsumerGroup}] = true
		}
		var got map[hopKey]bool
		var ids []string
		for {
			ids, got = flowHops(t, client, second.ep.api, truth.Hops[0].MessageID)
			if len(ids) == 1 && len(got) == len(want) || time.Now().After(deadline) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		require.Len(t, ids, 1, "flow %q (%s) found once by message %s", truth.Name, truth.Scenario, truth.Hops[0].MessageID)
		assert.Equal(t, want, got, "flow %q (%s)", truth.Name, truth.Scenario)
		// And each raw event as many times as its span was in the
		// workload (which repeats some on purpose): a batch written before
		// the kill and handed back by the queue, or a request sent again,
		// is not written twice.
		for span, n := range flowEvents(t, client, second.ep.api, ids[0]) {
			assert.Equal(t, sent[span], n, "flow %q (%s): events of span %s", truth.Name, truth.Scenario, span)
		}
	}
}

// flowEvents counts a flow's raw events by span id.
func flowEvents(t *testing.T, client *http.Client, api, id string) map[string]int {
	t.Helper()
	resp, err := client.Get("http://" + api + "/api/flows/" + id)
	require.NoError(t, err)
	defer resp.Body.Close()
	var detail struct {
		Events []struct {
			SpanID string `json:"span_id"`
		} `json:"events"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&detail))
	counts := map[string]int{}
	for _, e := range detail.Events {
		counts[e.SpanID]++
	}
	return counts
}

type hopKey struct{ system, message, group string }

// flowHops finds the flows holding a message and the hops of the first.
func flowHops(t *testing.T, client *http.Client, api, messageID string) ([]string, map[hopKey]bool) {
	t.Helper()
	resp, err := client.Get("http://" + api + "/api/flows?" + url.Values{"key": {messageID}}.Encode())
	require.NoError(t, err)
	var page struct {
		Flows []apiFlow `json:"flows"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&page))
	resp.Body.Close()
	var ids []string
	for _, f := range page.Flows {
		ids = append(ids, f.ID)
	}
	hops := map[hopKey]bool{}
	if len(ids) == 0 {
		return ids, hops
	}
	resp, err = client.Get("http://" + api + "/api/flows/" + ids[0])
	require.NoError(t, err)
	var detail struct {
		Hops []struct {
			System        string `json:"system"`
			MessageID     string `json:"message_id"`
			ConsumerGroup string `json:"consumer_group"`
		} `json:"hops"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&detail))
	resp.Body.Close()
	for _, h := range detail.Hops {
		hops[hopKey{h.System, h.MessageID, h.ConsumerGroup}] = true
	}
	return ids, hops
}
