package correlator

import (
	"bytes"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// Sharded spreads flows over worker goroutines, each owning an Engine and
// all of its state: no lock is taken per event. A router, run by the
// caller's goroutine, keeps which worker holds each flow, by every identity
// and key hash the flow was joined by (a union-find over those hashes). An
// event goes to the worker that holds the flows it names; when it names flows
// held by different workers, those flows first move to one worker — the
// event is what joins them. Flows are therefore never split across workers,
// and the result is the same as one Engine's.
//
// Sharded has the Engine's methods and, like an Engine, is driven by one
// goroutine. Close stops its workers.
type Sharded struct {
	cfg     Config
	router  router
	workers []*worker
	pending [][]pendingEvent // per worker, routed but not yet sent
	ignored uint64
	ids     []uint64
}

// shardBatch is how many events go to a worker at a time.
const shardBatch = 256

type pendingEvent struct {
	now time.Time
	ev  model.Event
}

// worker owns an Engine; everything it does arrives as a closure on in.
type worker struct {
	engine *Engine
	in     chan func(*Engine)
	done   chan struct{}
}

// NewSharded starts n workers (at least one).
func NewSharded(cfg Config, n int) (*Sharded, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("workers: must be at least 1, got %d", n)
	}
	s := &Sharded{cfg: cfg, router: newRouter(cfg, n), pending: make([][]pendingEvent, n)}
	// Each worker keeps its share of the state limits.
	share := cfg.withDefaults()
	share.MaxInFlightHops = max(share.MaxInFlightHops/n, 1)
	share.MaxInFlightFlows = max(share.MaxInFlightFlows/n, 1)
	for range n {
		e, err := New(share)
		if err != nil {
			return nil, err
		}
		e.trackReleases = true
		w := &worker{engine: e, in: make(chan func(*Engine), 64), done: make(chan struct{})}
		go w.run()
		s.workers = append(s.workers, w)
	}
	return s, nil
}

func (w *worker) run() {
	defer close(w.done)
	for work := range w.in {
		work(w.engine)
	}
}

// do runs fn on the worker and waits for it.
func (w *worker) do(fn func(*Engine)) {
	done := make(chan struct{})
	w.in <- func(e *Engine) {
		fn(e)
		close(done)
	}
	<-done
}

// Add routes one event to the worker holding its flow. Like Engine.Add, it
// keeps nothing of ev: the worker gets a copy.
func (s *Sharded) Add(now time.Time, ev *model.Event) {
	if kind, _, _ := s.router.normalize(ev); isBatch(ev, kind) && !hasFlowKeys(ev) {
		// Nothing joins the linked messages' flows: each link goes on its own.
		for _, link := range ev.Links {
			one := *ev
			one.Links = []model.SpanRef{link}
			s.add(now, &one)
		}
		return
	}
	s.add(now, ev)
}

func hasFlowKeys(ev *model.Event) bool {
	if ev.TraceID != "" {
		return true
	}
	for _, k := range ev.Keys {
		if k.Value != "" {
			return true
		}
	}
	return false
}

func (s *Sharded) add(now time.Time, ev *model.Event) {
	s.ids = s.router.routingIDs(ev, s.ids[:0])
	if len(s.ids) == 0 {
		s.ignored++
		return
	}
	shard := s.router.route(s.ids, s.migrate)
	copied := *ev
	copied.Links = append([]model.SpanRef(nil), ev.Links...)
	copied.Keys = append([]model.Key(nil), ev.Keys...)
	s.pending[shard] = append(s.pending[shard], pendingEvent{now: now, ev: copied})
	if len(s.pending[shard]) >= shardBatch {
		s.send(shard)
	}
}

// send hands a worker its pending events.
func (s *Sharded) send(shard int) {
	batch := s.pending[shard]
	if len(batch) == 0 {
		return
	}
	s.pending[shard] = make([]pendingEvent, 0, shardBatch)
	s.workers[shard].in <- func(e *Engine) {
		for i := range batch {
			e.Add(batch[i].now, &batch[i].ev)
		}
	}
}

func (s *Sharded) sendAll() {
	for shard := range s.workers {
		s.send(shard)
	}
}

