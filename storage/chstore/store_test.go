package chstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

// awkward holds every byte the encoding must escape.
const awkward = "tab\there, new\nline, cr\r, quote ' \" back\\slash, nul\x00, bell\b, ff\f, ünïcødé ✓"

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 123456789, time.UTC)

func sampleFlow() (model.Flow, []model.Hop, []model.Event) {
	flow := model.Flow{
		ID: "flow-1", Version: 3, FirstSeen: t0, Name: "checkout " + awkward, Status: model.FlowDeadLettered,
		Start: t0, End: t0.Add(1500 * time.Millisecond), HopCount: 2, Retries: 1, DeadLetters: 1,
		Keys: []model.Key{
			{Kind: "order_id", Value: "A-1 " + awkward},
			{Kind: "trace_id", Value: "4bf92f3577b34da6a3ce929d0e0e4736"},
		},
		CriticalPath: []string{"hop-1", "hop-2 " + awkward},
	}
	hops := []model.Hop{
		{
			FlowID: "flow-1", HopID: "hop-1", Version: 2, FirstSeen: t0, System: "rabbitmq", Producer: "api",
			Destination: "orders", Consumer: "billing", ConsumerGroup: "billing", Operation: "charge",
			MessageID: "m-1", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
			PublishTime: t0, DeliverTime: t0.Add(200 * time.Millisecond), SettleTime: t0.Add(700 * time.Millisecond),
			QueueWait: 200 * time.Millisecond, Processing: 500 * time.Millisecond, Attempts: 2,
			Outcome: model.HopAcked, Counted: true,
		},
		{
			FlowID: "flow-1", HopID: "hop-2 " + awkward, Version: 1, FirstSeen: t0.Add(time.Second), ParentHopID: "hop-1",
			System: "kafka", Producer: "billing", Destination: "invoices", Consumer: "mailer", ConsumerGroup: "mailer-group",
			MessageID: "invoices/0/42", PublishTime: t0.Add(700 * time.Millisecond),
			Attempts: 1, Outcome: model.HopDeadLettered, Reason: "rejected: " + awkward, Counted: true,
		},
	}
	events := []model.Event{
		{
			Time: t0, Kind: model.EventPublish, System: "rabbitmq", Destination: "orders", MessageID: "m-1",
			Operation: "charge", Attempt: 1, Service: "api", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
			SpanID: "00f067aa0ba902b7", Links: []model.SpanRef{{TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "b7ad6b7169203331"}}, BodySize: 512,
			Keys: []model.Key{{Kind: "order_id", Value: "A-1 " + awkward}, {Kind: "tenant", Value: "t1"}},
		},
		{
			Time: t0.Add(200 * time.Millisecond), Kind: model.EventProcess, System: "rabbitmq", Destination: "orders",
			MessageID: "m-1", Attempt: 2, Service: "billing", ConsumerGroup: "billing", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
			SpanID: "00f067aa0ba902b8", ParentSpanID: "00f067aa0ba902b7", Duration: 500 * time.Millisecond,
		},
		{
			Time: t0.Add(900 * time.Millisecond), Kind: model.EventDeadLetter, System: "kafka", Destination: "invoices",
			Partition: "0", MessageID: "invoices/0/42", Service: "mailer", Outcome: "reject", Reason: awkward,
		},
	}
	return flow, hops, events
}

func TestEveryColumnRoundTrips(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	flow, hops, events := sampleFlow()
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{flow}))
	require.NoError(t, st.WriteHops(ctx, hops))
	require.NoError(t, st.WriteEvents(ctx, events))

	got, err := st.GetFlow(ctx, "flow-1")
	require.NoError(t, err)
	assert.Equal(t, flow, got.Flow)
	assert.Equal(t, hops, got.Hops)
	assert.Equal(t, events, got.Events)

	samples := []model.BacklogSample{{
		Time: t0, System: "kafka", Broker: "cluster-a", Destination: "invoices", ConsumerGroup: "mailer-group",
		Depth: 10, Unacked: 3, LagMessages: 42, LagSeconds: 12.5, Consumers: 2, PublishRate: 101.25, DeliverRate: 99.5,
	}}
	require.NoError(t, st.WriteBacklog(ctx, samples))
	gotSamples, err := st.BacklogSeries(ctx, storage.BacklogQuery{System: "kafka", Destination: "invoices", From: t0.Add(-time.Minute), To: t0.Add(time.Minute)})
	require.NoError(t, err)
	assert.Equal(t, samples, gotSamples)
}

