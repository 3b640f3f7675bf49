package redistapreceiver

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/redistapreceiver/internal/metadata"
)

// groupStep is one poll of a group: what XINFO GROUPS and XPENDING said.
type groupStep struct {
	lastDelivered string
	pending       []redis.XPendingExt
}

// pollSteps runs pollGroup over steps, one second apart, and returns the
// spans of each.
func pollSteps(t *testing.T, st *stream, before func(step int), steps ...groupStep) [][]seenSpan {
	return pollStepsScan(t, st, 100, before, steps...)
}

// pollStepsScan is pollSteps reading at most scan pending entries a poll.
func pollStepsScan(t *testing.T, st *stream, scan int64, before func(step int), steps ...groupStep) [][]seenSpan {
	t.Helper()
	tel := componenttest.NewTelemetry()
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	counters, err := tap.NewTelemetry(tel.NewTelemetrySettings(), systemRedis, metadata.ScopeName)
	require.NoError(t, err)
	start := time.UnixMilli(2000)
	var out [][]seenSpan
	for i, step := range steps {
		if before != nil {
			before(i)
		}
		pending := &redis.XPendingExtCmd{}
		undelivered := &redis.XMessageSliceCmd{}
		undelivered.SetVal(nil)
		b := &batch{ctx: context.Background(), tel: counters, spans: tap.NewSpans(systemRedis, metadata.ScopeName)}
		view := step.pending[:min(int64(len(step.pending)), scan)]
		pending.SetVal(view)
		p := groupPoll{info: redis.XInfoGroup{Name: "g", LastDeliveredID: step.lastDelivered, Pending: int64(len(step.pending)), Lag: -1}, pending: pending, undelivered: undelivered}
		st.pollGroup(p, start.Add(time.Duration(i-1)*time.Second), start.Add(time.Duration(i)*time.Second), scan, b, tap.NewBacklog(systemRedis, metadata.ScopeName))
		out = append(out, readSpans(b.spans.Take()))
	}
	return out
}

func summaries(spans []seenSpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.String())
	}
	return out
}

// A group's deliveries and acks, poll by poll: entries seen pending, left
// the pending list, delivered and acked between polls, redelivered, and
// delivered before the tap read them.
func TestPollGroup(t *testing.T) {
	st := &stream{name: "s", groups: map[string]*group{}, deadLettered: map[entryID]deadLetterEntry{}}
	for seq := range uint64(6) {
		st.entries = append(st.entries, entry{id: entryID{1000, seq + 1}})
	}
	all := st.entries
	st.entries = all[:4] // the tap has read 1000-1 .. 1000-4
	steps := pollSteps(t, st, func(step int) {
		if step == 3 {
			st.entries = all // and now the rest
		}
	},
		groupStep{lastDelivered: "1000-1"},
		groupStep{lastDelivered: "1000-3", pending: []redis.XPendingExt{{ID: "1000-3", Consumer: "c1", RetryCount: 1, Idle: 100 * time.Millisecond}}},
		groupStep{lastDelivered: "1000-6", pending: []redis.XPendingExt{{ID: "1000-3", Consumer: "c2", RetryCount: 2}}},
		groupStep{lastDelivered: "1000-6"},
	)
	assert.Empty(t, steps[0], "the first poll only learns where the group is")
	assert.Equal(t, []string{
		"receive s/1000-3 group=g attempt=1 outcome=",
		"receive s/1000-2 group=g attempt=1 outcome=",
		"settle s/1000-2 group=g attempt=1 outcome=ack",
	}, summaries(steps[1]))
	assert.Equal(t, []string{
		"receive s/1000-3 group=g attempt=2 outcome=",
		"receive s/1000-4 group=g attempt=1 outcome=",
		"settle s/1000-4 group=g attempt=1 outcome=ack",
	}, summaries(steps[2]), "1000-5 and 1000-6 wait until the tap has read them")
	assert.Equal(t, []string{
		"settle s/1000-3 group=g attempt=2 outcome=ack",
		"receive s/1000-5 group=g attempt=1 outcome=",
		"settle s/1000-5 group=g attempt=1 outcome=ack",
		"receive s/1000-6 group=g attempt=1 outcome=",
		"settle s/1000-6 group=g attempt=1 outcome=ack",
	}, summaries(steps[3]))
	for _, s := range steps[3] {
		if s.event == "settle" {
			assert.True(t, s.inferred)
		}
	}
}

