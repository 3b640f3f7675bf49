package correlator

// sym is an interned string: services, systems, destinations, groups and
// reasons repeat across millions of hops, so a hop holds 4-byte ids rather
// than 16-byte string headers. 0 is the empty string.
type sym uint32

// symbols interns strings. Owned by the engine's goroutine.
type symbols struct {
	ids   map[string]sym
	names []string
}

func newSymbols() symbols {
	return symbols{ids: map[string]sym{"": 0}, names: []string{""}}
}

func (s *symbols) intern(name string) sym {
	if id, ok := s.ids[name]; ok {
		return id
	}
	id := sym(len(s.names))
	s.ids[name] = id
	s.names = append(s.names, name)
	return id
}

func (s *symbols) name(id sym) string {
	return s.names[id]
}

// compactSymbols rebuilds the symbol table from the names that flows still
// held use. Names of flows long released (reply inboxes, one-off
// destinations, error texts) would otherwise stay for the life of the
// process. Called after a sweep, when every map entry left leads to a flow
// still held; each message and flow reachable is renamed once.
func (e *Engine) compactSymbols() {
	fresh := newSymbols()
	renamed := make([]sym, len(e.syms.names))
	for i := range renamed {
		renamed[i] = ^sym(0)
	}
	rename := func(s *sym) {
		if renamed[*s] == ^sym(0) {
			renamed[*s] = fresh.intern(e.syms.names[*s])
		}
		*s = renamed[*s]
	}
	flows := map[*flow]struct{}{}
	visitFlow := func(f *flow) {
		for ; f != nil; f = f.parent {
			if _, ok := flows[f]; ok {
				return
			}
			flows[f] = struct{}{}
			for i := range f.keys {
				rename(&f.keys[i].kind)
			}
		}
	}
	messages := map[*message]struct{}{}
	visitMessage := func(m *message) {
		for ; m != nil; m = m.parent {
			if _, ok := messages[m]; ok {
				return
			}
			messages[m] = struct{}{}
			visitFlow(m.flow)
			rename(&m.system)
			rename(&m.producer)
			rename(&m.pubDest)
			if x := m.extra; x != nil {
				rename(&x.operation)
				rename(&x.flowName)
				rename(&x.grouplessReason)
				for i := range x.reasons {
					rename(&x.reasons[i].group)
					rename(&x.reasons[i].reason)
				}
			}
			for i := range m.hops {
				rename(&m.hops[i].group)
				rename(&m.hops[i].consumer)
				rename(&m.hops[i].dest)
			}
		}
	}
	for state := range e.lists {
		for f := e.lists[state].head; f != nil; f = f.next {
			visitFlow(f)
			for _, m := range f.messages {
				visitMessage(m)
			}
		}
	}
	for _, m := range e.aliases {
		visitMessage(m)
	}
	for _, f := range e.keys {
		visitFlow(f)
	}
	e.syms = fresh
}
