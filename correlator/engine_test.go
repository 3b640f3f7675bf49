package correlator

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/correlator/flowsim"
	"github.com/flowtrace/flowtrace/model"
)

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// final runs events through a new engine in the given order, lets every
// flow finish, and returns the newest live version of each hop and flow.
func final(t *testing.T, cfg Config, events []model.Event) (map[string]model.Hop, map[string]model.Flow) {
	t.Helper()
	e, err := New(cfg)
	require.NoError(t, err)
	var all Changes
	for i := range events {
		e.Add(at(i), &events[i])
		if i%3 == 0 {
			appendChanges(&all, e.Flush())
		}
	}
	e.Advance(at(len(events)).Add(e.cfg.FlowIdle))
	appendChanges(&all, e.Flush())
	return latest(all)
}

func appendChanges(all *Changes, c Changes) {
	all.Hops = append(all.Hops, c.Hops...)
	all.Flows = append(all.Flows, c.Flows...)
}

func latest(c Changes) (map[string]model.Hop, map[string]model.Flow) {
	hops := map[string]model.Hop{}
	for _, h := range c.Hops {
		key := h.FlowID + "/" + h.HopID
		if old, ok := hops[key]; !ok || h.Version > old.Version {
			hops[key] = h
		}
	}
	flows := map[string]model.Flow{}
	for _, f := range c.Flows {
		if old, ok := flows[f.ID]; !ok || f.Version > old.Version {
			flows[f.ID] = f
		}
	}
	for k, h := range hops {
		if h.Deleted {
			delete(hops, k)
		}
	}
	for k, f := range flows {
		if f.Deleted {
			delete(flows, k)
		}
	}
	return hops, flows
}

// shape renders the final state without versions, for comparing orders.
func shape(hops map[string]model.Hop, flows map[string]model.Flow) []string {
	var out []string
	for _, h := range hops {
		h.Version, h.FirstSeen, h.Counted = 0, time.Time{}, false
		out = append(out, fmt.Sprintf("hop %+v", h))
	}
	for _, f := range flows {
		f.Version, f.FirstSeen = 0, time.Time{}
		out = append(out, fmt.Sprintf("flow %+v", f))
	}
	sort.Strings(out)
	return out
}

// chain: api publishes m1 to orders; billing consumes it and, in the same
// trace, publishes m2 to invoices; mailer consumes m2 after one retry.
func chain() []model.Event {
	return []model.Event{
		{Time: at(0), Kind: model.EventPublish, System: "rabbitmq", Destination: "orders", MessageID: "m1", Service: "api", TraceID: "t1", SpanID: "p1"},
		{Time: at(20), Kind: model.EventDeliver, System: "rabbitmq", Destination: "orders", MessageID: "m1", Service: "billing", TraceID: "t2", SpanID: "r1", Links: []model.SpanRef{{TraceID: "t1", SpanID: "p1"}}},
		{Time: at(25), Kind: model.EventProcess, System: "rabbitmq", Destination: "orders", MessageID: "m1", Service: "billing", TraceID: "t2", SpanID: "c1", ParentSpanID: "r1", Duration: 50 * time.Millisecond},
		{Time: at(40), Kind: model.EventPublish, System: "rabbitmq", Destination: "invoices", MessageID: "m2", Service: "billing", TraceID: "t2", SpanID: "p2", ParentSpanID: "c1"},
		{Time: at(100), Kind: model.EventProcess, System: "rabbitmq", Destination: "invoices", MessageID: "m2", Service: "mailer", TraceID: "t3", SpanID: "c2", Attempt: 1, Outcome: "error", Duration: 5 * time.Millisecond, Links: []model.SpanRef{{TraceID: "t2", SpanID: "p2"}}},
		{Time: at(200), Kind: model.EventProcess, System: "rabbitmq", Destination: "invoices", MessageID: "m2", Service: "mailer", TraceID: "t4", SpanID: "c3", Attempt: 2, Duration: 7 * time.Millisecond, Links: []model.SpanRef{{TraceID: "t2", SpanID: "p2"}}},
	}
}

