package flowsim

import (
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/flowtrace/flowtrace/model"
)

// pipeline is a line of services, each consuming what the one before
// published: services[0] publishes events[0], services[i] consumes events[i-1]
// and publishes events[i].
type pipeline struct {
	domain   string
	services []string
	events   []string
	// helpers are services a consumer calls over HTTP, which publish the next
	// event for it.
	helpers []string
	// name and altName are flow-name hints.
	name, altName string
}

var pipelines = []pipeline{
	{
		domain:   "commerce",
		services: []string{"checkout", "orders", "payments", "inventory", "shipping", "notifications"},
		events:   []string{"order.placed", "order.confirmed", "payment.captured", "stock.reserved", "shipment.created"},
		helpers:  []string{"pricing-api", "fraud-api", "tax-api"},
		name:     "order-fulfilment", altName: "checkout",
	},
	{
		domain:   "media",
		services: []string{"upload-api", "transcoder", "thumbnailer", "catalog", "search-indexer", "cdn-purger"},
		events:   []string{"video.uploaded", "video.transcoded", "thumbnails.ready", "catalog.updated", "index.updated"},
		helpers:  []string{"drm-api", "metadata-api"},
		name:     "video-publishing", altName: "media-ingest",
	},
	{
		domain:   "finance",
		services: []string{"payment-gateway", "ledger", "invoicing", "email-sender", "crm-sync", "analytics"},
		events:   []string{"charge.succeeded", "ledger.posted", "invoice.issued", "email.sent", "crm.synced"},
		helpers:  []string{"fx-rates-api", "tax-api"},
		name:     "month-end-close", altName: "billing",
	},
	{
		domain:   "identity",
		services: []string{"signup-api", "accounts", "kyc", "welcome-mailer", "marketing-sync", "warehouse-loader"},
		events:   []string{"user.registered", "account.created", "kyc.passed", "welcome.sent", "contact.synced"},
		helpers:  []string{"geoip-api", "risk-api"},
		name:     "customer-onboarding", altName: "account-setup",
	},
}

var failureReasons = []string{
	"context deadline exceeded calling inventory-db",
	"upstream returned 503 Service Unavailable",
	"deadlock detected",
	"connection reset by peer",
	"validation failed: unknown sku",
	"redis: connection pool timeout",
}

// pubDest is where system's producers publish the pipeline's i-th event: a
// RabbitMQ topic exchange per domain, a Kafka topic, a NATS subject, a Redis
// stream.
func pubDest(system string, p pipeline, i int) string {
	switch system {
	case "rabbitmq":
		return p.domain
	case "kafka":
		return p.domain + "." + strings.ReplaceAll(p.events[i], ".", "-")
	case "redis":
		return p.domain + ":" + p.events[i]
	}
	return p.domain + "." + p.events[i]
}

// consumerDest is where consumer receives the pipeline's i-th event from: its
// own queue on RabbitMQ, else where it was published.
func consumerDest(system string, p pipeline, i int, consumer string) string {
	if system == "rabbitmq" {
		return consumer + "." + p.events[i]
	}
	return pubDest(system, p, i)
}

// consumerGroup is consumer's group on system; "" where the system has none
// and the service stands for the group.
func consumerGroup(system, consumer string) string {
	switch system {
	case "kafka":
		return consumer + "-consumer"
	case "redis":
		return consumer + "-group"
	}
	return ""
}

// settleOutcome is how a successful consumer of system settles; "" where it
// emits no settle span (Kafka commits offsets).
func settleOutcome(system string) string {
	if system == "kafka" {
		return ""
	}
	return "ack"
}

// firstAttempt is the attempt a first delivery carries: brokers that count
// deliveries say 1; Kafka says nothing.
func firstAttempt(system string) uint16 {
	switch system {
	case "rabbitmq", "nats":
		return 1
	}
	return 0
}

// identity says how a new message is identified.
type identity int