// migrate moves the flows named by ids from one worker to another. Events
// already routed to either go first, so each sees its events in order.
func (s *Sharded) migrate(ids []uint64, from, to int) {
	s.send(from)
	var b *bundle
	s.workers[from].do(func(e *Engine) { b = e.extract(ids) })
	s.send(to)
	s.workers[to].in <- func(e *Engine) {
		if err := e.implant(b); err != nil {
			// A bundle comes from an engine and is whole; this is a bug.
			panic(fmt.Sprintf("correlator: implant: %v", err))
		}
		e.stats.Migrations++
	}
}

// Advance moves every worker's processing time to now, and forgets the
// routes of the flows they released.
func (s *Sharded) Advance(now time.Time) {
	s.sendAll()
	released := make([][]uint64, len(s.workers))
	s.each(func(i int, e *Engine) {
		e.Advance(now)
		released[i] = e.releasedAnchors
		e.releasedAnchors = nil
	})
	for _, anchors := range released {
		for _, a := range anchors {
			s.router.release(a)
		}
	}
}

// each runs fn on every worker at once and waits for all.
func (s *Sharded) each(fn func(int, *Engine)) {
	done := make(chan struct{}, len(s.workers))
	for i, w := range s.workers {
		w.in <- func(e *Engine) {
			fn(i, e)
			done <- struct{}{}
		}
	}
	for range s.workers {
		<-done
	}
}

// Flush returns every worker's new versions.
func (s *Sharded) Flush() Changes {
	s.sendAll()
	parts := make([]Changes, len(s.workers))
	s.each(func(i int, e *Engine) { parts[i] = e.Flush() })
	var out Changes
	for _, c := range parts {
		for _, f := range c.Finished {
			out.Finished = append(out.Finished, len(out.Flows)+f)
		}
		out.Hops = append(out.Hops, c.Hops...)
		out.Flows = append(out.Flows, c.Flows...)
	}
	return out
}

// Stats sums the workers' counters and gauges.
func (s *Sharded) Stats() Stats {
	s.sendAll()
	parts := make([]Stats, len(s.workers))
	s.each(func(i int, e *Engine) { parts[i] = e.Stats() })
	total := Stats{EventsIgnored: s.ignored}
	for _, p := range parts {
		total.EventsAdded += p.EventsAdded
		total.EventsIgnored += p.EventsIgnored
		total.FlowsReopened += p.FlowsReopened
		total.FlowsReleased += p.FlowsReleased
		total.EvictedByHops += p.EvictedByHops
		total.EvictedByFlows += p.EvictedByFlows
		total.FinishedEarly += p.FinishedEarly
		total.Migrations += p.Migrations
		total.InFlightHops += p.InFlightHops
		total.InFlightFlows += p.InFlightFlows
		total.StuckFlows += p.StuckFlows
	}
	return total
}

// shardedSnapshot is a checkpoint of every worker.
type shardedSnapshot struct {
	Format  int
	Workers [][]byte
}

// shardedSnapshots are every worker's snapshot, taken at one moment.
type shardedSnapshots []Snapshot

