package kafkatapreceiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/kafkatapreceiver/internal/metadata"
)

// maxPollRecords bounds the records turned into one batch of spans.
const maxPollRecords = 10_000

// Records on a partition no watched group consumes are kept for
// unconsumedHorizonPolls polls, and at least minUnconsumedHorizon.
const (
	unconsumedHorizonPolls = 10
	minUnconsumedHorizon   = time.Minute
)

// defaultMetadataMinAge is the client's own least time between metadata
// refreshes, lowered when metadata_refresh_interval is shorter.
const defaultMetadataMinAge = 5 * time.Second

// kafkaTap reads the configured topics as a direct consumer (no group, no
// commits: the applications' groups never see it) and polls the watched
// groups' commits. Start and Shutdown are called by the collector's
// goroutine; everything else — the decoder, the partitions' pending
// records, the span and metric batches — is owned by the run goroutine.
type kafkaTap struct {
	cfg       *Config
	set       receiver.Settings
	logger    *zap.Logger
	tel       *tap.Telemetry
	evicted   metric.Int64Counter
	emitter   *tap.Emitter
	extraOpts []kgo.Opt // tests only: a dialer in front of the brokers

	cancel      context.CancelFunc
	done        chan struct{}
	client      *kgo.Client
	closeClient sync.Once
	// shutdownGrace bounds the wait, once Shutdown's deadline has passed
	// and the client is closed, for the run goroutine to end.
	shutdownGrace time.Duration

	// dialFailed is set when the client could not connect to a broker;
	// cancelPoll ends the poll waiting on the brokers, so the session
	// checks at once whether any broker still answers.
	dialFailed atomic.Bool
	cancelPoll atomic.Pointer[context.CancelFunc]

	// Owned by the run goroutine.
	ctx        context.Context
	started    time.Time
	admin      *kadm.Client
	decoder    *decoder
	partitions map[string]map[int32]*partitionState
	pending    int               // records held in partitions, at most MaxPendingRecords
	groupIndex map[string]int    // consumer group → its bit in pendingRecord.settled
	warned     map[string]string // what warnChanged last logged, by key
	spans      *tap.Spans
	backlog    *tap.Backlog
	obs        []tap.Observation
	nextPoll   time.Time
	lastPing   time.Time
	broker     string
}

func newTap(cfg *Config, set receiver.Settings) (*kafkaTap, error) {
	tel, err := tap.NewTelemetry(set.TelemetrySettings, system, metadata.ScopeName)
	if err != nil {
		return nil, err
	}
	evicted, err := set.MeterProvider.Meter(metadata.ScopeName).Int64Counter("flowtrace.tap.pending_evicted",
		metric.WithDescription("Tapped records forgotten before every watched group committed past them: their settlement is not reported."),
		metric.WithUnit("{record}"))
	if err != nil {
		return nil, err
	}
	emitter, err := tap.NewEmitter(set, system, tel)
	if err != nil {
		return nil, err
	}
	return &kafkaTap{
		cfg: cfg, set: set, logger: set.Logger, tel: tel, evicted: evicted, emitter: emitter,
		shutdownGrace: defaultShutdownGrace,
	}, nil
}

// defaultShutdownGrace is how long Shutdown waits past its deadline, once
// the client is closed, for the run goroutine to end.
const defaultShutdownGrace = 5 * time.Second

// Emitter hands the tap's spans and backlog points to its pipelines.
func (t *kafkaTap) Emitter() *tap.Emitter { return t.emitter }

// Start creates the client and starts reading; it does not wait for the
// brokers.
func (t *kafkaTap) Start(ctx context.Context, _ component.Host) error {
	opts, err := t.clientOpts(ctx)
	if err != nil {
		return err
	}
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	t.client = client
	t.admin = kadm.NewClient(client)
	t.decoder = newDecoder(t.cfg)
	t.partitions = map[string]map[int32]*partitionState{}
	t.groupIndex = map[string]int{}
	t.warned = map[string]string{}
	for i, g := range t.cfg.ConsumerGroups {
		t.groupIndex[g] = i
	}
	t.spans = tap.NewSpans(system, metadata.ScopeName)
	t.backlog = tap.NewBacklog(system, metadata.ScopeName)
	t.broker = t.cfg.Brokers[0]

	runCtx, cancel := context.WithCancel(context.Background())
	t.ctx, t.cancel, t.done = runCtx, cancel, make(chan struct{})
	go func() {
		defer close(t.done)
		tap.Run(runCtx, t.logger, t.tel, t.cfg.Reconnect, t.session)
	}()
	return nil
}