const (
	// brokerID: the broker's id; Kafka's may be topic/partition/offset.
	brokerID identity = iota
	// stableID: an id header that survives a republish to another topic.
	stableID
	// spanRefsOnly: no id, span references identify the message.
	spanRefsOnly
)

// newMessage starts a message of the flow, to be published on system to dest.
func (g *generator) newMessage(f *flowBuilder, system, dest string, parent int, id identity) int {
	m := message{system: system, parent: parent, bodySize: 120 + g.rng.Uint64N(16_000)}
	if system == "kafka" {
		partition, offset := g.kafkaPartition(dest)
		m.partition = partition
		if id == brokerID && g.chance(0.5) {
			m.id = fmt.Sprintf("%s/%s/%d", dest, partition, offset)
		}
	}
	if id != spanRefsOnly && m.id == "" {
		m.id = g.messageID(system)
	}
	return f.newMessage(m)
}

// request is the context of an incoming request a flow begins in: a new
// trace and the server span, which is not an event.
func (g *generator) request() spanCtx {
	return spanCtx{traceID: g.traceID(), spanID: g.spanID()}
}

// receive is a consumer's usual delivery at at of a message published from
// pub: in the producer's trace, or in a new trace linked to the publish,
// processed and settled.
func (g *generator) receive(system, consumer, dest string, pub spanCtx, at time.Time) delivery {
	d := delivery{
		service: consumer,
		group:   consumerGroup(system, consumer),
		dest:    dest,
		at:      at,
		attempt: firstAttempt(system),
		in:      pub,
		process: g.processing(),
		settle:  settleOutcome(system),
	}
	switch r := g.rng.Float64(); {
	case r < 0.25:
		d.in = spanCtx{traceID: g.traceID()}
		d.links = []model.SpanRef{pub.ref()}
		d.linkBoth = g.chance(0.5)
	case r < 0.4:
		d.links = []model.SpanRef{pub.ref()}
	}
	return d
}

// hop publishes a message of the pipeline's i-th event and has the next
// service consume it.
func (g *generator) hop(f *flowBuilder, system string, p pipeline, i int, producer string, in spanCtx, at time.Time, parent int) (int, consumed) {
	dest := pubDest(system, p, i)
	msg := g.newMessage(f, system, dest, parent, brokerID)
	pub := g.publish(f, msg, publication{service: producer, dest: dest, at: at, in: in})
	consumer := p.services[i+1]
	d := g.receive(system, consumer, consumerDest(system, p, i, consumer), pub, at.Add(g.queueWait()))
	return msg, g.consume(f, msg, d)
}

// next is where a consumer that processed c publishes the next message: at a
// time within the processing, from the process span or, at times, from an
// HTTP handler it calls, whose span is not an event.
func (g *generator) next(p pipeline, consumer string, c consumed) (string, spanCtx, time.Time) {
	at := g.within(c.start, c.end.Sub(c.start))
	if g.chance(0.3) {
		return pick(g, p.helpers), spanCtx{traceID: c.process.traceID, spanID: g.spanID()}, at
	}
	return consumer, c.process, at
}

// maybeHint gives some flows a flow-name hint on their first event, and some
// of those a competing hint on a later event.
func (g *generator) maybeHint(f *flowBuilder, name, altName string) {
	if !g.chance(0.25) {
		return
	}
	f.hint(0, name)
	if len(f.events) > 1 && g.chance(0.35) {
		f.hint(1+g.rng.IntN(len(f.events)-1), altName)
	}
}

// chain: A publishes, B consumes and publishes, C consumes, … 2–5 hops.
func (g *generator) chain(f *flowBuilder, start time.Time) {
	system := pick(g, []string{"rabbitmq", "kafka", "nats"})
	p := pick(g, pipelines)
	hops := 2 + g.rng.IntN(4)
	producer, in, at, parent := p.services[0], g.request(), start, -1
	for i := range hops {
		msg, c := g.hop(f, system, p, i, producer, in, at, parent)
		if i == hops-1 {
			break
		}
		producer, in, at = g.next(p, p.services[i+1], c)
		parent = msg
	}
	g.maybeHint(f, p.name, p.altName)
}