func TestChain(t *testing.T) {
	hops, flows := final(t, Config{}, chain())
	require.Len(t, flows, 1)
	var flow model.Flow
	for _, f := range flows {
		flow = f
	}
	assert.Equal(t, model.FlowCompleted, flow.Status)
	assert.Equal(t, "api orders", flow.Name)
	assert.Equal(t, uint32(2), flow.HopCount)
	assert.Equal(t, uint32(1), flow.Retries)
	assert.Equal(t, at(0), flow.Start)
	assert.Equal(t, at(207), flow.End)
	require.Len(t, hops, 2)
	byMessage := map[string]model.Hop{}
	for _, h := range hops {
		byMessage[h.MessageID] = h
		assert.Equal(t, flow.ID, h.FlowID)
	}
	m1, m2 := byMessage["m1"], byMessage["m2"]
	assert.Equal(t, 20*time.Millisecond, m1.QueueWait)
	assert.Equal(t, 50*time.Millisecond, m1.Processing)
	assert.Equal(t, model.HopAcked, m1.Outcome)
	assert.Equal(t, "billing", m1.Consumer)
	assert.Equal(t, uint16(2), m2.Attempts)
	assert.Equal(t, 60*time.Millisecond, m2.QueueWait)
	assert.Equal(t, 7*time.Millisecond, m2.Processing)
	assert.Equal(t, m1.HopID, m2.ParentHopID)
	assert.Equal(t, []string{m1.HopID, m2.HopID}, flow.CriticalPath)
}

func TestAnyOrderAndDuplicatesGiveTheSameFlows(t *testing.T) {
	want := shape(final(t, Config{}, chain()))
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		events := chain()
		events = append(events, events[rng.IntN(len(events))])
		rng.Shuffle(len(events), func(a, b int) { events[a], events[b] = events[b], events[a] })
		require.Equal(t, want, shape(final(t, Config{}, events)), "permutation %d", i)
	}
}

func TestFanOutMakesOneHopPerGroup(t *testing.T) {
	events := []model.Event{
		{Time: at(0), Kind: model.EventPublish, System: "kafka", Destination: "orders", MessageID: "orders/0/1", Service: "api", TraceID: "t1", SpanID: "p1"},
		{Time: at(10), Kind: model.EventProcess, System: "kafka", Destination: "orders", MessageID: "orders/0/1", Service: "billing", ConsumerGroup: "billing", Duration: time.Millisecond},
		{Time: at(30), Kind: model.EventProcess, System: "kafka", Destination: "orders", MessageID: "orders/0/1", Service: "audit", ConsumerGroup: "audit", Duration: time.Millisecond},
	}
	hops, flows := final(t, Config{}, events)
	require.Len(t, flows, 1)
	require.Len(t, hops, 2)
	waits := map[string]time.Duration{}
	for _, h := range hops {
		waits[h.ConsumerGroup] = h.QueueWait
	}
	assert.Equal(t, map[string]time.Duration{"billing": 10 * time.Millisecond, "audit": 30 * time.Millisecond}, waits)
}

func TestStuckAndDeadLettered(t *testing.T) {
	events := []model.Event{
		{Time: at(0), Kind: model.EventPublish, System: "rabbitmq", Destination: "orders", MessageID: "a", Service: "api"},
		{Time: at(0), Kind: model.EventPublish, System: "rabbitmq", Destination: "orders", MessageID: "b", Service: "api"},
		{Time: at(5), Kind: model.EventDeadLetter, System: "rabbitmq", Destination: "orders", MessageID: "b", Reason: "rejected"},
	}
	hops, flows := final(t, Config{}, events)
	require.Len(t, flows, 2)
	statuses := map[string]model.FlowStatus{}
	for _, f := range flows {
		statuses[f.Name+"/"+f.Keys[0].Value] = f.Status
	}
	assert.Equal(t, map[string]model.FlowStatus{"api orders/a": model.FlowStuck, "api orders/b": model.FlowDeadLettered}, statuses)
	for _, h := range hops {
		if h.MessageID == "b" {
			assert.Equal(t, model.HopDeadLettered, h.Outcome)
			assert.Equal(t, "rejected", h.Reason)
		} else {
			assert.Equal(t, model.HopStuck, h.Outcome)
		}
	}
}