// Shutdown stops reading, closes the client and waits for the run
// goroutine to end: nothing is emitted once it returned nil. Past ctx's
// deadline it closes the client (ending any call waiting on the brokers)
// and waits a little longer; it returns an error if the goroutine is still
// running then, e.g. stuck in a next consumer that ignores cancellation,
// and a later Shutdown waits again. Safe without Start and more than once.
func (t *kafkaTap) Shutdown(ctx context.Context) error {
	if t.cancel == nil {
		return nil
	}
	t.cancel()
	select {
	case <-t.done:
		t.closeClient.Do(t.client.Close)
		return nil
	case <-ctx.Done():
	}
	t.closeClient.Do(t.client.Close)
	grace := time.NewTimer(t.shutdownGrace)
	defer grace.Stop()
	select {
	case <-t.done:
		return nil
	case <-grace.C:
		return fmt.Errorf("kafka tap still stopping: %w", ctx.Err())
	}
}

func (t *kafkaTap) clientOpts(ctx context.Context) ([]kgo.Opt, error) {
	t.started = time.Now()
	opts := []kgo.Opt{
		kgo.SeedBrokers(t.cfg.Brokers...),
		kgo.ClientID(t.cfg.ClientID),
		kgo.MetadataMaxAge(t.cfg.MetadataRefreshInterval),
		kgo.MetadataMinAge(min(t.cfg.MetadataRefreshInterval, defaultMetadataMinAge)),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.WithHooks(connectionHook{t}),
	}
	if len(t.cfg.TopicRegexes) == 0 {
		opts = append(opts, kgo.ConsumeTopics(t.cfg.Topics...))
	} else {
		exprs := append([]string(nil), t.cfg.TopicRegexes...)
		for _, topic := range t.cfg.Topics {
			exprs = append(exprs, "^"+regexp.QuoteMeta(topic)+"$")
		}
		opts = append(opts, kgo.ConsumeRegex(), kgo.ConsumeTopics(exprs...))
	}
	if t.cfg.StartAt == StartEarliest {
		opts = append(opts, kgo.ConsumeStartOffset(kgo.NewOffset().AtStart()))
	} else {
		// The end of the partitions there are now, the start of those
		// created later.
		opts = append(opts, kgo.ConsumeStartOffset(kgo.NewOffset().AfterMilli(t.started.UnixMilli())))
	}
	if tlsCfg := t.cfg.TLS.Get(); tlsCfg != nil {
		c, err := tlsCfg.LoadTLSConfig(ctx)
		if err != nil {
			return nil, fmt.Errorf("tls: %w", err)
		}
		opts = append(opts, kgo.DialTLSConfig(c))
	}
	if s := t.cfg.SASL.Get(); s != nil {
		switch s.Mechanism {
		case SASLScramSHA256:
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: string(s.Password)}.AsSha256Mechanism()))
		case SASLScramSHA512:
			opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: string(s.Password)}.AsSha512Mechanism()))
		default:
			opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: string(s.Password)}.AsMechanism()))
		}
	}
	return append(opts, t.extraOpts...), nil
}

// connectionHook tells the session when the client could not connect to
// a broker, so it checks the brokers without waiting for the next poll.
type connectionHook struct{ t *kafkaTap }

var _ kgo.HookBrokerConnect = connectionHook{}

func (h connectionHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		return
	}
	h.t.dialFailed.Store(true)
	if cancel := h.t.cancelPoll.Load(); cancel != nil {
		(*cancel)()
	}
}

// minPingInterval spaces the checks a failed connection prompts: a broker
// that stays down must not turn them into a busy loop.
const minPingInterval = time.Second

// ping checks that some broker answers.
func (t *kafkaTap) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	t.lastPing = time.Now()
	if err := t.client.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// session reads records and polls offsets while the brokers answer. It