// fanout: one publish, received by 2–3 consumer groups downstream.
func (g *generator) fanout(f *flowBuilder, start time.Time) {
	system := pick(g, []string{"kafka", "rabbitmq", "nats"})
	p := pick(g, pipelines)
	i := g.rng.IntN(3)
	dest := pubDest(system, p, i)
	msg := g.newMessage(f, system, dest, -1, brokerID)
	pub := g.publish(f, msg, publication{service: p.services[i], dest: dest, at: start, in: g.request()})
	consumers := slices.Clone(p.services[i+1:])
	g.rng.Shuffle(len(consumers), func(a, b int) { consumers[a], consumers[b] = consumers[b], consumers[a] })
	for _, consumer := range consumers[:2+g.rng.IntN(2)] {
		g.consume(f, msg, g.receive(system, consumer, consumerDest(system, p, i, consumer), pub, start.Add(g.queueWait())))
	}
	g.maybeHint(f, p.name, p.altName)
}

// faninSources are the services that tell fulfillment about an order.
var faninSources = []struct{ service, event string }{
	{"orders", "order.placed"},
	{"payments", "payment.authorized"},
	{"inventory", "stock.reserved"},
	{"fraud-check", "fraud.cleared"},
	{"loyalty", "points.earned"},
}

// fanin: several producers' messages about one order, each in its own trace,
// joined by the order id or a correlation id; fulfillment consumes them all
// and, at times, asks shipping to ship.
func (g *generator) fanin(f *flowBuilder, start time.Time) {
	system := pick(g, []string{"kafka", "rabbitmq"})
	p := pipeline{domain: "commerce", events: []string{"order.placed", "payment.authorized", "stock.reserved", "fraud.cleared", "points.earned", "shipment.requested"}}
	eventIndex := func(event string) int { return slices.Index(p.events, event) }
	g.serial++
	key := model.Key{Kind: "order_id", Value: fmt.Sprintf("ord-%07d", 4_200_000+g.serial)}
	if g.chance(0.4) {
		key = model.Key{Kind: "correlation_id", Value: g.uuid()}
	}
	sources := slices.Clone(faninSources)
	g.rng.Shuffle(len(sources), func(a, b int) { sources[a], sources[b] = sources[b], sources[a] })

	at := start
	var last consumed
	lastMsg := -1
	for j, src := range sources[:2+g.rng.IntN(3)] {
		if j > 0 {
			at = at.Add(g.between(time.Millisecond, 4*time.Second))
		}
		i := eventIndex(src.event)
		dest := pubDest(system, p, i)
		msg := g.newMessage(f, system, dest, -1, brokerID)
		f.msgs[msg].keys = []model.Key{key}
		pub := g.publish(f, msg, publication{service: src.service, dest: dest, at: at, in: g.request()})
		c := g.consume(f, msg, g.receive(system, "fulfillment", consumerDest(system, p, i, "fulfillment"), pub, at.Add(g.queueWait())))
		if lastMsg < 0 || c.end.After(last.end) {
			last, lastMsg = c, msg
		}
	}
	if g.chance(0.5) {
		i := eventIndex("shipment.requested")
		dest := pubDest(system, p, i)
		msg := g.newMessage(f, system, dest, lastMsg, brokerID)
		f.msgs[msg].keys = []model.Key{key}
		at := g.within(last.start, last.end.Sub(last.start))
		pub := g.publish(f, msg, publication{service: "fulfillment", dest: dest, at: at, in: last.process})
		g.consume(f, msg, g.receive(system, "shipping", consumerDest(system, p, i, "shipping"), pub, at.Add(g.queueWait())))
	}
	g.maybeHint(f, "order-fulfilment", "checkout")
}

