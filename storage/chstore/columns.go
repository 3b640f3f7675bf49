package chstore

import "sync"

// columns hands out the column slices of one block, and the arrays of its
// Array(String) columns, from arrays reused from insert to insert: a block
// of 40,000 events is about 10 MB of columns, and new ones for every insert
// were a tenth of all the bytes the process allocated under load.
type columns struct {
	strings      []string
	stringArrays [][]string
	int64s       []int64
	uint64s      []uint64
	uint32s      []uint32
	uint16s      []uint16
	uint8s       []uint8
	float64s     []float64
}

var columnSets = sync.Pool{New: func() any { return new(columns) }}

// newColumns takes a set from the pool; release returns it once the block
// is written.
func newColumns() *columns { return columnSets.Get().(*columns) }

// release zeroes what the block used, so the pool keeps no strings alive
// and take always hands out zeroed elements, and returns the set to the
// pool.
func (c *columns) release() {
	c.strings = cleared(c.strings)
	c.stringArrays = cleared(c.stringArrays)
	c.int64s, c.uint64s, c.uint32s = cleared(c.int64s), cleared(c.uint64s), cleared(c.uint32s)
	c.uint16s, c.uint8s, c.float64s = cleared(c.uint16s), cleared(c.uint8s), cleared(c.float64s)
	columnSets.Put(c)
}

func cleared[T any](s []T) []T {
	clear(s)
	return s[:0]
}

// take hands out the next n elements of a set's array, zeroed, growing the
// array if needed: slices handed out before keep the old array, which
// nothing writes to again.
func take[T any](array *[]T, n int) []T {
	if len(*array)+n > cap(*array) {
		*array = make([]T, 0, max(2*cap(*array), n))
	}
	start := len(*array)
	*array = (*array)[:start+n]
	return (*array)[start : start+n : start+n]
}
