package flowsim

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
)

// generated is a flow of a workload with its events.
type generated struct {
	TruthFlow
	events []model.Event
}

func generate(t *testing.T, s Scenario) []generated {
	t.Helper()
	w := Generate(Config{Seed: 11, Flows: 60, Scenarios: []Scenario{s}, DuplicateRate: -1})
	out := make([]generated, len(w.Truth))
	for i, tf := range w.Truth {
		require.Equal(t, s, tf.Scenario)
		out[i].TruthFlow = tf
	}
	for i, ev := range w.Events {
		out[w.flowOf[i]].events = append(out[w.flowOf[i]].events, ev)
	}
	return out
}

func distinctMessages(hops []TruthHop) int {
	ids := make(map[string]bool)
	for _, h := range hops {
		ids[h.System+" "+h.MessageID] = true
	}
	return len(ids)
}

func allAcked(t *testing.T, f generated) {
	t.Helper()
	for _, h := range f.Hops {
		assert.Equal(t, model.HopAcked, h.Outcome, "%+v", h)
	}
	assert.Equal(t, model.FlowCompleted, f.Status)
}

func anyEvent(flows []generated, match func(model.Event) bool) bool {
	for _, f := range flows {
		if slices.ContainsFunc(f.events, match) {
			return true
		}
	}
	return false
}

func anyHop(flows []generated, match func(TruthHop) bool) bool {
	for _, f := range flows {
		if slices.ContainsFunc(f.Hops, match) {
			return true
		}
	}
	return false
}

