package chstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/storage"
)

// maxFlowEvents caps the events GetFlow returns for one flow.
const maxFlowEvents = 10000

// eventSlack widens a flow's time range when its events are looked up, for
// events whose clocks disagree with the flow's.
const eventSlack = time.Hour

const flowSelect = "SELECT flow_id, version, toUnixTimestamp64Nano(first_seen) AS first_seen_ns, name, status, " +
	"toUnixTimestamp64Nano(start_time) AS start_ns, toUnixTimestamp64Nano(end_time) AS end_ns, " +
	"hop_count, retries, dead_letters, `keys.kind` AS key_kinds, `keys.value` AS key_values, critical_path"

type flowRow struct {
	ID           string   `json:"flow_id"`
	Version      uint64   `json:"version"`
	FirstSeen    int64    `json:"first_seen_ns"`
	Name         string   `json:"name"`
	Status       string   `json:"status"`
	Start        int64    `json:"start_ns"`
	End          int64    `json:"end_ns"`
	HopCount     uint32   `json:"hop_count"`
	Retries      uint32   `json:"retries"`
	DeadLetters  uint32   `json:"dead_letters"`
	KeyKinds     []string `json:"key_kinds"`
	KeyValues    []string `json:"key_values"`
	CriticalPath []string `json:"critical_path"`
}

func (r *flowRow) flow() model.Flow {
	f := model.Flow{
		ID:           r.ID,
		Version:      r.Version,
		FirstSeen:    fromNanos(r.FirstSeen),
		Name:         r.Name,
		Status:       model.FlowStatus(r.Status),
		Start:        fromNanos(r.Start),
		End:          fromNanos(r.End),
		HopCount:     r.HopCount,
		Retries:      r.Retries,
		DeadLetters:  r.DeadLetters,
		CriticalPath: nilIfEmpty(r.CriticalPath),
	}
	f.Keys = joinKeys(r.KeyKinds, r.KeyValues)
	return f
}

const hopSelect = "SELECT flow_id, hop_id, version, toUnixTimestamp64Nano(first_seen) AS first_seen_ns, parent_hop_id, system, " +
	"producer, destination, consumer, consumer_group, operation, message_id, trace_id, " +
	"toUnixTimestamp64Nano(publish_time) AS publish_ns, toUnixTimestamp64Nano(deliver_time) AS deliver_ns, " +
	"toUnixTimestamp64Nano(settle_time) AS settle_ns, queue_wait_ns, processing_ns, attempts, outcome, reason, counted"

type hopRow struct {
	FlowID        string `json:"flow_id"`
	HopID         string `json:"hop_id"`
	Version       uint64 `json:"version"`
	FirstSeen     int64  `json:"first_seen_ns"`
	ParentHopID   string `json:"parent_hop_id"`
	System        string `json:"system"`
	Producer      string `json:"producer"`
	Destination   string `json:"destination"`
	Consumer      string `json:"consumer"`
	ConsumerGroup string `json:"consumer_group"`
	Operation     string `json:"operation"`
	MessageID     string `json:"message_id"`
	TraceID       string `json:"trace_id"`
	PublishTime   int64  `json:"publish_ns"`
	DeliverTime   int64  `json:"deliver_ns"`
	SettleTime    int64  `json:"settle_ns"`
	QueueWait     int64  `json:"queue_wait_ns"`
	Processing    int64  `json:"processing_ns"`
	Attempts      uint16 `json:"attempts"`
	Outcome       string `json:"outcome"`
	Reason        string `json:"reason"`
	Counted       uint8  `json:"counted"`
}

func (r *hopRow) hop() model.Hop {
	return model.Hop{
		FlowID:        r.FlowID,
		HopID:         r.HopID,
		Version:       r.Version,
		FirstSeen:     fromNanos(r.FirstSeen),
		ParentHopID:   r.ParentHopID,
		System:        r.System,
		Producer:      r.Producer,
		Destination:   r.Destination,
		Consumer:      r.Consumer,
		ConsumerGroup: r.ConsumerGroup,
		Operation:     r.Operation,
		MessageID:     r.MessageID,
		TraceID:       r.TraceID,
		PublishTime:   fromNanos(r.PublishTime),
		DeliverTime:   fromNanos(r.DeliverTime),
		SettleTime:    fromNanos(r.SettleTime),
		QueueWait:     time.Duration(r.QueueWait),
		Processing:    time.Duration(r.Processing),
		Attempts:      r.Attempts,
		Outcome:       model.HopOutcome(r.Outcome),
		Reason:        r.Reason,
		Counted:       r.Counted == 1,
	}
}