// attempts delivers a message that fails failures times, then, with
// succeed, once more with success. RabbitMQ and NATS redeliver with a higher
// attempt, a failed attempt settled nack, except the last one of a message
// that does not succeed, which settles giveUp ("" for no settle). Kafka
// consumers republish to retry topics ({topic}.retry.{n}) with the same id.
// It returns the last attempt and its failure, if any.
func (g *generator) attempts(f *flowBuilder, msg int, system, consumer, dest string, pub spanCtx, publishedAt time.Time, failures int, succeed bool, giveUp string) (consumed, string) {
	total := failures
	if succeed {
		total++
	}
	at := publishedAt.Add(g.queueWait())
	topic, partition := dest, ""
	var c consumed
	failure := ""
	for attempt := 1; attempt <= total; attempt++ {
		d := g.receive(system, consumer, dest, pub, at)
		d.partition = partition
		failure = ""
		if attempt <= failures {
			failure = pick(g, failureReasons)
			d.failure = failure
		}
		if system != "kafka" {
			d.attempt = uint16(attempt)
			switch {
			case failure == "":
			case attempt == total && !succeed:
				d.settle = giveUp
			default:
				d.settle = "nack"
			}
		}
		c = g.consume(f, msg, d)
		if attempt == total {
			break
		}
		switch system {
		case "kafka":
			dest = fmt.Sprintf("%s.retry.%d", topic, attempt)
			partition, _ = g.kafkaPartition(dest)
			pub = g.publish(f, msg, publication{service: consumer, dest: dest, partition: partition, at: c.end, in: c.process})
			backoff := []time.Duration{time.Second, 5 * time.Second, 10 * time.Second}[min(attempt, 3)-1]
			at = c.end.Add(backoff + g.between(time.Millisecond, 50*time.Millisecond))
		case "nats":
			at = c.last.Add(g.between(time.Second, 5*time.Second))
		default:
			at = c.last.Add(g.between(5*time.Millisecond, 300*time.Millisecond))
		}
	}
	return c, failure
}

// prelude is, for some flows, a clean hop before the one the scenario is
// about. It returns where the next message starts: the pipeline index, its
// producer, context, time and parent message.
func (g *generator) prelude(f *flowBuilder, system string, p pipeline, start time.Time) (int, string, spanCtx, time.Time, int) {
	if !g.chance(0.4) {
		return 0, p.services[0], g.request(), start, -1
	}
	msg, c := g.hop(f, system, p, 0, p.services[0], g.request(), start, -1)
	producer, in, at := g.next(p, p.services[1], c)
	return 1, producer, in, at, msg
}

// retry: a hop fails once or twice and is redelivered, by attempt count on
// RabbitMQ and NATS, through retry topics on Kafka, then succeeds.
func (g *generator) retry(f *flowBuilder, start time.Time) {
	system := pick(g, []string{"rabbitmq", "nats", "kafka"})
	p := pick(g, pipelines)
	i, producer, in, at, parent := g.prelude(f, system, p, start)
	dest := pubDest(system, p, i)
	msg := g.newMessage(f, system, dest, parent, stableID)
	pub := g.publish(f, msg, publication{service: producer, dest: dest, at: at, in: in})
	consumer := p.services[i+1]
	c, _ := g.attempts(f, msg, system, consumer, consumerDest(system, p, i, consumer), pub, at, 1+g.rng.IntN(2), true, "")
	if g.chance(0.4) {
		producer, in, at := g.next(p, consumer, c)
		g.hop(f, system, p, i+1, producer, in, at, msg)
	}
	g.maybeHint(f, p.name, p.altName)
}

