package rabbitmqtapreceiver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver/internal/metadata"
)

// managementAPI is a client of RabbitMQ's management HTTP API
// (https://www.rabbitmq.com/docs/http-api-reference).
type managementAPI struct {
	endpoint           string
	username, password string
	client             *http.Client
}

// errNotFound is a 404 from the management API.
var errNotFound = errors.New("not found")

// maxResponse bounds a management API response.
const maxResponse = 64 << 20

func (a *managementAPI) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.endpoint+path, rd)
	if err != nil {
		return err
	}
	req.SetBasicAuth(a.username, a.password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return errNotFound
	case resp.StatusCode >= 300:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return fmt.Errorf("%s %s: status %d", method, path, resp.StatusCode)
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponse))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(out); err != nil {
		return badFrame("management_json", err.Error())
	}
	return nil
}

// queueInfo is the part of GET /api/queues/<vhost> the tap reads.
type queueInfo struct {
	Name      string         `json:"name"`
	Ready     *int64         `json:"messages_ready"`
	Unacked   *int64         `json:"messages_unacknowledged"`
	Consumers *int64         `json:"consumers"`
	Arguments map[string]any `json:"arguments"`
	Policy    map[string]any `json:"effective_policy_definition"`
	Stats     struct {
		Publish    *rate `json:"publish_details"`
		DeliverGet *rate `json:"deliver_get_details"`
	} `json:"message_stats"`
}

type rate struct {
	Rate float64 `json:"rate"`
}

func (a *managementAPI) queues(ctx context.Context, vhost string) ([]queueInfo, error) {
	var qs []queueInfo
	err := a.do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(vhost)+
		"?columns=name,messages_ready,messages_unacknowledged,consumers,arguments,effective_policy_definition,message_stats", nil, &qs)
	return qs, err
}

// setting is a queue's argument, or else its policy's key.
func (q *queueInfo) setting(argument, policy string) (any, bool) {
	if v, ok := q.Arguments[argument]; ok {
		return v, true
	}
	v, ok := q.Policy[policy]
	return v, ok
}

// deadLetterExchange is the queue's dead-letter exchange.
func (q *queueInfo) deadLetterExchange() (string, bool) {
	v, _ := q.setting("x-dead-letter-exchange", "dead-letter-exchange")
	s, ok := v.(string)
	return s, ok
}

// deadLetterRoutingKey is the routing key the queue dead-letters with, if
// it replaces the message's own.
func (q *queueInfo) deadLetterRoutingKey() string {
	v, _ := q.setting("x-dead-letter-routing-key", "dead-letter-routing-key")
	s, _ := v.(string)
	return s
}

// delayQueue says whether the queue holds messages for a while and then
// dead-letters them: a message TTL and a dead-letter exchange, the
// broker's way of delaying a retry.
func (q *queueInfo) delayQueue() bool {
	_, ttl := q.setting("x-message-ttl", "message-ttl")
	_, dlx := q.deadLetterExchange()
	return ttl && dlx
}

// exchangeTypes are the types of a vhost's exchanges, by name.
func (a *managementAPI) exchangeTypes(ctx context.Context, vhost string) (map[string]string, error) {
	var es []struct {
		Name string `json:"name"`
		Type string `json:"type"`
	}
	if err := a.do(ctx, http.MethodGet, "/api/exchanges/"+url.PathEscape(vhost)+"?columns=name,type", nil, &es); err != nil {
		return nil, err
	}
	types := make(map[string]string, len(es))
	for _, e := range es {
		types[e.Name] = e.Type
	}
	return types, nil
}

// binding is one binding from GET /api/exchanges/<vhost>/<name>/bindings/source.
type binding struct {
	Destination     string         `json:"destination"`
	DestinationType string         `json:"destination_type"`
	RoutingKey      string         `json:"routing_key"`
	Arguments       map[string]any `json:"arguments"`
}

func (a *managementAPI) bindings(ctx context.Context, vhost, exchange string) ([]binding, error) {
	var bs []binding
	err := a.do(ctx, http.MethodGet, "/api/exchanges/"+url.PathEscape(vhost)+"/"+url.PathEscape(exchange)+"/bindings/source", nil, &bs)
	return bs, err
}