const eventSelect = "SELECT toUnixTimestamp64Nano(time) AS time_ns, kind, system, destination, partition, message_id, " +
	"operation, attempt, service, consumer_group, trace_id, span_id, parent_span_id, links, " +
	"`keys.kind` AS key_kinds, `keys.value` AS key_values, outcome, reason, " +
	"body_size, duration_ns"

type eventRow struct {
	Time          int64    `json:"time_ns"`
	Kind          string   `json:"kind"`
	System        string   `json:"system"`
	Destination   string   `json:"destination"`
	Partition     string   `json:"partition"`
	MessageID     string   `json:"message_id"`
	Operation     string   `json:"operation"`
	Attempt       uint16   `json:"attempt"`
	Service       string   `json:"service"`
	ConsumerGroup string   `json:"consumer_group"`
	TraceID       string   `json:"trace_id"`
	SpanID        string   `json:"span_id"`
	ParentSpanID  string   `json:"parent_span_id"`
	Links         []string `json:"links"`
	KeyKinds      []string `json:"key_kinds"`
	KeyValues     []string `json:"key_values"`
	Outcome       string   `json:"outcome"`
	Reason        string   `json:"reason"`
	BodySize      uint64   `json:"body_size"`
	Duration      int64    `json:"duration_ns"`
}

func (r *eventRow) event() model.Event {
	e := model.Event{
		Time:          fromNanos(r.Time),
		Kind:          model.EventKind(r.Kind),
		System:        r.System,
		Destination:   r.Destination,
		Partition:     r.Partition,
		MessageID:     r.MessageID,
		Operation:     r.Operation,
		Attempt:       r.Attempt,
		Service:       r.Service,
		ConsumerGroup: r.ConsumerGroup,
		TraceID:       r.TraceID,
		SpanID:        r.SpanID,
		ParentSpanID:  r.ParentSpanID,
		Links:         parseLinks(r.Links),
		Outcome:       r.Outcome,
		Reason:        r.Reason,
		BodySize:      r.BodySize,
		Duration:      time.Duration(r.Duration),
	}
	e.Keys = joinKeys(r.KeyKinds, r.KeyValues)
	return e
}

func (s *store) FindFlows(ctx context.Context, q storage.FlowQuery) (storage.FlowPage, error) {
	query, params, limit, err := s.findFlowsQuery(q)
	if err != nil {
		return storage.FlowPage{}, err
	}
	flows, err := selectRows(ctx, s, query, params, (*flowRow).flow)
	if err != nil {
		return storage.FlowPage{}, fmt.Errorf("find flows: %w", err)
	}
	page := storage.FlowPage{Flows: flows}
	if len(flows) > limit {
		page.Flows = flows[:limit]
		last := flows[limit-1]
		page.NextCursor = encodeCursor(nanos(last.Start), last.ID)
	}
	return page, nil
}

// hasKey is the condition, on flows FINAL, that a flow's latest version
// carries the value {key}. The bloom filter on keys.value finds the flows any
// version of which carried it, in the subquery; the latest versions are then
// read by primary key. On a cluster the subquery reads each node's own
// table: flows are sharded by flow_id, so it holds every version of the
// flows that node answers for (and ClickHouse refuses a Distributed table
// in an IN inside a query on one).
func (s *store) hasKey() string {
	return "flow_id IN (SELECT flow_id FROM " + s.schema.local("flows") + " WHERE has(keys.value, {key:String}))" +
		" AND has(keys.value, {key:String})"
}