// TestBroadcastIsSettledByItsPublish: a pub/sub message nobody is known to
// have received is not stuck — the broker kept nothing to deliver — while
// one a subscriber reports on is that subscriber's hop, as any other.
func TestBroadcastIsSettledByItsPublish(t *testing.T) {
	events := []model.Event{
		{Time: at(0), Kind: model.EventBroadcast, System: "redis", Destination: "prices", MessageID: "p-1", Service: "pricer"},
		{Time: at(0), Kind: model.EventBroadcast, System: "redis", Destination: "prices", MessageID: "p-2", Service: "pricer"},
		{Time: at(3), Kind: model.EventProcess, System: "redis", Destination: "prices", MessageID: "p-2", Service: "ticker", Duration: time.Millisecond},
	}
	for _, order := range [][]int{{0, 1, 2}, {2, 1, 0}} {
		var shuffled []model.Event
		for _, i := range order {
			shuffled = append(shuffled, events[i])
		}
		hops, flows := final(t, Config{}, shuffled)
		require.Len(t, flows, 2)
		for _, f := range flows {
			assert.Equal(t, model.FlowCompleted, f.Status, f.Keys)
		}
		require.Len(t, hops, 2)
		for _, h := range hops {
			assert.Equal(t, model.HopAcked, h.Outcome, h.MessageID)
			if h.MessageID == "p-1" {
				assert.Equal(t, "", h.Consumer)
				assert.Equal(t, at(0), h.SettleTime, "settled when published")
			} else {
				assert.Equal(t, "ticker", h.Consumer)
			}
		}
	}
}

func TestLimitsEvictTheLeastRecentlyActive(t *testing.T) {
	e, err := New(Config{MaxInFlightFlows: 10})
	require.NoError(t, err)
	for i := range 25 {
		e.Add(at(i), &model.Event{Time: at(i), Kind: model.EventPublish, System: "nats", MessageID: fmt.Sprint(i), Service: "api"})
		e.Advance(at(i))
	}
	stats := e.Stats()
	assert.Equal(t, 10, stats.InFlightFlows)
	assert.Equal(t, uint64(15), stats.EvictedByFlows)
	changes := e.Flush()
	evicted := 0
	for _, f := range changes.Flows {
		if f.Status == model.FlowEvicted {
			evicted++
		}
	}
	assert.Equal(t, 15, evicted)
}

// TestLimitsFinishSettledFlowsEarly: under the limits, a flow whose hops
// have all settled is finished with its own status; only flows still
// waiting on a hop are evicted.
func TestLimitsFinishSettledFlowsEarly(t *testing.T) {
	e, err := New(Config{MaxInFlightFlows: 4})
	require.NoError(t, err)
	for i := range 8 {
		id := fmt.Sprint(i)
		e.Add(at(i), &model.Event{Time: at(i), Kind: model.EventPublish, System: "nats", MessageID: id, Service: "api"})
		if i%2 == 0 { // even messages are taken at once
			e.Add(at(i), &model.Event{Time: at(i), Kind: model.EventProcess, System: "nats", MessageID: id, Service: "worker"})
		}
		e.Advance(at(i))
	}
	stats := e.Stats()
	assert.Equal(t, 4, stats.InFlightFlows)
	assert.Equal(t, uint64(2), stats.FinishedEarly)
	assert.Equal(t, uint64(2), stats.EvictedByFlows)
	_, flows := latest(e.Flush())
	statuses := map[model.FlowStatus]int{}
	for _, f := range flows {
		statuses[f.Status]++
	}
	assert.Equal(t, map[model.FlowStatus]int{model.FlowCompleted: 2, model.FlowEvicted: 2, model.FlowRunning: 4}, statuses)
}

