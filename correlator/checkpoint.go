package correlator

import (
	"bytes"
	"cmp"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"slices"
	"unsafe"
)

// checkpointFormat changes whenever the snapshot's shape does; a checkpoint
// of another format is refused rather than misread. Format 5 is the binary
// form of snapshotcodec.go; gobFormat, the one before, is still read.
const (
	checkpointFormat = 5
	gobFormat        = 4
)

// snapshot is the engine's state as checkpoints of gobFormat hold it.
// Union-find sets are flattened to their roots; released flows are left
// out. Symbol ids index Symbols. Its parts also carry flows between
// Sharded's workers.
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
	EmittedID, Anchor       uint64
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
	TraceAttempt                uint16
	Flags                       hopFlags
	Deliver, Settle, Processing int64
}

// Snapshot is an engine's state at one moment, detached from the engine: it
// can be encoded while the engine goes on.
type Snapshot interface {
	// Encode writes the snapshot in the checkpoint format Restore reads.
	Encode(w io.Writer) error
}

type engineSnapshot struct{ data []byte }

func (s *engineSnapshot) Encode(w io.Writer) error {
	if _, err := w.Write(s.data); err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	return nil
}

// Snapshot captures the engine's state, already in the checkpoint format.
// Call it from the goroutine that owns the engine; writing the capture out
// can happen anywhere, later.
func (e *Engine) Snapshot() Snapshot {
	return &engineSnapshot{data: e.encodeSnapshot()}
}

// Checkpoint writes the engine's state: Snapshot, then Encode.
func (e *Engine) Checkpoint(w io.Writer) error {
	return e.Snapshot().Encode(w)
}

// messageAliases is the identity index inverted: every live message's
// identity hashes, grouped by message. It is one sorted slice rather than a
// map of slices, which took two thirds of a snapshot's time (spans wait for
// the snapshot).
type messageAliases struct {
	messages []uintptr // message addresses, sorted; one entry per alias
	keys     []uint64  // keys[i] names messages[i]
}

// of returns the identity hashes that name m.
func (a *messageAliases) of(m *message) []uint64 {
	addr := uintptr(unsafe.Pointer(m))
	from, _ := slices.BinarySearch(a.messages, addr)
	to := from
	for to < len(a.messages) && a.messages[to] == addr {
		to++
	}
	return a.keys[from:to:to]
}

// messageAlias is one identity hash of a message, by the message's address.
// The address is only compared, never followed: the message stays reachable
// from the engine, which the caller owns while the index is in use.
type messageAlias struct {
	message uintptr
	key     uint64
}

func aliasOf(m *message, key uint64) messageAlias {
	return messageAlias{uintptr(unsafe.Pointer(m)), key}
}

// indexAliases groups aliases by message, taking over the slice.
func indexAliases(all []messageAlias) *messageAliases {
	// A message's aliases may come in any order: restoring reads them as a set.
	slices.SortFunc(all, func(a, b messageAlias) int { return cmp.Compare(a.message, b.message) })
	out := &messageAliases{messages: make([]uintptr, len(all)), keys: make([]uint64, len(all))}
	for i, a := range all {
		out.messages[i], out.keys[i] = a.message, a.key
	}
	return out
}

// aliasesByMessage inverts the identity index for the live messages.
func (e *Engine) aliasesByMessage() *messageAliases {
	all := make([]messageAlias, 0, len(e.aliases))
	for key, m := range e.aliases {
		r := m.root()
		if f := rootFlow(r); f != nil && f.state != flowReleased {
			all = append(all, aliasOf(r, key))
		}
	}
	return indexAliases(all)
}

func (e *Engine) snapshotFlow(f *flow, aliases *messageAliases) flowSnapshot {
	fs := flowSnapshot{
		FirstSeen: f.firstSeen, LastActivity: f.lastActivity, State: f.state,
		Flags: f.flags, EmittedID: f.emittedID, Anchor: f.anchor,
	}
	for _, k := range f.keys {
		fs.Keys = append(fs.Keys, flowKeySnapshot{Kind: k.kind, Value: k.value})
	}
	for _, m := range e.liveMessages(f) {
		fs.Messages = append(fs.Messages, snapshotMessage(m, aliases.of(m)))
	}
	return fs
}

