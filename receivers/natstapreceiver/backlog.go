package natstapreceiver

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/natstapreceiver/internal/metadata"
)

// metricRedelivered is the number of a consumer's messages delivered more
// than once and not yet acked. It is the NATS tap's own gauge: exported to
// Prometheus, not stored as a backlog sample.
const metricRedelivered = "flowtrace.backlog.redelivered"

// poll reads every attached stream's state and its durable consumers' and
// sends them as backlog gauges.
func (s *session) poll(ctx context.Context) {
	t := s.t
	b := tap.NewBacklog(system, metadata.ScopeName)
	for st, a := range s.attached {
		s.pollStream(ctx, b, st, a)
	}
	_ = t.emitter.Metrics(ctx, b)
}

func (s *session) pollStream(ctx context.Context, b *tap.Backlog, st *streamState, a *attachment) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	info, err := a.stream.Info(rctx)
	if err != nil {
		s.t.logger.Debug("stream state unavailable", zap.String("stream", st.name), zap.Error(err))
		return
	}
	// Read before the floors: what was handled by then is in.
	settled := a.endsHandled()
	now := time.Now()
	elapsed := now.Sub(st.lastPoll).Seconds()
	rates := !st.lastPoll.IsZero() && elapsed > 0
	d := tap.Destination{System: system, Broker: s.broker, Destination: st.name}
	b.Int(model.MetricBacklogDepth, now, d, int64(min(info.State.Msgs, 1<<62)))
	if rates && info.State.LastSeq >= st.lastSeq {
		b.Float(model.MetricBacklogPublishRate, now, d, float64(info.State.LastSeq-st.lastSeq)/elapsed)
	}

	consumed := map[string]uint64{}
	present := map[string]bool{}
	var inferred []inferredFor
	oldestKept := info.State.LastSeq
	consumers := a.stream.ListConsumers(rctx)
	for ci := range consumers.Info() {
		if ci.Config.Durable == "" {
			// Ephemeral consumers (readers like this tap's own, mirrors,
			// one-off clients) come and go under random names.
			continue
		}
		g := d
		g.ConsumerGroup = ci.Name
		b.Int(model.MetricBacklogDepth, now, g, int64(min(ci.NumPending, 1<<62)))
		b.Int(model.MetricBacklogLag, now, g, int64(min(ci.NumPending, 1<<62)))
		b.Int(model.MetricBacklogUnacked, now, g, int64(ci.NumAckPending))
		b.Int(metricRedelivered, now, g, int64(ci.NumRedelivered))
		attachedConsumers := int64(ci.NumWaiting)
		if ci.PushBound {
			attachedConsumers = 1
		}
		b.Int(model.MetricBacklogConsumers, now, g, attachedConsumers)
		oldest := max(ci.AckFloor.Stream+1, info.State.FirstSeq)
		oldestKept = min(oldestKept, oldest)
		if ci.NumPending == 0 && ci.NumAckPending == 0 {
			b.Float(model.MetricBacklogLagSeconds, now, g, 0)
		} else if at, ok := st.stamps.storedAt(oldest); ok {
			b.Float(model.MetricBacklogLagSeconds, now, g, now.Sub(at).Seconds())
		}
		present[ci.Name] = true
		filters := ci.Config.FilterSubjects
		if ci.Config.FilterSubject != "" {
			filters = append(filters, ci.Config.FilterSubject)
		}
		acks := st.settle.poll(ci.Name, filters, ci.AckFloor.Stream, ci.AckFloor.Last, now, settled)
		inferred = append(inferred, inferredFor{consumer: ci.Name, acks: acks})
		consumed[ci.Name] = ci.Delivered.Consumer
		if prev, ok := st.lastConsumed[ci.Name]; ok && rates && ci.Delivered.Consumer >= prev {
			b.Float(model.MetricBacklogDeliverRate, now, g, float64(ci.Delivered.Consumer-prev)/elapsed)
		}
	}
	if err := consumers.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		s.t.logger.Debug("consumer list incomplete", zap.String("stream", st.name), zap.Error(err))
	} else {
		st.settle.forget(present)
	}
	for _, f := range inferred {
		for _, a := range f.acks {
			s.t.inferAck(ctx, st, f.consumer, a)
		}
	}
	st.stamps.forget(oldestKept)
	st.lastPoll, st.lastSeq, st.lastConsumed = now, info.State.LastSeq, consumed
}

// inferredFor is the acks inferred for one consumer at a poll.
type inferredFor struct {
	consumer string
	acks     []inferredAck
}

// inferAck emits an ack the tap did not see but the consumer's ack floor
// tells of.
func (t *natsTap) inferAck(ctx context.Context, st *streamState, consumer string, a inferredAck) {
	id := messageID(st.name, a.seq)
	t.observe(ctx, &tap.Observation{
		Kind:          tap.Settle,
		Time:          a.at,
		System:        system,
		Destination:   st.name,
		MessageID:     id,
		ConsumerGroup: consumer,
		Attempt:       a.attempt,
		Outcome:       tap.Ack,
		Inferred:      true,
		TraceParent:   t.links.get(id),
	})
}