// deadLetter: a hop ends dead-lettered (RabbitMQ's delivery limit, a reject
// to a dead-letter exchange, a queue overflow, a Kafka .dlq topic), or
// rejected for good (NATS term) or expired (RabbitMQ TTL).
func (g *generator) deadLetter(f *flowBuilder, start time.Time) {
	const (
		deliveryLimit = iota
		rejectToDLX
		kafkaDLQ
		natsTerm
		ttlExpired
		overflow
		variants
	)
	variant := g.rng.IntN(variants)
	system := "rabbitmq"
	switch variant {
	case kafkaDLQ:
		system = "kafka"
	case natsTerm:
		system = "nats"
	}
	p := pick(g, pipelines)
	i, producer, in, at, parent := g.prelude(f, system, p, start)
	dest := pubDest(system, p, i)
	msg := g.newMessage(f, system, dest, parent, stableID)
	pub := g.publish(f, msg, publication{service: producer, dest: dest, at: at, in: in})
	consumer := p.services[i+1]
	queue := consumerDest(system, p, i, consumer)
	// brokerEvent is the broker's own report about the message, in its trace.
	brokerEvent := func(kind model.EventKind, t time.Time, dest, reason string) {
		f.note(msg, model.Event{Time: t, Kind: kind, Destination: dest, Reason: reason, TraceID: pub.traceID, SpanID: g.spanID(), ParentSpanID: pub.spanID})
	}
	switch variant {
	case deliveryLimit:
		c, _ := g.attempts(f, msg, system, consumer, queue, pub, at, 2+g.rng.IntN(3), false, "nack")
		brokerEvent(model.EventDeadLetter, c.last.Add(g.between(100*time.Microsecond, 5*time.Millisecond)), queue, "delivery_limit")
	case rejectToDLX:
		c, _ := g.attempts(f, msg, system, consumer, queue, pub, at, 1, false, "reject")
		f.note(msg, model.Event{
			Time: c.last.Add(g.between(100*time.Microsecond, 5*time.Millisecond)), Kind: model.EventDeadLetter,
			Destination: queue, Service: consumer, Reason: "rejected",
			TraceID: c.process.traceID, SpanID: g.spanID(), ParentSpanID: c.process.spanID,
		})
	case kafkaDLQ:
		c, failure := g.attempts(f, msg, system, consumer, queue, pub, at, 2+g.rng.IntN(2), false, "")
		dlq := queue + ".dlq"
		partition, _ := g.kafkaPartition(dlq)
		g.publish(f, msg, publication{
			service: consumer, dest: dlq, partition: partition, at: c.end, in: c.process,
			group: consumerGroup(system, consumer), reason: "retries exhausted: " + failure,
		})
	case natsTerm:
		g.attempts(f, msg, system, consumer, queue, pub, at, 2+g.rng.IntN(2), false, "term")
	case ttlExpired:
		brokerEvent(model.EventExpire, at.Add(g.between(10*time.Second, 40*time.Second)), dest, "expired")
	case overflow:
		brokerEvent(model.EventDeadLetter, at.Add(g.between(time.Millisecond, 500*time.Millisecond)), dest, "maxlen")
	}
	g.maybeHint(f, p.name, p.altName)
}

