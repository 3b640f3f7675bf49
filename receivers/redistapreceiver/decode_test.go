package redistapreceiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

func TestParseEntryID(t *testing.T) {
	for in, want := range map[string]entryID{
		"1700000000000-0": {1700000000000, 0},
		"0-1":             {0, 1},
		"18446744073709551615-18446744073709551615": {^uint64(0), ^uint64(0)},
	} {
		got, err := parseEntryID(in)
		require.NoError(t, err, in)
		assert.Equal(t, want, got)
		assert.Equal(t, in, got.String())
	}
	for _, in := range []string{"", "-", "1", "1-", "-1", "a-1", "1-b", "+1-1", "1--1", "1-1-1", "18446744073709551616-0", "*", "01-1", "1-00"} {
		_, err := parseEntryID(in)
		assert.ErrorIs(t, err, errEntryID, in)
	}
	a, b := entryID{1, 5}, entryID{2, 0}
	assert.True(t, a.less(b))
	assert.False(t, b.less(a))
	assert.False(t, a.less(a))
	assert.Equal(t, time.UnixMilli(1700000000123), entryID{1700000000123, 7}.time())
}

func TestDecodeEntry(t *testing.T) {
	cfg := &createDefaultConfig().Streams
	cfg.KeyFields = map[string]string{"order_id": "order_id", "customer": "customer_id"}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

	e, bad, err := decodeEntry(cfg, "1700000000000-3", map[string]any{"order_id": "o-1", "body": "synthetic", "traceparent": tp, "customer": ""})
	require.NoError(t, err)
	assert.False(t, bad)
	assert.Equal(t, entryID{1700000000000, 3}, e.id)
	assert.Equal(t, tp, e.traceParent)
	assert.Equal(t, []model.Key{{Kind: "order_id", Value: "o-1"}}, e.keys, "empty key values are not keys")
	assert.Equal(t, int64(len("order_ido-1bodysynthetictraceparent")+len(tp)+len("customer")), e.size)

	e, bad, err = decodeEntry(cfg, "1-1", map[string]any{"traceparent": "00-zz"})
	require.NoError(t, err)
	assert.True(t, bad, "a malformed traceparent is reported")
	assert.Empty(t, e.traceParent)

	_, _, err = decodeEntry(cfg, "1", nil)
	var de *decodeError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, reasonEntryID, de.reason)

	_, _, err = decodeEntry(cfg, "1-1", map[string]any{"n": int64(5)})
	require.ErrorAs(t, err, &de)
	assert.Equal(t, reasonField, de.reason)
}

func TestDecodeDeadLetter(t *testing.T) {
	cfg := &createDefaultConfig().Streams.DeadLetter
	dl, err := decodeDeadLetter(cfg, entryID{1700000000500, 0}, map[string]any{"original_id": "1700000000000-2", "reason": "bad_amount", "group": "billing"})
	require.NoError(t, err)
	assert.Equal(t, deadLetterEntry{at: time.UnixMilli(1700000000500), original: entryID{1700000000000, 2}, reason: "bad_amount", group: "billing"}, dl)

	for _, values := range []map[string]any{{}, {"original_id": "x"}, {"original_id": 5}} {
		_, err := decodeDeadLetter(cfg, entryID{1, 0}, values)
		var de *decodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, reasonDeadLetter, de.reason)
	}
}

