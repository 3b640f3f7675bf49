package rabbitmqtapreceiver

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

const (
	systemRabbitMQ = "rabbitmq"
	systemCelery   = "celery"
	// attrRoutingKey is the semantic conventions' RabbitMQ routing key.
	attrRoutingKey = "messaging.rabbitmq.destination.routing_key"
	// attrUnroutable marks a broadcast routed to no queue.
	attrUnroutable = "flowtrace.rabbitmq.unroutable"
	// reasonUnroutable is the dead-letter reason of a message sent to a
	// queue or a direct exchange and routed to no queue.
	reasonUnroutable = "unroutable"
	keyTaskID        = "task_id"
	keyCorrelationID = "correlation_id"
)

// errNotDeadLetter is a message in the tap's queue, from a dead-letter
// exchange it is bound to, that was not dead-lettered: it is skipped.
var errNotDeadLetter = errors.New("message without x-death from a dead-letter exchange")

// delivery is what the tap remembers of a message delivered from one
// queue: its last attempt and whether its settlement is still unknown.
type delivery struct {
	key, msgKey, queueKey string
	// base holds the identity of the message as delivered from the queue,
	// for the observations inferred later.
	base        tap.Observation
	attempt     int
	deliveredAt time.Time
	pending     bool
	newer       *delivery // towards the most recently seen
	older       *delivery
}

// tracker turns frames into observations and infers what the firehose
// does not show: attempts from redeliveries, settlements from what
// follows, dead letters from x-death. One goroutine owns it (the session's
// consumer loop, across reconnections).
type tracker struct {
	ownQueue       string
	includeControl bool
	// acksLate: a Celery task is acked after its run, so a child's
	// publish does not settle it.
	acksLate bool
	max      int

	byKey map[string]*delivery
	// newest and oldest end the list of deliveries by recency; the oldest
	// is forgotten first.
	newest, oldest *delivery
	// Pending deliveries by queue (drains) and by message (a child
	// publish settles its parent).
	byQueue   map[string]map[*delivery]struct{}
	byMessage map[string]map[*delivery]struct{}
	// pendingQueues mirrors the keys of byQueue for the poller, which
	// sends drain markers for those queues only.
	pendingQueues *queueSet
	// topology is what the poller learnt of the queues: which delay
	// messages and which dead-letter into those to retry them.
	topology *topology
	// deadSeen remembers dead letters already reported: a dead letter is
	// seen in the tap's queue and again when the dead-letter queue's
	// consumer receives it.
	deadSeen  map[string]struct{}
	deadOrder []string
	deadNext  int

	// decodeError counts what the tracker could not take as it came: a
	// traceparent that is not a string, text that had to be cleaned.
	decodeError func(error)

	out []tap.Observation
}

func newTracker(ownQueue string, includeControl bool, maxTracked int, decodeError func(error)) *tracker {
	return &tracker{
		ownQueue: ownQueue, includeControl: includeControl, max: maxTracked,
		byKey:         map[string]*delivery{},
		byQueue:       map[string]map[*delivery]struct{}{},
		byMessage:     map[string]map[*delivery]struct{}{},
		pendingQueues: &queueSet{keys: map[string]struct{}{}},
		topology:      &topology{vhosts: map[string]queueKinds{}},
		deadSeen:      map[string]struct{}{},
		deadOrder:     make([]string, max(maxTracked/4, 1)),
		decodeError:   decodeError,
	}
}

// take returns the observations gathered since the last take.
func (t *tracker) take() []tap.Observation {
	out := t.out
	t.out = nil
	return out
}

// identity is a message's identity and flow keys, read from its headers.
type identity struct {
	obs      tap.Observation // System, MessageID, Operation, Attempt, Keys, trace, body size
	msgKey   string
	parentID string // a Celery task's parent
	death    death
	hasDeath bool
}

