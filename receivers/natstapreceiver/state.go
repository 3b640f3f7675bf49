package natstapreceiver

import (
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// streamState is what the tap keeps about one stream across connections.
type streamState struct {
	name   string
	filter string

	// next is the stream sequence the tap reads from after a reconnect: one
	// past the last message it turned into a publish (0 before the first
	// attach). Written by the publish handler, read at attach.
	next atomic.Uint64

	// stamps maps sequences to store times for the backlog's lag in
	// seconds; written by the publish handler, read by the poller.
	stamps stampIndex

	// settle infers the acks the tap did not see from the consumers' ack
	// floors.
	settle *settleTracker

	// Owned by the poller of the current connection: the previous poll, for
	// rates.
	lastPoll     time.Time
	lastSeq      uint64
	lastConsumed map[string]uint64
}

func newStreamState(name, filter string) *streamState {
	return &streamState{name: name, filter: filter, settle: newSettleTracker()}
}

// advance moves next past seq, never back.
func (s *streamState) advance(seq uint64) {
	for {
		cur := s.next.Load()
		if seq < cur || s.next.CompareAndSwap(cur, seq+1) {
			return
		}
	}
}

func messageID(stream string, seq uint64) string {
	return stream + "/" + strconv.FormatUint(seq, 10)
}

// stampIndex is a sparse map from stream sequence to store time: the
// first sequence of every second in which messages were stored, so lookups
// are accurate to a second and the index stays small however many messages
// are stored. It keeps at most maxStamps seconds, dropping the oldest half
// when full.
type stampIndex struct {
	mu     sync.Mutex
	seqs   []uint64
	times  []int64 // unix seconds
	maxLen int
}

const maxStamps = 1 << 16

func (x *stampIndex) record(seq uint64, at time.Time) {
	sec := at.Unix()
	x.mu.Lock()
	defer x.mu.Unlock()
	n := len(x.seqs)
	if n > 0 && (x.times[n-1] >= sec || x.seqs[n-1] >= seq) {
		return
	}
	limit := x.maxLen
	if limit == 0 {
		limit = maxStamps
	}
	if n >= limit {
		half := n / 2
		x.seqs = append(x.seqs[:0], x.seqs[half:]...)
		x.times = append(x.times[:0], x.times[half:]...)
	}
	x.seqs = append(x.seqs, seq)
	x.times = append(x.times, sec)
}

// storedAt returns the second in which seq was stored, or false when seq
// is older than what the index holds.
func (x *stampIndex) storedAt(seq uint64) (time.Time, bool) {
	x.mu.Lock()
	defer x.mu.Unlock()
	i := sort.Search(len(x.seqs), func(i int) bool { return x.seqs[i] > seq })
	if i == 0 {
		return time.Time{}, false
	}
	return time.Unix(x.times[i-1], 0), true
}

// forget drops what is below seq, keeping the entry that covers it.
func (x *stampIndex) forget(seq uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	i := sort.Search(len(x.seqs), func(i int) bool { return x.seqs[i] > seq })
	if i > 1 {
		x.seqs = append(x.seqs[:0], x.seqs[i-1:]...)
		x.times = append(x.times[:0], x.times[i-1:]...)
	}
}

// linkCache remembers the trace context of the last linkCacheSize stream
// messages that carried a valid one, first in first out; each entry is of
// fixed size whatever the header was.
type linkCache struct {
	mu    sync.Mutex
	byID  map[string]traceContext
	order []string
	head  int
}

// traceContext is a parsed traceparent.
type traceContext struct {
	trace pcommon.TraceID
	span  pcommon.SpanID
}

// String is the traceparent again, sampled.
func (c traceContext) String() string {
	return "00-" + c.trace.String() + "-" + c.span.String() + "-01"
}

const linkCacheSize = 1 << 16

func newLinkCache(size int) *linkCache {
	return &linkCache{byID: map[string]traceContext{}, order: make([]string, size)}
}

// put remembers traceParent for id; a malformed one is not kept.
func (c *linkCache) put(id, traceParent string) {
	trace, span, ok := tap.ParseTraceParent(traceParent)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byID[id]; ok {
		return
	}
	if old := c.order[c.head]; old != "" {
		delete(c.byID, old)
	}
	c.order[c.head] = id
	c.head = (c.head + 1) % len(c.order)
	c.byID[id] = traceContext{trace: trace, span: span}
}

// get returns the traceparent remembered for id, or "".
func (c *linkCache) get(id string) string {
	c.mu.Lock()
	tc, ok := c.byID[id]
	c.mu.Unlock()
	if !ok {
		return ""
	}
	return tc.String()
}