// returns when none does: the time until one answers again is a gap. The
// client keeps its positions, so the next session goes on where this one
// stopped. One broker down while others answer is not a gap: the client
// moves on to the partitions' new leaders by itself.
func (t *kafkaTap) session(ctx context.Context, connected tap.Connected) error {
	t.dialFailed.Store(false)
	if err := t.ping(ctx); err != nil {
		return err
	}
	connected()
	for {
		if t.dialFailed.Load() && time.Since(t.lastPing) >= minPingInterval {
			t.dialFailed.Store(false)
			if err := t.ping(ctx); err != nil {
				return err
			}
		}
		if !time.Now().Before(t.nextPoll) {
			err := t.poll(ctx)
			if ferr := t.flush(ctx); ferr != nil {
				return ferr
			}
			if err != nil {
				return err
			}
			t.nextPoll = time.Now().Add(t.cfg.PollInterval)
		}
		deadline := t.nextPoll
		if t.dialFailed.Load() {
			deadline = earlier(deadline, t.lastPing.Add(minPingInterval))
		}
		pollCtx, cancel := context.WithDeadline(ctx, deadline)
		t.cancelPoll.Store(&cancel)
		fetches := t.client.PollRecords(pollCtx, maxPollRecords)
		t.cancelPoll.Store(nil)
		cancel()
		if ctx.Err() != nil || fetches.IsClientClosed() {
			return ctx.Err()
		}
		fetches.EachError(t.fetchError)
		fetches.EachRecord(t.observe)
		if err := t.flush(ctx); err != nil {
			return err
		}
	}
}

// fetchError logs a partition's fetch error: the client retries on its
// own, and a missing topic would otherwise be logged at every poll.
func (t *kafkaTap) fetchError(topic string, partition int32, err error) {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return
	}
	t.warnChanged(topic+"/"+strconv.FormatInt(int64(partition), 10), "kafka fetch failed", err,
		zap.String("topic", topic), zap.Int32("partition", partition))
}

// maxWarnings bounds the errors remembered for logging.
const maxWarnings = 1024

// warnChanged logs err at Warn the first time it is seen for key, and at
// Debug while it repeats.
func (t *kafkaTap) warnChanged(key, msg string, err error, fields ...zap.Field) {
	fields = append(fields, zap.Error(err))
	if t.warned[key] == err.Error() {
		t.logger.Debug(msg, fields...)
		return
	}
	if len(t.warned) >= maxWarnings {
		clear(t.warned)
	}
	t.warned[key] = err.Error()
	t.logger.Warn(msg, fields...)
}

// observe turns one record into observations and keeps it pending for the
// watched groups.
func (t *kafkaTap) observe(r *kgo.Record) {
	var dec decoded
	t.obs, dec = t.decoder.decode(r, t.obs[:0], t.decodeError)
	t.add(t.obs)
	groups := len(t.cfg.ConsumerGroups)
	if groups == 0 {
		return
	}
	if group, ok := t.groupIndex[dec.failedGroup]; ok {
		// The group gave up on the copied record: its commit past it is
		// not a success.
		if byPartition, ok := t.partitions[dec.failedTopic]; ok {
			if ps, ok := byPartition[dec.failedPartition]; ok {
				ps.fail(group, dec.failedOffset)
			}
		}
	}
	added, evicted := t.partition(r.Topic, r.Partition).add(pendingRecord{
		offset: r.Offset, published: r.Timestamp, messageID: dec.messageID,
		traceParent: dec.traceParent, attempt: dec.attempt, copy: dec.kind == recordDeadLetter,
	}, t.pending >= t.cfg.MaxPendingRecords, groups)
	t.pending += added
	if evicted {
		t.evicted.Add(t.ctx, 1, metric.WithAttributes(attribute.String("tap", system)))
	}
}

func (t *kafkaTap) decodeError(reason string, err error) {
	t.tel.DecodeError(t.ctx, reason, err)
}

func (t *kafkaTap) add(obs []tap.Observation) {
	if !t.emitter.HasTraces() {
		return
	}
	for i := range obs {
		switch err := t.spans.Add(&obs[i]); {
		case err == nil:
		case errors.Is(err, tap.ErrNoIdentity):
			t.tel.DecodeError(t.ctx, "identity", err)
		case errors.Is(err, tap.ErrBadTraceParent):
			t.tel.DecodeError(t.ctx, reasonTraceparent, err)
		default:
			t.tel.DecodeError(t.ctx, "observation", err)
		}
	}
}

func (t *kafkaTap) partition(topic string, partition int32) *partitionState {
	byPartition, ok := t.partitions[topic]
	if !ok {
		byPartition = map[int32]*partitionState{}
		t.partitions[topic] = byPartition
	}
	ps, ok := byPartition[partition]
	if !ok {
		ps = newPartitionState(topic, partition)
		byPartition[partition] = ps
	}
	return ps
}

