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
