package kafkatapreceiver

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// topicPattern matches a retry or dead-letter topic name, as the
// correlator's retry_destinations and dead_letter_destinations do.
type topicPattern struct {
	re      *regexp.Regexp
	topic   int // submatch index of {topic}
	attempt int // submatch index of {attempt}, -1 without
}

// compilePattern turns "{topic}.retry.{attempt}" into a regular expression.
func compilePattern(pattern string, withAttempt bool) (topicPattern, error) {
	if strings.Count(pattern, "{topic}") != 1 {
		return topicPattern{}, fmt.Errorf("%q: needs {topic} exactly once", pattern)
	}
	if strings.NewReplacer("{topic}", "", "{attempt}", "").Replace(pattern) == "" {
		return topicPattern{}, fmt.Errorf("%q: needs a literal part, else it matches every topic", pattern)
	}
	if withAttempt != (strings.Count(pattern, "{attempt}") == 1) {
		if withAttempt {
			return topicPattern{}, fmt.Errorf("%q: needs {attempt} exactly once", pattern)
		}
		return topicPattern{}, fmt.Errorf("%q: {attempt} has no meaning here", pattern)
	}
	expr := regexp.QuoteMeta(pattern)
	expr = strings.Replace(expr, regexp.QuoteMeta("{topic}"), "(?P<topic>.+?)", 1)
	expr = strings.Replace(expr, regexp.QuoteMeta("{attempt}"), "(?P<attempt>[0-9]{1,4})", 1)
	re, err := regexp.Compile("^" + expr + "$")
	if err != nil {
		return topicPattern{}, fmt.Errorf("%q: %w", pattern, err)
	}
	return topicPattern{re: re, topic: re.SubexpIndex("topic"), attempt: re.SubexpIndex("attempt")}, nil
}

// match returns the base topic and the retry number (0 without one).
func (p topicPattern) match(topic string) (string, int, bool) {
	m := p.re.FindStringSubmatch(topic)
	if m == nil {
		return "", 0, false
	}
	retry := 0
	if p.attempt >= 0 {
		retry, _ = strconv.Atoi(m[p.attempt])
	}
	return m[p.topic], retry, true
}

// validTopic reports whether s is a legal Kafka topic name.
func validTopic(s string) bool {
	if s == "" || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