func TestCheckpointRestoreNeitherLosesNorSplitsFlows(t *testing.T) {
	events := chain()
	want := shape(final(t, Config{}, events))
	for cut := 0; cut <= len(events); cut++ {
		first, all := runUntil(t, events, cut)
		// The snapshot is the state at the cut, however the engine goes on.
		snap := first.Snapshot()
		for i := cut; i < len(events); i++ {
			first.Add(at(i), &events[i])
		}
		first.Advance(at(len(events)).Add(first.cfg.FlowIdle))
		first.Flush()
		var buf bytes.Buffer
		require.NoError(t, snap.Encode(&buf))

		resumeFrom(t, &buf, events, cut, &all)
		require.Equal(t, want, shape(latest(all)), "restart after %d events", cut)
	}
}

// runUntil feeds events[:cut] to a new engine and returns it with the
// changes flushed.
func runUntil(t *testing.T, events []model.Event, cut int) (*Engine, Changes) {
	t.Helper()
	e, err := New(Config{})
	require.NoError(t, err)
	for i := range events[:cut] {
		e.Add(at(i), &events[i])
	}
	var all Changes
	appendChanges(&all, e.Flush())
	return e, all
}

// resumeFrom restores a checkpoint into a new engine, feeds it
// events[cut:], lets every flow finish, and adds its changes to all.
func resumeFrom(t *testing.T, checkpoint io.Reader, events []model.Event, cut int, all *Changes) {
	t.Helper()
	e, err := New(Config{})
	require.NoError(t, err)
	require.NoError(t, e.Restore(checkpoint))
	for i := cut; i < len(events); i++ {
		e.Add(at(i), &events[i])
	}
	e.Advance(at(len(events)).Add(e.cfg.FlowIdle))
	appendChanges(all, e.Flush())
}

func TestRestoreRefusesGarbage(t *testing.T) {
	e, err := New(Config{})
	require.NoError(t, err)
	require.ErrorContains(t, e.Restore(bytes.NewReader([]byte("not a checkpoint"))), "read checkpoint")
}

// quietFlow publishes one message nobody receives and lets it go stuck.
func quietFlow(t *testing.T, e *Engine, id string, at time.Time) {
	t.Helper()
	e.Add(at, &model.Event{Time: at, Kind: model.EventPublish, System: "nats", MessageID: id, Service: "api", TraceID: "t-" + id, SpanID: "s"})
}

func TestReopenedFlowIsNoLongerStuck(t *testing.T) {
	e, err := New(Config{StuckAfter: time.Second, FlowIdle: 2 * time.Second, Retain: time.Hour})
	require.NoError(t, err)
	quietFlow(t, e, "a", t0)
	e.Advance(t0.Add(3 * time.Second)) // stuck, then finished
	require.Equal(t, 1, e.Stats().StuckFlows)
	late := t0.Add(4 * time.Second)
	e.Add(late, &model.Event{Time: late, Kind: model.EventProcess, System: "nats", MessageID: "a", Service: "billing", Duration: time.Millisecond})
	changes := e.Flush()
	require.NotEmpty(t, changes.Flows)
	last := changes.Flows[len(changes.Flows)-1]
	assert.Equal(t, model.FlowRunning, last.Status)
	assert.Zero(t, e.Stats().StuckFlows)
}

