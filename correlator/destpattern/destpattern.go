// Package destpattern reads retry and dead-letter destinations by pattern:
// "{topic}.retry.{attempt}" says that "orders.retry.2" is the second retry
// of a message of "orders", "{topic}.dlq" that "orders.dlq" holds the dead
// letters of "orders". The correlator reads destinations with it, and so does
// every tap that names retries and dead letters itself, so both agree.
package destpattern

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Pattern matches retry or dead-letter destinations.
type Pattern struct {
	re      *regexp.Regexp
	topic   int // submatch index of {topic}
	attempt int // submatch index of {attempt}, -1 without
	// literals are the pattern's fixed parts: a destination missing one
	// cannot match, which spares most destinations the regular expression.
	literals []string
}

// Compile reads a pattern with {topic} once and, withAttempt, {attempt}
// once (a retry pattern) or, without, not at all (a dead-letter pattern).
// It needs a fixed part besides them, else it would match every
// destination.
func Compile(pattern string, withAttempt bool) (Pattern, error) {
	if strings.Count(pattern, "{topic}") != 1 {
		return Pattern{}, fmt.Errorf("%q: needs {topic} exactly once", pattern)
	}
	if withAttempt != (strings.Count(pattern, "{attempt}") == 1) {
		if withAttempt {
			return Pattern{}, fmt.Errorf("%q: needs {attempt} exactly once", pattern)
		}
		return Pattern{}, fmt.Errorf("%q: {attempt} has no meaning here", pattern)
	}
	literals := strings.FieldsFunc(strings.NewReplacer("{topic}", "\x00", "{attempt}", "\x00").Replace(pattern),
		func(r rune) bool { return r == 0 })
	if len(literals) == 0 {
		return Pattern{}, fmt.Errorf("%q: needs a fixed part, else it matches every destination", pattern)
	}
	expr := regexp.QuoteMeta(pattern)
	expr = strings.Replace(expr, regexp.QuoteMeta("{topic}"), "(?P<topic>.+?)", 1)
	expr = strings.Replace(expr, regexp.QuoteMeta("{attempt}"), "(?P<attempt>[0-9]{1,9})", 1)
	re, err := regexp.Compile("^" + expr + "$")
	if err != nil {
		return Pattern{}, fmt.Errorf("%q: %w", pattern, err)
	}
	return Pattern{re: re, topic: re.SubexpIndex("topic"), attempt: re.SubexpIndex("attempt"), literals: literals}, nil
}

// Match returns the base destination and the retry number (0 for a
// dead-letter pattern).
func (p Pattern) Match(destination string) (base string, retry int, ok bool) {
	if p.re == nil {
		return "", 0, false
	}
	for _, literal := range p.literals {
		if !strings.Contains(destination, literal) {
			return "", 0, false
		}
	}
	m := p.re.FindStringSubmatch(destination)
	if m == nil {
		return "", 0, false
	}
	if p.attempt >= 0 {
		retry, _ = strconv.Atoi(m[p.attempt]) // at most nine digits
	}
	return m[p.topic], retry, true
}