func TestWritingTheSameBatchTwiceLeavesOneCopy(t *testing.T) {
	st, schema := newStore(t, 0)
	ctx := context.Background()
	flow, hops, events := sampleFlow()
	samples := []model.BacklogSample{{Time: t0, System: "nats", Destination: "ORDERS", Depth: 5}}
	for range 2 {
		require.NoError(t, st.WriteFlows(ctx, []model.Flow{flow}))
		require.NoError(t, st.WriteHops(ctx, hops))
		require.NoError(t, st.WriteEvents(ctx, events))
		require.NoError(t, st.WriteBacklog(ctx, samples))
	}
	// Not FINAL: the raw row counts, before any merge could hide a double.
	assert.Equal(t, 1, count(t, schema, "flows", false))
	assert.Equal(t, len(hops), count(t, schema, "hops", false))
	assert.Equal(t, len(events), count(t, schema, "events", false))
	assert.Equal(t, 1, count(t, schema, "backlog", false))
	// The materialized view must not count the replayed hops either.
	edges, err := st.Topology(ctx, t0.Add(-time.Hour), t0.Add(time.Hour))
	require.NoError(t, err)
	var total uint64
	for _, e := range edges {
		total += e.Count
	}
	assert.Equal(t, uint64(len(hops)), total)
}

// TestABatchOverManyDaysIsWritten: events are partitioned by day, and
// ClickHouse refuses an insert that touches more than 100 partitions by
// default. Spans from clients with bad clocks or a backfill can put a batch
// over that, and refusing it would hold the whole batch, good rows with
// it, in the queue's retries until it is dropped.
func TestABatchOverManyDaysIsWritten(t *testing.T) {
	st, schema := newStore(t, 0)
	ctx := context.Background()
	var events []model.Event
	hops := []model.Hop{}
	for day := range 150 {
		at := t0.AddDate(0, 0, -day)
		events = append(events, model.Event{Time: at, Kind: model.EventPublish, System: "kafka", Destination: "orders", MessageID: fmt.Sprint(day)})
		hops = append(hops, model.Hop{FlowID: "f", HopID: fmt.Sprint(day), Version: 1, FirstSeen: at, PublishTime: at,
			System: "kafka", Producer: "api", Destination: "orders", Outcome: model.HopAcked, Counted: true})
	}
	require.NoError(t, st.WriteEvents(ctx, events))
	require.NoError(t, st.WriteHops(ctx, hops))
	assert.Equal(t, len(events), count(t, schema, "events", false))
	assert.Equal(t, len(hops), count(t, schema, "hops", false))
}

func TestNewestVersionWinsAndDeletedFlowsDisappear(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	flow, _, _ := sampleFlow()
	older := flow
	older.Version, older.Status = 1, model.FlowRunning
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{flow}))
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{older})) // late, lower version

	got, err := st.GetFlow(ctx, flow.ID)
	require.NoError(t, err)
	assert.Equal(t, model.FlowDeadLettered, got.Flow.Status)

	retired := flow
	retired.Version, retired.Deleted = 4, true
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{retired}))
	_, err = st.GetFlow(ctx, flow.ID)
	require.ErrorIs(t, err, storage.ErrNotFound)
	page, err := st.FindFlows(ctx, storage.FlowQuery{Key: "A-1 " + awkward})
	require.NoError(t, err)
	assert.Empty(t, page.Flows)
}

func TestAKeyFindsOnlyTheFlowThatCarriesItNow(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	key := model.Key{Kind: "order_id", Value: "order-7"}
	// The key was first seen in flow a; flow a's next version gave it up to
	// flow b, while a lives on with another key.
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{{ID: "a", Version: 1, FirstSeen: t0, Keys: []model.Key{key}}}))
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{
		{ID: "a", Version: 2, FirstSeen: t0, Keys: []model.Key{{Kind: "order_id", Value: "order-8"}}},
		{ID: "b", Version: 3, FirstSeen: t0, Keys: []model.Key{key}},
	}))
	page, err := st.FindFlows(ctx, storage.FlowQuery{Key: key.Value})
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, flowIDs(page.Flows))
	ids, err := st.FlowIDsByKey(ctx, key.Value, 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"b"}, ids)
}

// manyFlows writes n flows, step apart, each with an order key.
func manyFlows(t *testing.T, st storage.Store, n int, step time.Duration) []model.Flow {
	t.Helper()
	flows := make([]model.Flow, n)
	statuses := []model.FlowStatus{model.FlowCompleted, model.FlowFailed, model.FlowRunning}
	for i := range flows {
		start := t0.Add(time.Duration(i) * step)
		flows[i] = model.Flow{
			ID: fmt.Sprintf("flow-%06d", i), Version: 1, FirstSeen: start, Name: []string{"checkout", "refund"}[i%2],
			Status: statuses[i%3], Start: start, End: start.Add(time.Duration(i%10) * time.Second), HopCount: 2,
			Keys: []model.Key{{Kind: "order_id", Value: fmt.Sprintf("order-%06d", i)}, {Kind: "tenant", Value: "t1"}},
		}
	}
	require.NoError(t, st.WriteFlows(context.Background(), flows))
	return flows
}

