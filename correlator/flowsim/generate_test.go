package flowsim

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
)

func TestGenerateIsDeterministic(t *testing.T) {
	a := Generate(Config{Seed: 7})
	b := Generate(Config{Seed: 7})
	require.Equal(t, a, b)

	c := Generate(Config{Seed: 8})
	assert.NotEqual(t, a.Events, c.Events)
	assert.NotEqual(t, a.Truth, c.Truth)
}

func TestConfig(t *testing.T) {
	w := Generate(Config{Seed: 1, Flows: 2, Scenarios: []Scenario{ScenarioChain, ScenarioFanout}})
	require.Len(t, w.Truth, 4)
	assert.True(t, w.Truth[0].Start.Equal(DefaultStart))
	assert.Len(t, w.Arrivals, len(w.Events))

	start := time.Date(2026, time.July, 1, 0, 0, 0, 0, time.UTC)
	w = Generate(Config{Seed: 1, Flows: 1, Start: start})
	require.Len(t, w.Truth, len(Scenarios()))
	assert.True(t, w.Truth[0].Start.Equal(start))

	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"unknown scenario", Config{Scenarios: []Scenario{"pipeline"}}, `scenarios[0]: unknown scenario "pipeline"`},
		{"negative flows", Config{Flows: -1}, "flows: must not be negative"},
		{"negative interval", Config{FlowInterval: -time.Second}, "flow_interval: must not be negative"},
		{"duplicate rate", Config{DuplicateRate: 1.5}, "duplicate_rate: must be at most 1"},
		{"late rate", Config{LateRate: 2}, "late_rate: must be at most 1"},
		{"late by", Config{LateBy: -3}, "late_by: must not be negative"},
		{"export delay", Config{ExportDelay: -time.Second}, "export_delay: must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
			assert.Panics(t, func() { Generate(tt.cfg) })
		})
	}
}

func TestDelivery(t *testing.T) {
	ordered := Config{Seed: 3, ShuffleWindow: -1, DuplicateRate: -1, LateRate: -1}
	t.Run("in order", func(t *testing.T) {
		w := Generate(ordered)
		assert.True(t, slices.IsSortedFunc(w.Events, func(a, b model.Event) int { return eventEnd(a).Compare(eventEnd(b)) }))
		assert.Len(t, distinctSpans(w.Events), len(w.Events), "no duplicates")
		checkArrivals(t, w, DefaultExportDelay)
	})
	t.Run("shuffled within the window", func(t *testing.T) {
		cfg := ordered
		cfg.ShuffleWindow = 16
		w := Generate(cfg)
		assert.Equal(t, len(Generate(ordered).Events), len(w.Events))
		overtaken := overtakenBy(w.Events)
		assert.Less(t, slices.Max(overtaken), 16)
		assert.Greater(t, slices.Max(overtaken), 0)
		checkArrivals(t, w, DefaultExportDelay)
	})
	t.Run("defaults", func(t *testing.T) {
		w := Generate(Config{Seed: 3})
		base := Generate(ordered)
		distinct := distinctSpans(w.Events)
		assert.Len(t, distinct, len(base.Events), "every event is delivered")
		duplicates := len(w.Events) - len(distinct)
		assert.InDelta(t, DefaultDuplicateRate*float64(len(base.Events)), duplicates, 25)

		overtaken := overtakenBy(w.Events)
		late := 0
		for _, n := range overtaken {
			if n >= DefaultShuffleWindow {
				late++
			}
		}
		assert.InDelta(t, DefaultLateRate*float64(len(base.Events)), late, 20)
		assert.Less(t, slices.Max(overtaken), DefaultLateBy+2*DefaultShuffleWindow)
		checkArrivals(t, w, DefaultExportDelay)
		assert.Equal(t, base.Truth, w.Truth, "disorder does not change the truth")
	})
}

// checkArrivals checks that arrivals increase and come after the spans end.
func checkArrivals(t *testing.T, w Workload, exportDelay time.Duration) {
	t.Helper()
	require.Len(t, w.Arrivals, len(w.Events))
	for i, ev := range w.Events {
		if i > 0 {
			require.True(t, w.Arrivals[i].After(w.Arrivals[i-1]), "arrival %d", i)
		}
		require.False(t, w.Arrivals[i].Before(eventEnd(ev).Add(exportDelay)), "arrival %d before its span ended", i)
	}
}

func distinctSpans(events []model.Event) map[string]bool {
	spans := make(map[string]bool)
	for _, ev := range events {
		spans[ev.TraceID+ev.SpanID] = true
	}
	return spans
}

