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
	s := &sidekiqState{cfg: cfg, jobs: map[string]*trackedJob{}, bad: map[uint64]struct{}{}}
	if cfg.Namespace != "" {
		s.prefix = cfg.Namespace + ":"
	}
	return s
}

// sidekiqPoll is what one poll read.
type sidekiqPoll struct {
	queues    []string
	lengths   []*redis.IntCmd
	tails     []*redis.StringSliceCmd
	retryLen  *redis.IntCmd
	retry     *redis.ZSliceCmd
	dead      *redis.ZSliceCmd
	processes *redis.StringSliceCmd
	work      []*redis.MapStringStringCmd
}

func (s *sidekiqState) read(ctx context.Context, client *redis.Client) (*sidekiqPoll, error) {
	p := &sidekiqPoll{queues: s.cfg.Queues}
	if len(p.queues) == 0 {
		queues, err := client.SMembers(ctx, s.prefix+"queues").Result()
		if err != nil {
			return nil, fmt.Errorf("sidekiq queues: %w", err)
		}
		p.queues = queues
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
	p.retryLen = pipe.ZCard(ctx, s.prefix+"retry")
	p.retry = pipe.ZRangeWithScores(ctx, s.prefix+"retry", 0, limit-1)
	p.dead = pipe.ZRevRangeWithScores(ctx, s.prefix+"dead", 0, limit-1)
	p.processes = pipe.SMembers(ctx, s.prefix+"processes")
	if err := execPipeline(ctx, pipe); err != nil {
		return nil, fmt.Errorf("sidekiq: %w", err)
	}
	if procs, err := p.processes.Result(); err == nil && len(procs) > 0 {
		pipe = client.Pipeline()
		for _, identity := range procs {
			p.work = append(p.work, pipe.HGetAll(ctx, s.prefix+identity+":work"))
		}
		if err := execPipeline(ctx, pipe); err != nil {
			return nil, fmt.Errorf("sidekiq work: %w", err)
		}
	}
	return p, nil
}

// poll reads Sidekiq's queues, retry and dead sets and running jobs.
func (s *sidekiqState) poll(ctx context.Context, client *redis.Client, now time.Time, backlog *tap.Backlog, out *batch) error {
	p, err := s.read(ctx, client)
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
		return j, true
	}

	// Queues: jobs waiting, and jobs that left the tail since the last
	// poll (a job only moves towards the tail, so one seen there and gone
	// now was fetched).
	seen := map[string]bool{}
	queuesRead := make(map[string]bool, len(p.queues))
	for i, q := range p.queues {
		tail, err := p.tails[i].Result()
		if err != nil {
			continue
		}
		queuesRead[q] = true
		latency := 0.0
		for k, raw := range tail {
			j, ok := decode(raw)
			if !ok {
				continue
			}
			if j.Queue == "" {
				j.Queue = q
			}
			seen[j.JID] = true
			t := s.track(j)
			attempt := j.enqueuedAttempt()
			at, _ := j.enqueuedTime()
			s.publish(t, j.JID, attempt, at, out)
			t.state, t.attempt, t.queue = jobQueued, attempt, q
			// Sidekiq's latency: now − enqueued_at of the job at the tail,
			// 0 without one.
			if enqueuedAt, ok := sidekiqTime(j.EnqueuedAt); ok && k == len(tail)-1 {
				latency = now.Sub(enqueuedAt).Seconds()
			}
		}
		dest := tap.Destination{System: systemSidekiq, Destination: q}
		if n, err := p.lengths[i].Result(); err == nil {
			backlog.Int(model.MetricBacklogDepth, now, dest, n)
		}
		backlog.Float(model.MetricBacklogLagSeconds, now, dest, latency)
	}

	// Dead set: the last failure of jobs out of retries.
	dead, _ := p.dead.Result()
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

	// Retry set: failed attempts waiting to run again.
	retry, _ := p.retry.Result()
	retryComplete := false
	if n, err := p.retryLen.Result(); err == nil {
		retryComplete = n <= int64(len(retry))
	}
	maxScore := 0.0
	for _, z := range retry {
		maxScore = max(maxScore, z.Score)
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
	for _, w := range p.work {
		for _, raw := range w.Val() {
			if jid, err := decodeWork([]byte(raw)); err == nil {
				running[jid] = true
			} else {
				s.badInput(raw, err, out)
			}
		}
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
			if !retryComplete && t.retryScore > maxScore {
				continue // beyond what this poll read
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
		// in the retry set or in the dead set; the retry set must have
		// been read whole.
		last := t.leftAt
		if t.runningAt.After(last) {
			last = t.runningAt
		}
		if retryComplete && now.Sub(last) >= s.cfg.SettleAfter {
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