// findFlowsQuery builds the FindFlows statement. It asks for one row more than
// the page holds, to know whether another page follows.
func (s *store) findFlowsQuery(q storage.FlowQuery) (string, Params, int, error) {
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = storage.DefaultLimit
	case limit > storage.MaxLimit:
		limit = storage.MaxLimit
	}
	var where []string
	params := Params{"limit": strconv.Itoa(limit + 1)}
	if q.Key != "" {
		where = append(where, s.hasKey())
		params["key"] = escapeParam(q.Key)
	}
	if q.Name != "" {
		where = append(where, "name = {name:String}")
		params["name"] = escapeParam(q.Name)
	}
	if len(q.Statuses) > 0 {
		statuses := make([]string, len(q.Statuses))
		for i, st := range q.Statuses {
			statuses[i] = string(st)
		}
		where = append(where, "status IN {statuses:Array(String)}")
		params["statuses"] = arrayParam(statuses)
	}
	if !q.From.IsZero() {
		where = append(where, "start_time >= fromUnixTimestamp64Nano({from:Int64})")
		params["from"] = strconv.FormatInt(nanos(q.From), 10)
	}
	if !q.To.IsZero() {
		where = append(where, "start_time < fromUnixTimestamp64Nano({to:Int64})")
		params["to"] = strconv.FormatInt(nanos(q.To), 10)
	}
	if q.MinDuration > 0 {
		where = append(where, "duration_ns >= {min_duration:Int64}")
		params["min_duration"] = strconv.FormatInt(int64(q.MinDuration), 10)
	}
	if q.Cursor != "" {
		start, id, err := decodeCursor(q.Cursor)
		if err != nil {
			return "", nil, 0, err
		}
		where = append(where, "(start_time, flow_id) < (fromUnixTimestamp64Nano({cursor_start:Int64}), {cursor_id:String})")
		params["cursor_start"] = strconv.FormatInt(start, 10)
		params["cursor_id"] = escapeParam(id)
	}
	query := flowSelect + " FROM " + s.schema.name("flows") + " FINAL"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	query += " ORDER BY start_time DESC, flow_id DESC LIMIT {limit:UInt32}"
	return query, params, limit, nil
}

func (s *store) GetFlow(ctx context.Context, id string) (storage.FlowDetail, error) {
	params := Params{"id": escapeParam(id)}
	flows, err := selectRows(ctx, s, flowSelect+" FROM "+s.schema.name("flows")+" FINAL WHERE flow_id = {id:String}", params, (*flowRow).flow)
	if err != nil {
		return storage.FlowDetail{}, fmt.Errorf("get flow: %w", err)
	}
	if len(flows) == 0 {
		return storage.FlowDetail{}, fmt.Errorf("flow %q: %w", id, storage.ErrNotFound)
	}
	detail := storage.FlowDetail{Flow: flows[0]}
	detail.Hops, err = selectRows(ctx, s, hopSelect+" FROM "+s.schema.name("hops")+
		" FINAL WHERE flow_id = {id:String} ORDER BY publish_time, deliver_time, hop_id", params, (*hopRow).hop)
	if err != nil {
		return storage.FlowDetail{}, fmt.Errorf("get flow hops: %w", err)
	}
	detail.Events, err = s.flowEvents(ctx, detail)
	if err != nil {
		return storage.FlowDetail{}, fmt.Errorf("get flow events: %w", err)
	}
	return detail, nil
}

// flowEvents reads the events of the flow's messages within the flow's time
// range, widened by eventSlack.
func (s *store) flowEvents(ctx context.Context, detail storage.FlowDetail) ([]model.Event, error) {
	var messageIDs []string
	for _, h := range detail.Hops {
		if h.MessageID != "" {
			messageIDs = append(messageIDs, h.MessageID)
		}
	}
	if len(messageIDs) == 0 {
		return nil, nil
	}
	from := max(nanos(detail.Flow.Start)-int64(eventSlack), 0)
	to := int64(math.MaxInt64)
	if !detail.Flow.End.IsZero() {
		to = max(nanos(detail.Flow.End), nanos(detail.Flow.Start)) + int64(eventSlack)
	}
	params := Params{
		"ids":   arrayParam(messageIDs),
		"from":  strconv.FormatInt(from, 10),
		"to":    strconv.FormatInt(to, 10),
		"limit": strconv.Itoa(maxFlowEvents),
	}
	query := eventSelect + " FROM " + s.schema.name("events") +
		" WHERE message_id IN {ids:Array(String)}" +
		" AND time >= fromUnixTimestamp64Nano({from:Int64}) AND time <= fromUnixTimestamp64Nano({to:Int64})" +
		" ORDER BY time, kind LIMIT {limit:UInt32}"
	return selectRows(ctx, s, query, params, (*eventRow).event)
}

func (s *store) FlowIDsByKey(ctx context.Context, key string, limit int) ([]string, error) {
	if limit <= 0 || limit > storage.MaxLimit {
		limit = storage.MaxLimit
	}
	query := "SELECT flow_id FROM " + s.schema.name("flows") + " FINAL WHERE " + s.hasKey() + " ORDER BY flow_id LIMIT {limit:UInt32}"
	type idRow struct {
		ID string `json:"flow_id"`
	}
	ids, err := selectRows(ctx, s, query, Params{"key": escapeParam(key), "limit": strconv.Itoa(limit)}, func(r *idRow) string { return r.ID })
	if err != nil {
		return nil, fmt.Errorf("flows by key: %w", err)
	}
	return ids, nil
}