func TestJoiningAStuckFlowClearsIt(t *testing.T) {
	e, err := New(Config{StuckAfter: time.Second, FlowIdle: time.Minute})
	require.NoError(t, err)
	quietFlow(t, e, "a", t0)
	e.Advance(t0.Add(2 * time.Second))
	require.Equal(t, 1, e.Stats().StuckFlows)
	now := t0.Add(3 * time.Second)
	// A busier flow that shares a key with the stuck one absorbs it.
	for i := range 3 {
		e.Add(now, &model.Event{Time: now, Kind: model.EventPublish, System: "nats", MessageID: fmt.Sprint("b", i), Service: "api", TraceID: "t-b", SpanID: fmt.Sprint(i)})
	}
	e.Add(now, &model.Event{Time: now, Kind: model.EventProcess, System: "nats", MessageID: "a", Service: "billing", TraceID: "t-b", SpanID: "x", Duration: time.Millisecond})
	assert.Zero(t, e.Stats().StuckFlows)
	for _, h := range e.Flush().Hops {
		assert.NotEqual(t, model.HopStuck, h.Outcome, h.MessageID)
	}
}

func TestFirstSeenNeverMovesOnceWritten(t *testing.T) {
	e, err := New(Config{})
	require.NoError(t, err)
	e.Add(t0.Add(time.Hour), &model.Event{Time: t0, Kind: model.EventPublish, System: "kafka", MessageID: "a", Service: "api", TraceID: "t1", SpanID: "1"})
	first := e.Flush()
	seen := first.Flows[0].FirstSeen
	// An older flow, seen earlier by a restored engine in real life, joins it.
	e.Add(t0.Add(2*time.Hour), &model.Event{Time: t0, Kind: model.EventProcess, System: "kafka", MessageID: "a", Service: "billing", TraceID: "t2", SpanID: "2"})
	for _, f := range e.Flush().Flows {
		if !f.Deleted && f.ID == first.Flows[0].ID {
			assert.Equal(t, seen, f.FirstSeen)
		}
	}
}

func TestParentIsFoundThroughTheSuccessfulAttempt(t *testing.T) {
	for _, traces := range [][2]string{{"t-fail", "t-ok"}, {"t-ok", "t-fail"}} {
		fail, ok := traces[0], traces[1]
		if fail == "t-ok" {
			fail, ok = "zz-fail", "aa-ok"
		}
		events := []model.Event{
			{Time: at(0), Kind: model.EventPublish, System: "rabbitmq", MessageID: "m1", Service: "api", TraceID: "t1", SpanID: "p1"},
			{Time: at(10), Kind: model.EventProcess, System: "rabbitmq", MessageID: "m1", Service: "billing", TraceID: fail, SpanID: "c1", Attempt: 1, Outcome: "error", Duration: time.Millisecond},
			{Time: at(20), Kind: model.EventProcess, System: "rabbitmq", MessageID: "m1", Service: "billing", TraceID: ok, SpanID: "c2", Attempt: 2, Duration: 5 * time.Millisecond},
			{Time: at(22), Kind: model.EventPublish, System: "rabbitmq", MessageID: "m2", Service: "billing", TraceID: ok, SpanID: "p2"},
		}
		hops, _ := final(t, Config{}, events)
		byMessage := map[string]model.Hop{}
		for _, h := range hops {
			byMessage[h.MessageID] = h
		}
		assert.Equal(t, byMessage["m1"].HopID, byMessage["m2"].ParentHopID, "traces %v", traces)
	}
}

func TestReleasedFlowsLeaveNoMapEntriesBehind(t *testing.T) {
	e, err := New(Config{StuckAfter: time.Second, FlowIdle: time.Second, Retain: time.Second})
	require.NoError(t, err)
	for i := range 20_000 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		trace := fmt.Sprint("t", i)
		e.Add(now, &model.Event{Time: now, Kind: model.EventPublish, System: "redis", Service: "api", TraceID: trace, SpanID: "p"})
		e.Add(now, &model.Event{Time: now, Kind: model.EventDeliver, System: "redis", Service: "w", TraceID: trace + "c", SpanID: "d", Links: []model.SpanRef{{TraceID: trace, SpanID: "p"}}})
		e.Add(now, &model.Event{Time: now, Kind: model.EventSettle, System: "redis", Service: "w", TraceID: trace + "c", SpanID: "s", ParentSpanID: "d"})
		e.Advance(now)
		e.Flush()
	}
	assert.Less(t, e.Stats().InFlightFlows, 5000)
	// Released flows' entries are swept away as the maps grow: they never
	// outnumber the live flows' own entries by more than the sweep's slack.
	live := 0
	for _, m := range e.aliases {
		if f := rootFlow(m.root()); f != nil && f.state != flowReleased {
			live++
		}
	}
	for _, f := range e.keys {
		if f.root().state != flowReleased {
			live++
		}
	}
	assert.LessOrEqual(t, len(e.aliases)+len(e.keys), 2*max(live, 1024)+8, "live entries: %d", live)
}

