package correlator

// bundle is flows on their way from one engine to another.
type bundle struct {
	symbols []string // the source engine's symbol table, which the snapshots index
	version uint64   // the source's last version: the target must not go below it
	flows   []flowSnapshot
}

// extract removes the flows that any of the identity or key hashes name and
// returns them. ids must be every identity hash routed to those flows:
// Sharded's router keeps exactly those.
func (e *Engine) extract(ids []uint64) *bundle {
	var flows []*flow
	add := func(f *flow) {
		if f == nil {
			return
		}
		if f = f.root(); f.state != flowReleased && !containsFlow(flows, f) {
			flows = append(flows, f)
		}
	}
	for _, id := range ids {
		if m, ok := e.aliases[id]; ok {
			add(rootFlow(m.root()))
		}
		if f, ok := e.keys[id]; ok {
			add(f)
		}
	}
	var moved []messageAlias
	for _, id := range ids {
		m, ok := e.aliases[id]
		if !ok {
			continue
		}
		r := m.root()
		if f := rootFlow(r); f != nil && containsFlow(flows, f.root()) {
			moved = append(moved, aliasOf(r, id))
			delete(e.aliases, id)
		}
	}
	aliases := indexAliases(moved)
	b := &bundle{symbols: e.syms.names, version: e.version}
	for _, f := range flows {
		b.flows = append(b.flows, e.snapshotFlow(f, aliases))
		for _, k := range f.keys {
			delete(e.keys, e.keyHash(e.syms.name(k.kind), k.value))
		}
		e.forget(f)
	}
	return b
}

func containsFlow(flows []*flow, f *flow) bool {
	for _, x := range flows {
		if x == f {
			return true
		}
	}
	return false
}

// forget drops a flow from the engine's lists and counts; release and
// extract build on it.
func (e *Engine) forget(f *flow) {
	e.lists[f.state].remove(f)
	if f.flags&flowHasStuck != 0 {
		e.stats.StuckFlows--
	}
	f.state = flowReleased
	e.flows--
	for _, m := range f.messages {
		if m.parent == nil {
			e.hops -= m.hopCount()
		}
	}
	f.messages, f.keys = nil, nil
}

// implant adds flows extracted from another engine.
func (e *Engine) implant(b *bundle) error {
	e.version = max(e.version, b.version)
	for i := range b.flows {
		if _, err := e.restoreFlow(&b.flows[i], b.symbols); err != nil {
			return err
		}
	}
	return nil
}
