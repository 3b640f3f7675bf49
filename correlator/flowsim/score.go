package flowsim

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// MaxDiffs caps Report.Diffs.
const MaxDiffs = 20

// Report is how the engine's hops and flows compare with the truth.
type Report struct {
	// TruthFlows counts the flows of the truth; each is one of:
	TruthFlows int
	// ExactFlows: one engine flow holds exactly its hops.
	ExactFlows int
	// SplitFlows: its hops are spread over several engine flows.
	SplitFlows int
	// MergedFlows: one engine flow holds its hops and others'.
	MergedFlows int
	// PartialFlows: one engine flow holds some of its hops and nothing else;
	// the rest are missing.
	PartialFlows int
	// MissingFlows: none of its hops is in the engine's output.
	MissingFlows int
	// ExtraFlows counts engine flows that hold no hop of the truth, or no
	// hop at all.
	ExtraFlows int
	// UnknownHops counts engine hops that match no hop of the truth, and
	// DuplicateHops hops of the truth the engine holds more than once.
	UnknownHops   int
	DuplicateHops int
	// Mismatches counts field differences by field: on exact flows status,
	// name, retries, dead_letters, hop_count, start, end, flow_row (no flow
	// row for the hops' flow id); on every hop found producer, consumer,
	// destination, attempts, outcome, queue_wait, processing.
	Mismatches map[string]int
	// Diffs say what went wrong, at most MaxDiffs lines; MoreDiffs counts
	// those left out.
	Diffs     []string
	MoreDiffs int
}

// Exact reports whether the engine built exactly the truth.
func (r Report) Exact() bool {
	return r.ExactFlows == r.TruthFlows && r.ExtraFlows == 0 && r.UnknownHops == 0 &&
		r.DuplicateHops == 0 && len(r.Mismatches) == 0
}

// String is a summary line followed by the diffs.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d flows: %d exact, %d split, %d merged, %d partial, %d missing; %d extra flows, %d unknown hops, %d duplicate hops",
		r.TruthFlows, r.ExactFlows, r.SplitFlows, r.MergedFlows, r.PartialFlows, r.MissingFlows, r.ExtraFlows, r.UnknownHops, r.DuplicateHops)
	if len(r.Mismatches) > 0 {
		fields := make([]string, 0, len(r.Mismatches))
		for field := range r.Mismatches {
			fields = append(fields, field)
		}
		slices.Sort(fields)
		b.WriteString("; mismatches:")
		for _, field := range fields {
			fmt.Fprintf(&b, " %s %d", field, r.Mismatches[field])
		}
	}
	for _, d := range r.Diffs {
		b.WriteString("\n  ")
		b.WriteString(d)
	}
	if r.MoreDiffs > 0 {
		fmt.Fprintf(&b, "\n  … and %d more", r.MoreDiffs)
	}
	return b.String()
}

func (r *Report) diff(format string, args ...any) {
	if len(r.Diffs) >= MaxDiffs {
		r.MoreDiffs++
		return
	}
	r.Diffs = append(r.Diffs, fmt.Sprintf(format, args...))
}

func (r *Report) mismatch(field, format string, args ...any) {
	if r.Mismatches == nil {
		r.Mismatches = make(map[string]int)
	}
	r.Mismatches[field]++
	r.diff(format, args...)
}

// Latest applies versions: of every (FlowID, HopID) the hop with the highest
// Version, of every flow ID the flow with the highest Version, leaving out
// those whose newest version is Deleted. The result is sorted by id.
func Latest(hops []model.Hop, flows []model.Flow) ([]model.Hop, []model.Flow) {
	type hopID struct{ flow, hop string }
	newestHop := make(map[hopID]model.Hop)
	for _, h := range hops {
		id := hopID{h.FlowID, h.HopID}
		if cur, ok := newestHop[id]; !ok || h.Version > cur.Version {
			newestHop[id] = h
		}
	}
	newestFlow := make(map[string]model.Flow)
	for _, f := range flows {
		if cur, ok := newestFlow[f.ID]; !ok || f.Version > cur.Version {
			newestFlow[f.ID] = f
		}
	}
	var outHops []model.Hop
	for _, h := range newestHop {
		if !h.Deleted {
			outHops = append(outHops, h)
		}
	}
	var outFlows []model.Flow
	for _, f := range newestFlow {
		if !f.Deleted {
			outFlows = append(outFlows, f)
		}
	}
	slices.SortFunc(outHops, func(a, b model.Hop) int {
		return cmp.Or(cmp.Compare(a.FlowID, b.FlowID), cmp.Compare(a.HopID, b.HopID))
	})
	slices.SortFunc(outFlows, func(a, b model.Flow) int { return cmp.Compare(a.ID, b.ID) })
	return outHops, outFlows
}

