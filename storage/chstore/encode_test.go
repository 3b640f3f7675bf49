package chstore

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestEscaping(t *testing.T) {
	assert.Equal(t, `a\tb\nc\\d\0e'f`, string(appendEscaped(nil, "a\tb\nc\\d\x00e'f")))
	assert.Equal(t, `'it\'s \\ \t'`, string(appendQuoted(nil, "it's \\ \t")))
	assert.Equal(t, `plain`, string(appendEscaped(nil, "plain")))
}

func TestRowBuffer(t *testing.T) {
	var b rowBuffer
	b.str("x\ty")
	b.u64(7)
	b.timestamp(time.Unix(1700000000, 5).UTC())
	b.timestamp(time.Time{})
	b.strArray([]string{"a", "b'c"})
	b.strMap([]string{"k"}, []string{"v"})
	b.endRow()
	assert.Equal(t, "x\\ty\t7\t1700000000.000000005\t1970-01-01 00:00:00\t['a','b\\'c']\t{'k':'v'}\n", string(b.buf))
	assert.Equal(t, 1, b.rows)
}

func TestSplitStatements(t *testing.T) {
	got := splitStatements("-- comment\nCREATE TABLE a (x UInt8);\n\n;\nCREATE VIEW b\nAS SELECT 1;\n")
	assert.Equal(t, []string{"CREATE TABLE a (x UInt8)", "CREATE VIEW b\nAS SELECT 1"}, got)
}
