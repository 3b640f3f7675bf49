package chstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
)

func TestTopologyCountsEachHopOnce(t *testing.T) {
	st, _ := newStore(t, 0)
	ctx := context.Background()
	edge := model.Edge{System: "rabbitmq", Producer: "api", Destination: "orders", Consumer: "billing"}
	var hops []model.Hop
	for i := range 100 {
		publish := t0.Add(time.Duration(i) * time.Second) // two minutes' worth
		hops = append(hops, model.Hop{
			FlowID: "f", HopID: string(rune('a'+i%26)) + time.Duration(i).String(), Version: 1, FirstSeen: publish,
			System: edge.System, Producer: edge.Producer, Destination: edge.Destination, Consumer: edge.Consumer,
			PublishTime: publish, DeliverTime: publish.Add(time.Duration(i+1) * time.Millisecond),
			QueueWait: time.Duration(i+1) * time.Millisecond, Processing: 10 * time.Millisecond,
			Attempts: uint16(1 + i%2), Outcome: model.HopAcked, Counted: true,
		})
	}
	require.NoError(t, st.WriteHops(ctx, hops))
	// A later version of every hop, not counted again.
	rewritten := append([]model.Hop(nil), hops...)
	for i := range rewritten {
		rewritten[i].Version, rewritten[i].Counted = 2, false
	}
	require.NoError(t, st.WriteHops(ctx, rewritten))

	edges, err := st.Topology(ctx, t0, t0.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, edges, 1)
	got := edges[0]
	assert.Equal(t, edge, got.Edge)
	assert.Equal(t, uint64(100), got.Count)
	assert.Equal(t, uint64(50), got.Retries)
	assert.InDelta(t, 50*time.Millisecond, got.QueueWaitP50, float64(3*time.Millisecond))
	assert.InDelta(t, 95*time.Millisecond, got.QueueWaitP95, float64(3*time.Millisecond))
	assert.InDelta(t, 10*time.Millisecond, got.ProcessingP95, float64(time.Millisecond))

	empty, err := st.Topology(ctx, t0.Add(2*time.Hour), t0.Add(3*time.Hour))
	require.NoError(t, err)
	assert.Empty(t, empty)

	// Edge minutes are 32-bit times: a window past 2106 must not wrap
	// around to 1970 and find this one.
	late := time.Date(2107, 1, 1, 0, 0, 0, 0, time.UTC)
	empty, err = st.Topology(ctx, late, late.Add(time.Hour))
	require.NoError(t, err)
	assert.Empty(t, empty, "a window after 2106")
	series, err := st.EdgeSeries(ctx, storage.SeriesQuery{Edge: edge, From: late, To: late.Add(time.Hour), Step: time.Minute})
	require.NoError(t, err)
	assert.Empty(t, series, "a window after 2106")

	points, err := st.EdgeSeries(ctx, storage.SeriesQuery{Edge: edge, From: t0, To: t0.Add(time.Hour), Step: time.Minute})
	require.NoError(t, err)
	require.Len(t, points, 2)
	assert.Equal(t, t0.Truncate(time.Minute), points[0].Time)
	assert.Equal(t, uint64(60), points[0].Count)
	assert.Equal(t, uint64(40), points[1].Count)
}