// stuck: a message published and never delivered (alone or at the end of a
// chain), delivered and never processed, failed and never redelivered, or an
// async HTTP request never called back.
func (g *generator) stuck(f *flowBuilder, start time.Time) {
	const (
		neverDelivered = iota
		chainEnd
		neverProcessed
		neverRedelivered
		neverCalledBack
		variants
	)
	variant := g.rng.IntN(variants)
	if variant == neverCalledBack {
		api := pick(g, callbackAPIs)
		cb := g.newMessage(f, "http", api.route, -1, brokerID)
		in := g.request()
		f.note(cb, model.Event{
			Time: start, Kind: model.EventCallbackRequest, Destination: api.route, Service: api.api,
			Operation: "POST " + api.route, TraceID: in.traceID, SpanID: g.spanID(), ParentSpanID: in.spanID,
		})
		return
	}
	system := pick(g, []string{"rabbitmq", "kafka", "nats"})
	if variant == neverRedelivered {
		system = pick(g, []string{"rabbitmq", "nats"})
	}
	p := pick(g, pipelines)
	producer, in, at, parent := p.services[0], g.request(), start, -1
	i := 0
	if variant == chainEnd {
		for hops := 1 + g.rng.IntN(2); i < hops; i++ {
			msg, c := g.hop(f, system, p, i, producer, in, at, parent)
			producer, in, at = g.next(p, p.services[i+1], c)
			parent = msg
		}
	}
	dest := pubDest(system, p, i)
	msg := g.newMessage(f, system, dest, parent, brokerID)
	pub := g.publish(f, msg, publication{service: producer, dest: dest, at: at, in: in})
	if variant == neverProcessed || variant == neverRedelivered {
		consumer := p.services[i+1]
		d := g.receive(system, consumer, consumerDest(system, p, i, consumer), pub, at.Add(g.queueWait()))
		if variant == neverProcessed {
			d.noDeliver, d.process = false, 0
		} else {
			d.failure, d.settle = pick(g, failureReasons), "nack"
		}
		g.consume(f, msg, d)
	}
	g.maybeHint(f, p.name, p.altName)
}

// callbackAPIs are services that accept a job with 202 and a callback id and
// call the receiver back when it is done.
var callbackAPIs = []struct{ api, route, receiver, hook, job string }{
	{"exports-api", "/v1/exports", "reporting", "/hooks/exports", "export"},
	{"kyc-provider", "/v2/checks", "accounts", "/webhooks/kyc", "kyc-check"},
	{"payment-provider", "/v1/payment_intents", "payments", "/webhooks/payments", "payment"},
	{"transcode-api", "/v1/jobs", "media-library", "/callbacks/transcode", "transcode"},
}

// callback: async HTTP. The receiver (at times a consumer of a message asking
// for the job) calls an API that answers 202 with a callback id; seconds later
// the API calls the receiver back, which at times publishes that the job is
// done.
func (g *generator) callback(f *flowBuilder, start time.Time) {
	api := pick(g, callbackAPIs)
	at, in, parent := start, g.request(), -1
	if g.chance(0.4) {
		system := pick(g, []string{"rabbitmq", "kafka"})
		p := pipeline{domain: "jobs", events: []string{api.job + ".requested"}}
		dest := pubDest(system, p, 0)
		msg := g.newMessage(f, system, dest, -1, brokerID)
		pub := g.publish(f, msg, publication{service: "scheduler", dest: dest, at: at, in: in})
		c := g.consume(f, msg, g.receive(system, api.receiver, consumerDest(system, p, 0, api.receiver), pub, at.Add(g.queueWait())))
		at, in, parent = g.within(c.start, c.end.Sub(c.start)), spanCtx{traceID: c.process.traceID, spanID: g.spanID()}, msg
	}
	cb := g.newMessage(f, "http", api.route, parent, brokerID)
	f.note(cb, model.Event{
		Time: at, Kind: model.EventCallbackRequest, Destination: api.route, Service: api.api,
		Operation: "POST " + api.route, TraceID: in.traceID, SpanID: g.spanID(), ParentSpanID: in.spanID,
	})
	// The API's worker calls back from the request's trace, or from a new one.
	back := spanCtx{traceID: g.traceID()}
	if g.chance(0.5) {
		back = spanCtx{traceID: in.traceID, spanID: g.spanID()}
	}
	receive := model.Event{
		Time: at.Add(g.between(2*time.Second, 45*time.Second)), Kind: model.EventCallbackReceive, Destination: api.hook,
		Service: api.receiver, Operation: "POST " + api.hook, Duration: g.processing(), TraceID: back.traceID, SpanID: g.spanID(), ParentSpanID: back.spanID,
	}
	f.note(cb, receive)
	if g.chance(0.4) {
		system := pick(g, []string{"rabbitmq", "kafka", "nats"})
		p := pipeline{domain: "jobs", events: []string{api.job + ".completed"}}
		dest := pubDest(system, p, 0)
		msg := g.newMessage(f, system, dest, cb, brokerID)
		pubAt := g.within(receive.Time, receive.Duration)
		pub := g.publish(f, msg, publication{service: api.receiver, dest: dest, at: pubAt, in: spanCtx{traceID: receive.TraceID, spanID: receive.SpanID}})
		g.consume(f, msg, g.receive(system, "notifications", consumerDest(system, p, 0, "notifications"), pub, pubAt.Add(g.queueWait())))
	}
	g.maybeHint(f, "async-"+path.Base(api.route), "external-jobs")
}

