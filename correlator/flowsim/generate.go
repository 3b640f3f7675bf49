package flowsim

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// Workload is a generated set of flows: their events in the order they reach
// the engine, when each one arrives, and the truth the engine should build.
type Workload struct {
	// Events are the events in delivery order, duplicates included.
	Events []model.Event
	// Arrivals[i] is the processing time at which Events[i] reaches the
	// engine. Arrivals increase strictly; each is at least the end of its
	// event's span plus Config.ExportDelay, and a late event's is later still.
	Arrivals []time.Time
	// Truth holds every flow as the engine should report it once all have
	// finished, in the order the flows started.
	Truth []TruthFlow

	// flowOf[i] is the index in Truth of the flow Events[i] belongs to.
	flowOf []int
}

// MaxQuiet is the longest a flow goes without an event reaching the engine
// between its first and its last arrival, in processing time. An engine that
// keeps a flow for longer than that after its last activity (flow_idle plus
// retain) never forgets a flow while its late events are still coming.
func (w Workload) MaxQuiet() time.Duration {
	last := make(map[int]time.Time)
	var longest time.Duration
	for i, flow := range w.flowOf {
		if prev, ok := last[flow]; ok {
			longest = max(longest, w.Arrivals[i].Sub(prev))
		}
		last[flow] = w.Arrivals[i]
	}
	return longest
}

// Generate makes the workload cfg describes. It panics when cfg is not valid.
func Generate(cfg Config) Workload {
	if err := cfg.Validate(); err != nil {
		panic("flowsim: " + err.Error())
	}
	cfg = cfg.withDefaults()
	g := &generator{
		cfg:     cfg,
		rng:     rand.New(rand.NewPCG(cfg.Seed, pcgStream)),
		offsets: make(map[string]uint64),
	}

	var plan []Scenario
	for _, s := range cfg.Scenarios {
		for range cfg.Flows {
			plan = append(plan, s)
		}
	}
	g.rng.Shuffle(len(plan), func(i, j int) { plan[i], plan[j] = plan[j], plan[i] })

	start := cfg.Start
	flows := make([]*flowBuilder, len(plan))
	truth := make([]TruthFlow, len(plan))
	for i, s := range plan {
		if i > 0 {
			start = start.Add(g.exponential(cfg.FlowInterval))
		}
		flows[i] = g.build(s, start)
		truth[i] = flows[i].truth()
	}
	w := g.deliver(flows)
	w.Truth = truth
	return w
}

// pcgStream is the second word of the PCG seed, "flowsim" in ASCII.
const pcgStream = 0x666c6f7773696d

// generator owns the random source and the state shared between flows.
type generator struct {
	cfg     Config
	rng     *rand.Rand
	offsets map[string]uint64 // next offset per Kafka topic and partition
	serial  int               // business key numbers
}

// build generates one flow of scenario s starting at start.
func (g *generator) build(s Scenario, start time.Time) *flowBuilder {
	f := &flowBuilder{scenario: s}
	switch s {
	case ScenarioChain:
		g.chain(f, start)
	case ScenarioFanout:
		g.fanout(f, start)
	case ScenarioFanin:
		g.fanin(f, start)
	case ScenarioRetry:
		g.retry(f, start)
	case ScenarioDeadLetter:
		g.deadLetter(f, start)
	case ScenarioStuck:
		g.stuck(f, start)
	case ScenarioCallback:
		g.callback(f, start)
	case ScenarioCelery:
		g.celery(f, start)
	case ScenarioLinksOnly:
		g.linksOnly(f, start)
	}
	for i := range f.events {
		if f.events[i].Operation == "" {
			f.events[i].Operation = spanName(f.events[i].Event)
		}
	}
	return f
}

// delivered is one event on its way to the engine.
type delivered struct {
	event model.Event
	flow  int
	end   time.Time // when its span ended: the natural order of export
	seq   int       // generation order, to break ties
	key   float64   // position in delivery order
}