func TestScenarios(t *testing.T) {
	helpers := make(map[string]bool)
	for _, p := range pipelines {
		for _, h := range p.helpers {
			helpers[h] = true
		}
	}
	tests := []struct {
		scenario Scenario
		check    func(t *testing.T, flows []generated)
	}{
		{ScenarioChain, func(t *testing.T, flows []generated) {
			for _, f := range flows {
				assert.GreaterOrEqual(t, len(f.Hops), 2)
				assert.LessOrEqual(t, len(f.Hops), 5)
				assert.Equal(t, len(f.Hops), distinctMessages(f.Hops), "one hop per message")
				allAcked(t, f)
			}
			assert.True(t, anyHop(flows, func(h TruthHop) bool { return helpers[h.Producer] }),
				"some messages are published from an HTTP handler a consumer calls")
		}},
		{ScenarioFanout, func(t *testing.T, flows []generated) {
			for _, f := range flows {
				assert.Equal(t, 1, distinctMessages(f.Hops))
				assert.GreaterOrEqual(t, len(f.Hops), 2)
				assert.LessOrEqual(t, len(f.Hops), 3)
				groups := make(map[string]bool)
				for _, h := range f.Hops {
					groups[h.ConsumerGroup] = true
				}
				assert.Len(t, groups, len(f.Hops))
				allAcked(t, f)
			}
		}},
		{ScenarioFanin, func(t *testing.T, flows []generated) {
			kinds := make(map[string]bool)
			for _, f := range flows {
				producers, traces := make(map[string]bool), make(map[string]bool)
				for _, h := range f.Hops {
					producers[h.Producer] = true
				}
				for _, ev := range f.events {
					require.Len(t, ev.Keys, 1)
					kinds[ev.Keys[0].Kind] = true
					if ev.Kind == model.EventPublish && ev.Service != "fulfillment" {
						traces[ev.TraceID] = true
					}
				}
				assert.GreaterOrEqual(t, len(producers), 2)
				assert.GreaterOrEqual(t, len(traces), 2, "each producer in its own trace")
				allAcked(t, f)
			}
			assert.Equal(t, map[string]bool{"order_id": true, "correlation_id": true}, kinds)
		}},
		{ScenarioRetry, func(t *testing.T, flows []generated) {
			for _, f := range flows {
				assert.True(t, slices.ContainsFunc(f.Hops, func(h TruthHop) bool { return h.Attempts >= 2 }))
				assert.GreaterOrEqual(t, f.Retries, uint32(1))
				allAcked(t, f)
			}
			assert.True(t, anyEvent(flows, func(ev model.Event) bool {
				return ev.Kind == model.EventDeliver && strings.Contains(ev.Destination, ".retry.")
			}), "Kafka retry topics")
			assert.True(t, anyEvent(flows, func(ev model.Event) bool {
				return ev.Kind == model.EventDeliver && ev.Attempt == 2 && ev.System != "kafka"
			}), "redelivery by attempt")
		}},
		{ScenarioDeadLetter, func(t *testing.T, flows []generated) {
			for _, f := range flows {
				switch f.Status {
				case model.FlowDeadLettered:
					assert.GreaterOrEqual(t, f.DeadLetters, uint32(1))
				case model.FlowFailed:
					assert.Zero(t, f.DeadLetters)
					assert.True(t, slices.ContainsFunc(f.Hops, func(h TruthHop) bool {
						return h.Outcome == model.HopRejected || h.Outcome == model.HopExpired
					}))
				default:
					assert.Fail(t, "status", "%s", f.Status)
				}
			}
			for name, match := range map[string]func(model.Event) bool{
				"dlq publish": func(ev model.Event) bool {
					return ev.Kind == model.EventPublish && strings.HasSuffix(ev.Destination, ".dlq")
				},
				"dead letter":  func(ev model.Event) bool { return ev.Kind == model.EventDeadLetter && ev.Reason != "" },
				"expire":       func(ev model.Event) bool { return ev.Kind == model.EventExpire },
				"term":         func(ev model.Event) bool { return ev.Kind == model.EventSettle && ev.Outcome == "term" },
				"reject":       func(ev model.Event) bool { return ev.Kind == model.EventSettle && ev.Outcome == "reject" },
				"retry topics": func(ev model.Event) bool { return strings.Contains(ev.Destination, ".retry.") },
			} {
				assert.True(t, anyEvent(flows, match), name)
			}
			assert.True(t, anyHop(flows, func(h TruthHop) bool { return h.ConsumerGroup == "" && h.Outcome == model.HopDeadLettered }),
				"a message dead-lettered before anyone received it")
		}},
		{ScenarioStuck, func(t *testing.T, flows []generated) {
			for _, f := range flows {
				assert.Equal(t, model.FlowStuck, f.Status)
				assert.True(t, slices.ContainsFunc(f.Hops, func(h TruthHop) bool { return h.Outcome == model.HopStuck }))
			}
			assert.True(t, anyHop(flows, func(h TruthHop) bool { return h.ConsumerGroup == "" && h.Attempts == 0 }), "never delivered")
			assert.True(t, anyHop(flows, func(h TruthHop) bool {
				return h.Outcome == model.HopStuck && h.Attempts == 1 && h.QueueWait > 0 && h.Processing == 0
			}), "delivered, never processed")
			assert.True(t, anyHop(flows, func(h TruthHop) bool { return h.Outcome == model.HopStuck && h.Processing > 0 }), "failed, never redelivered")
			assert.True(t, anyHop(flows, func(h TruthHop) bool { return h.System == "http" }), "never called back")
		}},
		{ScenarioCallback, func(t *testing.T, flows []generated) {
			for _, f := range flows {
				i := slices.IndexFunc(f.Hops, func(h TruthHop) bool { return h.System == "http" })
				require.GreaterOrEqual(t, i, 0)
				h := f.Hops[i]
				assert.GreaterOrEqual(t, h.QueueWait, 2*time.Second)
				assert.Positive(t, h.Processing)
				assert.Equal(t, h.Consumer, h.ConsumerGroup)
				assert.True(t, strings.HasPrefix(h.MessageID, "cb_"))
				allAcked(t, f)
			}
		}},
		{ScenarioCelery, func(t *testing.T, flows []generated) {
			for _, f := range flows {
				assert.GreaterOrEqual(t, len(f.Hops), 2)
				assert.LessOrEqual(t, len(f.Hops), 3)
				retried := 0
				for _, h := range f.Hops {
					assert.Equal(t, "celery", h.System)
					if h.Attempts == 2 {
						retried++
					}
				}
				assert.Equal(t, 1, retried)
				assert.Equal(t, uint32(1), f.Retries)
				allAcked(t, f)
				for _, ev := range f.events {
					assert.NotEmpty(t, ev.Operation)
					require.NotEmpty(t, ev.Keys)
					assert.Equal(t, model.Key{Kind: "task_id", Value: ev.MessageID}, ev.Keys[0], "a task's own id comes first")
				}
			}
			assert.True(t, anyEvent(flows, func(ev model.Event) bool { return len(ev.Keys) == 3 }), "own, root and parent ids")
		}},
		{ScenarioLinksOnly, func(t *testing.T, flows []generated) {
			for _, f := range flows {
				for _, h := range f.Hops {
					_, ok := model.ParseSpanRef(h.MessageID)
					assert.True(t, ok, h.MessageID)
				}
				for _, ev := range f.events {
					assert.Empty(t, ev.MessageID)
				}
				allAcked(t, f)
			}
			publishes := make(map[string]bool)
			for _, f := range flows {
				for _, ev := range f.events {
					if ev.Kind == model.EventPublish {
						publishes[ev.TraceID+"-"+ev.SpanID] = true
					}
				}
			}
			assert.True(t, anyEvent(flows, func(ev model.Event) bool {
				return ev.Kind != model.EventPublish && len(ev.Links) == 1 && ev.Links[0].TraceID != ev.TraceID
			}), "consumers in a new trace, linked")
			assert.True(t, anyEvent(flows, func(ev model.Event) bool {
				return ev.Kind == model.EventDeliver && len(ev.Links) == 0 && publishes[ev.TraceID+"-"+ev.ParentSpanID]
			}), "consumers as children of the publish")
			assert.True(t, anyEvent(flows, isBatch), "batch consumers")
		}},
	}
	for _, tt := range tests {
		t.Run(string(tt.scenario), func(t *testing.T) {
			flows := generate(t, tt.scenario)
			require.Len(t, flows, 60)
			tt.check(t, flows)
			for _, f := range flows {
				checkName(t, f)
			}
		})
	}
}

// checkName checks the name rule: the smallest hint, else the root hop's
// producer and publish destination.
func checkName(t *testing.T, f generated) {
	t.Helper()
	hint := ""
	for _, ev := range f.events {
		if ev.FlowName != "" && (hint == "" || ev.FlowName < hint) {
			hint = ev.FlowName
		}
	}
	if hint != "" {
		assert.Equal(t, hint, f.Name)
		return
	}
	// The root is the first message published: the flow's first event.
	root := f.events[0]
	for _, ev := range f.events {
		if ev.Kind == model.EventPublish || ev.Kind == model.EventCallbackRequest {
			if ev.Time.Before(root.Time) {
				root = ev
			}
		}
	}
	assert.Equal(t, root.Service+" "+root.Destination, f.Name)
}

func TestHopKeysAreUnique(t *testing.T) {
	w := Generate(Config{Seed: 5})
	seen := make(map[HopKey]bool)
	for _, tf := range w.Truth {
		for _, h := range tf.Hops {
			require.False(t, seen[h.Key()], "%s", h.Key())
			seen[h.Key()] = true
		}
	}
}