func (parts shardedSnapshots) Encode(w io.Writer) error {
	snap := shardedSnapshot{Format: checkpointFormat, Workers: make([][]byte, len(parts))}
	for i, part := range parts {
		var buf bytes.Buffer
		if err := part.Encode(&buf); err != nil {
			return err
		}
		snap.Workers[i] = buf.Bytes()
	}
	if err := gob.NewEncoder(w).Encode(&snap); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

// Snapshot copies every worker's state, once each has taken the events sent
// before.
func (s *Sharded) Snapshot() Snapshot {
	s.sendAll()
	parts := make(shardedSnapshots, len(s.workers))
	s.each(func(i int, e *Engine) { parts[i] = e.Snapshot() })
	return parts
}

// Checkpoint writes every worker's state: Snapshot, then Encode.
func (s *Sharded) Checkpoint(w io.Writer) error {
	return s.Snapshot().Encode(w)
}

// Restore loads a checkpoint written with the same number of workers into
// a new Sharded, and rebuilds its routes.
func (s *Sharded) Restore(r io.Reader) error {
	var snap shardedSnapshot
	if err := gob.NewDecoder(r).Decode(&snap); err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	if snap.Format != checkpointFormat && snap.Format != gobFormat { // each worker's part says which
		return fmt.Errorf("read checkpoint: format %d, want %d", snap.Format, checkpointFormat)
	}
	if len(snap.Workers) != len(s.workers) {
		return fmt.Errorf("read checkpoint: written by %d workers, not %d", len(snap.Workers), len(s.workers))
	}
	errs := make([]error, len(s.workers))
	routes := make([][][]uint64, len(s.workers))
	s.each(func(i int, e *Engine) {
		if errs[i] = e.Restore(bytes.NewReader(snap.Workers[i])); errs[i] == nil {
			routes[i] = e.idsByFlow()
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for shard, flows := range routes {
		for _, ids := range flows {
			s.router.add(ids, shard)
		}
	}
	return nil
}

// idsByFlow lists, per live flow, every identity and key hash that names it.
func (e *Engine) idsByFlow() [][]uint64 {
	byFlow := map[*flow][]uint64{}
	for id, m := range e.aliases {
		if f := rootFlow(m.root()); f != nil && f.state != flowReleased {
			byFlow[f] = append(byFlow[f], id)
		}
	}
	for id, f := range e.keys {
		if f = f.root(); f.state != flowReleased {
			byFlow[f] = append(byFlow[f], id)
		}
	}
	out := make([][]uint64, 0, len(byFlow))
	for _, ids := range byFlow {
		out = append(out, ids)
	}
	return out
}

// Close stops the workers. The Sharded must not be used after.
func (s *Sharded) Close() {
	for _, w := range s.workers {
		close(w.in)
		<-w.done
	}
}

// router keeps which worker holds each flow: one component per flow, with
// every hash that names it, and each hash mapped to its component. Joining
// components re-points the smaller one's hashes, so a lookup is one map read
// and each hash moves O(log n) times at most. Owned by the Sharded's
// goroutine.
type router struct {
	identifier
	n     int
	owner map[uint64]int32 // hash → component
	comps []component
	free  []int32
	found []int32
}

type component struct {
	shard int32
	ids   []uint64
}

func newRouter(cfg Config, n int) router {
	return router{identifier: newIdentifier(cfg), n: n, owner: map[uint64]int32{}}
}

func (r *router) newComponent(shard int32) int32 {
	if n := len(r.free); n > 0 {
		c := r.free[n-1]
		r.free = r.free[:n-1]
		r.comps[c] = component{shard: shard}
		return c
	}
	r.comps = append(r.comps, component{shard: shard})
	return int32(len(r.comps) - 1)
}

// route returns the worker for an event naming ids, moving flows first
// (through migrate) when ids name flows on different workers.
func (r *router) route(ids []uint64, migrate func(ids []uint64, from, to int)) int {
	found := r.found[:0]
	for _, id := range ids {
		if c, ok := r.owner[id]; ok && !containsComponent(found, c) {
			found = append(found, c)
		}
	}
	var target int32
	if len(found) == 0 {
		target = r.newComponent(int32(ids[0] % uint64(r.n)))
	} else {
		target = found[0]
		for _, c := range found[1:] {
			if len(r.comps[c].ids) > len(r.comps[target].ids) {
				target = c
			}
		}
		for _, c := range found {
			if c == target {
				continue
			}
			if from, to := r.comps[c].shard, r.comps[target].shard; from != to {
				migrate(r.comps[c].ids, int(from), int(to))
			}
			r.union(target, c)
		}
	}
	r.found = found[:0]
	for _, id := range ids {
		if _, ok := r.owner[id]; !ok {
			r.owner[id] = target
			r.comps[target].ids = append(r.comps[target].ids, id)
		}
	}
	return int(r.comps[target].shard)
}

func containsComponent(cs []int32, c int32) bool {
	for _, x := range cs {
		if x == c {
			return true
		}
	}
	return false
}

// union folds component c into component into.
func (r *router) union(into, c int32) {
	for _, id := range r.comps[c].ids {
		r.owner[id] = into
	}
	r.comps[into].ids = append(r.comps[into].ids, r.comps[c].ids...)
	r.comps[c].ids = nil
	r.free = append(r.free, c)
}

// add records a flow restored on a worker.
func (r *router) add(ids []uint64, shard int) {
	if len(ids) == 0 {
		return
	}
	c := r.newComponent(int32(shard))
	r.comps[c].ids = ids
	for _, id := range ids {
		r.owner[id] = c
	}
}

// release forgets the flow a worker released, known by its anchor.
func (r *router) release(anchor uint64) {
	c, ok := r.owner[anchor]
	if !ok {
		return
	}
	for _, id := range r.comps[c].ids {
		delete(r.owner, id)
	}
	r.comps[c].ids = nil
	r.free = append(r.free, c)
}