// deliver orders the flows' events as they reach the engine: by the end of
// their spans, shuffled within the window, some held back, some twice.
func (g *generator) deliver(flows []*flowBuilder) Workload {
	var items []delivered
	for fi, f := range flows {
		for _, ev := range f.events {
			items = append(items, delivered{event: ev.Event, flow: fi, end: ev.Time.Add(ev.Duration), seq: 2 * len(items)})
		}
	}
	slices.SortStableFunc(items, func(a, b delivered) int {
		return cmp.Or(a.end.Compare(b.end), cmp.Compare(a.seq, b.seq))
	})

	window := float64(g.cfg.ShuffleWindow)
	n := len(items)
	for i := range n {
		key := float64(i) + g.rng.Float64()*window
		if g.rng.Float64() < g.cfg.LateRate {
			key += float64(g.cfg.LateBy)
		}
		items[i].key = key
		if g.rng.Float64() < g.cfg.DuplicateRate {
			dup := items[i]
			dup.event.Links, dup.event.Keys = slices.Clone(dup.event.Links), slices.Clone(dup.event.Keys)
			dup.key = key + 0.5 + g.rng.Float64()*max(window-1, 0)
			dup.seq++
			items = append(items, dup)
		}
	}
	slices.SortStableFunc(items, func(a, b delivered) int {
		return cmp.Or(cmp.Compare(a.key, b.key), cmp.Compare(a.seq, b.seq))
	})

	w := Workload{
		Events:   make([]model.Event, len(items)),
		Arrivals: make([]time.Time, len(items)),
		flowOf:   make([]int, len(items)),
	}
	for i, it := range items {
		arrival := it.end.Add(g.cfg.ExportDelay)
		if i > 0 && !arrival.After(w.Arrivals[i-1]) {
			arrival = w.Arrivals[i-1].Add(time.Microsecond)
		}
		w.Events[i], w.Arrivals[i], w.flowOf[i] = it.event, arrival, it.flow
	}
	return w
}

// flowBuilder collects one flow's events and messages.
type flowBuilder struct {
	scenario Scenario
	events   []genEvent
	msgs     []message
}

// message is what the generator knows about one message of a flow.
type message struct {
	system    string
	id        string // the broker's message id; "" when span references identify it
	partition string
	keys      []model.Key
	operation string // task name, for Celery
	bodySize  uint64
	parent    int // the message whose consumer published this one; -1 for none
}

// genEvent is an event and the messages it concerns: one, or each message a
// batch consumer span links to.
type genEvent struct {
	model.Event
	msgs []int
}

func (f *flowBuilder) newMessage(m message) int {
	f.msgs = append(f.msgs, m)
	return len(f.msgs) - 1
}

// add records an event of message msg.
func (f *flowBuilder) add(msg int, ev model.Event) {
	f.events = append(f.events, genEvent{Event: ev, msgs: []int{msg}})
}

// spanCtx is a span's place: its trace and its own id. As the context an
// event is created in, spanID is the new span's parent ("" for a root).
type spanCtx struct {
	traceID string
	spanID  string
}

func (c spanCtx) ref() model.SpanRef { return model.SpanRef{TraceID: c.traceID, SpanID: c.spanID} }

// publication is one publish of a message.
type publication struct {
	service   string
	dest      string
	partition string // "" takes the message's
	at        time.Time
	in        spanCtx // the producing span; an empty trace starts a new one
	attempt   uint16
	group     string // the consumer group publishing to a dead-letter destination
	reason    string // why, for a publish to a dead-letter destination
}