// overtakenBy counts, for each event, the events delivered after it whose
// spans ended before its own.
func overtakenBy(events []model.Event) []int {
	out := make([]int, len(events))
	for i := range events {
		for _, later := range events[i+1:] {
			if eventEnd(later).Before(eventEnd(events[i])) {
				out[i]++
			}
		}
	}
	return out
}

func TestMaxQuiet(t *testing.T) {
	for seed := range uint64(5) {
		w := Generate(Config{Seed: seed})
		quiet := w.MaxQuiet()
		assert.Greater(t, quiet, 2*time.Second)
		assert.Less(t, quiet, 90*time.Second, "README.md promises a bound for the defaults")
	}
}

// generateFlows runs the generator's flow builders alone, keeping what the
// generator knows about each event's message.
func generateFlows(seed uint64, flows int) []*flowBuilder {
	cfg := Config{Seed: seed, Flows: flows}.withDefaults()
	g := &generator{cfg: cfg, rng: rand.New(rand.NewPCG(seed, 1)), offsets: make(map[string]uint64)}
	var out []*flowBuilder
	start := cfg.Start
	for _, s := range cfg.Scenarios {
		for range flows {
			out = append(out, g.build(s, start))
			start = start.Add(g.exponential(cfg.FlowInterval))
		}
	}
	return out
}

// unionFind joins string nodes.
type unionFind map[string]string

func (u unionFind) find(x string) string {
	if _, ok := u[x]; !ok {
		u[x] = x
	}
	for u[x] != x {
		u[x] = u[u[x]]
		x = u[x]
	}
	return x
}

func (u unionFind) union(nodes ...string) {
	for _, n := range nodes[1:] {
		u[u.find(n)] = u.find(nodes[0])
	}
}

// identities are the keys an event joins its message by, README.md
// "Messages", after the retry and dead-letter patterns.
func identities(ev model.Event) []string {
	kind, _, _ := normalize(ev)
	var ids []string
	if ev.MessageID != "" {
		ids = append(ids, "m"+ev.System+"/"+ev.MessageID)
	}
	ids = append(ids, "s"+ev.TraceID+"-"+ev.SpanID)
	if consumerSide(kind) {
		for _, link := range ev.Links {
			ids = append(ids, "s"+link.String())
		}
		if ev.MessageID == "" && len(ev.Links) == 0 && ev.ParentSpanID != "" {
			ids = append(ids, "s"+ev.TraceID+"-"+ev.ParentSpanID)
		}
	}
	return ids
}

func messageName(flow, msg int) string { return fmt.Sprintf("flow %d message %d", flow, msg) }

// TestJoinsMatchTruth joins the generated events by the README's rules,
// independently of the truth computation, and checks that they form exactly
// the messages and flows the generator meant: nothing joins across messages
// or flows by accident, and nothing falls apart.
func TestJoinsMatchTruth(t *testing.T) {
	for seed := range uint64(3) {
		flows := generateFlows(seed, 30)

		messages := make(unionFind)
		for _, f := range flows {
			for _, ev := range f.events {
				if !isBatch(ev.Event) {
					messages.union(identities(ev.Event)...)
				}
			}
		}
		messageOf := make(map[string]string) // component → "flow/message"
		flowKeys := make(unionFind)
		for fi, f := range flows {
			for mi := range f.msgs {
				name := messageName(fi, mi)
				component := ""
				for _, ev := range f.events {
					if !slices.Contains(ev.msgs, mi) {
						continue
					}
					ids := identities(ev.Event)
					if isBatch(ev.Event) {
						ids = nil
						for _, link := range ev.Links {
							if owner, ok := messageOf[messages.find("s"+link.String())]; ok && owner == name {
								ids = append(ids, "s"+link.String())
							}
						}
						require.Len(t, ids, 1, "%s: a batch links to the message once", name)
					}
					c := messages.find(ids[0])
					if component == "" {
						component = c
						require.NotContains(t, messageOf, c, "%s joins %s", name, messageOf[c])
						messageOf[c] = name
					}
					require.Equal(t, component, c, "%s falls apart at a %s event", name, ev.Kind)
					flowKeys.union(name, "t"+ev.TraceID)
					for _, k := range ev.Keys {
						flowKeys.union(name, "k"+k.Kind+"/"+k.Value)
					}
				}
			}
		}
		flowOf := make(map[string]int)
		for fi, f := range flows {
			c := flowKeys.find(messageName(fi, 0))
			if other, ok := flowOf[c]; ok {
				require.Failf(t, "flows join", "flow %d (%s) joins flow %d (%s)", fi, f.scenario, other, flows[other].scenario)
			}
			flowOf[c] = fi
			for mi := range f.msgs {
				require.Equal(t, c, flowKeys.find(messageName(fi, mi)), "flow %d (%s) falls apart", fi, f.scenario)
			}
		}
	}
}
