package correlator_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/flowsim"
	"github.com/flowtrace/flowtrace/model"
)

// groundTruthConfig satisfies flowsim's conditions for an exact final state:
// flow_idle + retain exceed the longest quiet spell within a flow.
var groundTruthConfig = correlator.Config{
	StuckAfter:             10 * time.Second,
	FlowIdle:               30 * time.Second,
	Retain:                 2 * time.Minute,
	RetryDestinations:      []string{flowsim.RetryPattern},
	DeadLetterDestinations: []string{flowsim.DeadLetterPattern},
}

// runWorkload hands the workload to an engine at its arrival times, lets
// every flow finish, and returns the newest live version of each row.
func runWorkload(t testing.TB, w flowsim.Workload) ([]model.Hop, []model.Flow) {
	t.Helper()
	e, err := correlator.New(groundTruthConfig)
	require.NoError(t, err)
	var hops []model.Hop
	var flows []model.Flow
	collect := func(c correlator.Changes) {
		hops, flows = append(hops, c.Hops...), append(flows, c.Flows...)
	}
	for i := range w.Events {
		e.Advance(w.Arrivals[i])
		e.Add(w.Arrivals[i], &w.Events[i])
		if i%7 == 0 {
			collect(e.Flush())
		}
	}
	e.Advance(w.Arrivals[len(w.Arrivals)-1].Add(groundTruthConfig.FlowIdle))
	collect(e.Flush())
	return flowsim.Latest(hops, flows)
}

// TestGroundTruth runs every scenario of the simulator, shuffled, duplicated
// and late, for ten seeds each, and requires the engine's flows to be exactly
// the true ones: same hop sets, statuses, retries, names, and per hop the
// attempts, outcome, queue wait and processing time.
func TestGroundTruth(t *testing.T) {
	for _, scenario := range flowsim.Scenarios() {
		for seed := uint64(1); seed <= 10; seed++ {
			t.Run(fmt.Sprintf("%s/seed=%d", scenario, seed), func(t *testing.T) {
				w := flowsim.Generate(flowsim.Config{Seed: seed, Scenarios: []flowsim.Scenario{scenario}})
				hops, flows := runWorkload(t, w)
				report := flowsim.Score(w.Truth, hops, flows)
				require.True(t, report.Exact(), report.String())
			})
		}
	}
}

// TestGroundTruthAllScenariosTogether mixes every scenario in one workload,
// so flows of different shapes interleave.
func TestGroundTruthAllScenariosTogether(t *testing.T) {
	for seed := uint64(1); seed <= 10; seed++ {
		w := flowsim.Generate(flowsim.Config{Seed: seed})
		hops, flows := runWorkload(t, w)
		report := flowsim.Score(w.Truth, hops, flows)
		require.True(t, report.Exact(), "seed %d: %s", seed, report)
	}
}

// runSharded is runWorkload through a Sharded of n workers.
func runSharded(t testing.TB, w flowsim.Workload, n int) ([]model.Hop, []model.Flow, correlator.Stats) {
	t.Helper()
	s, err := correlator.NewSharded(groundTruthConfig, n)
	require.NoError(t, err)
	defer s.Close()
	var hops []model.Hop
	var flows []model.Flow
	collect := func(c correlator.Changes) {
		hops, flows = append(hops, c.Hops...), append(flows, c.Flows...)
	}
	for i := range w.Events {
		if i%16 == 0 {
			s.Advance(w.Arrivals[i])
		}
		s.Add(w.Arrivals[i], &w.Events[i])
		if i%50 == 0 {
			collect(s.Flush())
		}
	}
	s.Advance(w.Arrivals[len(w.Arrivals)-1].Add(groundTruthConfig.FlowIdle))
	collect(s.Flush())
	stats := s.Stats()
	latestHops, latestFlows := flowsim.Latest(hops, flows)
	return latestHops, latestFlows, stats
}

// TestShardedGroundTruth: spreading flows over workers changes nothing —
// exact on every scenario mix, though events join flows across workers.
func TestShardedGroundTruth(t *testing.T) {
	var migrations uint64
	for seed := uint64(1); seed <= 10; seed++ {
		for _, n := range []int{2, 4} {
			w := flowsim.Generate(flowsim.Config{Seed: seed})
			hops, flows, stats := runSharded(t, w, n)
			report := flowsim.Score(w.Truth, hops, flows)
			require.True(t, report.Exact(), "seed %d, %d workers: %s", seed, n, report)
			migrations += stats.Migrations
		}
	}
	require.NotZero(t, migrations, "the workloads join flows across workers: the test must exercise migration")
}

func TestShardedCheckpointRestore(t *testing.T) {
	w := flowsim.Generate(flowsim.Config{Seed: 3})
	half := len(w.Events) / 2
	var hops []model.Hop
	var flows []model.Flow
	collect := func(c correlator.Changes) {
		hops, flows = append(hops, c.Hops...), append(flows, c.Flows...)
	}

	first, err := correlator.NewSharded(groundTruthConfig, 3)
	require.NoError(t, err)
	for i := range w.Events[:half] {
		first.Advance(w.Arrivals[i])
		first.Add(w.Arrivals[i], &w.Events[i])
	}
	collect(first.Flush())
	// The snapshot is the state at half, however the workers go on.
	snap := first.Snapshot()
	for i := half; i < len(w.Events); i++ {
		first.Add(w.Arrivals[i], &w.Events[i])
	}
	first.Flush()
	var buf bytes.Buffer
	require.NoError(t, snap.Encode(&buf))
	first.Close()

	second, err := correlator.NewSharded(groundTruthConfig, 3)
	require.NoError(t, err)
	defer second.Close()
	require.NoError(t, second.Restore(bytes.NewReader(buf.Bytes())))
	for i := half; i < len(w.Events); i++ {
		second.Advance(w.Arrivals[i])
		second.Add(w.Arrivals[i], &w.Events[i])
	}
	second.Advance(w.Arrivals[len(w.Arrivals)-1].Add(groundTruthConfig.FlowIdle))
	collect(second.Flush())

	latestHops, latestFlows := flowsim.Latest(hops, flows)
	report := flowsim.Score(w.Truth, latestHops, latestFlows)
	require.True(t, report.Exact(), report.String())

	other, err := correlator.NewSharded(groundTruthConfig, 2)
	require.NoError(t, err)
	defer other.Close()
	require.ErrorContains(t, other.Restore(bytes.NewReader(buf.Bytes())), "written by 3 workers, not 2")
}