type celeryTask struct{ name, queue, worker string }

// celeryChains are Celery chains, each started by a web app.
var celeryChains = []struct {
	producer string
	tasks    []celeryTask
	name     string
}{
	{"shop-web", []celeryTask{
		{"orders.tasks.reserve_stock", "inventory", "worker-inventory"},
		{"payments.tasks.charge_card", "payments", "worker-payments"},
		{"notifications.tasks.send_receipt", "emails", "worker-emails"},
	}, "order-processing"},
	{"media-web", []celeryTask{
		{"media.tasks.extract_audio", "media", "worker-media"},
		{"media.tasks.transcribe", "gpu", "worker-gpu"},
		{"search.tasks.index_transcript", "celery", "worker-default"},
	}, "transcription"},
	{"reports-web", []celeryTask{
		{"reports.tasks.collect_figures", "celery", "worker-default"},
		{"reports.tasks.render_pdf", "pdf", "worker-pdf"},
		{"reports.tasks.email_report", "emails", "worker-emails"},
	}, "report-generation"},
}

// celery: a chain of 2–3 tasks, one of them retried: its worker republishes
// the same task id with attempt 2. Each task's events carry its own id, the
// root's and the parent's as task_id keys. Some chains propagate the trace
// from task to task; in the others only the keys join them.
func (g *generator) celery(f *flowBuilder, start time.Time) {
	ch := pick(g, celeryChains)
	tasks := ch.tasks[:2+g.rng.IntN(len(ch.tasks)-1)]
	retried := g.rng.IntN(len(tasks))
	propagate := g.chance(0.5)
	producer, in, at, parent := ch.producer, g.request(), start, -1
	rootID, parentID := "", ""
	for k, task := range tasks {
		id := g.uuid()
		if k == 0 {
			rootID = id
		}
		keys := []model.Key{{Kind: "task_id", Value: id}}
		if rootID != id {
			keys = append(keys, model.Key{Kind: "task_id", Value: rootID})
		}
		if parentID != "" && parentID != rootID {
			keys = append(keys, model.Key{Kind: "task_id", Value: parentID})
		}
		msg := f.newMessage(message{system: "celery", id: id, keys: keys, operation: task.name, bodySize: 200 + g.rng.Uint64N(2_000), parent: parent})
		pub := g.publish(f, msg, publication{service: producer, dest: task.queue, at: at, in: in})
		d := delivery{
			service: task.worker, dest: task.queue, at: at.Add(g.queueWait()), attempt: 1,
			in: pub, process: g.processing(), noDeliver: g.chance(0.5),
		}
		if k == retried {
			countdown := g.between(2*time.Second, 10*time.Second)
			d.failure = fmt.Sprintf("Retry in %ds: ConnectionError('connection refused')", countdown/time.Second)
			c := g.consume(f, msg, d)
			again := g.publish(f, msg, publication{service: task.worker, dest: task.queue, at: c.end, in: c.process, attempt: 2})
			d.failure, d.attempt, d.in, d.process = "", 2, again, g.processing()
			d.at = c.end.Add(countdown)
		}
		c := g.consume(f, msg, d)
		producer, at, parent, parentID = task.worker, c.end, msg, id
		in = spanCtx{}
		if propagate {
			in = c.process
		}
	}
	g.maybeHint(f, ch.name, "celery-"+ch.name)
}

