package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
)

// maxParamLength bounds a text parameter.
const maxParamLength = 1024

// defaultTopologyWindow is the topology's time range when none is given.
const defaultTopologyWindow = time.Hour

// api serves the JSON API (docs/API.md). Handlers share nothing but the
// store, which is safe for concurrent use.
type api struct {
	store  storage.Reader
	logger *zap.Logger
	now    func() time.Time
}

func newAPI(store storage.Reader, logger *zap.Logger) http.Handler {
	a := &api{store: store, logger: logger, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/flows", a.flows)
	mux.HandleFunc("GET /api/flows/{id}", a.flow)
	mux.HandleFunc("GET /api/topology", a.topology)
	mux.HandleFunc("GET /{$}", placeholder)
	return mux
}

// badParameter is a 400 that names the parameter at fault.
type badParameter struct {
	name   string
	reason string
}

func (e *badParameter) Error() string { return e.name + ": " + e.reason }

// params reads query parameters, remembering the first that is wrong.
type params struct {
	values map[string]string
	err    *badParameter
}

// newParams reads the query string of a request to an endpoint that takes
// the named parameters. A pair that does not decode, a parameter given
// twice and one the endpoint does not take are each wrong: read leniently,
// a filter with a typo or a bad escape would be dropped, and the answer
// would look like what was asked for.
func newParams(r *http.Request, known ...string) *params {
	p := &params{values: map[string]string{}}
	for pair := range strings.SplitSeq(r.URL.RawQuery, "&") {
		if pair == "" {
			continue
		}
		rawKey, rawValue, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(rawKey)
		if err != nil {
			p.fail(rawKey, "does not decode: %v", err)
			continue
		}
		value, err := url.QueryUnescape(rawValue)
		_, seen := p.values[key]
		switch {
		case err != nil:
			p.fail(key, "does not decode: %v", err)
		case strings.Contains(pair, ";"):
			p.fail(key, "holds a raw ';': encode it as %%3B")
		case !slices.Contains(known, key):
			p.fail(key, "not a parameter of %s (it takes %s)", r.URL.Path, strings.Join(known, ", "))
		case seen:
			p.fail(key, "given more than once")
		}
		p.values[key] = value
	}
	return p
}

func (p *params) fail(name, format string, args ...any) {
	if p.err == nil {
		p.err = &badParameter{name: name, reason: fmt.Sprintf(format, args...)}
	}
}

func (p *params) text(name string) string {
	v := p.values[name]
	if len(v) > maxParamLength {
		p.fail(name, "longer than %d bytes", maxParamLength)
		return ""
	}
	return v
}

// Times the storage can hold: nanoseconds since 1970 in an int64.
var (
	minTime = time.Unix(0, 0).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()
)

// time reads RFC 3339 or Unix milliseconds, between 1970 and 2262.
func (p *params) time(name string) time.Time {
	v := p.text(name)
	if v == "" {
		return time.Time{}
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil && strings.Contains(v, " ") {
		// An offset's + that came unencoded, and so decoded as a space.
		t, err = time.Parse(time.RFC3339Nano, strings.Replace(v, " ", "+", 1))
	}
	if ms, msErr := strconv.ParseInt(v, 10, 64); msErr == nil {
		t, err = time.UnixMilli(ms).UTC(), nil
	}
	switch {
	case err != nil:
		p.fail(name, "want RFC 3339 (2026-11-26T10:00:00Z) or Unix milliseconds, got %q", v)
	case t.Before(minTime) || t.After(maxTime):
		p.fail(name, "want a time from %s to %s, got %q", minTime.Format(time.RFC3339), maxTime.Format(time.RFC3339), v)
	}
	return t
}

func (p *params) integer(name string, min, max int64) (int64, bool) {
	v := p.text(name)
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < min || n > max {
		p.fail(name, "want an integer in [%d, %d], got %q", min, max, v)
		return 0, false
	}
	return n, true
}

func (p *params) statuses(name string) []model.FlowStatus {
	v := p.text(name)
	if v == "" {
		return nil
	}
	var out []model.FlowStatus
	for _, s := range strings.Split(v, ",") {
		status := model.FlowStatus(strings.TrimSpace(s))
		switch status {
		case model.FlowRunning, model.FlowCompleted, model.FlowFailed, model.FlowDeadLettered, model.FlowStuck, model.FlowEvicted:
			out = append(out, status)
		default:
			p.fail(name, "unknown status %q (running, completed, failed, dead_lettered, stuck, evicted)", s)
		}
	}
	return out
}

func (a *api) flows(w http.ResponseWriter, r *http.Request) {
	p := newParams(r, "key", "name", "status", "from", "to", "min_duration_ms", "limit", "cursor")
	q := storage.FlowQuery{
		Key:      p.text("key"),
		Name:     p.text("name"),
		Statuses: p.statuses("status"),
		From:     p.time("from"),
		To:       p.time("to"),
		Cursor:   p.text("cursor"),
	}
	if ms, ok := p.integer("min_duration_ms", 0, 1<<40); ok {
		q.MinDuration = time.Duration(ms) * time.Millisecond
	}
	if n, ok := p.integer("limit", 1, storage.MaxLimit); ok {
		q.Limit = int(n)
	}
	if !q.From.IsZero() && !q.To.IsZero() && !q.To.After(q.From) {
		p.fail("to", "must be after from")
	}
	if p.err != nil {
		a.badRequest(w, p.err)
		return
	}
	page, err := a.store.FindFlows(r.Context(), q)
	if errors.Is(err, storage.ErrBadCursor) {
		a.badRequest(w, &badParameter{name: "cursor", reason: "not a cursor this API issued"})
		return
	}
	if err != nil {
		a.failed(w, r, err)
		return
	}
	out := flowsResponse{Flows: make([]flowJSON, 0, len(page.Flows)), NextCursor: page.NextCursor}
	for _, f := range page.Flows {
		out.Flows = append(out.Flows, toFlowJSON(f))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) flow(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "" || len(id) > maxParamLength {
		a.badRequest(w, &badParameter{name: "id", reason: "missing or too long"})
		return
	}
	detail, err := a.store.GetFlow(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, errorJSON{Error: fmt.Sprintf("no flow %q", id)})
		return
	}
	if err != nil {
		a.failed(w, r, err)
		return
	}
	out := flowDetailResponse{Flow: toFlowJSON(detail.Flow), Hops: make([]hopJSON, 0, len(detail.Hops)), Events: make([]eventJSON, 0, len(detail.Events))}
	for _, h := range detail.Hops {
		out.Hops = append(out.Hops, toHopJSON(h))
	}
	for _, e := range detail.Events {
		out.Events = append(out.Events, toEventJSON(e))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) topology(w http.ResponseWriter, r *http.Request) {
	p := newParams(r, "from", "to")
	from, to := p.time("from"), p.time("to")
	if to.IsZero() {
		to = a.now()
	}
	if from.IsZero() {
		from = to.Add(-defaultTopologyWindow)
	}
	if !to.After(from) {
		p.fail("to", "must be after from")
	}
	if p.err != nil {
		a.badRequest(w, p.err)
		return
	}
	edges, err := a.store.Topology(r.Context(), from, to)
	if err != nil {
		a.failed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, buildTopology(edges))
}

func (a *api) badRequest(w http.ResponseWriter, err *badParameter) {
	writeJSON(w, http.StatusBadRequest, errorJSON{Error: err.Error(), Parameter: err.name})
}

func (a *api) failed(w http.ResponseWriter, r *http.Request, err error) {
	a.logger.Warn("API request failed", zap.String("path", r.URL.Path), zap.Error(err))
	writeJSON(w, http.StatusInternalServerError, errorJSON{Error: "storage query failed"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// placeholder stands where the flow explorer UI will be served.
func placeholder(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(`<!doctype html><title>flowtrace</title><h1>flowtrace</h1>` +
		`<p>The flow explorer UI is not built into this binary. The API is under <a href="/api/flows">/api/</a>.</p>`))
}
