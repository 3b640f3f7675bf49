package correlator

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
)

// checkpointFormat changes whenever the snapshot's shape does; a checkpoint
// of another format is refused rather than misread.
const checkpointFormat = 3

// snapshot is the engine's state in a form gob can write. Union-find sets are
// flattened to their roots; released flows are left out.
type snapshot struct {
	Format  int
	Now     int64
	Version uint64
	Symbols []string
	Stats   Stats
	Flows   []flowSnapshot
}

type flowSnapshot struct {
	FirstSeen, LastActivity int64
	State                   flowState
	Flags                   flowFlags
	EmittedID               uint64
	Keys                    []flowKeySnapshot
	Messages                []messageSnapshot
}

type flowKeySnapshot struct {
	Kind  sym
	Value string
}

type messageSnapshot struct {
	Aliases                 []uint64 // identity hashes that name it
	BrokerID                string
	System                  sym
	Producer, PubDest       sym
	PubAttempt              uint16
	Flags                   msgFlags
	PubTrace, EmittedParent uint32
	Publish                 int64
	Extra                   *extraSnapshot
	Hops                    []hopSnapshot
}

type extraSnapshot struct {
	MinRef                string
	Operation, FlowName   sym
	Groupless             int64
	GrouplessReason       sym
	ReasonGroups, Reasons []sym
}

type hopSnapshot struct {
	Group, Consumer, Dest       sym
	Trace                       uint32
	Attempts, ProcAttempt       uint16
	Flags                       hopFlags
	Deliver, Settle, Processing int64
}

