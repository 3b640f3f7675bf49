package correlator

import (
	"encoding/binary"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Identities, flow keys and traces are held as 64-bit hashes rather than
// strings: map entries of 8-byte keys, no allocation to look one up. Two
// different values sharing a hash would join their messages or flows; at a
// million live values the chance of any such pair is about 1 in 30 million.
//
// Tags keep the kinds of value apart.
const (
	tagBroker = 'm' // (system, message id)
	tagRef    = 's' // (trace id, span id)
	tagKey    = 'k' // (key kind, key value)
	tagTrace  = 't' // trace id
	tagIdent  = 'c' // a message's canonical identity
	tagFlow   = 'f' // a flow id, from its root message's identity
	tagHop    = 'h' // a hop id, from its message's identity and group
)

// hasher hashes without allocating. Owned by the engine's goroutine.
type hasher struct {
	d   *xxhash.Digest
	buf [8]byte
}

func newHasher() hasher { return hasher{d: xxhash.New()} }

func (h *hasher) strings(tag byte, a, b string) uint64 {
	h.d.Reset()
	h.buf[0] = tag
	_, _ = h.d.Write(h.buf[:1])
	_, _ = h.d.WriteString(a)
	h.buf[0] = 0
	_, _ = h.d.Write(h.buf[:1])
	_, _ = h.d.WriteString(b)
	return nonZero(h.d.Sum64())
}

func (h *hasher) withNumber(tag byte, n uint64, s string) uint64 {
	h.d.Reset()
	h.buf[0] = tag
	_, _ = h.d.Write(h.buf[:1])
	binary.LittleEndian.PutUint64(h.buf[:], n)
	_, _ = h.d.Write(h.buf[:])
	_, _ = h.d.WriteString(s)
	return nonZero(h.d.Sum64())
}

// nonZero keeps 0 free to mean "none".
func nonZero(x uint64) uint64 {
	if x == 0 {
		return 1
	}
	return x
}

// idString renders an id hash as it appears in records: 16 hex digits.
func idString(x uint64) string {
	s := strconv.FormatUint(x, 16)
	for len(s) < 16 {
		s = "0" + s
	}
	return s
}