// publish records a publish of msg and returns the publish span.
func (g *generator) publish(f *flowBuilder, msg int, p publication) spanCtx {
	m := f.msgs[msg]
	trace := p.in.traceID
	if trace == "" {
		trace = g.traceID()
	}
	partition := p.partition
	if partition == "" {
		partition = m.partition
	}
	ev := model.Event{
		Time:          p.at,
		Kind:          model.EventPublish,
		System:        m.system,
		Destination:   p.dest,
		Partition:     partition,
		MessageID:     m.id,
		Operation:     m.operation,
		Attempt:       p.attempt,
		Service:       p.service,
		ConsumerGroup: p.group,
		TraceID:       trace,
		SpanID:        g.spanID(),
		ParentSpanID:  p.in.spanID,
		Keys:          slices.Clone(m.keys),
		Reason:        p.reason,
		BodySize:      m.bodySize,
	}
	f.add(msg, ev)
	return spanCtx{traceID: trace, spanID: ev.SpanID}
}

// delivery is one delivery of a message to a consumer and what the consumer
// did with it.
type delivery struct {
	service   string
	group     string
	dest      string
	partition string // "" takes the message's
	at        time.Time
	attempt   uint16          // 0 leaves it unset, as Kafka consumers do
	in        spanCtx         // the consumer spans' trace and the first one's parent
	links     []model.SpanRef // links of the first consumer span
	linkBoth  bool            // the process span links too, even after a deliver span
	noDeliver bool            // the process span is the first
	process   time.Duration   // 0: delivered, never processed
	failure   string          // the process span's error; "" succeeds
	settle    string          // settle outcome; "" emits no settle span
}

// consumed is what a delivery produced.
type consumed struct {
	process    spanCtx // the process span
	start, end time.Time
	last       time.Time // the last event: the settle, else the process end
}

// consume records a delivery's deliver, process and settle spans.
func (g *generator) consume(f *flowBuilder, msg int, d delivery) consumed {
	m := f.msgs[msg]
	partition := d.partition
	if partition == "" {
		partition = m.partition
	}
	base := model.Event{
		System:        m.system,
		Destination:   d.dest,
		Partition:     partition,
		MessageID:     m.id,
		Operation:     m.operation,
		Attempt:       d.attempt,
		Service:       d.service,
		ConsumerGroup: d.group,
		TraceID:       d.in.traceID,
	}
	parent, links, start := d.in.spanID, d.links, d.at
	if !d.noDeliver {
		ev := base
		ev.Time, ev.Kind, ev.SpanID, ev.ParentSpanID = d.at, model.EventDeliver, g.spanID(), parent
		ev.Links, ev.Keys = slices.Clone(links), slices.Clone(m.keys)
		f.add(msg, ev)
		parent, start = ev.SpanID, d.at.Add(g.between(50*time.Microsecond, 3*time.Millisecond))
		if !d.linkBoth {
			links = nil
		}
	}
	if d.process == 0 {
		return consumed{last: d.at}
	}
	ev := base
	ev.Time, ev.Kind, ev.SpanID, ev.ParentSpanID = start, model.EventProcess, g.spanID(), parent
	ev.Links, ev.Keys, ev.Duration = slices.Clone(links), slices.Clone(m.keys), d.process
	if d.failure != "" {
		ev.Outcome, ev.Reason = "error", d.failure
	}
	f.add(msg, ev)
	out := consumed{process: spanCtx{traceID: ev.TraceID, spanID: ev.SpanID}, start: start, end: start.Add(d.process)}
	out.last = out.end
	if d.settle != "" {
		settle := base
		settle.Time, settle.Kind, settle.SpanID, settle.ParentSpanID = out.end.Add(g.between(20*time.Microsecond, 2*time.Millisecond)), model.EventSettle, g.spanID(), ev.SpanID
		settle.Outcome, settle.Keys = d.settle, slices.Clone(m.keys)
		f.add(msg, settle)
		out.last = settle.Time
	}
	return out
}

