package correlator

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/flowtrace/flowtrace/model/modelcodec"
)

// A checkpoint's binary form, written straight from the engine's state.
// Copying the state and encoding the copy with gob took 0.6 s of CPU per
// 100,000 flows; on one loaded core that burst held every span up for
// seconds. This takes a third of it.
//
//	magic byte, uvarint format, varint now, uvarint version,
//	uvarint symbol count, each symbol as a string,
//	the Stats counters as uvarints, in their order,
//	uvarint flow count, then each flow:
//	  varint first seen, varint last activity, uvarint state, uvarint flags,
//	  uvarint emitted id, uvarint anchor,
//	  uvarint key count, each: uvarint kind, string value,
//	  uvarint message count, each message:
//	    uvarint alias count, each alias as a uvarint,
//	    string broker id, uvarints system, producer, publish destination,
//	    publish attempt, flags, publish trace, emitted parent; varint publish,
//	    uvarint 0 without extra, or 1 and: string min ref, uvarints operation,
//	    flow name; varint groupless; uvarint groupless reason; uvarint reason
//	    count, each: uvarints group, reason,
//	    uvarint hop count, each: uvarints group, consumer, destination,
//	    trace, attempts, process attempt, trace attempt, flags; varints
//	    deliver, settle, processing.
//
// Strings are a uvarint length, then the bytes. Checkpoints of format 4 and
// before were gob; Restore reads those too.

// snapshotMagic opens a binary checkpoint. It can never open a gob stream,
// whose first byte is below 0x80 or above 0xf7.
const snapshotMagic = 0xc5

// snapshotWriter appends a checkpoint's binary form.
type snapshotWriter struct{ buf []byte }

func (w *snapshotWriter) uvarint(v uint64) { w.buf = binary.AppendUvarint(w.buf, v) }
func (w *snapshotWriter) varint(v int64)   { w.buf = binary.AppendVarint(w.buf, v) }
func (w *snapshotWriter) sym(s sym)        { w.uvarint(uint64(s)) }
func (w *snapshotWriter) count(n int)      { w.uvarint(uint64(n)) }
func (w *snapshotWriter) string(s string)  { w.buf = modelcodec.AppendString(w.buf, s) }

// encodeSnapshot writes the engine's state in the binary form. Call it from
// the goroutine that owns the engine.
func (e *Engine) encodeSnapshot() []byte {
	aliases := e.aliasesByMessage()
	w := &snapshotWriter{buf: make([]byte, 0, 512*e.flows+1024)} // a two-hop flow takes about 300 bytes
	w.buf = append(w.buf, snapshotMagic)
	w.uvarint(checkpointFormat)
	w.varint(e.now)
	w.uvarint(e.version)
	w.count(len(e.syms.names))
	for _, name := range e.syms.names {
		w.string(name)
	}
	for _, counter := range statsCounters(&e.stats) {
		w.uvarint(*counter)
	}
	w.count(e.flows) // every flow on the lists below, and only those
	for state := flowActive; state < flowReleased; state++ {
		for f := e.lists[state].head; f != nil; f = f.next {
			e.encodeFlow(w, f, aliases)
		}
	}
	return w.buf
}

// statsCounters are the Stats a checkpoint keeps, in their order. The
// in-flight gauges are not among them: restoring counts them again.
func statsCounters(s *Stats) []*uint64 {
	return []*uint64{&s.EventsAdded, &s.EventsIgnored, &s.FlowsReopened, &s.FlowsReleased,
		&s.EvictedByHops, &s.EvictedByFlows, &s.FinishedEarly, &s.Migrations}
}

func (e *Engine) encodeFlow(w *snapshotWriter, f *flow, aliases *messageAliases) {
	w.varint(f.firstSeen)
	w.varint(f.lastActivity)
	w.uvarint(uint64(f.state))
	w.uvarint(uint64(f.flags))
	w.uvarint(f.emittedID)
	w.uvarint(f.anchor)
	w.count(len(f.keys))
	for _, k := range f.keys {
		w.sym(k.kind)
		w.string(k.value)
	}
	messages := e.liveMessages(f)
	w.count(len(messages))
	for _, m := range messages {
		ids := aliases.of(m)
		w.count(len(ids))
		for _, id := range ids {
			w.uvarint(id)
		}
		w.string(m.brokerID)
		w.sym(m.system)
		w.sym(m.producer)
		w.sym(m.pubDest)
		w.uvarint(uint64(m.pubAttempt))
		w.uvarint(uint64(m.flags))
		w.uvarint(uint64(m.pubTrace))
		w.uvarint(uint64(m.emittedParent))
		w.varint(m.publish)
		if x := m.extra; x == nil {
			w.uvarint(0)
		} else {
			w.uvarint(1)
			w.string(x.minRef)
			w.sym(x.operation)
			w.sym(x.flowName)
			w.varint(x.groupless)
			w.sym(x.grouplessReason)
			w.count(len(x.reasons))
			for _, r := range x.reasons {
				w.sym(r.group)
				w.sym(r.reason)
			}
		}
		w.count(len(m.hops))
		for _, h := range m.hops {
			w.sym(h.group)
			w.sym(h.consumer)
			w.sym(h.dest)
			w.uvarint(uint64(h.trace))
			w.uvarint(uint64(h.attempts))
			w.uvarint(uint64(h.procAttempt))
			w.uvarint(uint64(h.traceAttempt))
			w.uvarint(uint64(h.flags))
			w.varint(h.deliver)
			w.varint(h.settle)
			w.varint(h.processing)
		}
	}
}