func TestDecodeJob(t *testing.T) {
	// Sidekiq 8: milliseconds.
	j, err := decodeJob([]byte(`{"retry":true,"queue":"default","class":"InvoiceJob","args":[1,"secret"],"jid":"b4a577edbccf1d805744efa9","created_at":1700000000123,"enqueued_at":1700000000456}`))
	require.NoError(t, err)
	assert.Equal(t, "b4a577edbccf1d805744efa9", j.JID)
	assert.Equal(t, "InvoiceJob", j.operation())
	assert.Equal(t, 1, j.enqueuedAttempt())
	at, ok := j.enqueuedTime()
	require.True(t, ok)
	assert.Equal(t, time.UnixMilli(1700000000456), at)

	// Sidekiq 7: float seconds; a retried job under ActiveJob.
	j, err = decodeJob([]byte(`{"class":"ActiveJob::QueueAdapters::SidekiqAdapter::JobWrapper","wrapped":"ChargeJob","queue":"q","jid":"x1","created_at":1700000000.25,"enqueued_at":1700000001.5,"retry_count":2,"error_class":"Timeout::Error","failed_at":1700000000.5,"retried_at":1700000002.75}`))
	require.NoError(t, err)
	assert.Equal(t, "ChargeJob", j.operation())
	assert.Equal(t, 4, j.enqueuedAttempt(), "retry_count 2: three attempts failed, the fourth is queued")
	assert.Equal(t, 3, j.failedAttempt())
	at, ok = j.failedTime()
	require.True(t, ok)
	assert.Equal(t, time.Unix(1700000002, 750_000_000), at)
	at, ok = j.enqueuedTime()
	require.True(t, ok)
	assert.Equal(t, time.Unix(1700000001, 500_000_000), at)

	// A traceparent from OpenTelemetry's instrumentation.
	j, err = decodeJob([]byte(`{"jid":"x2","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}`))
	require.NoError(t, err)
	assert.Equal(t, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", j.TraceParent)
	j, err = decodeJob([]byte(`{"jid":"x3","traceparent":"garbage"}`))
	require.NoError(t, err)
	assert.Empty(t, j.TraceParent)

	for _, raw := range []string{
		``, `[]`, `{"jid":5}`, `{"class":"NoJid"}`, `{"jid":"x","enqueued_at":"soon"}`,
		`{"jid":"x","retry_count":-2}`, `{"jid":"x","retry_count":1e9}`, `{"jid":"x","enqueued_at":-5.5}`,
	} {
		_, err := decodeJob([]byte(raw))
		var de *decodeError
		require.ErrorAs(t, err, &de, raw)
		assert.Equal(t, reasonJob, de.reason)
	}
}

func TestDecodeWork(t *testing.T) {
	payload := `{"queue":"default","class":"InvoiceJob","args":[],"jid":"abc123"}`
	asString, _ := json.Marshal(map[string]any{"queue": "default", "payload": payload, "run_at": 1700000000})
	jid, err := decodeWork(asString)
	require.NoError(t, err)
	assert.Equal(t, "abc123", jid)

	asObject := []byte(`{"queue":"default","payload":` + payload + `,"run_at":1700000000}`)
	jid, err = decodeWork(asObject)
	require.NoError(t, err)
	assert.Equal(t, "abc123", jid)

	for _, raw := range []string{``, `{}`, `{"payload":"{}"}`, `{"payload":"not json"}`} {
		_, err := decodeWork([]byte(raw))
		assert.Error(t, err, raw)
	}
}

func TestMidpoint(t *testing.T) {
	t0 := time.Unix(1000, 0)
	assert.Equal(t, t0.Add(500*time.Millisecond), midpoint(t0, t0.Add(time.Second), time.Time{}))
	assert.Equal(t, t0.Add(750*time.Millisecond), midpoint(t0, t0.Add(time.Second), t0.Add(500*time.Millisecond)), "not before what was seen")
	assert.Equal(t, t0, midpoint(time.Time{}, t0, time.Time{}), "no earlier poll")
	assert.Equal(t, t0.Add(2*time.Second), midpoint(t0, t0.Add(time.Second), t0.Add(2*time.Second)))
}

// Every captured entry decodes, with its traceparent and key.
func TestDecodeCapturedEntries(t *testing.T) {
	cfg := &createDefaultConfig().Streams
	cfg.KeyFields = map[string]string{"order_id": "order_id"}
	entries := readCapturedEntries(t)
	require.NotEmpty(t, entries)
	var withTraceParent int
	for _, c := range entries {
		e, bad, err := decodeEntry(cfg, c.ID, c.values())
		require.NoError(t, err)
		assert.False(t, bad)
		require.Len(t, e.keys, 1)
		if e.traceParent != "" {
			withTraceParent++
		}
	}
	assert.Equal(t, len(entries)/2, withTraceParent)
}

// Every captured job decodes; none keeps its arguments.
func TestDecodeCapturedJobs(t *testing.T) {
	jobs := readCapturedJobs(t)
	require.NotEmpty(t, jobs)
	for _, raw := range jobs {
		j, err := decodeJob(raw)
		require.NoError(t, err, string(raw))
		_, ok := j.enqueuedTime()
		assert.True(t, ok)
		assert.NotContains(t, string(mustJSON(t, j)), "synthetic", "arguments are not read")
	}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// splitFields reads fuzz input as NUL-separated field names and values.
func splitFields(b []byte) map[string]any {
	parts := bytes.Split(b, []byte{0})
	values := map[string]any{}
	for i := 0; i+1 < len(parts); i += 2 {
		values[string(parts[i])] = string(parts[i+1])
	}
	return values
}

func joinFields(fields map[string]string) []byte {
	var b []byte
	for k, v := range fields {
		b = append(b, k...)
		b = append(b, 0)
		b = append(b, v...)
		b = append(b, 0)
	}
	return b
}

// FuzzDecodeEntry feeds stream entries, seeded from entries captured from
// Redis, to the entry and dead-letter decoders.
func FuzzDecodeEntry(f *testing.F) {
	for i, e := range readCapturedEntries(f) {
		if i%16 == 0 {
			f.Add(e.ID, joinFields(e.Fields))
		}
	}
	f.Add("1700000000000-0", []byte("original_id\x001700000000000-0\x00reason\x00poison\x00group\x00g"))
	cfg := &createDefaultConfig().Streams
	cfg.KeyFields = map[string]string{"order_id": "order_id"}
	f.Fuzz(func(t *testing.T, id string, fields []byte) {
		values := splitFields(fields)
		e, _, err := decodeEntry(cfg, id, values)
		if err != nil {
			var de *decodeError
			if !errors.As(err, &de) {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		if e.id.String() != id {
			t.Fatalf("id %q read as %q", id, e.id)
		}
		for _, k := range e.keys {
			checkText(t, k.Value)
		}
		if e.traceParent != "" {
			if _, _, ok := tap.ParseTraceParent(e.traceParent); !ok {
				t.Fatalf("kept a malformed traceparent %q", e.traceParent)
			}
		}
		dl, err := decodeDeadLetter(&cfg.DeadLetter, e.id, values)
		if err != nil {
			var de *decodeError
			if !errors.As(err, &de) {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		checkText(t, dl.reason)
		checkText(t, dl.group)
	})
}

// FuzzDecodeJob feeds job JSON, seeded from jobs captured from Redis, to
// the job and work decoders.
func FuzzDecodeJob(f *testing.F) {
	for i, raw := range readCapturedJobs(f) {
		if i%8 < 3 {
			f.Add(raw)
		}
	}
	f.Add([]byte(`{"queue":"default","payload":"{\"jid\":\"abc\"}","run_at":1700000000}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		j, err := decodeJob(raw)
		if err == nil {
			if j.JID == "" || j.enqueuedAttempt() < 1 || j.failedAttempt() < 1 {
				t.Fatalf("accepted a job without identity or attempt: %+v", j)
			}
			if j.TraceParent != "" {
				if _, _, ok := tap.ParseTraceParent(j.TraceParent); !ok {
					t.Fatalf("kept a malformed traceparent %q", j.TraceParent)
				}
			}
			for _, text := range []string{j.JID, j.Queue, j.Class, j.Wrapped, j.ErrorClass} {
				checkText(t, text)
			}
			_, _ = j.enqueuedTime()
			_, _ = j.failedTime()
		}
		if jid, err := decodeWork(raw); err == nil && jid == "" {
			t.Fatal("work without a jid")
		}
	})
}

// Without Redis's lag (entries were deleted, or a server before Redis 7,
// which does not report it), the lag is counted from the entries the tap
// read, when it read back far enough.
func TestLagFallback(t *testing.T) {
	st := &stream{entries: []entry{{id: entryID{1, 0}}, {id: entryID{2, 0}}, {id: entryID{3, 0}}}}
	lag, ok := st.lag(redis.XInfoGroup{Lag: 7}, true, entryID{1, 0})
	assert.True(t, ok)
	assert.Equal(t, int64(7), lag, "Redis's own count first")
	lag, ok = st.lag(redis.XInfoGroup{Lag: -1}, true, entryID{1, 0})
	assert.True(t, ok)
	assert.Equal(t, int64(2), lag)
	lag, ok = st.lag(redis.XInfoGroup{Lag: 0}, false, entryID{1, 0})
	assert.True(t, ok)
	assert.Equal(t, int64(2), lag, "Redis 6: no lag field, read as 0")
	lag, ok = st.lag(redis.XInfoGroup{Lag: -1}, true, entryID{3, 0})
	assert.True(t, ok)
	assert.Equal(t, int64(0), lag)
	_, ok = st.lag(redis.XInfoGroup{Lag: -1}, true, entryID{0, 5})
	assert.False(t, ok, "the tap did not read back that far")
}

func TestReportsGroupLag(t *testing.T) {
	for info, want := range map[string]bool{
		"# Server\r\nredis_version:7.0.15\r\nredis_mode:standalone\r\n": true,
		"# Server\r\nredis_version:6.2.14\r\n":                          false,
		"# Server\r\nredis_version:10.0.0\r\n":                          true,
		"":                                                              false, // INFO refused
	} {
		assert.Equal(t, want, reportsGroupLag(info), "%q", info)
	}
}

// checkText fails unless s is fit for a span attribute.
func checkText(t *testing.T, s string) {
	t.Helper()
	if clean, ok := tap.CleanText(s, tap.MaxText); !ok || clean != s {
		t.Fatalf("text not cleaned: %q", s)
	}
}

// Broker text is cleaned, and the entry or job says so.
func TestDecodeCleansText(t *testing.T) {
	cfg := &createDefaultConfig().Streams
	cfg.KeyFields = map[string]string{"order_id": "order_id"}
	e, _, err := decodeEntry(cfg, "1-1", map[string]any{"order_id": "o-1"})
	require.NoError(t, err)
	assert.False(t, e.cleaned)
	e, _, err = decodeEntry(cfg, "1-1", map[string]any{"order_id": "o-\xff\n1"})
	require.NoError(t, err)
	assert.True(t, e.cleaned)
	assert.Equal(t, "o-\uFFFD 1", e.keys[0].Value)

	long := strings.Repeat("x", 300)
	dl, err := decodeDeadLetter(&cfg.DeadLetter, entryID{1, 0}, map[string]any{"original_id": "1-0", "reason": long, "group": "g\x00"})
	require.NoError(t, err)
	assert.True(t, dl.cleaned)
	assert.Len(t, dl.reason, tap.MaxText)
	assert.Equal(t, "g ", dl.group)

	j, err := decodeJob([]byte(`{"jid":"x1","queue":"q","class":"C","error_class":"E\u0007rr"}`))
	require.NoError(t, err)
	assert.True(t, j.cleaned)
	assert.Equal(t, "E rr", j.ErrorClass)
	j, err = decodeJob([]byte(`{"jid":"x1","queue":"q","class":"C","error_class":"Err"}`))
	require.NoError(t, err)
	assert.False(t, j.cleaned)
}