func (a *managementAPI) bind(ctx context.Context, vhost, exchange, queue string, b binding) error {
	args := b.Arguments
	if args == nil {
		args = map[string]any{}
	}
	return a.do(ctx, http.MethodPost, "/api/bindings/"+url.PathEscape(vhost)+"/e/"+url.PathEscape(exchange)+"/q/"+url.PathEscape(queue),
		map[string]any{"routing_key": b.RoutingKey, "arguments": args}, nil)
}

// publish puts a message on a queue through the default exchange.
func (a *managementAPI) publish(ctx context.Context, vhost, queue string, payload []byte) error {
	var out struct {
		Routed bool `json:"routed"`
	}
	err := a.do(ctx, http.MethodPost, "/api/exchanges/"+url.PathEscape(vhost)+"/amq.default/publish", map[string]any{
		"properties":       map[string]any{"content_type": "application/json"},
		"routing_key":      queue,
		"payload":          string(payload),
		"payload_encoding": "string",
	}, &out)
	if err == nil && !out.Routed {
		err = fmt.Errorf("marker for queue %q not routed", queue)
	}
	return err
}

// setTracing switches the firehose of the vhost on or off, keeping the
// vhost's other settings: a PUT without them would reset them. switched
// says whether it was the other way before.
func (a *managementAPI) setTracing(ctx context.Context, vhost string, on bool) (switched bool, err error) {
	var v struct {
		Description      string   `json:"description"`
		Tags             []string `json:"tags"`
		Tracing          bool     `json:"tracing"`
		DefaultQueueType string   `json:"default_queue_type"`
	}
	path := "/api/vhosts/" + url.PathEscape(vhost)
	if err := a.do(ctx, http.MethodGet, path, nil, &v); err != nil {
		return false, err
	}
	if v.Tracing == on {
		return false, nil
	}
	body := map[string]any{"tracing": on, "description": v.Description, "tags": strings.Join(v.Tags, ",")}
	if v.DefaultQueueType != "" && v.DefaultQueueType != "undefined" {
		body["default_queue_type"] = v.DefaultQueueType
	}
	if err := a.do(ctx, http.MethodPut, path, body, nil); err != nil {
		return false, err
	}
	return true, nil
}

