package web

import (
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// The API's JSON shapes (docs/API.md). Times are RFC 3339 with nanoseconds,
// null when not observed; durations are milliseconds.

type errorJSON struct {
	Error     string `json:"error"`
	Parameter string `json:"parameter,omitempty"`
}

type keyJSON struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
}

type flowJSON struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Status       string     `json:"status"`
	Start        *time.Time `json:"start"`
	End          *time.Time `json:"end"`
	DurationMS   float64    `json:"duration_ms"`
	HopCount     uint32     `json:"hop_count"`
	Retries      uint32     `json:"retries"`
	DeadLetters  uint32     `json:"dead_letters"`
	Keys         []keyJSON  `json:"keys"`
	CriticalPath []string   `json:"critical_path"`
}

type flowsResponse struct {
	Flows      []flowJSON `json:"flows"`
	NextCursor string     `json:"next_cursor"`
}

type hopJSON struct {
	ID            string     `json:"id"`
	ParentID      string     `json:"parent_id"`
	System        string     `json:"system"`
	Producer      string     `json:"producer"`
	Destination   string     `json:"destination"`
	Consumer      string     `json:"consumer"`
	ConsumerGroup string     `json:"consumer_group"`
	Operation     string     `json:"operation"`
	MessageID     string     `json:"message_id"`
	PublishTime   *time.Time `json:"publish_time"`
	DeliverTime   *time.Time `json:"deliver_time"`
	SettleTime    *time.Time `json:"settle_time"`
	QueueWaitMS   float64    `json:"queue_wait_ms"`
	ProcessingMS  float64    `json:"processing_ms"`
	Attempts      uint16     `json:"attempts"`
	Outcome       string     `json:"outcome"`
	Reason        string     `json:"reason"`
}

type spanRefJSON struct {
	TraceID string `json:"trace_id"`
	SpanID  string `json:"span_id"`
}

type eventJSON struct {
	Time          *time.Time    `json:"time"`
	Kind          string        `json:"kind"`
	System        string        `json:"system"`
	Destination   string        `json:"destination"`
	Partition     string        `json:"partition"`
	MessageID     string        `json:"message_id"`
	Operation     string        `json:"operation"`
	Attempt       uint16        `json:"attempt"`
	Service       string        `json:"service"`
	ConsumerGroup string        `json:"consumer_group"`
	TraceID       string        `json:"trace_id"`
	SpanID        string        `json:"span_id"`
	ParentSpanID  string        `json:"parent_span_id"`
	Links         []spanRefJSON `json:"links"`
	Keys          []keyJSON     `json:"keys"`
	Outcome       string        `json:"outcome"`
	Reason        string        `json:"reason"`
	BodySize      uint64        `json:"body_size"`
	DurationMS    float64       `json:"duration_ms"`
}

type flowDetailResponse struct {
	Flow   flowJSON    `json:"flow"`
	Hops   []hopJSON   `json:"hops"`
	Events []eventJSON `json:"events"`
}

type nodeJSON struct {
	ID   string `json:"id"`
	Kind string `json:"kind"` // service or queue
	Name string `json:"name"`
	// System is the queue's broker system; empty for services.
	System string `json:"system,omitempty"`
}

type edgeJSON struct {
	Source          string  `json:"source"`
	Target          string  `json:"target"`
	Count           uint64  `json:"count"`
	QueueWaitP50MS  float64 `json:"queue_wait_p50_ms"`
	QueueWaitP95MS  float64 `json:"queue_wait_p95_ms"`
	QueueWaitP99MS  float64 `json:"queue_wait_p99_ms"`
	ProcessingP50MS float64 `json:"processing_p50_ms"`
	ProcessingP95MS float64 `json:"processing_p95_ms"`
	ProcessingP99MS float64 `json:"processing_p99_ms"`
	Retries         uint64  `json:"retries"`
	DeadLetters     uint64  `json:"dead_letters"`
}