// linksOnly: messages with no broker id, on Redis streams and NATS core, 1–3
// hops. A consumer joins the publish by a span link from a new trace (current
// conventions; the deliver span or only a process span carries the link), or
// as a child of the publish span (the older convention). Some first messages
// go to two groups; some flows are a batch consumer's.
func (g *generator) linksOnly(f *flowBuilder, start time.Time) {
	if g.chance(0.25) {
		g.batch(f, start)
		return
	}
	system := pick(g, []string{"redis", "nats"})
	p := pick(g, pipelines)
	hops := 1 + g.rng.IntN(3)
	producer, in, at, parent := p.services[0], g.request(), start, -1
	for i := range hops {
		dest := pubDest(system, p, i)
		msg := g.newMessage(f, system, dest, parent, spanRefsOnly)
		pub := g.publish(f, msg, publication{service: producer, dest: dest, at: at, in: in})
		consumers := []string{p.services[i+1]}
		if i == 0 && g.chance(0.25) {
			consumers = append(consumers, pick(g, p.services[2:]))
		}
		var first consumed
		for j, consumer := range consumers {
			d := delivery{
				service: consumer, group: consumerGroup(system, consumer), dest: consumerDest(system, p, i, consumer),
				at: at.Add(g.queueWait()), process: g.processing(),
			}
			if system == "redis" {
				d.settle = "ack"
			}
			switch g.rng.IntN(3) {
			case 0:
				d.in, d.links, d.linkBoth = spanCtx{traceID: g.traceID()}, []model.SpanRef{pub.ref()}, g.chance(0.3)
			case 1:
				d.in, d.links, d.noDeliver = spanCtx{traceID: g.traceID()}, []model.SpanRef{pub.ref()}, true
			default:
				d.in = pub
			}
			c := g.consume(f, msg, d)
			if j == 0 {
				first = c
			}
		}
		if i == hops-1 {
			break
		}
		producer, in, at = p.services[i+1], first.process, g.within(first.start, first.end.Sub(first.start))
		parent = msg
	}
	g.maybeHint(f, p.name, p.altName)
}

// batch: 2–4 producers each publish to a Redis stream from their own trace;
// one process span of a batch consumer, in a new trace, links to every
// publish. The batch applies to each message on its own, and its trace makes
// them one flow.
func (g *generator) batch(f *flowBuilder, start time.Time) {
	stream := pick(g, []string{"telemetry:clicks", "telemetry:page-views", "iot:readings"})
	producers := []string{"web-bff", "ios-bff", "android-bff", "partner-api"}
	g.rng.Shuffle(len(producers), func(a, b int) { producers[a], producers[b] = producers[b], producers[a] })
	at := start
	var links []model.SpanRef
	var msgs []int
	for j, producer := range producers[:2+g.rng.IntN(3)] {
		if j > 0 {
			at = at.Add(g.between(time.Millisecond, 2*time.Second))
		}
		msg := g.newMessage(f, "redis", stream, -1, spanRefsOnly)
		pub := g.publish(f, msg, publication{service: producer, dest: stream, at: at, in: g.request()})
		links, msgs = append(links, pub.ref()), append(msgs, msg)
	}
	batch := model.Event{
		Time: at.Add(g.between(50*time.Millisecond, 3*time.Second)), Kind: model.EventProcess, System: "redis",
		Destination: stream, Service: "events-loader", ConsumerGroup: "loaders",
		TraceID: g.traceID(), SpanID: g.spanID(), Links: links, Duration: g.processing(),
	}
	f.events = append(f.events, genEvent{Event: batch, msgs: msgs})
	g.maybeHint(f, "telemetry-ingest", "analytics-load")
}