const edgeStatsSelect = "system, producer, destination, consumer, sum(hops) AS count, sum(retries) AS retries, " +
	"sum(dead_letters) AS dead_letters, " +
	"quantilesTDigestMerge(0.5, 0.95, 0.99)(queue_wait) AS queue_wait, " +
	"quantilesTDigestMerge(0.5, 0.95, 0.99)(processing) AS processing"

type edgeRow struct {
	Time        int64     `json:"time_ns"`
	System      string    `json:"system"`
	Producer    string    `json:"producer"`
	Destination string    `json:"destination"`
	Consumer    string    `json:"consumer"`
	Count       uint64    `json:"count"`
	Retries     uint64    `json:"retries"`
	DeadLetters uint64    `json:"dead_letters"`
	QueueWait   []float64 `json:"queue_wait"`
	Processing  []float64 `json:"processing"`
}

func (r *edgeRow) stats() model.EdgeStats {
	quantile := func(q []float64, i int) time.Duration {
		if i >= len(q) {
			return 0
		}
		return time.Duration(q[i])
	}
	return model.EdgeStats{
		Edge:          model.Edge{System: r.System, Producer: r.Producer, Destination: r.Destination, Consumer: r.Consumer},
		Count:         r.Count,
		QueueWaitP50:  quantile(r.QueueWait, 0),
		QueueWaitP95:  quantile(r.QueueWait, 1),
		QueueWaitP99:  quantile(r.QueueWait, 2),
		ProcessingP50: quantile(r.Processing, 0),
		ProcessingP95: quantile(r.Processing, 1),
		ProcessingP99: quantile(r.Processing, 2),
		Retries:       r.Retries,
		DeadLetters:   r.DeadLetters,
	}
}

func (s *store) Topology(ctx context.Context, from, to time.Time) ([]model.EdgeStats, error) {
	query := "SELECT " + edgeStatsSelect + " FROM " + s.schema.name("edges_1m") +
		" WHERE minute >= toStartOfMinute(fromUnixTimestamp64Nano({from:Int64})) AND minute < fromUnixTimestamp64Nano({to:Int64})" +
		" GROUP BY system, producer, destination, consumer ORDER BY system, producer, destination, consumer"
	edges, err := selectRows(ctx, s, query, minuteRange(from, to), (*edgeRow).stats)
	if err != nil {
		return nil, fmt.Errorf("topology: %w", err)
	}
	return edges, nil
}

func (s *store) EdgeSeries(ctx context.Context, q storage.SeriesQuery) ([]model.EdgePoint, error) {
	stepMinutes := int64(q.Step / time.Minute)
	if stepMinutes < 1 {
		stepMinutes = 1
	}
	params := minuteRange(q.From, q.To)
	params["step"] = strconv.FormatInt(stepMinutes, 10)
	params["system"] = escapeParam(q.Edge.System)
	params["producer"] = escapeParam(q.Edge.Producer)
	params["destination"] = escapeParam(q.Edge.Destination)
	params["consumer"] = escapeParam(q.Edge.Consumer)
	query := "SELECT toUnixTimestamp(toStartOfInterval(minute, toIntervalMinute({step:UInt32}))) * 1000000000 AS time_ns, " + edgeStatsSelect +
		" FROM " + s.schema.name("edges_1m") +
		" WHERE system = {system:String} AND producer = {producer:String} AND destination = {destination:String} AND consumer = {consumer:String}" +
		" AND minute >= toStartOfMinute(fromUnixTimestamp64Nano({from:Int64})) AND minute < fromUnixTimestamp64Nano({to:Int64})" +
		" GROUP BY time_ns, system, producer, destination, consumer ORDER BY time_ns"
	points, err := selectRows(ctx, s, query, params, func(r *edgeRow) model.EdgePoint {
		return model.EdgePoint{Time: fromNanos(r.Time), EdgeStats: r.stats()}
	})
	if err != nil {
		return nil, fmt.Errorf("edge series: %w", err)
	}
	return points, nil
}

type backlogRow struct {
	Time          int64   `json:"time_ns"`
	System        string  `json:"system"`
	Broker        string  `json:"broker"`
	Destination   string  `json:"destination"`
	ConsumerGroup string  `json:"consumer_group"`
	Depth         int64   `json:"depth"`
	Unacked       int64   `json:"unacked"`
	LagMessages   int64   `json:"lag_messages"`
	LagSeconds    float64 `json:"lag_seconds"`
	Consumers     int64   `json:"consumers"`
	PublishRate   float64 `json:"publish_rate"`
	DeliverRate   float64 `json:"deliver_rate"`
}