func TestFindFlowsFiltersAndPages(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	flows := manyFlows(t, st, 120, time.Minute)

	t.Run("by key", func(t *testing.T) {
		page, err := st.FindFlows(ctx, storage.FlowQuery{Key: "order-000042"})
		require.NoError(t, err)
		require.Len(t, page.Flows, 1)
		assert.Equal(t, "flow-000042", page.Flows[0].ID)
		ids, err := st.FlowIDsByKey(ctx, "order-000042", 10)
		require.NoError(t, err)
		assert.Equal(t, []string{"flow-000042"}, ids)
	})
	t.Run("a key is a value, never SQL", func(t *testing.T) {
		for _, key := range []string{"' OR 1=1 --", `\' OR 1=1 --`, "order-000042' OR '1'='1", "{key:String}"} {
			page, err := st.FindFlows(ctx, storage.FlowQuery{Key: key})
			require.NoError(t, err, key)
			assert.Empty(t, page.Flows, key)
		}
	})
	t.Run("by name, status, time and duration", func(t *testing.T) {
		page, err := st.FindFlows(ctx, storage.FlowQuery{
			Name: "checkout", Statuses: []model.FlowStatus{model.FlowCompleted, model.FlowFailed},
			From: t0.Add(10 * time.Minute), To: t0.Add(40 * time.Minute), MinDuration: 5 * time.Second, Limit: 100,
		})
		require.NoError(t, err)
		var want []string
		for i := 39; i >= 10; i-- {
			f := flows[i]
			if f.Name == "checkout" && f.Status != model.FlowRunning && f.Duration() >= 5*time.Second {
				want = append(want, f.ID)
			}
		}
		require.NotEmpty(t, want)
		assert.Equal(t, want, flowIDs(page.Flows))
		assert.Empty(t, page.NextCursor)
	})
	t.Run("pages cover everything once, newest first", func(t *testing.T) {
		var seen []string
		q := storage.FlowQuery{Limit: 25}
		for pages := 0; ; pages++ {
			require.Less(t, pages, 10)
			page, err := st.FindFlows(ctx, q)
			require.NoError(t, err)
			seen = append(seen, flowIDs(page.Flows)...)
			if page.NextCursor == "" {
				break
			}
			q.Cursor = page.NextCursor
		}
		require.Len(t, seen, len(flows))
		for i, id := range seen {
			assert.Equal(t, flows[len(flows)-1-i].ID, id)
		}
	})
	t.Run("bad cursor", func(t *testing.T) {
		for _, cursor := range []string{"!!!", "bm9zZXBhcmF0b3I", "eDpmbG93"} {
			_, err := st.FindFlows(ctx, storage.FlowQuery{Cursor: cursor})
			require.ErrorIs(t, err, storage.ErrBadCursor, cursor)
		}
	})
}

func flowIDs(flows []model.Flow) []string {
	ids := make([]string, len(flows))
	for i, f := range flows {
		ids[i] = f.ID
	}
	return ids
}

func TestFlowByKeyUsesItsSkipIndex(t *testing.T) {
	st, schema := newStore(t, 0)
	// Enough flows for many granules (8192 rows each) in one day's partition.
	manyFlows(t, st, 100_000, 100*time.Millisecond)

	query := "EXPLAIN indexes = 1 SELECT flow_id FROM `" + schema.Database + "`.flows WHERE has(keys.value, {key:String})"
	out, err := engine.Query(context.Background(), query, chstore.Params{"key": "order-054321"})
	require.NoError(t, err)
	plan := explainText(t, out)
	require.Contains(t, plan, "Skip", plan)
	require.Contains(t, plan, "Name: idx_keys", plan)

	selected, total := skipIndexGranules(t, plan, "idx_keys")
	assert.Greater(t, total, 10, plan)
	assert.LessOrEqual(t, selected, 2, "the bloom filter should leave one or two granules of %d\n%s", total, plan)

	ids, err := st.FlowIDsByKey(context.Background(), "order-054321", 10)
	require.NoError(t, err)
	assert.Equal(t, []string{"flow-054321"}, ids)
}

func explainText(t *testing.T, out []byte) string {
	t.Helper()
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var row struct {
			Explain string `json:"explain"`
		}
		require.NoError(t, json.Unmarshal([]byte(line), &row))
		b.WriteString(row.Explain)
		b.WriteByte('\n')
	}
	return b.String()
}

// skipIndexGranules reads "Granules: a/b" under the named skip index.
func skipIndexGranules(t *testing.T, plan, index string) (selected, total int) {
	t.Helper()
	_, after, ok := strings.Cut(plan, "Name: "+index)
	require.True(t, ok, plan)
	_, after, ok = strings.Cut(after, "Granules: ")
	require.True(t, ok, plan)
	_, err := fmt.Sscanf(after, "%d/%d", &selected, &total)
	require.NoError(t, err, plan)
	return selected, total
}

func TestFlowWithUnknownTimesStillFindsItsEvents(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	require.NoError(t, st.WriteFlows(ctx, []model.Flow{{ID: "f", Version: 1, FirstSeen: t0, Status: model.FlowRunning}}))
	require.NoError(t, st.WriteHops(ctx, []model.Hop{{FlowID: "f", HopID: "h", Version: 1, FirstSeen: t0, MessageID: "m"}}))
	require.NoError(t, st.WriteEvents(ctx, []model.Event{{Time: t0, Kind: model.EventDeliver, MessageID: "m"}}))
	got, err := st.GetFlow(ctx, "f")
	require.NoError(t, err)
	assert.True(t, got.Flow.Start.IsZero())
	require.Len(t, got.Events, 1)
	assert.Equal(t, t0, got.Events[0].Time)
}