// Score compares the engine's final hops and flows (one version each, as
// Latest leaves them) with the truth. Engine hops match truth hops by
// (System, MessageID, ConsumerGroup); a truth flow is found exactly when one
// engine flow (hops grouped by FlowID) holds exactly its hops.
func Score(truth []TruthFlow, hops []model.Hop, flows []model.Flow) Report {
	r := Report{TruthFlows: len(truth)}

	type place struct{ flow, hop int }
	truthOf := make(map[HopKey]place)
	for fi, tf := range truth {
		for hi, th := range tf.Hops {
			truthOf[th.Key()] = place{fi, hi}
		}
	}
	flowRows := make(map[string]model.Flow, len(flows))
	for _, f := range flows {
		flowRows[f.ID] = f
	}

	// The engine's flows, by the hops they hold; and where each truth hop is.
	engineHops := make(map[string][]model.Hop)
	var engineIDs []string
	found := make(map[HopKey][]model.Hop)
	for _, h := range hops {
		if _, ok := engineHops[h.FlowID]; !ok {
			engineIDs = append(engineIDs, h.FlowID)
		}
		engineHops[h.FlowID] = append(engineHops[h.FlowID], h)
		key := HopKey{System: h.System, MessageID: h.MessageID, ConsumerGroup: h.ConsumerGroup}
		if _, ok := truthOf[key]; !ok {
			r.UnknownHops++
			r.diff("unknown hop %s in engine flow %s (%s → %s → %s, %s)", key, h.FlowID, h.Producer, h.Destination, h.Consumer, h.Outcome)
			continue
		}
		found[key] = append(found[key], h)
	}

	for fi, tf := range truth {
		label := fmt.Sprintf("flow %d (%s %q)", fi, tf.Scenario, tf.Name)
		var ids []string
		missing := 0
		for _, th := range tf.Hops {
			got := found[th.Key()]
			if len(got) == 0 {
				missing++
				continue
			}
			if len(got) > 1 {
				r.DuplicateHops++
				r.diff("%s: hop %s is held %d times", label, th.Key(), len(got))
			}
			for _, h := range got {
				if !slices.Contains(ids, h.FlowID) {
					ids = append(ids, h.FlowID)
				}
			}
			compareHop(&r, label, th, got[0])
		}
		switch {
		case len(ids) == 0:
			r.MissingFlows++
			r.diff("%s: missing, none of its %d hops found", label, len(tf.Hops))
		case len(ids) > 1:
			r.SplitFlows++
			r.diff("%s: split over engine flows %s", label, strings.Join(ids, ", "))
		default:
			others := 0
			for _, h := range engineHops[ids[0]] {
				if p, ok := truthOf[HopKey{System: h.System, MessageID: h.MessageID, ConsumerGroup: h.ConsumerGroup}]; !ok || p.flow != fi {
					others++
				}
			}
			switch {
			case others > 0:
				r.MergedFlows++
				r.diff("%s: merged, engine flow %s also holds %d other hops", label, ids[0], others)
			case missing > 0:
				r.PartialFlows++
				r.diff("%s: partial, engine flow %s lacks %d of its %d hops", label, ids[0], missing, len(tf.Hops))
			default:
				r.ExactFlows++
				compareFlow(&r, label, tf, ids[0], flowRows)
			}
		}
	}

	for _, id := range engineIDs {
		known := false
		for _, h := range engineHops[id] {
			_, ok := truthOf[HopKey{System: h.System, MessageID: h.MessageID, ConsumerGroup: h.ConsumerGroup}]
			known = known || ok
		}
		if !known {
			r.ExtraFlows++
			r.diff("extra engine flow %s: %d hops, none of the truth", id, len(engineHops[id]))
		}
	}
	for _, f := range flows {
		if _, ok := engineHops[f.ID]; !ok {
			r.ExtraFlows++
			r.diff("extra engine flow %s %q: no hops", f.ID, f.Name)
		}
	}
	return r
}

func compareHop(r *Report, label string, want TruthHop, got model.Hop) {
	where := label + ": hop " + want.Key().String()
	check := func(field string, want, got any) {
		if want != got {
			r.mismatch(field, "%s: %s %v, want %v", where, field, got, want)
		}
	}
	check("producer", want.Producer, got.Producer)
	check("consumer", want.Consumer, got.Consumer)
	check("destination", want.Destination, got.Destination)
	check("attempts", want.Attempts, got.Attempts)
	check("outcome", want.Outcome, got.Outcome)
	check("queue_wait", want.QueueWait, got.QueueWait)
	check("processing", want.Processing, got.Processing)
}

func compareFlow(r *Report, label string, want TruthFlow, id string, rows map[string]model.Flow) {
	got, ok := rows[id]
	if !ok {
		r.mismatch("flow_row", "%s: no flow row for engine flow %s", label, id)
		return
	}
	where := label + ": engine flow " + id
	check := func(field string, want, got any) {
		if want != got {
			r.mismatch(field, "%s: %s %v, want %v", where, field, got, want)
		}
	}
	check("status", want.Status, got.Status)
	check("name", want.Name, got.Name)
	check("retries", want.Retries, got.Retries)
	check("dead_letters", want.DeadLetters, got.DeadLetters)
	check("hop_count", uint32(len(want.Hops)), got.HopCount)
	checkTime := func(field string, want, got time.Time) {
		if !want.Equal(got) {
			r.mismatch(field, "%s: %s %s, want %s", where, field, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
		}
	}
	checkTime("start", want.Start, got.Start)
	checkTime("end", want.End, got.End)
}
