package chstore

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestColumnsAreReusedZeroed(t *testing.T) {
	c := &columns{}
	first := take(&c.strings, 2)
	copy(first, []string{"a", "b"})
	second := take(&c.strings, 3) // past the first array: a new one
	copy(second, []string{"c", "d", "e"})
	assert.Equal(t, []string{"a", "b"}, first, "growing keeps what was handed out")
	take(&c.stringArrays, 1)[0] = []string{"k"}
	take(&c.int64s, 2)[1] = 7

	c.release()
	assert.Equal(t, []string{"", "", ""}, take(&c.strings, 3), "a block never sees the last one's values")
	assert.Equal(t, [][]string{nil}, take(&c.stringArrays, 1))
	assert.Equal(t, []int64{0, 0}, take(&c.int64s, 2))
	assert.Zero(t, testing.AllocsPerRun(10, func() {
		take(&c.strings, 3)
		c.strings = cleared(c.strings)
	}), "a reused array allocates nothing")
}