// A dead-lettered entry is reported dead-lettered for the group that had
// it pending, once, and its ack is not reported.
func TestPollGroupDeadLetter(t *testing.T) {
	st := &stream{name: "s", groups: map[string]*group{}, deadLettered: map[entryID]deadLetterEntry{}}
	st.entries = []entry{{id: entryID{1000, 1}}, {id: entryID{1000, 2}}}
	var dead []seenSpan
	steps := pollSteps(t, st, func(step int) {
		if step == 2 {
			tel := componenttest.NewTelemetry()
			counters, err := tap.NewTelemetry(tel.NewTelemetrySettings(), systemRedis, metadata.ScopeName)
			require.NoError(t, err)
			b := &batch{ctx: context.Background(), tel: counters, spans: tap.NewSpans(systemRedis, metadata.ScopeName)}
			st.deadLetter(deadLetterEntry{at: time.UnixMilli(3500), original: entryID{1000, 1}, reason: "poison"}, b, 10)
			st.deadLetter(deadLetterEntry{at: time.UnixMilli(3600), original: entryID{1000, 2}, reason: "poison"}, b, 10)
			dead = readSpans(b.spans.Take())
		}
	},
		groupStep{lastDelivered: "0-0"},
		groupStep{lastDelivered: "1000-2", pending: []redis.XPendingExt{{ID: "1000-1", RetryCount: 1}, {ID: "1000-2", RetryCount: 1}}},
		groupStep{lastDelivered: "1000-2", pending: []redis.XPendingExt{{ID: "1000-1", RetryCount: 1}, {ID: "1000-2", RetryCount: 1}}},
		groupStep{lastDelivered: "1000-2"},
	)
	assert.Equal(t, []string{
		"dead_letter s/1000-1 group=g attempt=1 outcome=",
		"dead_letter s/1000-2 group=g attempt=1 outcome=",
	}, summaries(dead), "pending when dead-lettered: reported at once")
	assert.Empty(t, steps[2])
	assert.Empty(t, steps[3], "acked after being dead-lettered: no ack, no second dead letter")
}

// An entry read, dead-lettered and acked between two polls: delivered and
// dead-lettered, not acked.
func TestPollGroupDeadLetterBetweenPolls(t *testing.T) {
	st := &stream{name: "s", groups: map[string]*group{}, deadLettered: map[entryID]deadLetterEntry{}}
	st.entries = []entry{{id: entryID{1000, 1}}}
	steps := pollSteps(t, st, func(step int) {
		if step == 1 {
			st.deadLettered[entryID{1000, 1}] = deadLetterEntry{at: time.UnixMilli(2500), original: entryID{1000, 1}, reason: "poison"}
		}
	},
		groupStep{lastDelivered: "0-0"},
		groupStep{lastDelivered: "1000-1"},
	)
	assert.Equal(t, []string{
		"receive s/1000-1 group=g attempt=1 outcome=",
		"dead_letter s/1000-1 group=g attempt=1 outcome=",
	}, summaries(steps[1]))
	assert.Equal(t, "poison", steps[1][1].reason)
}

// With more pending entries than one poll reads, entries beyond the part
// read are not taken as acked.
func TestPollGroupPartialView(t *testing.T) {
	st := &stream{name: "s", groups: map[string]*group{}, deadLettered: map[entryID]deadLetterEntry{}}
	for seq := range uint64(4) {
		st.entries = append(st.entries, entry{id: entryID{1000, seq + 1}})
	}
	pending := func(seqs ...int) []redis.XPendingExt {
		var out []redis.XPendingExt
		for _, seq := range seqs {
			out = append(out, redis.XPendingExt{ID: "1000-" + strconv.Itoa(seq), RetryCount: 1})
		}
		return out
	}
	steps := pollStepsScan(t, st, 2, nil,
		groupStep{lastDelivered: "0-0"},
		groupStep{lastDelivered: "1000-4", pending: pending(1, 2, 3, 4)},
		groupStep{lastDelivered: "1000-4", pending: pending(2, 3, 4)},
		groupStep{lastDelivered: "1000-4", pending: pending(4)},
	)
	assert.Equal(t, []string{
		"receive s/1000-1 group=g attempt=1 outcome=",
		"receive s/1000-2 group=g attempt=1 outcome=",
	}, summaries(steps[1]), "1000-3 and 1000-4 lie beyond the part read: not taken as acked")
	assert.Equal(t, []string{
		"receive s/1000-3 group=g attempt=1 outcome=",
		"settle s/1000-1 group=g attempt=1 outcome=ack",
	}, summaries(steps[2]))
	assert.ElementsMatch(t, []string{
		"receive s/1000-4 group=g attempt=1 outcome=",
		"settle s/1000-2 group=g attempt=1 outcome=ack",
		"settle s/1000-3 group=g attempt=1 outcome=ack",
	}, summaries(steps[3]))
}
