package correlator_test

import (
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