func snapshotMessage(m *message, aliases []uint64) messageSnapshot {
	ms := messageSnapshot{
		Aliases: aliases, BrokerID: m.brokerID, System: m.system, Producer: m.producer, PubDest: m.pubDest,
		PubAttempt: m.pubAttempt, Flags: m.flags, PubTrace: m.pubTrace, EmittedParent: m.emittedParent,
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
			ProcAttempt: h.procAttempt, TraceAttempt: h.traceAttempt, Flags: h.flags, Deliver: h.deliver, Settle: h.settle, Processing: h.processing,
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
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	if len(data) > 0 && data[0] == snapshotMagic {
		return e.restoreBinary(data)
	}
	var snap snapshot
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&snap); err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	if snap.Format != gobFormat {
		return fmt.Errorf("read checkpoint: format %d, want %d", snap.Format, checkpointFormat)
	}
	if len(snap.Symbols) == 0 || snap.Symbols[0] != "" {
		return errors.New("read checkpoint: bad symbol table")
	}
	e.now, e.version, e.stats = snap.Now, snap.Version, snap.Stats
	e.stats.StuckFlows = 0 // counted again as flows come back
	for i := range snap.Flows {
		if _, err := e.restoreFlow(&snap.Flows[i], snap.Symbols); err != nil {
			return fmt.Errorf("read checkpoint: %w", err)
		}
	}
	return nil
}

// errBadSnapshot means a snapshot refers to what it does not hold.
var errBadSnapshot = errors.New("snapshot inconsistent")

// restoreFlow adds a snapshotted flow to the engine. Its symbol ids index
// symbols, which may be another engine's table.
func (e *Engine) restoreFlow(fs *flowSnapshot, symbols []string) (*flow, error) {
	if fs.State >= flowReleased {
		return nil, fmt.Errorf("%w: flow state %d", errBadSnapshot, fs.State)
	}
	bad := false
	tr := func(s sym) sym {
		if int(s) >= len(symbols) {
			bad = true
			return 0
		}
		return e.syms.intern(symbols[s])
	}
	f := &flow{firstSeen: fs.FirstSeen, lastActivity: fs.LastActivity, state: fs.State, flags: fs.Flags, emittedID: fs.EmittedID, anchor: fs.Anchor}
	for _, k := range fs.Keys {
		kind := tr(k.Kind)
		f.keys = append(f.keys, flowKey{kind: kind, value: k.Value})
	}
	for _, ms := range fs.Messages {
		m := &message{
			flow: f, brokerID: ms.BrokerID, system: tr(ms.System), producer: tr(ms.Producer), pubDest: tr(ms.PubDest),
			pubAttempt: ms.PubAttempt, flags: ms.Flags, pubTrace: ms.PubTrace, emittedParent: ms.EmittedParent,
			publish: ms.Publish,
		}
		if xs := ms.Extra; xs != nil {
			if len(xs.Reasons) != len(xs.ReasonGroups) {
				return nil, fmt.Errorf("%w: reasons", errBadSnapshot)
			}
			x := &messageExtra{minRef: xs.MinRef, operation: tr(xs.Operation), flowName: tr(xs.FlowName), groupless: xs.Groupless, grouplessReason: tr(xs.GrouplessReason)}
			for i := range xs.Reasons {
				x.reasons = append(x.reasons, hopReason{group: tr(xs.ReasonGroups[i]), reason: tr(xs.Reasons[i])})
			}
			m.extra = x
		}
		for _, hs := range ms.Hops {
			m.hops = append(m.hops, hop{
				group: tr(hs.Group), consumer: tr(hs.Consumer), dest: tr(hs.Dest), trace: hs.Trace, attempts: hs.Attempts,
				procAttempt: hs.ProcAttempt, traceAttempt: hs.TraceAttempt, flags: hs.Flags, deliver: hs.Deliver, settle: hs.Settle, processing: hs.Processing,
			})
		}
		f.messages = append(f.messages, m)
	}
	if bad {
		return nil, fmt.Errorf("%w: symbol out of range", errBadSnapshot)
	}
	// Only now, whole and valid, does the flow join the engine; with changes
	// not yet emitted when it was captured, it is due for a flush.
	e.lists[f.state].insertByActivity(f)
	if f.flags&flowDirty != 0 {
		f.flags &^= flowDirty
		e.markDirty(f)
	}
	e.flows++
	if f.flags&flowHasStuck != 0 {
		e.stats.StuckFlows++
	}
	for _, k := range f.keys {
		e.keys[e.hash.strings(tagKey, e.syms.name(k.kind), k.value)] = f
	}
	for i, m := range f.messages {
		e.hops += m.hopCount()
		for _, a := range fs.Messages[i].Aliases {
			e.aliases[a] = m
		}
	}
	return f, nil
}
