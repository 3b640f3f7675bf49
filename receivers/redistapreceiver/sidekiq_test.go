package redistapreceiver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/internal/taptest"
)

// sidekiq writes to Redis what Sidekiq 8's client and server would: Sidekiq
// is Ruby and does not run here, so the test plays both, key for key and
// field for field.
type sidekiq struct {
	t      *testing.T
	client *redis.Client
	prefix string // redis-namespace prefix
	// retryIn is how long after a failure a retry runs; 15s when zero.
	retryIn time.Duration
}

func newJID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (s *sidekiq) json(job map[string]any) string {
	b, err := json.Marshal(job)
	require.NoError(s.t, err)
	return string(b)
}

// push is Sidekiq::Client#push: SADD queues, LPUSH queue:<name>.
func (s *sidekiq) push(job map[string]any) {
	ctx := context.Background()
	queue := job["queue"].(string)
	if _, ok := job["enqueued_at"]; !ok {
		job["enqueued_at"] = time.Now().UnixMilli()
	}
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, s.prefix+"queues", queue)
		p.LPush(ctx, s.prefix+"queue:"+queue, s.json(job))
		return nil
	})
	require.NoError(s.t, err)
}

// fetch is the server's basic fetch: BRPOP queue:<name>.
func (s *sidekiq) fetch(queue string) map[string]any {
	res, err := s.client.BRPop(context.Background(), 2*time.Second, s.prefix+"queue:"+queue).Result()
	require.NoError(s.t, err)
	var job map[string]any
	require.NoError(s.t, json.Unmarshal([]byte(res[1]), &job))
	return job
}

// fail is JobRetry#process_retry: error fields, retry_count (0 at the first
// failure), then the retry set scored by when it runs again (retryIn from
// now, 15s unless set), or the dead set when retries are exhausted.
func (s *sidekiq) fail(job map[string]any, errorClass string, maxRetries int) {
	s.failOn(s.client, job, errorClass, maxRetries)
}

// failOn is fail on c, e.g. within a transaction.
func (s *sidekiq) failOn(c redis.Cmdable, job map[string]any, errorClass string, maxRetries int) {
	ctx := context.Background()
	now := time.Now()
	job["error_message"] = "synthetic failure"
	job["error_class"] = errorClass
	count := 0
	if rc, ok := job["retry_count"]; ok {
		count = int(rc.(float64)) + 1
		job["retried_at"] = now.UnixMilli()
	} else {
		job["failed_at"] = now.UnixMilli()
	}
	job["retry_count"] = count
	if count >= maxRetries {
		require.NoError(s.t, c.ZAdd(ctx, s.prefix+"dead", redis.Z{Score: float64(now.UnixNano()) / 1e9, Member: s.json(job)}).Err())
		return
	}
	retryIn := s.retryIn
	if retryIn == 0 {
		retryIn = 15 * time.Second
	}
	retryAt := float64(now.Add(retryIn).UnixNano()) / 1e9
	require.NoError(s.t, c.ZAdd(ctx, s.prefix+"retry", redis.Z{Score: retryAt, Member: s.json(job)}).Err())
}

// requeue is the scheduler moving a due retry back to its queue.
func (s *sidekiq) requeue(jid string) {
	ctx := context.Background()
	members, err := s.client.ZRange(ctx, s.prefix+"retry", 0, -1).Result()
	require.NoError(s.t, err)
	for _, m := range members {
		var job map[string]any
		require.NoError(s.t, json.Unmarshal([]byte(m), &job))
		if job["jid"] != jid {
			continue
		}
		require.NoError(s.t, s.client.ZRem(ctx, s.prefix+"retry", m).Err())
		delete(job, "enqueued_at")
		s.push(job)
		return
	}
	s.t.Fatalf("job %s is not in the retry set", jid)
}

// running is the heartbeat's record of the jobs a process's threads run,
// written at once.
func (s *sidekiq) running(identity string, jobs ...map[string]any) {
	ctx := context.Background()
	_, err := s.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, s.prefix+"processes", identity)
		p.Del(ctx, s.prefix+identity+":work")
		for i, job := range jobs {
			work := s.json(map[string]any{"queue": job["queue"], "payload": s.json(job), "run_at": time.Now().Unix()})
			p.HSet(ctx, s.prefix+identity+":work", "tid-"+strconv.Itoa(i), work)
		}
		return nil
	})
	require.NoError(s.t, err)
}