// Checkpoint writes the engine's state. Call it from the goroutine that owns
// the engine; it holds nothing else.
func (e *Engine) Checkpoint(w io.Writer) error {
	aliases := map[*message][]uint64{}
	for key, m := range e.aliases {
		r := m.root()
		if f := rootFlow(r); f != nil && f.state != flowReleased {
			aliases[r] = append(aliases[r], key)
		}
	}
	snap := snapshot{Format: checkpointFormat, Now: e.now, Version: e.version, Symbols: e.syms.names, Stats: e.stats}
	for state := flowActive; state < flowReleased; state++ {
		for f := e.lists[state].head; f != nil; f = f.next {
			fs := flowSnapshot{
				FirstSeen: f.firstSeen, LastActivity: f.lastActivity, State: f.state,
				Flags: f.flags &^ flowDirty, EmittedID: f.emittedID,
			}
			for _, k := range f.keys {
				fs.Keys = append(fs.Keys, flowKeySnapshot{Kind: k.kind, Value: k.value})
			}
			for _, m := range e.liveMessages(f) {
				fs.Messages = append(fs.Messages, snapshotMessage(m, aliases[m]))
			}
			snap.Flows = append(snap.Flows, fs)
		}
	}
	if err := gob.NewEncoder(w).Encode(&snap); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

func snapshotMessage(m *message, aliases []uint64) messageSnapshot {
	ms := messageSnapshot{
		Aliases: aliases, BrokerID: m.brokerID, System: m.system, Producer: m.producer, PubDest: m.pubDest,
		PubAttempt: m.pubAttempt, Flags: m.flags &^ msgDirty, PubTrace: m.pubTrace, EmittedParent: m.emittedParent,
		Publish: m.publish,
	}
	if x := m.extra; x != nil {
		xs := &extraSnapshot{MinRef: x.minRef, Operation: x.operation, FlowName: x.flowName, Groupless: x.groupless, GrouplessReason: x.grouplessReason}
		for _, r := range x.reasons {
			xs.ReasonGroups = append(xs.ReasonGroups, r.group)
			xs.Reasons = append(xs.Reasons, r.reason)
		}
		ms.Extra = xs
	}
	for _, h := range m.hops {
		ms.Hops = append(ms.Hops, hopSnapshot{
			Group: h.group, Consumer: h.consumer, Dest: h.dest, Trace: h.trace, Attempts: h.attempts,
			ProcAttempt: h.procAttempt, Flags: h.flags, Deliver: h.deliver, Settle: h.settle, Processing: h.processing,
		})
	}
	return ms
}

// ErrNotEmpty is returned by Restore on an engine that already holds state.
var ErrNotEmpty = errors.New("restore into an engine that is not empty")

// Restore loads a checkpoint into a new engine. After an error the engine
// holds part of the checkpoint and must be discarded.
func (e *Engine) Restore(r io.Reader) error {
	if e.flows != 0 || len(e.aliases) != 0 || len(e.syms.names) > 1 {
		return ErrNotEmpty
	}
	var snap snapshot
	if err := gob.NewDecoder(r).Decode(&snap); err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	if snap.Format != checkpointFormat {
		return fmt.Errorf("read checkpoint: format %d, want %d", snap.Format, checkpointFormat)
	}
	if len(snap.Symbols) == 0 || snap.Symbols[0] != "" {
		return errors.New("read checkpoint: bad symbol table")
	}
	symbolCount := sym(len(snap.Symbols))
	valid := func(ids ...sym) bool {
		for _, id := range ids {
			if id >= symbolCount {
				return false
			}
		}
		return true
	}
	e.syms = symbols{ids: make(map[string]sym, len(snap.Symbols)), names: snap.Symbols}
	for i, name := range snap.Symbols {
		e.syms.ids[name] = sym(i)
	}
	e.now, e.version, e.stats = snap.Now, snap.Version, snap.Stats
	for _, fs := range snap.Flows {
		if fs.State >= flowReleased {
			return fmt.Errorf("read checkpoint: bad flow state %d", fs.State)
		}
		f := &flow{firstSeen: fs.FirstSeen, lastActivity: fs.LastActivity, state: fs.State, flags: fs.Flags, emittedID: fs.EmittedID}
		e.lists[f.state].pushBack(f)
		e.flows++
		if f.flags&flowHasStuck != 0 {
			e.stats.StuckFlows++
		}
		for _, k := range fs.Keys {
			if !valid(k.Kind) {
				return errors.New("read checkpoint: symbol out of range")
			}
			f.keys = append(f.keys, flowKey{kind: k.Kind, value: k.Value})
			e.keys[e.hash.strings(tagKey, e.syms.name(k.Kind), k.Value)] = f
		}
		for _, ms := range fs.Messages {
			if !valid(ms.System, ms.Producer, ms.PubDest) {
				return errors.New("read checkpoint: symbol out of range")
			}
			m := &message{
				flow: f, brokerID: ms.BrokerID, system: ms.System, producer: ms.Producer, pubDest: ms.PubDest,
				pubAttempt: ms.PubAttempt, flags: ms.Flags, pubTrace: ms.PubTrace, emittedParent: ms.EmittedParent,
				publish: ms.Publish,
			}
			if xs := ms.Extra; xs != nil {
				if !valid(xs.Operation, xs.FlowName, xs.GrouplessReason) || !valid(xs.ReasonGroups...) ||
					!valid(xs.Reasons...) || len(xs.Reasons) != len(xs.ReasonGroups) {
					return errors.New("read checkpoint: bad message extra")
				}
				x := &messageExtra{minRef: xs.MinRef, operation: xs.Operation, flowName: xs.FlowName, groupless: xs.Groupless, grouplessReason: xs.GrouplessReason}
				for i := range xs.Reasons {
					x.reasons = append(x.reasons, hopReason{group: xs.ReasonGroups[i], reason: xs.Reasons[i]})
				}
				m.extra = x
			}
			for _, hs := range ms.Hops {
				if !valid(hs.Group, hs.Consumer, hs.Dest) {
					return errors.New("read checkpoint: symbol out of range")
				}
				m.hops = append(m.hops, hop{
					group: hs.Group, consumer: hs.Consumer, dest: hs.Dest, trace: hs.Trace, attempts: hs.Attempts,
					procAttempt: hs.ProcAttempt, flags: hs.Flags, deliver: hs.Deliver, settle: hs.Settle, processing: hs.Processing,
				})
			}
			f.messages = append(f.messages, m)
			e.hops += m.hopCount()
			for _, a := range ms.Aliases {
				e.aliases[a] = m
			}
		}
	}
	return nil
}