func (r *backlogRow) sample() model.BacklogSample {
	return model.BacklogSample{
		Time: fromNanos(r.Time), System: r.System, Broker: r.Broker, Destination: r.Destination,
		ConsumerGroup: r.ConsumerGroup, Depth: r.Depth, Unacked: r.Unacked, LagMessages: r.LagMessages,
		LagSeconds: r.LagSeconds, Consumers: r.Consumers, PublishRate: r.PublishRate, DeliverRate: r.DeliverRate,
	}
}

func (s *store) BacklogSeries(ctx context.Context, q storage.BacklogQuery) ([]model.BacklogSample, error) {
	params := timeRange(q.From, q.To)
	where := []string{"time >= fromUnixTimestamp64Nano({from:Int64})", "time < fromUnixTimestamp64Nano({to:Int64})"}
	for _, filter := range []struct{ column, value string }{
		{"system", q.System}, {"destination", q.Destination}, {"consumer_group", q.ConsumerGroup},
	} {
		if filter.value != "" {
			where = append(where, filter.column+" = {"+filter.column+":String}")
			params[filter.column] = escapeParam(filter.value)
		}
	}
	query := "SELECT toUnixTimestamp64Nano(time) AS time_ns, system, broker, destination, consumer_group, depth, unacked, " +
		"lag_messages, lag_seconds, consumers, publish_rate, deliver_rate FROM " + s.schema.name("backlog") +
		" WHERE " + strings.Join(where, " AND ") + " ORDER BY system, destination, consumer_group, time LIMIT 100000"
	samples, err := selectRows(ctx, s, query, params, (*backlogRow).sample)
	if err != nil {
		return nil, fmt.Errorf("backlog series: %w", err)
	}
	return samples, nil
}

// selectRows runs a query and converts each of its rows (a JSONEachRow line,
// decoded into a Row) with convert.
func selectRows[Row, Out any](ctx context.Context, s *store, query string, params Params, convert func(*Row) Out) ([]Out, error) {
	out, err := s.query(ctx, query, params)
	if err != nil {
		return nil, err
	}
	var results []Out
	for line := range bytes.Lines(out) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var row Row
		if err := json.Unmarshal(line, &row); err != nil {
			return nil, fmt.Errorf("decode row: %w", err)
		}
		results = append(results, convert(&row))
	}
	return results, nil
}

func timeRange(from, to time.Time) Params {
	if to.IsZero() {
		to = time.Now()
	}
	return Params{
		"from": strconv.FormatInt(nanos(from), 10),
		"to":   strconv.FormatInt(nanos(to), 10),
	}
}

// lastMinute is the last second edges_1m's minute column, a 32-bit
// DateTime, holds: ClickHouse wraps later times around to 1970.
var lastMinute = time.Unix(math.MaxUint32, 0).UTC()

// minuteRange is timeRange for edges_1m, its ends no later than lastMinute.
func minuteRange(from, to time.Time) Params {
	if from.After(lastMinute) {
		from = lastMinute
	}
	if to.After(lastMinute) {
		to = lastMinute
	}
	return timeRange(from, to)
}

// fromNanos reads a stored time; the epoch means "not observed".
func fromNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// parseLinks is the inverse of linkStrings; a malformed link is dropped.
func parseLinks(values []string) []model.SpanRef {
	var links []model.SpanRef
	for _, v := range values {
		if ref, ok := model.ParseSpanRef(v); ok {
			links = append(links, ref)
		}
	}
	return links
}

// nilIfEmpty makes an empty array read back as it was written: nil.
func nilIfEmpty(values []string) []string {
	if len(values) == 0 {
		return nil
	}
	return values
}

func encodeCursor(startNanos int64, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(startNanos, 10) + ":" + id))
}

func decodeCursor(cursor string) (int64, string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return 0, "", fmt.Errorf("%w: %v", storage.ErrBadCursor, err)
	}
	startText, id, ok := strings.Cut(string(raw), ":")
	if !ok {
		return 0, "", fmt.Errorf("%w: missing separator", storage.ErrBadCursor)
	}
	start, err := strconv.ParseInt(startText, 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("%w: %v", storage.ErrBadCursor, err)
	}
	return start, id, nil
}

// joinKeys is the inverse of splitKeys.
func joinKeys(kinds, values []string) []model.Key {
	var keys []model.Key
	for i := range min(len(kinds), len(values)) {
		keys = append(keys, model.Key{Kind: kinds[i], Value: values[i]})
	}
	return keys
}
