package destpattern_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/correlator/destpattern"
)

func TestMatch(t *testing.T) {
	retry, err := destpattern.Compile("{topic}.retry.{attempt}", true)
	require.NoError(t, err)
	for dest, want := range map[string]struct {
		base  string
		retry int
		ok    bool
	}{
		"orders.retry.2":          {"orders", 2, true},
		"eu.orders.retry.10":      {"eu.orders", 10, true},
		"orders.retry.":           {},
		"orders.retry.x":          {},
		"orders":                  {},
		"orders.retry.1234567890": {}, // more digits than an attempt has
		"retry.orders.retry.1":    {"retry.orders", 1, true},
	} {
		base, n, ok := retry.Match(dest)
		assert.Equal(t, want.ok, ok, dest)
		assert.Equal(t, want.base, base, dest)
		assert.Equal(t, want.retry, n, dest)
	}

	dlq, err := destpattern.Compile("{topic}.dlq", false)
	require.NoError(t, err)
	base, n, ok := dlq.Match("orders.dlq")
	assert.True(t, ok)
	assert.Equal(t, "orders", base)
	assert.Zero(t, n)

	var zero destpattern.Pattern
	_, _, ok = zero.Match("orders.dlq")
	assert.False(t, ok)
}

func TestCompileRefuses(t *testing.T) {
	for pattern, withAttempt := range map[string]bool{
		"orders.retry":                 true,  // no {topic}
		"{topic}.{topic}.{attempt}":    true,  // {topic} twice
		"{topic}.retry":                true,  // no {attempt}
		"{topic}.dlq.{attempt}":        false, // {attempt} in a dead-letter pattern
		"{topic}{attempt}":             true,  // nothing fixed: matches everything
		"{topic}":                      false,
		"{topic}.retry.{attempt}.{x}(": true, // fine: literals are quoted
	} {
		_, err := destpattern.Compile(pattern, withAttempt)
		if pattern == "{topic}.retry.{attempt}.{x}(" {
			assert.NoError(t, err, pattern)
			continue
		}
		assert.Error(t, err, pattern)
	}
}