// poll reads the management API every interval until ctx ends.
func (t *rabbitTap) poll(ctx context.Context) {
	p := &poller{tap: t, boundAt: map[string]time.Time{}}
	ticker := time.NewTicker(t.cfg.Management.Interval)
	defer ticker.Stop()
	for {
		p.once(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// poller is the state of the management poller, owned by its goroutine.
type poller struct {
	tap *rabbitTap
	// boundAt is when the newest binding to each dead-letter exchange was
	// made, by vhost and exchange: dead letters before it were not seen.
	boundAt map[string]time.Time
	// pollBindings are the bindings of exchanges read in this poll.
	pollBindings map[string]cachedBindings
	// failing is set while the API fails, so the failure is logged once.
	failing bool
}

func (p *poller) once(ctx context.Context) {
	t := p.tap
	at := t.now()
	backlog := tap.NewBacklog(systemRabbitMQ, metadata.ScopeName)
	p.pollBindings = map[string]cachedBindings{}
	var failed error
	for _, vhost := range t.cfg.VHosts {
		qs, err := t.api.queues(ctx, vhost)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if de := (*decodeError)(nil); errors.As(err, &de) {
				t.tel.DecodeError(ctx, de.reason, err)
			}
			failed = err
			continue
		}
		var drained []string
		since := map[string]time.Time{}
		seen := map[string]deadLetterState{} // dead-letter exchanges checked in this poll
		if t.emitter.HasTraces() {
			p.retries(ctx, vhost, qs)
			if types, err := t.api.exchangeTypes(ctx, vhost); err == nil {
				t.tracker.topology.setExchanges(vhost, types)
			} else if ctx.Err() == nil {
				failed = err
			}
		}
		for i := range qs {
			q := &qs[i]
			if q.Name == t.cfg.Queue {
				continue
			}
			if t.emitter.HasMetrics() {
				gauges(backlog, at, vhost, q)
			}
			if !t.emitter.HasTraces() {
				continue
			}
			// Bound first: a dead letter must reach the tap before the
			// first drain that could settle its delivery.
			dl := p.deadLettersSeen(ctx, vhost, q, seen)
			// Drained: nothing handed out and nothing waiting. A message
			// waiting again was given back (its consumer died, say): its
			// redelivery will say so, it was not acked.
			if dl.seen && known0(q.Unacked) && known0(q.Ready) && t.tracker.pendingQueues.has(vhost, q.Name) {
				drained = append(drained, q.Name)
				if !dl.since.IsZero() {
					since[q.Name] = dl.since
				}
			}
		}
		if len(drained) > 0 {
			marker, _ := json.Marshal(drainMarker{Token: t.markerToken, At: at, Cutoff: at.Add(-t.cfg.Management.StatsDelay), Queues: drained, Since: since})
			if err := t.api.publish(ctx, vhost, t.cfg.Queue, marker); err != nil && ctx.Err() == nil {
				failed = err
			}
		}
	}
	switch {
	case failed != nil && !p.failing:
		t.logger.Warn("rabbitmq management API failed", zap.Error(failed))
	case failed == nil && p.failing:
		t.logger.Info("rabbitmq management API answers again")
	}
	p.failing = failed != nil
	_ = t.emitter.Metrics(ctx, backlog) // logged there; the next poll is fresher
}

// known0 says whether a figure is known and zero.
func known0(n *int64) bool { return n != nil && *n == 0 }

// deadLetterState says whether every message a queue dead-letters reaches
// the tap, and since when.
type deadLetterState struct {
	seen  bool
	since time.Time // zero: always
}

// deadLettersSeen says whether every message the queue dead-letters
// reaches the tap: it has no dead-letter exchange, or the tap's queue is
// bound to that exchange like its other queues are.
func (p *poller) deadLettersSeen(ctx context.Context, vhost string, q *queueInfo, seen map[string]deadLetterState) deadLetterState {
	t := p.tap
	dlx, ok := q.deadLetterExchange()
	if !ok {
		return deadLetterState{seen: true}
	}
	delay, retry := t.tracker.topology.kind(vhost, q.Name)
	if delay {
		return deadLetterState{seen: true} // it delivers nothing: nothing to settle
	}
	if dlx == "" || !t.cfg.Management.DeadLetterBindings {
		// The default exchange cannot be bound to. Dead letters that are
		// retries come back, and say so then.
		return deadLetterState{seen: retry}
	}
	if st, checked := seen[dlx]; checked {
		return st
	}
	st := deadLetterState{seen: p.bindDeadLetters(ctx, vhost, dlx), since: p.boundAt[vhost+"\x00"+dlx]}
	seen[dlx] = st
	return st
}

// retries finds, among the queues of a vhost, the delay queues and the
// queues whose dead letters all go to delay queues (a retry, not a dead
// letter), for the tracker. A queue with no consumers that dead-letters
// back to the queue feeding it counts as a delay queue for that queue (the
// messages carry their own TTL).
func (p *poller) retries(ctx context.Context, vhost string, qs []queueInfo) {
	delay, retry := map[string]bool{}, map[string]bool{}
	byName := map[string]*queueInfo{}
	for i := range qs {
		byName[qs[i].Name] = &qs[i]
		if qs[i].delayQueue() {
			delay[qs[i].Name] = true
		}
	}
	// targets are the queues an exchange routes dead letters of queue to;
	// ok is false when they are not known.
	targets := func(q *queueInfo) (to []string, ok bool) {
		dlx, _ := q.deadLetterExchange()
		if dlx == "" {
			key := q.deadLetterRoutingKey()
			if key == "" {
				key = q.Name
			}
			return []string{key}, true
		}
		bs, err := p.bindings(ctx, vhost, dlx)
		if err != nil {
			return nil, false
		}
		for _, b := range bs {
			if b.DestinationType == "queue" && b.Destination != p.tap.cfg.Queue {
				to = append(to, b.Destination)
			}
		}
		return to, true
	}
	// delaysFor says whether queue d holds messages of queue q for a
	// while: a delay queue, or one without consumers whose dead letters
	// go back to q only.
	delaysFor := func(d, q string) bool {
		if delay[d] {
			return true
		}
		dq := byName[d]
		if dq == nil || dq.Consumers == nil || *dq.Consumers != 0 {
			return false
		}
		if _, ok := dq.deadLetterExchange(); !ok {
			return false
		}
		back, ok := targets(dq)
		return ok && len(back) == 1 && back[0] == q
	}
	for i := range qs {
		q := &qs[i]
		if _, ok := q.deadLetterExchange(); !ok || delay[q.Name] {
			continue
		}
		to, ok := targets(q)
		if !ok {
			continue
		}
		retry[q.Name] = len(to) > 0
		for _, d := range to {
			if !delaysFor(d, q.Name) {
				retry[q.Name] = false
				break
			}
		}
	}
	p.tap.tracker.topology.set(vhost, delay, retry)
}

// bindings are the bindings of an exchange, read once per poll.
func (p *poller) bindings(ctx context.Context, vhost, exchange string) ([]binding, error) {
	key := vhost + "\x00" + exchange
	if c, ok := p.pollBindings[key]; ok {
		return c.bindings, c.err
	}
	bs, err := p.tap.api.bindings(ctx, vhost, exchange)
	p.pollBindings[key] = cachedBindings{bs, err}
	return bs, err
}

type cachedBindings struct {
	bindings []binding
	err      error
}

// bindDeadLetters binds the tap's queue to the exchange with every binding
// the exchange has. The bindings the tap's queue holds are read again at
// every poll: they vanish with the queue (deleted and declared again) or
// with the exchange (a transient one declared again after a restart).
func (p *poller) bindDeadLetters(ctx context.Context, vhost, dlx string) bool {
	t := p.tap
	bs, err := p.bindings(ctx, vhost, dlx)
	if err != nil {
		return false
	}
	mine := map[string]bool{}
	for _, b := range bs {
		if b.DestinationType == "queue" && b.Destination == t.cfg.Queue {
			mine[bindingKey(b)] = true
		}
	}
	for _, b := range bs {
		if b.DestinationType == "queue" && b.Destination == t.cfg.Queue {
			continue
		}
		key := bindingKey(b)
		if mine[key] {
			continue
		}
		if err := t.api.bind(ctx, vhost, dlx, t.cfg.Queue, b); err != nil {
			t.logger.Debug("could not bind the tap's queue to a dead-letter exchange", zap.String("exchange", dlx), zap.Error(err))
			return false
		}
		mine[key] = true
		p.boundAt[vhost+"\x00"+dlx] = t.now()
	}
	return true
}

// bindingKey tells bindings of one exchange apart by routing key and
// arguments.
func bindingKey(b binding) string {
	args := []byte("{}")
	if len(b.Arguments) > 0 {
		args, _ = json.Marshal(b.Arguments) // map keys sorted: stable
	}
	return b.RoutingKey + "\x00" + string(args)
}

// gauges adds a queue's backlog points.
func gauges(b *tap.Backlog, at time.Time, vhost string, q *queueInfo) {
	dest := tap.Destination{System: systemRabbitMQ, Broker: vhost, Destination: q.Name, ConsumerGroup: q.Name}
	if q.Ready != nil {
		b.Int(model.MetricBacklogDepth, at, dest, *q.Ready)
	}
	if q.Unacked != nil {
		b.Int(model.MetricBacklogUnacked, at, dest, *q.Unacked)
	}
	if q.Consumers != nil {
		b.Int(model.MetricBacklogConsumers, at, dest, *q.Consumers)
	}
	if q.Stats.Publish != nil {
		b.Float(model.MetricBacklogPublishRate, at, dest, q.Stats.Publish.Rate)
	}
	if q.Stats.DeliverGet != nil {
		b.Float(model.MetricBacklogDeliverRate, at, dest, q.Stats.DeliverGet.Rate)
	}
}