// Three jobs: one done, one retried once and then done, one dead. The
// correlator, fed the tap's spans alone, builds a hop per jid with exactly
// these attempts and outcomes; queue latency is Sidekiq's.
func TestSidekiqWorkload(t *testing.T) {
	addr := redisAddr(t)
	client := newTestClient(t, addr)
	ns := uniqueName("sidekiq")
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := client.Keys(ctx, ns+":*").Result()
		if len(keys) > 0 {
			client.Del(ctx, keys...)
		}
	})
	sk := &sidekiq{t: t, client: client, prefix: ns + ":"}

	cfg := testConfig(addr)
	cfg.Sidekiq.Enabled = true
	cfg.Sidekiq.Namespace = ns
	cfg.Sidekiq.SettleAfter = 300 * time.Millisecond
	rt := startTap(t, cfg)

	created := time.Now().Add(-10 * time.Second).UnixMilli()
	newJob := func(class string, retry any) map[string]any {
		return map[string]any{
			"retry": retry, "queue": "default", "class": class, "args": []any{"synthetic", 1},
			"jid": newJID(), "created_at": created, "enqueued_at": created,
		}
	}
	a, b, c := newJob("InvoiceJob", true), newJob("ChargeJob", true), newJob("ReportJob", 0)
	for _, j := range []map[string]any{a, b, c} {
		sk.push(j)
	}
	jid := func(j map[string]any) string { return j["jid"].(string) }
	for _, j := range []map[string]any{a, b, c} {
		waitForSpan(t, rt.traces, "publish of "+jid(j), hasSpan("send", jid(j)))
	}
	waitForQueueLatency(t, rt, "default", 10)

	// The server fetches all three and runs them (the work hash is written
	// first, so the tap never sees them gone and not running: however slow
	// the test, b and c cannot be taken as done before they fail); a is
	// still running a while.
	sk.running("worker-1:4242:0f1e", a, b, c)
	fa, fb, fc := sk.fetch("default"), sk.fetch("default"), sk.fetch("default")
	require.Equal(t, []string{jid(a), jid(b), jid(c)}, []string{jid(fa), jid(fb), jid(fc)})
	for _, j := range []map[string]any{a, b, c} {
		waitForSpan(t, rt.traces, "delivery of "+jid(j), hasSpan("receive", jid(j)))
	}

	// b and c fail: in the retry or dead set before they leave the work
	// hash.
	sk.fail(fb, "Timeout::Error", 25)
	sk.fail(fc, "ArgumentError", 0)
	sk.running("worker-1:4242:0f1e", fa)
	waitForSpan(t, rt.traces, "failure of b", func(s seenSpan) bool {
		return s.event == "settle" && s.messageID == jid(b) && s.outcome == tap.Nack && s.attempt == 1 && s.reason == "Timeout::Error"
	})
	waitForSpan(t, rt.traces, "death of c", func(s seenSpan) bool {
		return s.event == "dead_letter" && s.messageID == jid(c) && s.attempt == 1 && s.reason == "ArgumentError"
	})

	sk.requeue(jid(b))
	waitForSpan(t, rt.traces, "second push of b", func(s seenSpan) bool {
		return s.event == "send" && s.messageID == jid(b) && s.attempt == 2
	})
	sk.fetch("default")
	waitForSpan(t, rt.traces, "second delivery of b", func(s seenSpan) bool {
		return s.event == "receive" && s.messageID == jid(b) && s.attempt == 2
	})
	waitForSpan(t, rt.traces, "b done", func(s seenSpan) bool {
		return s.event == "settle" && s.messageID == jid(b) && s.outcome == tap.Ack && s.attempt == 2
	})
	for _, s := range spansOf(rt.traces) {
		assert.False(t, s.event == "settle" && s.messageID == jid(a), "a is running: not done")
		assert.False(t, s.event == "settle" && s.outcome == tap.Ack && s.attempt == 1 && (s.messageID == jid(b) || s.messageID == jid(c)),
			"b and c failed their first attempt: %v", s)
	}
	sk.running("worker-1:4242:0f1e")
	waitForSpan(t, rt.traces, "a done", func(s seenSpan) bool {
		return s.event == "settle" && s.messageID == jid(a) && s.outcome == tap.Ack && s.inferred
	})

	res := taptest.Correlate(t, correlator.Config{}, rt.traces.AllTraces()...)
	require.Len(t, res.Flows, 3)
	require.Len(t, res.Hops, 3)
	byJID := map[string]model.Hop{}
	for _, h := range res.Hops {
		byJID[h.MessageID] = h
	}
	type want struct {
		operation string
		attempts  uint16
		outcome   model.HopOutcome
		reason    string
	}
	for j, w := range map[string]want{
		jid(a): {"InvoiceJob", 1, model.HopAcked, ""},
		jid(b): {"ChargeJob", 2, model.HopAcked, "Timeout::Error"},
		jid(c): {"ReportJob", 1, model.HopDeadLettered, "ArgumentError"},
	} {
		h, ok := byJID[j]
		require.True(t, ok, j)
		assert.Equal(t, "sidekiq", h.System, j)
		assert.Equal(t, "default", h.Destination, j)
		assert.Equal(t, "default", h.ConsumerGroup, j)
		assert.Equal(t, w.operation, h.Operation, j)
		assert.Equal(t, w.attempts, h.Attempts, j)
		assert.Equal(t, w.outcome, h.Outcome, j)
		if w.outcome == model.HopDeadLettered {
			assert.Equal(t, w.reason, h.Reason, j)
		}
		assert.Equal(t, time.UnixMilli(created), h.PublishTime.Local(), j)
	}
	flows := map[string]model.Flow{}
	for _, f := range res.Flows {
		flows[f.ID] = f
	}
	assert.Equal(t, uint32(1), flows[byJID[jid(b)].FlowID].Retries)
	assert.Equal(t, model.FlowDeadLettered, flows[byJID[jid(c)].FlowID].Status)
	assert.Equal(t, model.FlowCompleted, flows[byJID[jid(a)].FlowID].Status)
}

