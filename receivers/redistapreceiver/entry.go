package redistapreceiver

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// entryID is a stream entry id, "<milliseconds>-<sequence>".
type entryID struct{ ms, seq uint64 }

var errEntryID = errors.New("malformed stream entry id")

// parseEntryID reads a full entry id; it refuses anything else, including
// the shorthand forms XADD accepts.
func parseEntryID(s string) (entryID, error) {
	msPart, seqPart, ok := strings.Cut(s, "-")
	if !ok || !canonicalNumber(msPart) || !canonicalNumber(seqPart) {
		return entryID{}, errEntryID
	}
	ms, err := strconv.ParseUint(msPart, 10, 64)
	if err != nil {
		return entryID{}, errEntryID
	}
	seq, err := strconv.ParseUint(seqPart, 10, 64)
	if err != nil {
		return entryID{}, errEntryID
	}
	return entryID{ms: ms, seq: seq}, nil
}

// canonicalNumber is a decimal number as Redis writes it: digits, no sign,
// no leading zero.
func canonicalNumber(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func (id entryID) String() string {
	return strconv.FormatUint(id.ms, 10) + "-" + strconv.FormatUint(id.seq, 10)
}

func (id entryID) less(o entryID) bool {
	return id.ms < o.ms || (id.ms == o.ms && id.seq < o.seq)
}

// time is when Redis added the entry: the id's milliseconds, on the
// server's clock.
func (id entryID) time() time.Time {
	if id.ms > uint64(1)<<62 {
		return time.UnixMilli(1 << 62)
	}
	return time.UnixMilli(int64(id.ms))
}

// entry is what the tap keeps of a stream entry: never a field value other
// than the traceparent and the configured key fields.
type entry struct {
	id          entryID
	size        int64 // bytes of field names and values
	traceParent string
	keys        []model.Key
	// cleaned is set when a key value had to be cleaned (tap.CleanText).
	cleaned bool
}

// deadLetterEntry is what a dead-letter stream's entry says of the entry
// it dead-letters.
type deadLetterEntry struct {
	at       time.Time
	original entryID
	reason   string
	group    string
	// cleaned is set when the reason or group had to be cleaned
	// (tap.CleanText).
	cleaned bool
}

// Decode errors' reasons, as counted in flowtrace.tap.decode_errors.
const (
	reasonEntryID     = "entry_id"
	reasonIdentity    = "identity"
	reasonWrongType   = "wrong_type"
	reasonKey         = "key"
	reasonText        = "text"
	reasonField       = "field"
	reasonTraceParent = "traceparent"
	reasonDeadLetter  = "dead_letter"
	reasonJob         = "job"
)

// decodeError is an input the tap could not read, with the fixed reason it
// is counted under.
type decodeError struct {
	reason string
	err    error
}

func (e *decodeError) Error() string { return e.reason + ": " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

var (
	errFieldType = errors.New("field value is not a string")
	errText      = errors.New("text is not valid UTF-8, holds control characters or is too long")
)

// cleanText is tap.CleanText(s, tap.MaxText), setting *cleaned when it
// changed s.
func cleanText(s string, cleaned *bool) string {
	s, ok := tap.CleanText(s, tap.MaxText)
	if !ok {
		*cleaned = true
	}
	return s
}

// decodeEntry reads a stream entry as XREAD returns it. A malformed
// traceparent is dropped and reported alongside the entry (badTraceParent);
// a malformed id or a non-string value refuses the entry.
func decodeEntry(cfg *StreamsConfig, id string, values map[string]any) (e entry, badTraceParent bool, err error) {
	if e.id, err = parseEntryID(id); err != nil {
		return entry{}, false, &decodeError{reasonEntryID, err}
	}
	for field, value := range values {
		v, ok := value.(string)
		if !ok {
			return entry{}, false, &decodeError{reasonField, errFieldType}
		}
		e.size += int64(len(field) + len(v))
		if field == cfg.TraceParentField {
			if _, _, ok := tap.ParseTraceParent(v); ok {
				e.traceParent = v
			} else {
				badTraceParent = true
			}
			continue
		}
		if kind, ok := cfg.KeyFields[field]; ok && v != "" {
			e.keys = append(e.keys, model.Key{Kind: kind, Value: cleanText(v, &e.cleaned)})
		}
	}
	return e, badTraceParent, nil
}

// decodeDeadLetter reads the fields of a dead-letter stream's entry.
func decodeDeadLetter(cfg *DeadLetterConfig, id entryID, values map[string]any) (deadLetterEntry, error) {
	field := func(name string) string {
		if name == "" {
			return ""
		}
		v, _ := values[name].(string)
		return v
	}
	original, err := parseEntryID(field(cfg.OriginalIDField))
	if err != nil {
		return deadLetterEntry{}, &decodeError{reasonDeadLetter, err}
	}
	dl := deadLetterEntry{at: id.time(), original: original}
	dl.reason = cleanText(field(cfg.ReasonField), &dl.cleaned)
	dl.group = cleanText(field(cfg.GroupField), &dl.cleaned)
	return dl, nil
}
