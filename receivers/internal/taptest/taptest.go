// Package taptest holds what the broker taps' tests share: the correlator
// run over a tap's spans alone. The local brokers' addresses come from
// internal/brokertest.
package taptest

import (
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/correlator"
	"github.com/flowtrace/flowtrace/correlator/flowsim"
	"github.com/flowtrace/flowtrace/correlator/spanevent"
	"github.com/flowtrace/flowtrace/model"
)

// Result is what the correlator built: the newest version of every hop and
// flow, sorted by id.
type Result struct {
	Hops  []model.Hop
	Flows []model.Flow
}

// HopsOf returns the hops of the flow id.
func (r Result) HopsOf(flowID string) []model.Hop {
	var out []model.Hop
	for _, h := range r.Hops {
		if h.FlowID == flowID {
			out = append(out, h)
		}
	}
	return out
}

// Correlate runs the correlator over spans, as the correlator connector
// would, and finishes every flow (as if flow_idle had passed).
func Correlate(t testing.TB, cfg correlator.Config, spans ...ptrace.Traces) Result {
	t.Helper()
	e, err := correlator.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	conv := spanevent.New(spanevent.Config{})
	now := time.Now()
	var malformed int
	for _, td := range spans {
		stats := conv.Convert(td, func(ev *model.Event) { e.Add(now, ev) })
		malformed += stats.Malformed
	}
	if malformed > 0 {
		t.Errorf("the correlator found %d malformed attributes in the tap's spans", malformed)
	}
	var hops []model.Hop
	var flows []model.Flow
	collect := func() {
		c := e.Flush()
		hops = append(hops, c.Hops...)
		flows = append(flows, c.Flows...)
	}
	collect()
	e.Advance(now.Add(24 * time.Hour))
	collect()
	h, f := flowsim.Latest(hops, flows)
	return Result{Hops: h, Flows: f}
}