// poll checks the brokers answer, then reads the watched groups' commits
// and the partitions' end offsets: commits settle tapped records, and give
// the groups' lag.
func (t *kafkaTap) poll(ctx context.Context) error {
	if err := t.ping(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, t.cfg.Timeout)
	defer cancel()
	groups := t.cfg.ConsumerGroups
	if len(groups) == 0 {
		return nil
	}
	topics := t.client.GetConsumeTopics()
	tapped := make(map[string]bool, len(topics))
	for _, topic := range topics {
		tapped[topic] = true
	}
	if len(topics) == 0 {
		t.forgetGone(tapped, nil, false)
		return nil
	}
	// The broker answered the ping: a failure here is the broker refusing
	// a request, not a lost connection.
	ends, err := t.admin.ListEndOffsets(ctx, topics...)
	if err != nil {
		t.warnChanged("\x00ends", "kafka end offsets unavailable; lag not reported", err)
	} else {
		delete(t.warned, "\x00ends")
	}
	// Read without error, ends lists every partition there is.
	endsComplete := err == nil
	t.forgetGone(tapped, ends, endsComplete)
	commits := t.admin.FetchManyOffsets(ctx, groups...)
	now := time.Now()
	for i, group := range groups {
		resp, ok := commits[group]
		if !ok || resp.Err != nil {
			if resp.Err != nil {
				t.warnChanged("\x00group\x00"+group, "kafka group offsets unavailable", resp.Err, zap.String("group", group))
			}
			continue
		}
		delete(t.warned, "\x00group\x00"+group)
		lags := map[string]*groupLag{}
		for _, o := range resp.Fetched.Sorted() {
			if o.Err != nil || o.At < 0 || !tapped[o.Topic] {
				continue
			}
			end, listed := ends.Lookup(o.Topic, o.Partition)
			if endsComplete && !listed {
				// A commit outlives its partition; the tap forgot it.
				continue
			}
			ps := t.partition(o.Topic, o.Partition)
			obs := ps.settle(t.obs[:0], i, group, o.At, now, t.started)
			t.add(obs)
			t.obs = obs[:0]

			if !listed || end.Err != nil {
				continue
			}
			lag := max(end.Offset-o.At, 0)
			seconds, known := 0.0, lag == 0
			if lag > 0 {
				seconds, known = ps.lagSeconds(o.At, now)
			}
			d := tap.Destination{System: system, Broker: t.broker, Destination: o.Topic, ConsumerGroup: group, Partition: ps.label}
			t.backlog.Int(tap.MetricPartitionLag, now, d, lag)
			if known {
				t.backlog.Float(tap.MetricPartitionLagSeconds, now, d, seconds)
			}
			agg, ok := lags[o.Topic]
			if !ok {
				agg = &groupLag{}
				lags[o.Topic] = agg
			}
			agg.add(lag, seconds, known)
		}
		for topic, agg := range lags {
			agg.emit(t.backlog, now, tap.Destination{System: system, Broker: t.broker, Destination: topic, ConsumerGroup: group})
		}
	}
	// A group's first commit on a partition comes within a poll or two of
	// it starting to consume; records no group took up by then are kept
	// a while longer, not forever.
	idleBefore := now.Add(-max(unconsumedHorizonPolls*t.cfg.PollInterval, minUnconsumedHorizon))
	for _, byPartition := range t.partitions {
		for _, ps := range byPartition {
			t.pending -= ps.prune(len(groups), idleBefore)
		}
	}
	return nil
}

// forgetGone drops what the tap holds for topics it no longer reads (a
// deleted topic a topic regex matched) and, when ends lists every partition
// there is, for partitions not in it (a deleted topic named in topics, one
// re-created with fewer partitions).
func (t *kafkaTap) forgetGone(tapped map[string]bool, ends kadm.ListedOffsets, endsComplete bool) {
	for topic, byPartition := range t.partitions {
		for partition, ps := range byPartition {
			if tapped[topic] && !endsComplete {
				continue
			}
			if _, listed := ends.Lookup(topic, partition); tapped[topic] && listed {
				continue
			}
			t.pending -= len(ps.live())
			delete(byPartition, partition)
		}
		if len(byPartition) == 0 {
			delete(t.partitions, topic)
		}
	}
}

// flush hands the gathered spans and backlog points on. Spans refused for
// now are retried until taken, the tap reading nothing meanwhile (the
// brokers keep the records), or until ctx ends: flush then returns ctx's
// error. Spans refused for good are dropped (the emitter logs them).
func (t *kafkaTap) flush(ctx context.Context) error {
	if err := t.emitter.Traces(ctx, t.spans); err != nil && ctx.Err() != nil {
		return ctx.Err()
	}
	_ = t.emitter.Metrics(ctx, t.backlog)
	return nil
}