func (t *tracker) identify(vhost string, m *message) (identity, error) {
	var id identity
	h := m.props.headers
	var err error
	if id.death, id.hasDeath, err = decodeDeath(h); err != nil {
		return id, err
	}
	if v, present := h[traceParentKey]; present {
		if s, ok := v.(string); ok {
			id.obs.TraceParent = s
		} else {
			t.decodeError(badFrame("traceparent", "not a string"))
		}
	}
	task, isTask, err := decodeCelery(h)
	if err != nil {
		return id, err
	}
	o := &id.obs
	if isTask {
		o.System = systemCelery
		o.MessageID = t.text(task.id)
		o.Operation = t.text(task.name)
		o.Attempt = int(task.retries) + 1
		o.Keys = append(o.Keys, model.Key{Kind: keyTaskID, Value: o.MessageID})
		o.TraceKey = task.id
		if task.rootID != "" {
			o.TraceKey = task.rootID
			if task.rootID != task.id {
				o.Keys = append(o.Keys, model.Key{Kind: keyTaskID, Value: t.text(task.rootID)})
			}
		}
		if task.parentID != "" && task.parentID != task.id && task.parentID != task.rootID {
			o.Keys = append(o.Keys, model.Key{Kind: keyTaskID, Value: t.text(task.parentID)})
		}
		id.parentID = task.parentID
	} else {
		o.System = systemRabbitMQ
		o.MessageID = t.text(m.props.messageID)
		if o.MessageID == "" {
			var d *death
			if id.hasDeath {
				d = &id.death
			}
			o.MessageID = fingerprint(m, d)
		}
		o.Attempt = 1
		if m.props.correlationID != "" {
			o.Keys = append(o.Keys, model.Key{Kind: keyCorrelationID, Value: t.text(m.props.correlationID)})
		}
	}
	o.BodySize = int64(m.bodySize)
	if len(m.routingKeys) > 0 {
		o.Attrs = []tap.Attr{tap.String(attrRoutingKey, t.text(m.routingKeys[0]))}
	}
	id.msgKey = vhost + "\x00" + o.System + "\x00" + o.MessageID
	return id, nil
}

// text makes broker-supplied text fit for a span, counting what it had to
// change.
func (t *tracker) text(s string) string {
	clean, ok := tap.CleanText(s, tap.MaxText)
	if !ok {
		t.decodeError(badFrame("text", "not printable UTF-8 or too long"))
	}
	return clean
}

// skip says whether a frame is the tap's own traffic or Celery's control
// traffic.
func (t *tracker) skip(f *frame) bool {
	m := &f.msg
	if f.kind == frameDeliver {
		return f.queue == t.ownQueue || (!t.includeControl && (celeryControl(f.queue) || celeryControl(m.exchange)))
	}
	if m.exchange == "" && len(m.routingKeys) == 1 && m.routingKeys[0] == t.ownQueue {
		return true // a drain marker
	}
	if t.includeControl {
		return false
	}
	if celeryControl(m.exchange) {
		return true
	}
	return m.exchange == "" && len(m.routingKeys) == 1 && celeryControl(m.routingKeys[0])
}

// frame reads one firehose frame, seen at now.
func (t *tracker) frame(vhost string, f *frame, now time.Time) error {
	if t.skip(f) {
		return nil
	}
	id, err := t.identify(vhost, &f.msg)
	if err != nil {
		return err
	}
	switch f.kind {
	case framePublish:
		o := id.obs
		o.Kind = tap.Publish
		o.Time = now
		o.Destination = t.text(f.msg.exchange)
		if o.Destination == "" && len(f.msg.routingKeys) > 0 {
			o.Destination = t.text(f.msg.routingKeys[0]) // the default exchange routes to the queue of that name
		}
		unroutable := f.routedQueues != nil && len(f.routedQueues) == 0
		if unroutable && !t.pointToPoint(vhost, f.msg.exchange) {
			// Routed to no queue by a fanout, topic or headers exchange:
			// the broker dropped it, as pub/sub does with nobody
			// subscribed. Nothing will receive it.
			o.Kind = tap.Broadcast
			o.Attrs = append(o.Attrs[:len(o.Attrs):len(o.Attrs)], tap.Bool(attrUnroutable, true))
		}
		t.out = append(t.out, o)
		if unroutable && o.Kind == tap.Publish {
			// Sent to a queue by name (the default exchange) or by a
			// direct exchange, and routed nowhere: the message was meant
			// for someone and is lost.
			dl := id.obs
			dl.Kind = tap.DeadLetter
			dl.Time = now
			dl.Destination = o.Destination
			dl.Reason = reasonUnroutable
			dl.Attempt = 0
			t.out = append(t.out, dl)
		}
		if id.parentID != "" && !t.acksLate {
			// A task published from its parent's run: the parent was
			// received and, Celery acking a task before it runs it
			// (unless acks_late), settled by then.
			t.settleMessage(vhost+"\x00"+id.obs.System+"\x00"+id.parentID, now)
		}
	case frameDeliver:
		t.deliver(vhost, f, &id, now)
	}
	if id.hasDeath {
		at := id.death.time
		if at.IsZero() {
			at = now
		}
		if f.kind == frameDeliver && returned(&id.death, f.queue) {
			// Expired from a queue that held it for a while and back in
			// a queue it was dead-lettered from before: a delayed retry,
			// whatever the poller knows of the queues.
			return nil
		}
		t.deadLetter(vhost, &id, at)
	}
	return nil
}