type topologyResponse struct {
	Nodes []nodeJSON `json:"nodes"`
	Edges []edgeJSON `json:"edges"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func keysJSON(keys []model.Key) []keyJSON {
	out := make([]keyJSON, 0, len(keys))
	for _, k := range keys {
		out = append(out, keyJSON{Kind: k.Kind, Value: k.Value})
	}
	return out
}

func toFlowJSON(f model.Flow) flowJSON {
	path := f.CriticalPath
	if path == nil {
		path = []string{}
	}
	return flowJSON{
		ID: f.ID, Name: f.Name, Status: string(f.Status), Start: timePtr(f.Start), End: timePtr(f.End),
		DurationMS: ms(f.Duration()), HopCount: f.HopCount, Retries: f.Retries, DeadLetters: f.DeadLetters,
		Keys: keysJSON(f.Keys), CriticalPath: path,
	}
}

func toHopJSON(h model.Hop) hopJSON {
	return hopJSON{
		ID: h.HopID, ParentID: h.ParentHopID, System: h.System, Producer: h.Producer, Destination: h.Destination,
		Consumer: h.Consumer, ConsumerGroup: h.ConsumerGroup, Operation: h.Operation, MessageID: h.MessageID,
		PublishTime: timePtr(h.PublishTime), DeliverTime: timePtr(h.DeliverTime), SettleTime: timePtr(h.SettleTime),
		QueueWaitMS: ms(h.QueueWait), ProcessingMS: ms(h.Processing), Attempts: h.Attempts,
		Outcome: string(h.Outcome), Reason: h.Reason,
	}
}

func toEventJSON(e model.Event) eventJSON {
	links := make([]spanRefJSON, 0, len(e.Links))
	for _, l := range e.Links {
		links = append(links, spanRefJSON{TraceID: l.TraceID, SpanID: l.SpanID})
	}
	return eventJSON{
		Time: timePtr(e.Time), Kind: string(e.Kind), System: e.System, Destination: e.Destination, Partition: e.Partition,
		MessageID: e.MessageID, Operation: e.Operation, Attempt: e.Attempt, Service: e.Service, ConsumerGroup: e.ConsumerGroup,
		TraceID: e.TraceID, SpanID: e.SpanID, ParentSpanID: e.ParentSpanID, Links: links, Keys: keysJSON(e.Keys),
		Outcome: e.Outcome, Reason: e.Reason, BodySize: e.BodySize, DurationMS: ms(e.Duration),
	}
}

// buildTopology turns per-edge statistics into a graph of services and
// queues: producer → queue carries how many messages went in, queue →
// consumer carries the waits, processing times, retries and dead letters.
// Statistics of one graph edge from several producers (or consumers) are
// merged: counts add up, percentiles take the largest (percentiles of parts
// do not make the percentile of the whole; the largest bounds it).
func buildTopology(stats []model.EdgeStats) topologyResponse {
	out := topologyResponse{Nodes: []nodeJSON{}, Edges: []edgeJSON{}}
	nodes := map[string]bool{}
	addNode := func(n nodeJSON) string {
		if !nodes[n.ID] {
			nodes[n.ID] = true
			out.Nodes = append(out.Nodes, n)
		}
		return n.ID
	}
	edges := map[[2]string]int{}
	addEdge := func(e edgeJSON) {
		key := [2]string{e.Source, e.Target}
		i, ok := edges[key]
		if !ok {
			edges[key] = len(out.Edges)
			out.Edges = append(out.Edges, e)
			return
		}
		m := &out.Edges[i]
		m.Count += e.Count
		m.Retries += e.Retries
		m.DeadLetters += e.DeadLetters
		m.QueueWaitP50MS = max(m.QueueWaitP50MS, e.QueueWaitP50MS)
		m.QueueWaitP95MS = max(m.QueueWaitP95MS, e.QueueWaitP95MS)
		m.QueueWaitP99MS = max(m.QueueWaitP99MS, e.QueueWaitP99MS)
		m.ProcessingP50MS = max(m.ProcessingP50MS, e.ProcessingP50MS)
		m.ProcessingP95MS = max(m.ProcessingP95MS, e.ProcessingP95MS)
		m.ProcessingP99MS = max(m.ProcessingP99MS, e.ProcessingP99MS)
	}
	for _, s := range stats {
		queue := addNode(nodeJSON{ID: "queue:" + s.System + "/" + s.Destination, Kind: "queue", Name: s.Destination, System: s.System})
		if s.Producer != "" {
			producer := addNode(nodeJSON{ID: "service:" + s.Producer, Kind: "service", Name: s.Producer})
			addEdge(edgeJSON{Source: producer, Target: queue, Count: s.Count})
		}
		if s.Consumer != "" {
			consumer := addNode(nodeJSON{ID: "service:" + s.Consumer, Kind: "service", Name: s.Consumer})
			addEdge(edgeJSON{
				Source: queue, Target: consumer, Count: s.Count,
				QueueWaitP50MS: ms(s.QueueWaitP50), QueueWaitP95MS: ms(s.QueueWaitP95), QueueWaitP99MS: ms(s.QueueWaitP99),
				ProcessingP50MS: ms(s.ProcessingP50), ProcessingP95MS: ms(s.ProcessingP95), ProcessingP99MS: ms(s.ProcessingP99),
				Retries: s.Retries, DeadLetters: s.DeadLetters,
			})
		}
	}
	return out
}
