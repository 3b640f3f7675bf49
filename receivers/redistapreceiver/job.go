package redistapreceiver

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"time"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// job is what the tap reads of a Sidekiq job's JSON. The arguments are
// never read into it.
type job struct {
	JID        string      `json:"jid"`
	Class      string      `json:"class"`
	Wrapped    string      `json:"wrapped"` // the job class under ActiveJob
	Queue      string      `json:"queue"`
	CreatedAt  json.Number `json:"created_at"`
	EnqueuedAt json.Number `json:"enqueued_at"`
	RetryCount *int64      `json:"retry_count"`
	ErrorClass string      `json:"error_class"`
	FailedAt   json.Number `json:"failed_at"`
	RetriedAt  json.Number `json:"retried_at"`
	// TraceParent is set by OpenTelemetry's Sidekiq instrumentation,
	// which propagates the trace context in the job hash.
	TraceParent string `json:"traceparent"`

	// cleaned is set when a text field had to be cleaned (tap.CleanText).
	cleaned bool
}

var (
	errNoJID        = errors.New("job has no jid")
	errJobTimestamp = errors.New("job timestamp is not a number")
)

// decodeJob reads a job's JSON as Sidekiq stores it in a queue list, the
// retry set or the dead set.
func decodeJob(raw []byte) (job, error) {
	var j job
	if err := json.Unmarshal(raw, &j); err != nil {
		return job{}, &decodeError{reasonJob, err}
	}
	if j.JID == "" {
		return job{}, &decodeError{reasonJob, errNoJID}
	}
	for _, n := range []json.Number{j.CreatedAt, j.EnqueuedAt, j.FailedAt, j.RetriedAt} {
		if _, ok := sidekiqTime(n); !ok && n != "" {
			return job{}, &decodeError{reasonJob, errJobTimestamp}
		}
	}
	// -1 is a job retried by hand from the dead set after its first failure.
	if j.RetryCount != nil && (*j.RetryCount < -1 || *j.RetryCount > math.MaxInt16) {
		return job{}, &decodeError{reasonJob, errors.New("retry_count out of range")}
	}
	if _, _, ok := tap.ParseTraceParent(j.TraceParent); !ok {
		j.TraceParent = ""
	}
	for _, f := range []*string{&j.JID, &j.Queue, &j.Class, &j.Wrapped, &j.ErrorClass} {
		var ok bool
		if *f, ok = tap.CleanText(*f, tap.MaxText); !ok {
			j.cleaned = true
		}
	}
	return j, nil
}

// sidekiqTime reads a Sidekiq timestamp: milliseconds as an integer since
// Sidekiq 8, seconds as a float before.
func sidekiqTime(n json.Number) (time.Time, bool) {
	if n == "" {
		return time.Time{}, false
	}
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if ms, err := n.Int64(); err == nil {
			if ms > 0 && ms < 100_000_000_000 { // seconds, not milliseconds: before 1973 in ms
				return time.Unix(ms, 0), true
			}
			if ms >= 0 && ms < math.MaxInt64/1000 {
				return time.UnixMilli(ms), true
			}
			return time.Time{}, false
		}
	}
	return secondsTime(n)
}

func secondsTime(n json.Number) (time.Time, bool) {
	f, err := n.Float64()
	if err != nil {
		return time.Time{}, false
	}
	return unixSeconds(f)
}

// unixSeconds reads seconds since the epoch, as Sidekiq scores its sorted
// sets.
func unixSeconds(f float64) (time.Time, bool) {
	if !(f >= 0) || f > 1<<33 {
		return time.Time{}, false
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true
}

// operation is the job's class, the wrapped class under ActiveJob.
func (j *job) operation() string {
	if j.Wrapped != "" {
		return j.Wrapped
	}
	return j.Class
}

// enqueuedAttempt is the attempt a job waiting in a queue is for: Sidekiq
// sets retry_count to 0 at the first failure and counts up.
func (j *job) enqueuedAttempt() int {
	if j.RetryCount == nil {
		return 1
	}
	return max(int(*j.RetryCount)+2, 1)
}

// failedAttempt is the attempt that put a job in the retry or dead set.
func (j *job) failedAttempt() int {
	if j.RetryCount == nil {
		return 1
	}
	return max(int(*j.RetryCount)+1, 1)
}

// failedTime is when the last attempt failed.
func (j *job) failedTime() (time.Time, bool) {
	if t, ok := sidekiqTime(j.RetriedAt); ok {
		return t, true
	}
	return sidekiqTime(j.FailedAt)
}

// enqueuedTime is when the job was last pushed to its queue.
func (j *job) enqueuedTime() (time.Time, bool) {
	if t, ok := sidekiqTime(j.EnqueuedAt); ok {
		return t, true
	}
	return sidekiqTime(j.CreatedAt)
}

// workEntry is a value of a Sidekiq process's "<identity>:work" hash: the
// job a thread is running, its payload a JSON string (or, in some
// versions, an object).
type workEntry struct {
	Payload json.RawMessage `json:"payload"`
}

// decodeWork returns the jid of the job in a work hash value.
func decodeWork(raw []byte) (string, error) {
	var w workEntry
	if err := json.Unmarshal(raw, &w); err != nil {
		return "", &decodeError{reasonJob, err}
	}
	payload := []byte(w.Payload)
	var s string
	if json.Unmarshal(payload, &s) == nil {
		payload = []byte(s)
	}
	var j struct {
		JID string `json:"jid"`
	}
	if err := json.Unmarshal(payload, &j); err != nil {
		return "", &decodeError{reasonJob, err}
	}
	if j.JID == "" {
		return "", &decodeError{reasonJob, errNoJID}
	}
	return j.JID, nil
}
