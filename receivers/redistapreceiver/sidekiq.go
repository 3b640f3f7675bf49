package redistapreceiver

import (
	"context"
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/redis/go-redis/v9"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// sidekiqState is what the tap knows of Sidekiq's jobs. The session's main
// loop owns it.
//
// Sidekiq keeps, in Redis: the set "queues" of queue names; a list
// "queue:<name>" per queue, jobs pushed at its head (LPUSH) and fetched
// from its tail (BRPOP); the sorted sets "retry" (scored by when the job
// runs again) and "dead" (scored by when it died); the set "processes" of
// running Sidekiq processes, each with a hash "<identity>:work" of the
// jobs its threads run, written every heartbeat. All keys take the
// namespace prefix when one is configured.
type sidekiqState struct {
	cfg    *SidekiqConfig
	prefix string
	jobs   map[string]*trackedJob
	// order is the order jobs were first seen in, for the bound on jobs.
	order []string
	// bad are the hashes of jobs that could not be read, counted once.
	bad      map[uint64]struct{}
	lastPoll time.Time
	// retry and dead page through the retry and dead sets: a job is taken
	// as done only once both were read whole since its fate was settled.
	// The retry sweep covers the whole set; the dead sweep what died since
	// the last complete sweep began, less settle_after for the clocks of
	// Sidekiq's hosts.
	retry, dead sweep
	keys        keyErrors
}

// maxBadJobs bounds the unreadable jobs remembered.
const maxBadJobs = 10_000

type jobState uint8

const (
	jobQueued   jobState = iota + 1 // waiting in its queue
	jobLeft                         // fetched from its queue: running or done
	jobRetrying                     // in the retry set
	jobDead                         // in the dead set
	jobDone                         // reported acked
)

type trackedJob struct {
	queue, operation, traceParent string
	state                         jobState
	attempt                       int // the attempt queued, running or last failed
	published                     int // the highest attempt whose publish was reported
	failed                        int // the highest attempt reported failed
	leftAt, runningAt             time.Time
	retryScore                    float64
}

func newSidekiqState(cfg *SidekiqConfig) *sidekiqState {
	s := &sidekiqState{cfg: cfg, jobs: map[string]*trackedJob{}, bad: map[uint64]struct{}{}, keys: keyErrors{}}
	if cfg.Namespace != "" {
		s.prefix = cfg.Namespace + ":"
	}
	s.retry = sweep{key: s.prefix + "retry", from: func(time.Time) string { return "-inf" }}
	s.dead = sweep{key: s.prefix + "dead", from: func(start time.Time) string {
		if !s.dead.completed.IsZero() {
			start = s.dead.completed
		}
		return formatScore(float64(start.Add(-cfg.SettleAfter).UnixNano()) / 1e9)
	}}
	return s
}

// sidekiqPoll is what one poll read.
type sidekiqPoll struct {
	queues    []string
	lengths   []*redis.IntCmd
	tails     []*redis.StringSliceCmd
	retryHead *redis.ZSliceCmd
	// retryPage is the retry sweep's page; nil when a sweep starts, the
	// head being its first page.
	retryPage *redis.ZSliceCmd
	dead      *redis.ZSliceCmd
	processes *redis.StringSliceCmd
	workKeys  []string
	work      []*redis.MapStringStringCmd
}

func (s *sidekiqState) read(ctx context.Context, client *redis.Client, now time.Time, out *batch) (*sidekiqPoll, error) {
	p := &sidekiqPoll{queues: s.cfg.Queues}
	if len(p.queues) == 0 {
		key := s.prefix + "queues"
		queues, err := client.SMembers(ctx, key).Result()
		if err != nil && !isReply(err) {
			return nil, fmt.Errorf("sidekiq queues: %w", err)
		}
		if s.keys.check(key, err, out) {
			p.queues = queues
		}
	}
	pipe := client.Pipeline()
	limit := s.cfg.ScanLimit
	for _, q := range p.queues {
		key := s.prefix + "queue:" + q
		p.lengths = append(p.lengths, pipe.LLen(ctx, key))
		// The oldest jobs, the tail last: the one LINDEX -1 returns, whose
		// age is Sidekiq's queue latency.
		p.tails = append(p.tails, pipe.LRange(ctx, key, -limit, -1))
	}
	// The head of the retry set, the jobs about to run again, is read at
	// every poll: that is where jobs leave it.
	p.retryHead = pipe.ZRangeWithScores(ctx, s.retry.key, 0, limit-1)
	if s.retry.active {
		p.retryPage = s.retry.read(ctx, pipe, now, limit)
	}
	p.dead = s.dead.read(ctx, pipe, now, limit)
	p.processes = pipe.SMembers(ctx, s.prefix+"processes")
	if err := execPipeline(ctx, pipe); err != nil {
		s.retry.active, s.dead.active = false, false
		return nil, fmt.Errorf("sidekiq: %w", err)
	}
	procs, err := p.processes.Result()
	if s.keys.check(s.prefix+"processes", err, out) && len(procs) > 0 {
		pipe = client.Pipeline()
		for _, identity := range procs {
			key := s.prefix + identity + ":work"
			p.workKeys = append(p.workKeys, key)
			p.work = append(p.work, pipe.HGetAll(ctx, key))
		}
		if err := execPipeline(ctx, pipe); err != nil {
			s.retry.active, s.dead.active = false, false
			return nil, fmt.Errorf("sidekiq work: %w", err)
		}
	}
	return p, nil
}

// poll reads Sidekiq's queues, retry and dead sets and running jobs.
func (s *sidekiqState) poll(ctx context.Context, client *redis.Client, now time.Time, backlog *tap.Backlog, out *batch) error {
	p, err := s.read(ctx, client, now, out)
	if err != nil {
		return err
	}
	lastPoll := s.lastPoll
	s.lastPoll = now
	decode := func(raw string) (job, bool) {
		j, err := decodeJob([]byte(raw))
		if err != nil {
			s.badInput(raw, err, out)
			return job{}, false
		}
		if j.cleaned {
			s.badInput(raw, &decodeError{reasonText, errText}, out)
		}
		return j, true
	}

	// Queues: jobs waiting, and jobs that left the tail since the last
	// poll (a job only moves towards the tail, so one seen there and gone
	// now was fetched).
	seen := map[string]bool{}
	queuesRead := make(map[string]bool, len(p.queues))
	for i, q := range p.queues {
		tail, err := p.tails[i].Result()
		if !s.keys.check(s.prefix+"queue:"+q, err, out) {
			continue
		}
		queue, _ := tap.CleanText(q, tap.MaxText)
		queuesRead[queue] = true
		latency := 0.0
		for k, raw := range tail {
			j, ok := decode(raw)
			if !ok {
				continue
			}
			if j.Queue == "" {
				j.Queue = queue
			}
			seen[j.JID] = true
			t := s.track(j)
			attempt := j.enqueuedAttempt()
			at, _ := j.enqueuedTime()
			s.publish(t, j.JID, attempt, at, out)
			t.state, t.attempt, t.queue = jobQueued, attempt, queue
			// Sidekiq's latency: now − enqueued_at of the job at the tail,
			// 0 without one.
			if enqueuedAt, ok := sidekiqTime(j.EnqueuedAt); ok && k == len(tail)-1 {
				latency = now.Sub(enqueuedAt).Seconds()
			}
		}
		dest := tap.Destination{System: systemSidekiq, Destination: queue}
		if n, err := p.lengths[i].Result(); err == nil {
			backlog.Int(model.MetricBacklogDepth, now, dest, n)
		}
		backlog.Float(model.MetricBacklogLagSeconds, now, dest, latency)
	}

	// Dead set: the last failure of jobs out of retries, read by when
	// they died.
	dead, err := p.dead.Result()
	s.keys.check(s.dead.key, err, out)
	s.dead.advance(dead, s.cfg.ScanLimit)
	for _, z := range dead {
		raw, _ := z.Member.(string)
		j, ok := decode(raw)
		if !ok {
			continue
		}
		seen[j.JID] = true
		t := s.track(j)
		if t.state == jobDead {
			continue
		}
		attempt := j.failedAttempt()
		at, _ := j.enqueuedTime()
		s.publish(t, j.JID, attempt, at, out)
		diedAt, ok := unixSeconds(z.Score)
		if !ok {
			diedAt = now
		}
		out.add(&tap.Observation{
			Kind: tap.DeadLetter, Time: diedAt, System: systemSidekiq, Destination: t.queue, MessageID: j.JID,
			ConsumerGroup: t.queue, Operation: t.operation, Attempt: attempt, Reason: j.ErrorClass, TraceParent: t.traceParent,
		})
		t.state, t.attempt, t.failed = jobDead, attempt, max(t.failed, attempt)
	}

	// Retry set: failed attempts waiting to run again; its head, and the
	// sweep's page through the rest.
	head, err := p.retryHead.Result()
	headComplete := !s.keys.check(s.retry.key, err, out) || int64(len(head)) < s.cfg.ScanLimit
	maxScore := 0.0
	if len(head) > 0 {
		maxScore = head[len(head)-1].Score
	}
	retry := head
	if p.retryPage == nil {
		s.retry.active, s.retry.started = true, now
		s.retry.advance(head, s.cfg.ScanLimit)
	} else {
		page, err := p.retryPage.Result()
		s.retry.advance(page, s.cfg.ScanLimit)
		if err == nil {
			retry = append(retry[:len(retry):len(retry)], page...)
		}
	}
	for _, z := range retry {
		raw, _ := z.Member.(string)
		j, ok := decode(raw)
		if !ok {
			continue
		}
		seen[j.JID] = true
		t := s.track(j)
		attempt := j.failedAttempt()
		t.retryScore = z.Score
		if t.state == jobRetrying && t.failed >= attempt {
			continue
		}
		at, _ := j.enqueuedTime()
		s.publish(t, j.JID, attempt, at, out)
		if t.failed < attempt {
			failedAt, ok := j.failedTime()
			if !ok {
				failedAt = now
			}
			out.add(&tap.Observation{
				Kind: tap.Settle, Time: failedAt, System: systemSidekiq, Destination: t.queue, MessageID: j.JID,
				ConsumerGroup: t.queue, Operation: t.operation, Attempt: attempt, Outcome: tap.Nack, Reason: j.ErrorClass,
				TraceParent: t.traceParent,
			})
		}
		t.state, t.attempt, t.failed = jobRetrying, attempt, max(t.failed, attempt)
	}

	running := map[string]bool{}
	for i, w := range p.work {
		work, err := w.Result()
		if !s.keys.check(p.workKeys[i], err, out) {
			continue
		}
		for _, raw := range work {
			if jid, err := decodeWork([]byte(raw)); err == nil {
				running[jid] = true
			} else {
				s.badInput(raw, err, out)
			}
		}
	}

	// Jobs are taken as done once both sets were read whole, in sweeps
	// that began settle_after after the job was last seen.
	swept := s.retry.completed
	if s.dead.completed.Before(swept) {
		swept = s.dead.completed
	}

	// Jobs no longer where they were.
	for jid, t := range s.jobs {
		if seen[jid] {
			continue
		}
		switch t.state {
		case jobQueued:
			if !queuesRead[t.queue] {
				continue // its queue was not read this time
			}
			// Fetched: delivered to a Sidekiq thread.
			t.state, t.leftAt = jobLeft, midpoint(lastPoll, now, time.Time{})
			out.add(s.consumerSide(tap.Deliver, jid, t, t.leftAt))
		case jobRetrying:
			if !headComplete && t.retryScore > maxScore {
				continue // beyond the head: it cannot have left yet
			}
			// Back in a queue and fetched since: the next attempt runs.
			t.state, t.attempt, t.leftAt = jobLeft, t.attempt+1, midpoint(lastPoll, now, time.Time{})
			out.add(s.consumerSide(tap.Deliver, jid, t, t.leftAt))
		}
		if t.state != jobLeft {
			continue
		}
		if running[jid] {
			t.runningAt = now
			continue
		}
		// Done once it has been gone long enough to have shown up running,
		// in the retry set or in the dead set, and both sets were read
		// whole since.
		last := t.leftAt
		if t.runningAt.After(last) {
			last = t.runningAt
		}
		if !swept.IsZero() && swept.Sub(last) >= s.cfg.SettleAfter {
			o := s.consumerSide(tap.Settle, jid, t, last)
			o.Outcome, o.Inferred = tap.Ack, true
			out.add(o)
			t.state = jobDone
		}
	}
	return nil
}

// badInput counts a job the tap cannot read once, however many polls see
// it waiting.
func (s *sidekiqState) badInput(raw string, err error, out *batch) {
	h := xxhash.Sum64String(raw)
	if _, ok := s.bad[h]; ok {
		return
	}
	if len(s.bad) >= maxBadJobs {
		clear(s.bad)
	}
	s.bad[h] = struct{}{}
	out.decodeError(err)
}

// track returns the state of j's job, remembering it if new; past the
// bound the job first seen longest ago is forgotten.
func (s *sidekiqState) track(j job) *trackedJob {
	t, ok := s.jobs[j.JID]
	if !ok {
		if len(s.order) >= s.cfg.MaxTrackedJobs {
			delete(s.jobs, s.order[0])
			s.order = s.order[1:]
		}
		t = &trackedJob{}
		s.jobs[j.JID] = t
		s.order = append(s.order, j.JID)
	}
	if j.Queue != "" {
		t.queue = j.Queue
	}
	if op := j.operation(); op != "" {
		t.operation = op
	}
	if j.TraceParent != "" {
		t.traceParent = j.TraceParent
	}
	return t
}

// publish reports the push of a job's attempt once.
func (s *sidekiqState) publish(t *trackedJob, jid string, attempt int, at time.Time, out *batch) {
	if t.published >= attempt || at.IsZero() {
		return
	}
	t.published = attempt
	out.add(&tap.Observation{
		Kind: tap.Publish, Time: at, System: systemSidekiq, Destination: t.queue, MessageID: jid,
		Operation: t.operation, Attempt: attempt, TraceParent: t.traceParent,
	})
}

func (s *sidekiqState) consumerSide(kind tap.Kind, jid string, t *trackedJob, at time.Time) *tap.Observation {
	return &tap.Observation{
		Kind: kind, Time: at, System: systemSidekiq, Destination: t.queue, MessageID: jid,
		ConsumerGroup: t.queue, Operation: t.operation, Attempt: t.attempt, TraceParent: t.traceParent,
	}
}