// TestHopsSettledWithoutAConsumerAreCounted: a message dead-lettered or
// expired before anyone received it settles its pending hop, which counts
// once, as any settled hop does, in edge statistics and metrics. One still
// waiting does not.
func TestHopsSettledWithoutAConsumerAreCounted(t *testing.T) {
	events := []model.Event{
		{Kind: model.EventPublish, System: "rabbitmq", Destination: "orders", MessageID: "dead", Service: "api"},
		{Kind: model.EventPublish, System: "rabbitmq", Destination: "orders", MessageID: "expired", Service: "api"},
		{Kind: model.EventPublish, System: "rabbitmq", Destination: "orders", MessageID: "waiting", Service: "api"},
		{Kind: model.EventDeadLetter, System: "rabbitmq", Destination: "orders", MessageID: "dead", Reason: "maxlen"},
		{Kind: model.EventExpire, System: "rabbitmq", Destination: "orders", MessageID: "expired"},
		{Kind: model.EventPublish, System: "rabbitmq", Destination: "orders", MessageID: "dead", Service: "api"}, // a duplicate
	}
	e, err := New(Config{})
	require.NoError(t, err)
	counted := map[string]int{}
	for i := range events {
		e.Add(at(i), &events[i])
		for _, h := range e.Flush().Hops { // every version, each flush
			if h.Counted {
				counted[h.MessageID]++
				assert.Contains(t, []model.HopOutcome{model.HopDeadLettered, model.HopExpired}, h.Outcome)
			}
		}
	}
	assert.Equal(t, map[string]int{"dead": 1, "expired": 1}, counted)
}

// TestCompactedSymbolsKeepFlowsExact: with the symbol table compacted at
// every sweep, and sweeps every 50 events, the simulator's workload still
// gives exactly the true flows.
func TestCompactedSymbolsKeepFlowsExact(t *testing.T) {
	defer func(n int) { minSymbolsCompacted = n }(minSymbolsCompacted)
	minSymbolsCompacted = 1
	cfg := Config{StuckAfter: 10 * time.Second, FlowIdle: 30 * time.Second, Retain: 2 * time.Minute,
		RetryDestinations: []string{flowsim.RetryPattern}, DeadLetterDestinations: []string{flowsim.DeadLetterPattern}}
	for seed := uint64(1); seed <= 3; seed++ {
		w := flowsim.Generate(flowsim.Config{Seed: seed})
		e, err := New(cfg)
		require.NoError(t, err)
		var all Changes
		compactions := 0
		for i := range w.Events {
			e.Advance(w.Arrivals[i])
			before := e.symbolsKept
			e.Add(w.Arrivals[i], &w.Events[i])
			if i%7 == 0 {
				appendChanges(&all, e.Flush())
			}
			if i%50 == 0 {
				e.sweep() // as often as it likes: wherever it falls, nothing changes
			}
			if e.symbolsKept != before {
				compactions++
			}
		}
		e.Advance(w.Arrivals[len(w.Arrivals)-1].Add(cfg.FlowIdle))
		appendChanges(&all, e.Flush())
		hops, flows := flowsim.Latest(all.Hops, all.Flows)
		report := flowsim.Score(w.Truth, hops, flows)
		require.True(t, report.Exact(), "seed %d: %s", seed, report)
		require.Positive(t, compactions, "seed %d: the table was compacted", seed)
	}
}