// snapshotReader reads the binary form; the first problem sticks.
type snapshotReader struct {
	*modelcodec.Decoder
	outOfRange bool // a number too large for its field
}

var errOutOfRange = errors.New("value out of range")

// bounded reads a uvarint that must not exceed limit.
func (r *snapshotReader) bounded(limit uint64) uint64 {
	v := r.Uvarint()
	if v > limit {
		r.outOfRange = true
		return 0
	}
	return v
}

func (r *snapshotReader) u8() uint8   { return uint8(r.bounded(math.MaxUint8)) }
func (r *snapshotReader) u16() uint16 { return uint16(r.bounded(math.MaxUint16)) }
func (r *snapshotReader) u32() uint32 { return uint32(r.bounded(math.MaxUint32)) }
func (r *snapshotReader) sym() sym    { return sym(r.u32()) }

// err is the first problem met, if any.
func (r *snapshotReader) err() error {
	if err := r.Err(); err != nil {
		return err
	}
	if r.outOfRange {
		return errOutOfRange
	}
	return nil
}

// restoreBinary loads a checkpoint in the binary form, magic byte included.
func (e *Engine) restoreBinary(data []byte) error {
	r := &snapshotReader{Decoder: modelcodec.NewDecoder(data[1:])}
	if format := r.Uvarint(); format != checkpointFormat {
		return fmt.Errorf("read checkpoint: format %d, want %d", format, checkpointFormat)
	}
	now, version := r.Varint(), r.Uvarint()
	symbols := make([]string, r.Count())
	for i := range symbols {
		symbols[i] = r.String()
	}
	var stats Stats
	for _, counter := range statsCounters(&stats) {
		*counter = r.Uvarint()
	}
	if err := r.err(); err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	if len(symbols) == 0 || symbols[0] != "" {
		return errors.New("read checkpoint: bad symbol table")
	}
	e.now, e.version, e.stats = now, version, stats
	for range r.Count() {
		var fs flowSnapshot
		r.flow(&fs)
		if err := r.err(); err != nil {
			return fmt.Errorf("read checkpoint: %w", err)
		}
		if _, err := e.restoreFlow(&fs, symbols); err != nil {
			return fmt.Errorf("read checkpoint: %w", err)
		}
	}
	if err := r.err(); err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	if r.Len() != 0 {
		return fmt.Errorf("read checkpoint: %w", modelcodec.ErrCorrupt)
	}
	return nil
}

func (r *snapshotReader) flow(fs *flowSnapshot) {
	fs.FirstSeen, fs.LastActivity = r.Varint(), r.Varint()
	fs.State, fs.Flags = flowState(r.u8()), flowFlags(r.u8())
	fs.EmittedID, fs.Anchor = r.Uvarint(), r.Uvarint()
	fs.Keys = make([]flowKeySnapshot, r.Count())
	for i := range fs.Keys {
		fs.Keys[i] = flowKeySnapshot{Kind: r.sym(), Value: r.String()}
	}
	fs.Messages = make([]messageSnapshot, r.Count())
	for i := range fs.Messages {
		r.message(&fs.Messages[i])
	}
}

func (r *snapshotReader) message(ms *messageSnapshot) {
	ms.Aliases = make([]uint64, r.Count())
	for i := range ms.Aliases {
		ms.Aliases[i] = r.Uvarint()
	}
	ms.BrokerID = r.String()
	ms.System, ms.Producer, ms.PubDest = r.sym(), r.sym(), r.sym()
	ms.PubAttempt, ms.Flags = r.u16(), msgFlags(r.u8())
	ms.PubTrace, ms.EmittedParent = r.u32(), r.u32()
	ms.Publish = r.Varint()
	if r.bounded(1) == 1 {
		x := &extraSnapshot{MinRef: r.String(), Operation: r.sym(), FlowName: r.sym(), Groupless: r.Varint(), GrouplessReason: r.sym()}
		n := r.Count()
		x.ReasonGroups, x.Reasons = make([]sym, n), make([]sym, n)
		for i := range n {
			x.ReasonGroups[i], x.Reasons[i] = r.sym(), r.sym()
		}
		ms.Extra = x
	}
	ms.Hops = make([]hopSnapshot, r.Count())
	for i := range ms.Hops {
		ms.Hops[i] = hopSnapshot{
			Group: r.sym(), Consumer: r.sym(), Dest: r.sym(), Trace: r.u32(),
			Attempts: r.u16(), ProcAttempt: r.u16(), TraceAttempt: r.u16(), Flags: hopFlags(r.u8()),
			Deliver: r.Varint(), Settle: r.Varint(), Processing: r.Varint(),
		}
	}
}
