package redistapreceiver

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// newSidekiqTest starts a tap on a Sidekiq namespace of the test's own
// with a scan limit of 3.
func newSidekiqTest(t *testing.T, prefix string) (*sidekiq, *runningTap) {
	t.Helper()
	addr := redisAddr(t)
	client := newTestClient(t, addr)
	ns := uniqueName(prefix)
	t.Cleanup(func() {
		ctx := context.Background()
		keys, _ := client.Keys(ctx, ns+":*").Result()
		if len(keys) > 0 {
			client.Del(ctx, keys...)
		}
	})
	cfg := testConfig(addr)
	cfg.Sidekiq.Enabled = true
	cfg.Sidekiq.Namespace = ns
	cfg.Sidekiq.ScanLimit = 3
	cfg.Sidekiq.SettleAfter = 200 * time.Millisecond
	return &sidekiq{t: t, client: client, prefix: ns + ":"}, startTap(t, cfg)
}

func newTestJob(class string) map[string]any {
	now := time.Now().UnixMilli()
	return map[string]any{"retry": true, "queue": "default", "class": class, "args": []any{"synthetic"},
		"jid": newJID(), "created_at": now, "enqueued_at": now}
}

// settles lists the settle spans of jid, as "outcome/attempt".
func settles(rt *runningTap, jid string) []string {
	var out []string
	for _, s := range spansOf(rt.traces) {
		if s.messageID == jid && (s.event == "settle" || s.event == "dead_letter") {
			out = append(out, s.event+"/"+s.outcome+"/"+strconv.FormatInt(s.attempt, 10))
		}
	}
	return out
}

// runAndFinish pushes job, has the server run it (in the work hash before
// it leaves its queue), and finish calls what happens when it ends, before
// the work hash is cleared.
func runAndFinish(t *testing.T, sk *sidekiq, rt *runningTap, job map[string]any, finish func(redis.Pipeliner)) {
	t.Helper()
	jid := job["jid"].(string)
	sk.push(job)
	waitForSpan(t, rt.traces, "publish of "+jid, hasSpan("send", jid))
	sk.running("worker-1:1:ab", job)
	fetched := sk.fetch("default")
	require.Equal(t, jid, fetched["jid"])
	waitForSpan(t, rt.traces, "delivery of "+jid, hasSpan("receive", jid))
	ctx := context.Background()
	_, err := sk.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if finish != nil {
			finish(p)
		}
		p.Del(ctx, sk.prefix+"worker-1:1:ab:work")
		return nil
	})
	require.NoError(t, err)
}

// A retry set larger than scan_limit is read a page per poll: jobs are
// still taken as done once it was read whole, and a job that failed into
// the part beyond the first page is not.
func TestSidekiqRetrySetBeyondScanLimit(t *testing.T) {
	sk, rt := newSidekiqTest(t, "sidekiq-retry")
	ctx := context.Background()
	// Ten retries waiting an hour: more than three pages of the set.
	for i := range 10 {
		j := newTestJob("FillerJob")
		j["retry_count"] = 0
		j["failed_at"] = time.Now().UnixMilli()
		j["error_class"] = "Filler"
		score := float64(time.Now().Add(time.Hour+time.Duration(i)*time.Second).UnixNano()) / 1e9
		require.NoError(t, sk.client.ZAdd(ctx, sk.prefix+"retry", redis.Z{Score: score, Member: sk.json(j)}).Err())
	}

	// b fails and waits two hours, the last of the set.
	b := newTestJob("ChargeJob")
	sk.retryIn = 2 * time.Hour
	runAndFinish(t, sk, rt, b, func(p redis.Pipeliner) { sk.failOn(p, b, "Timeout::Error", 25) })
	// a succeeds after b failed: once a is taken as done, b would have
	// been, if the part of the set b is in was not read.
	a := newTestJob("InvoiceJob")
	runAndFinish(t, sk, rt, a, nil)
	waitForSpan(t, rt.traces, "a done", func(s seenSpan) bool {
		return s.messageID == a["jid"] && s.event == "settle" && s.outcome == tap.Ack && s.inferred && s.attempt == 1
	})
	waitForSpan(t, rt.traces, "b failed", func(s seenSpan) bool {
		return s.messageID == b["jid"] && s.event == "settle" && s.outcome == tap.Nack && s.attempt == 1
	})
	assert.Equal(t, []string{"settle/nack/1"}, settles(rt, b["jid"].(string)))
	assert.Equal(t, []string{"settle/ack/1"}, settles(rt, a["jid"].(string)))
}

// More jobs die within settle_after than scan_limit: a job that died
// before them is still seen dead, not taken as done.
func TestSidekiqDeathsBeyondScanLimit(t *testing.T) {
	sk, rt := newSidekiqTest(t, "sidekiq-dead")
	ctx := context.Background()

	x := newTestJob("ReportJob")
	var later []string
	runAndFinish(t, sk, rt, x, func(p redis.Pipeliner) {
		sk.failOn(p, x, "ArgumentError", 0)
		// Five more deaths, after x's, in the same transaction.
		for i := range 5 {
			j := newTestJob("FillerJob")
			j["retry_count"] = 0
			j["failed_at"] = time.Now().UnixMilli()
			j["error_class"] = "Filler"
			later = append(later, j["jid"].(string))
			score := float64(time.Now().Add(time.Duration(i+1)*time.Millisecond).UnixNano()) / 1e9
			p.ZAdd(ctx, sk.prefix+"dead", redis.Z{Score: score, Member: sk.json(j)})
		}
	})
	a := newTestJob("InvoiceJob")
	runAndFinish(t, sk, rt, a, nil)
	waitForSpan(t, rt.traces, "a done", func(s seenSpan) bool {
		return s.messageID == a["jid"] && s.event == "settle" && s.outcome == tap.Ack && s.inferred
	})
	waitForSpan(t, rt.traces, "x dead", hasSpan("dead_letter", x["jid"].(string)))
	assert.Equal(t, []string{"dead_letter//1"}, settles(rt, x["jid"].(string)))
	for _, jid := range later {
		assert.True(t, slices.ContainsFunc(spansOf(rt.traces), hasSpan("dead_letter", jid)), jid)
	}
}

// A sweep reads every member once, page by page, ties across pages
// included, and completes on the short page.
func TestSweepPages(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	client := newTestClient(t, addr)
	key := uniqueName("sweep")
	t.Cleanup(func() { client.Del(ctx, key) })
	scores := []float64{1, 1, 1, 1, 1, 2, 2, 3, 4.5, 4.5, 1e9 + 0.123456}
	var want []string
	for i, score := range scores {
		m := "m" + strconv.Itoa(i)
		want = append(want, m)
		require.NoError(t, client.ZAdd(ctx, key, redis.Z{Score: score, Member: m}).Err())
	}

	s := sweep{key: key, from: func(time.Time) string { return "-inf" }}
	for round := range 2 {
		start := time.Unix(int64(round+1), 0)
		var got []string
		for poll := 0; ; poll++ {
			require.Less(t, poll, 10, "the sweep ends")
			pipe := client.Pipeline()
			cmd := s.read(ctx, pipe, start.Add(time.Duration(poll)), 3)
			_, err := pipe.Exec(ctx)
			require.NoError(t, err)
			page := cmd.Val()
			for _, z := range page {
				got = append(got, z.Member.(string))
			}
			s.advance(page, 3)
			if !s.active {
				break
			}
		}
		assert.Equal(t, want, got)
		assert.Equal(t, start, s.completed, "the sweep that completed began then")
	}
}
