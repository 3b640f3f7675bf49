package flowsim

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
)

// perfectEngine is the output an engine that got everything right would
// give: a flow "f<i>" per truth flow, holding its hops.
func perfectEngine(truth []TruthFlow) ([]model.Hop, []model.Flow) {
	var hops []model.Hop
	var flows []model.Flow
	for fi, tf := range truth {
		id := fmt.Sprintf("f%d", fi)
		flows = append(flows, model.Flow{
			ID: id, Version: 1, Name: tf.Name, Status: tf.Status, Start: tf.Start, End: tf.End,
			HopCount: uint32(len(tf.Hops)), Retries: tf.Retries, DeadLetters: tf.DeadLetters,
		})
		for hi, th := range tf.Hops {
			hops = append(hops, model.Hop{
				FlowID: id, HopID: fmt.Sprintf("h%d", hi), Version: 1,
				System: th.System, MessageID: th.MessageID, ConsumerGroup: th.ConsumerGroup,
				Producer: th.Producer, Consumer: th.Consumer, Destination: th.Destination,
				QueueWait: th.QueueWait, Processing: th.Processing, Attempts: th.Attempts, Outcome: th.Outcome,
			})
		}
	}
	return hops, flows
}

// multiHop is the index of the first truth flow with at least n hops.
func multiHop(t *testing.T, truth []TruthFlow, n int) int {
	t.Helper()
	for i, tf := range truth {
		if len(tf.Hops) >= n {
			return i
		}
	}
	require.FailNow(t, "no flow with enough hops")
	return -1
}

func TestScore(t *testing.T) {
	truth := Generate(Config{Seed: 9, Flows: 5}).Truth
	long := multiHop(t, truth, 3)
	other := (long + 1) % len(truth)
	flowIndex := func(h model.Hop) int {
		var i int
		_, _ = fmt.Sscanf(h.FlowID, "f%d", &i)
		return i
	}

	tests := []struct {
		name   string
		doctor func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow)
		want   func(t *testing.T, r Report)
	}{
		{
			name:   "exact",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) { return hops, flows },
			want: func(t *testing.T, r Report) {
				assert.True(t, r.Exact(), r.String())
				assert.Equal(t, len(truth), r.ExactFlows)
				assert.Empty(t, r.Diffs)
			},
		},
		{
			name: "split",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
				for i := range hops {
					if flowIndex(hops[i]) == long && hops[i].HopID == "h2" {
						hops[i].FlowID = "split"
					}
				}
				return hops, append(flows, model.Flow{ID: "split", Version: 1})
			},
			want: func(t *testing.T, r Report) {
				assert.False(t, r.Exact())
				assert.Equal(t, 1, r.SplitFlows)
				assert.Equal(t, len(truth)-1, r.ExactFlows)
				assert.Contains(t, r.String(), "split over engine flows")
			},
		},
		{
			name: "merged",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
				for i := range hops {
					if flowIndex(hops[i]) == other {
						hops[i].FlowID = fmt.Sprintf("f%d", long)
						hops[i].HopID += "-merged"
					}
				}
				return hops, flows
			},
			want: func(t *testing.T, r Report) {
				assert.False(t, r.Exact())
				assert.Equal(t, 2, r.MergedFlows)
				assert.Equal(t, 1, r.ExtraFlows, "the flow row left with no hops")
				assert.Contains(t, r.String(), "merged, engine flow")
			},
		},
		{
			name: "missing and partial",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
				var kept []model.Hop
				for _, h := range hops {
					if flowIndex(h) == other || flowIndex(h) == long && h.HopID == "h0" {
						continue
					}
					kept = append(kept, h)
				}
				return kept, flows
			},
			want: func(t *testing.T, r Report) {
				assert.Equal(t, 1, r.MissingFlows)
				assert.Equal(t, 1, r.PartialFlows)
				assert.Equal(t, 1, r.ExtraFlows)
			},
		},
		{
			name: "unknown hop",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
				return append(hops, model.Hop{FlowID: "ghost", HopID: "h0", System: "kafka", MessageID: "nope"}), flows
			},
			want: func(t *testing.T, r Report) {
				assert.Equal(t, 1, r.UnknownHops)
				assert.Equal(t, 1, r.ExtraFlows)
				assert.Equal(t, len(truth), r.ExactFlows)
				assert.False(t, r.Exact())
			},
		},
		{
			name: "wrong queue wait",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
				hops[0].QueueWait += time.Millisecond
				return hops, flows
			},
			want: func(t *testing.T, r Report) {
				assert.False(t, r.Exact())
				assert.Equal(t, len(truth), r.ExactFlows, "the shape is right")
				assert.Equal(t, map[string]int{"queue_wait": 1}, r.Mismatches)
				require.Len(t, r.Diffs, 1)
				assert.Contains(t, r.Diffs[0], "queue_wait")
			},
		},
		{
			name: "wrong status and retries",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
				flows[long].Status = model.FlowRunning
				flows[long].Retries++
				return hops, flows
			},
			want: func(t *testing.T, r Report) {
				assert.Equal(t, map[string]int{"status": 1, "retries": 1}, r.Mismatches)
				assert.Contains(t, r.String(), "status running, want "+string(truth[long].Status))
			},
		},
		{
			name: "wrong hop fields",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
				hops[1].Attempts++
				hops[1].Outcome = model.HopInFlight
				hops[1].Processing = 0
				flows[0].End = flows[0].End.Add(time.Second)
				flows[1].Name = "something else"
				return hops, flows
			},
			want: func(t *testing.T, r Report) {
				assert.Equal(t, map[string]int{"attempts": 1, "outcome": 1, "processing": 1, "end": 1, "name": 1}, r.Mismatches)
			},
		},
		{
			name: "no flow row",
			doctor: func(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
				return hops, flows[1:]
			},
			want: func(t *testing.T, r Report) {
				assert.Equal(t, map[string]int{"flow_row": 1}, r.Mismatches)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hops, flows := perfectEngine(truth)
			hops, flows = tt.doctor(hops, flows)
			r := Score(truth, hops, flows)
			assert.Equal(t, len(truth), r.TruthFlows)
			assert.Equal(t, r.TruthFlows, r.ExactFlows+r.SplitFlows+r.MergedFlows+r.PartialFlows+r.MissingFlows)
			tt.want(t, r)
		})
	}
}