// waitForQueueLatency waits for a lag_seconds point of the queue of at
// least min seconds and a depth of 3.
func waitForQueueLatency(t *testing.T, rt *runningTap, queue string, minSeconds float64) {
	t.Helper()
	require.Eventually(t, func() bool {
		var latency, depth bool
		for _, md := range rt.metrics.AllMetrics() {
			ms := md.ResourceMetrics().At(0).ScopeMetrics().At(0).Metrics()
			for i := 0; i < ms.Len(); i++ {
				points := ms.At(i).Gauge().DataPoints()
				for j := 0; j < points.Len(); j++ {
					p := points.At(j)
					system, _ := p.Attributes().Get("system")
					dest, _ := p.Attributes().Get("destination")
					if system.Str() != "sidekiq" || dest.Str() != queue {
						continue
					}
					switch ms.At(i).Name() {
					case model.MetricBacklogLagSeconds:
						latency = latency || p.DoubleValue() >= minSeconds
					case model.MetricBacklogDepth:
						depth = depth || p.IntValue() == 3
					}
				}
			}
		}
		return latency && depth
	}, 30*time.Second, 20*time.Millisecond)
}

// A job carrying a traceparent (as OpenTelemetry's Sidekiq instrumentation
// puts in the job) and the application's producer span of that
// traceparent: one hop.
func TestSidekiqTraceJoin(t *testing.T) {
	addr := redisAddr(t)
	client := newTestClient(t, addr)
	ns := uniqueName("sidekiq-trace")
	t.Cleanup(func() { client.Del(context.Background(), ns+":queues", ns+":queue:mailers") })
	sk := &sidekiq{t: t, client: client, prefix: ns + ":"}

	cfg := testConfig(addr)
	cfg.Sidekiq.Enabled = true
	cfg.Sidekiq.Namespace = ns
	cfg.Sidekiq.SettleAfter = 100 * time.Millisecond
	rt := startTap(t, cfg)

	const traceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	traceID, spanID, ok := tap.ParseTraceParent(traceParent)
	require.True(t, ok)
	enqueued := time.Now().UnixMilli()
	job := map[string]any{"queue": "mailers", "class": "WelcomeMailer", "args": []any{}, "jid": newJID(),
		"created_at": enqueued, "enqueued_at": enqueued, "traceparent": traceParent}
	sk.push(job)
	jid := job["jid"].(string)
	waitForSpan(t, rt.traces, "publish", hasSpan("send", jid))
	sk.fetch("mailers")
	waitForSpan(t, rt.traces, "done", hasSpan("settle", jid))

	app := appProducerSpan(traceID, spanID, "signup", "sidekiq", "mailers", time.UnixMilli(enqueued))
	res := taptest.Correlate(t, correlator.Config{}, append([]ptrace.Traces{app}, rt.traces.AllTraces()...)...)
	require.Len(t, res.Flows, 1)
	require.Len(t, res.Hops, 1, "the application's span and the tap's are one hop")
	assert.Equal(t, "signup", res.Hops[0].Producer)
	assert.Equal(t, model.HopAcked, res.Hops[0].Outcome)
	assert.Equal(t, "WelcomeMailer", res.Hops[0].Operation)
}