// returned says whether a message delivered from queue came back there
// through a delay queue: its newest dead-lettering is an expiry elsewhere
// and it was dead-lettered from queue before.
func returned(d *death, queue string) bool {
	if d.reason != "expired" || d.queue == queue {
		return false
	}
	for _, c := range d.counts {
		if c.queue == queue {
			return true
		}
	}
	return false
}

// deadCopy reads a dead-lettered message that reached the tap's queue
// through a dead-letter exchange it is bound to, seen at now.
func (t *tracker) deadCopy(vhost string, m *message, now time.Time) error {
	id, err := t.identify(vhost, m)
	if err != nil {
		return err
	}
	if !id.hasDeath {
		return errNotDeadLetter
	}
	t.deadLetter(vhost, &id, now)
	return nil
}

func (t *tracker) deliver(vhost string, f *frame, id *identity, now time.Time) {
	queueKey := vhost + "\x00" + f.queue
	key := id.msgKey + "\x00" + f.queue
	d := t.byKey[key]
	attempt := id.obs.Attempt
	if id.hasDeath {
		// Back in a queue it was dead-lettered from (a retry through a
		// dead-letter exchange): each time it left was an attempt.
		for _, c := range id.death.counts {
			if c.queue == f.queue {
				attempt = max(attempt, int(c.count)+1)
			}
		}
	}
	if f.redelivered {
		if d != nil {
			attempt = max(attempt, d.attempt+1)
		} else {
			attempt++
		}
	}
	if d != nil && d.pending && attempt > d.attempt {
		// Delivered again: the attempt before was given back.
		t.settle(d, tap.Nack, now)
	}
	if d == nil {
		d = &delivery{key: key, msgKey: id.msgKey, queueKey: queueKey}
		t.byKey[key] = d
		t.pushNewest(d)
		t.evict()
	} else {
		t.unlink(d)
		t.pushNewest(d)
	}
	o := id.obs
	o.Kind = tap.Deliver
	o.Time = now
	o.Destination = t.text(f.queue)
	o.ConsumerGroup = o.Destination
	o.Attempt = attempt
	t.out = append(t.out, o)

	d.base = o
	d.attempt = attempt
	d.deliveredAt = now
	t.setPending(d, true)
}

// deadLetter reports the newest x-death entry of a message once.
func (t *tracker) deadLetter(vhost string, id *identity, at time.Time) {
	dl := &id.death
	seenKey := id.msgKey + "\x00" + dl.queue + "\x00" + dl.reason + "\x00" + strconv.FormatInt(dl.count, 10)
	if _, seen := t.deadSeen[seenKey]; seen {
		return
	}
	if old := t.deadOrder[t.deadNext]; old != "" {
		delete(t.deadSeen, old)
	}
	t.deadOrder[t.deadNext] = seenKey
	t.deadNext = (t.deadNext + 1) % len(t.deadOrder)
	t.deadSeen[seenKey] = struct{}{}

	d := t.byKey[id.msgKey+"\x00"+dl.queue]
	delay, retry := t.topology.kind(vhost, dl.queue)
	switch {
	case delay && dl.reason == "expired":
		return // a delay queue handing the message back for its next attempt
	case retry:
		// Dead-lettered into delay queues only: it comes back to this
		// queue for another attempt.
		if d != nil && d.pending {
			t.settle(d, tap.Nack, at)
		}
		return
	}
	o := id.obs
	o.Kind = tap.DeadLetter
	o.Time = at
	o.Destination = t.text(dl.queue)
	o.ConsumerGroup = o.Destination
	o.Reason = t.text(dl.reason)
	o.Attempt = 0
	if d != nil {
		o.Attempt = d.attempt
		t.setPending(d, false)
	}
	t.out = append(t.out, o)
}

// drain settles, as acked at at, every pending delivery from the queue
// seen before cutoff (and not before since): the broker reported no
// unacknowledged message there.
func (t *tracker) drain(vhost, queue string, since, cutoff, at time.Time) {
	for d := range t.byQueue[vhost+"\x00"+queue] {
		if d.deliveredAt.Before(cutoff) && !d.deliveredAt.Before(since) {
			t.settle(d, tap.Ack, at)
		}
	}
}