// note records an event that is neither a publish nor a consumer's: a
// broker's dead-letter or expiry, a callback.
func (f *flowBuilder) note(msg int, ev model.Event) {
	m := f.msgs[msg]
	ev.System, ev.MessageID = m.system, m.id
	if ev.Partition == "" {
		ev.Partition = m.partition
	}
	if ev.Operation == "" {
		ev.Operation = m.operation
	}
	ev.Keys = slices.Clone(m.keys)
	f.add(msg, ev)
}

// hint names the flow: the event at index i carries the flow-name hint.
func (f *flowBuilder) hint(i int, name string) {
	f.events[i].FlowName = name
}

// Random values.

func (g *generator) traceID() string {
	return fmt.Sprintf("%016x%016x", g.rng.Uint64(), g.rng.Uint64()|1)
}

func (g *generator) spanID() string {
	return fmt.Sprintf("%016x", g.rng.Uint64()|1)
}

func (g *generator) uuid() string {
	hi, lo := g.rng.Uint64(), g.rng.Uint64()
	hi = hi&^(0xf<<12) | 4<<12
	lo = lo&^(3<<62) | 2<<62
	return fmt.Sprintf("%08x-%04x-%04x-%04x-%012x", hi>>32, hi>>16&0xffff, hi&0xffff, lo>>48, lo&0xffffffffffff)
}

// nuid is a NATS-style message id: 22 base-62 characters.
func (g *generator) nuid() string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 22)
	for i := range b {
		b[i] = digits[g.rng.IntN(len(digits))]
	}
	return string(b)
}

// messageID is a broker message id in the style of system.
func (g *generator) messageID(system string) string {
	switch system {
	case "nats":
		return g.nuid()
	case "http":
		return fmt.Sprintf("cb_%016x", g.rng.Uint64())
	}
	return g.uuid()
}

// kafkaPartition picks a partition of topic and the offset of the next
// record written to it.
func (g *generator) kafkaPartition(topic string) (string, uint64) {
	partition := strconv.Itoa(g.rng.IntN(6))
	key := topic + "/" + partition
	offset, ok := g.offsets[key]
	if !ok {
		offset = g.rng.Uint64N(5_000_000)
	}
	g.offsets[key] = offset + 1 + g.rng.Uint64N(40)
	return partition, offset
}

func (g *generator) chance(p float64) bool { return g.rng.Float64() < p }

func pick[T any](g *generator, options []T) T { return options[g.rng.IntN(len(options))] }

// between is a duration in [lo, hi], in whole microseconds.
func (g *generator) between(lo, hi time.Duration) time.Duration {
	lo, hi = lo/time.Microsecond, hi/time.Microsecond
	return (lo + time.Duration(g.rng.Int64N(int64(hi-lo)+1))) * time.Microsecond
}

// exponential is an exponentially distributed duration with the given mean,
// in whole microseconds.
func (g *generator) exponential(mean time.Duration) time.Duration {
	return time.Duration(g.rng.ExpFloat64() * float64(mean)).Round(time.Microsecond)
}

// queueWait is how long a message waits for its consumer: mostly short, at
// times seconds behind a backlog.
func (g *generator) queueWait() time.Duration {
	switch r := g.rng.Float64(); {
	case r < 0.85:
		return g.between(time.Millisecond, 250*time.Millisecond)
	case r < 0.97:
		return g.between(250*time.Millisecond, 3*time.Second)
	default:
		return g.between(3*time.Second, 20*time.Second)
	}
}

// processing is how long a consumer works on a message.
func (g *generator) processing() time.Duration {
	switch r := g.rng.Float64(); {
	case r < 0.8:
		return g.between(3*time.Millisecond, 400*time.Millisecond)
	case r < 0.97:
		return g.between(400*time.Millisecond, 2500*time.Millisecond)
	default:
		return g.between(2500*time.Millisecond, 12*time.Second)
	}
}

// within is a time during the span from start lasting d.
func (g *generator) within(start time.Time, d time.Duration) time.Time {
	return start.Add(g.between(0, d))
}