func TestScoreCapsDiffs(t *testing.T) {
	truth := Generate(Config{Seed: 2, Flows: 10}).Truth
	hops, flows := perfectEngine(truth)
	for i := range hops {
		hops[i].QueueWait++
	}
	r := Score(truth, hops, flows)
	assert.Len(t, r.Diffs, MaxDiffs)
	assert.Equal(t, len(hops)-MaxDiffs, r.MoreDiffs)
	assert.Contains(t, r.String(), fmt.Sprintf("and %d more", r.MoreDiffs))
}

func TestLatest(t *testing.T) {
	hops := []model.Hop{
		{FlowID: "a", HopID: "1", Version: 1, Outcome: model.HopInFlight},
		{FlowID: "a", HopID: "1", Version: 3, Outcome: model.HopAcked},
		{FlowID: "a", HopID: "1", Version: 2, Outcome: model.HopRetried},
		// Moved from flow a to flow b: the old placement retired.
		{FlowID: "a", HopID: "2", Version: 1, Outcome: model.HopInFlight},
		{FlowID: "a", HopID: "2", Version: 4, Deleted: true},
		{FlowID: "b", HopID: "2", Version: 4, Outcome: model.HopAcked},
		// Retired, then placed again.
		{FlowID: "b", HopID: "3", Version: 1},
		{FlowID: "b", HopID: "3", Version: 2, Deleted: true},
		{FlowID: "b", HopID: "3", Version: 5, Outcome: model.HopStuck},
	}
	flows := []model.Flow{
		{ID: "a", Version: 1, Status: model.FlowRunning},
		{ID: "a", Version: 4, Status: model.FlowCompleted},
		{ID: "c", Version: 2, Status: model.FlowRunning},
		{ID: "c", Version: 3, Deleted: true},
		{ID: "b", Version: 5, Status: model.FlowStuck},
	}
	gotHops, gotFlows := Latest(hops, flows)
	assert.Equal(t, []model.Hop{
		{FlowID: "a", HopID: "1", Version: 3, Outcome: model.HopAcked},
		{FlowID: "b", HopID: "2", Version: 4, Outcome: model.HopAcked},
		{FlowID: "b", HopID: "3", Version: 5, Outcome: model.HopStuck},
	}, gotHops)
	assert.Equal(t, []model.Flow{
		{ID: "a", Version: 4, Status: model.FlowCompleted},
		{ID: "b", Version: 5, Status: model.FlowStuck},
	}, gotFlows)
}