// settleMessage settles, as acked at at, every pending delivery of a
// message.
func (t *tracker) settleMessage(msgKey string, at time.Time) {
	for d := range t.byMessage[msgKey] {
		t.settle(d, tap.Ack, at)
	}
}

func (t *tracker) settle(d *delivery, outcome string, at time.Time) {
	o := d.base
	o.Kind = tap.Settle
	o.Time = at
	o.Outcome = outcome
	o.Inferred = true
	t.out = append(t.out, o)
	t.setPending(d, false)
}

func (t *tracker) setPending(d *delivery, pending bool) {
	if d.pending == pending {
		return
	}
	d.pending = pending
	// Only tasks are settled by a child's publish: only they are indexed
	// by message.
	byMessage := d.base.System == systemCelery
	if pending {
		if index(t.byQueue, d.queueKey, d) {
			t.pendingQueues.set(d.queueKey, true)
		}
		if byMessage {
			index(t.byMessage, d.msgKey, d)
		}
	} else {
		if unindex(t.byQueue, d.queueKey, d) {
			t.pendingQueues.set(d.queueKey, false)
		}
		if byMessage {
			unindex(t.byMessage, d.msgKey, d)
		}
	}
}

// queueSet is a set of vhost and queue keys shared by two goroutines.
type queueSet struct {
	mu   sync.Mutex
	keys map[string]struct{}
}

func (s *queueSet) set(key string, in bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in {
		s.keys[key] = struct{}{}
	} else {
		delete(s.keys, key)
	}
}

func (s *queueSet) has(vhost, queue string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.keys[vhost+"\x00"+queue]
	return ok
}

// index adds d under k; true when k is new.
func index(m map[string]map[*delivery]struct{}, k string, d *delivery) bool {
	set := m[k]
	added := set == nil
	if added {
		set = map[*delivery]struct{}{}
		m[k] = set
	}
	set[d] = struct{}{}
	return added
}

// unindex removes d from k; true when k is gone.
func unindex(m map[string]map[*delivery]struct{}, k string, d *delivery) bool {
	set, ok := m[k]
	if !ok {
		return false
	}
	delete(set, d)
	if len(set) == 0 {
		delete(m, k)
		return true
	}
	return false
}

func (t *tracker) pushNewest(d *delivery) {
	d.older = t.newest
	d.newer = nil
	if t.newest != nil {
		t.newest.newer = d
	}
	t.newest = d
	if t.oldest == nil {
		t.oldest = d
	}
}

func (t *tracker) unlink(d *delivery) {
	if d.newer != nil {
		d.newer.older = d.older
	} else {
		t.newest = d.older
	}
	if d.older != nil {
		d.older.newer = d.newer
	} else {
		t.oldest = d.newer
	}
	d.newer, d.older = nil, nil
}

// evict forgets the least recently seen deliveries past the bound; their
// settlement stays unknown.
func (t *tracker) evict() {
	for len(t.byKey) > t.max {
		d := t.oldest
		t.unlink(d)
		t.setPending(d, false)
		delete(t.byKey, d.key)
	}
}

// topology is what the poller learnt of each vhost's queues, read by the
// tracker: the poller replaces a vhost's part at every poll.
type topology struct {
	mu     sync.Mutex
	vhosts map[string]queueKinds
}

// queueKinds are the delay queues of a vhost (a message TTL and a
// dead-letter exchange) and its retry queues (whose dead letters all go to
// delay queues).
type queueKinds struct {
	delay, retry map[string]bool
	// exchanges are the types of the vhost's exchanges, by name.
	exchanges map[string]string
}

func (t *topology) set(vhost string, delay, retry map[string]bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.vhosts[vhost]
	k.delay, k.retry = delay, retry
	t.vhosts[vhost] = k
}

// setExchanges records the type of each exchange of a vhost.
func (t *topology) setExchanges(vhost string, types map[string]string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.vhosts[vhost]
	k.exchanges = types
	t.vhosts[vhost] = k
}

func (t *topology) exchangeType(vhost, exchange string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.vhosts[vhost].exchanges[exchange]
}

// pointToPoint says whether a publish to the exchange is meant for a queue
// (the default exchange, a direct exchange) rather than for whoever
// subscribed (fanout, topic, headers, or an exchange of unknown type).
func (t *tracker) pointToPoint(vhost, exchange string) bool {
	return exchange == "" || t.topology.exchangeType(vhost, exchange) == "direct"
}

func (t *topology) kind(vhost, queue string) (delay, retry bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := t.vhosts[vhost]
	return k.delay[queue], k.retry[queue]
}
