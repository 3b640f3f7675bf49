package rabbitmqtapreceiver

import (
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// TestCapturedFrames reads every captured frame and checks the
// observations of the workload that made them.
func TestCapturedFrames(t *testing.T) {
	frames := loadFrames(t)
	require.Len(t, frames, 400)
	tr := newTracker("flowtrace.firehose", false, 1000, func(err error) { t.Error(err) })
	kinds := map[tap.Kind]int{}
	systems := map[string]int{}
	redelivered := 0
	now := time.Unix(1795000000, 0)
	for i := range frames {
		f, err := decodeFrame(frames[i].RoutingKey, frames[i].Headers, frames[i].Body)
		require.NoError(t, err, "frame %d", i)
		if f.redelivered {
			redelivered++
		}
		require.NoError(t, tr.frame("/", &f, now.Add(time.Duration(i)*time.Millisecond)))
		for _, o := range tr.take() {
			kinds[o.Kind]++
			systems[o.System]++
			assert.NotEmpty(t, o.MessageID)
		}
	}
	assert.Equal(t, 20, redelivered)
	assert.Equal(t, map[tap.Kind]int{
		tap.Publish:    180, // 100 audit, 40 orders, 40 work
		tap.Deliver:    220, // the same, 20 redeliveries and 20 from the dead-letter queue
		tap.Settle:     20,  // the nacks inferred from the redeliveries
		tap.DeadLetter: 20,
	}, kinds)
	assert.Equal(t, 2*40, systems[systemCelery])
}

func TestDecodeFrameRefusesMalformedFrames(t *testing.T) {
	good := func() amqp.Table {
		return amqp.Table{
			"exchange_name": "orders", "routing_keys": []any{"eu"}, "redelivered": int32(0),
			"properties": amqp.Table{"message_id": "m1", "headers": amqp.Table{}},
		}
	}
	_, err := decodeFrame("deliver.q", good(), nil)
	require.NoError(t, err)
	for name, tc := range map[string]struct {
		routingKey string
		change     func(amqp.Table)
		reason     string
	}{
		"unknown routing key":   {"other.q", func(amqp.Table) {}, "routing_key"},
		"deliver without queue": {"deliver.", func(amqp.Table) {}, "routing_key"},
		"no exchange":           {"deliver.q", func(h amqp.Table) { delete(h, "exchange_name") }, "exchange_name"},
		"exchange not a string": {"deliver.q", func(h amqp.Table) { h["exchange_name"] = int32(1) }, "exchange_name"},
		"routing keys not strings": {"deliver.q", func(h amqp.Table) {
			h["routing_keys"] = []any{int64(1)}
		}, "routing_keys"},
		"no properties":             {"deliver.q", func(h amqp.Table) { delete(h, "properties") }, "properties"},
		"message id not a string":   {"deliver.q", func(h amqp.Table) { h["properties"].(amqp.Table)["message_id"] = int32(5) }, "properties"},
		"headers not a table":       {"deliver.q", func(h amqp.Table) { h["properties"].(amqp.Table)["headers"] = "x" }, "properties"},
		"priority not a number":     {"deliver.q", func(h amqp.Table) { h["properties"].(amqp.Table)["priority"] = "high" }, "properties"},
		"redelivered not a flag":    {"deliver.q", func(h amqp.Table) { h["redelivered"] = "yes" }, "redelivered"},
		"routed queues not strings": {"publish.orders", func(h amqp.Table) { h["routed_queues"] = "q" }, "routed_queues"},
	} {
		t.Run(name, func(t *testing.T) {
			h := good()
			tc.change(h)
			_, err := decodeFrame(tc.routingKey, h, nil)
			require.Error(t, err)
			assert.Equal(t, tc.reason, reasonOf(err))
		})
	}
}

func TestDecodeCelery(t *testing.T) {
	task, ok, err := decodeCelery(amqp.Table{"task": "shop.charge", "id": "a", "root_id": "r", "parent_id": nil, "retries": int8(2), "eta": nil, "group": "g"})
	require.NoError(t, err)
	require.True(t, ok)
	assert.Equal(t, celeryTask{id: "a", name: "shop.charge", rootID: "r", retries: 2}, task)

	_, ok, err = decodeCelery(amqp.Table{"tenant": "acme"})
	require.NoError(t, err)
	assert.False(t, ok, "not a task")

	for name, h := range map[string]amqp.Table{
		"task not a name":    {"task": int32(1), "id": "a"},
		"empty id":           {"task": "t", "id": ""},
		"root id not a name": {"task": "t", "id": "a", "root_id": int32(1)},
		"negative retries":   {"task": "t", "id": "a", "retries": int32(-1)},
		"retries not a int":  {"task": "t", "id": "a", "retries": "1"},
	} {
		t.Run(name, func(t *testing.T) {
			_, ok, err := decodeCelery(h)
			require.Error(t, err)
			assert.False(t, ok)
			assert.Equal(t, "celery_headers", reasonOf(err))
		})
	}
}

func TestDecodeDeath(t *testing.T) {
	at := time.Unix(1795000000, 0)
	d, found, err := decodeDeath(amqp.Table{headerDeath: []any{
		amqp.Table{"queue": "work", "reason": "expired", "count": int64(2), "time": at, "exchange": "retry", "routing-keys": []any{"work"}},
		amqp.Table{"queue": "wait", "reason": "rejected", "count": int64(1), "exchange": "", "routing-keys": []any{"orders"}},
	}})
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, "work", d.queue)
	assert.Equal(t, "expired", d.reason)
	assert.Equal(t, int64(2), d.count)
	assert.Equal(t, at, d.time)
	assert.Equal(t, "", d.originExchange)
	assert.Equal(t, []string{"orders"}, d.originKeys)
	assert.Equal(t, []deathCount{{"work", 2}, {"wait", 1}}, d.counts)

	for name, v := range map[string]any{
		"not a list":      "x",
		"empty":           []any{},
		"entry not table": []any{"x"},
		"no queue":        []any{amqp.Table{"reason": "rejected"}},
		"no reason":       []any{amqp.Table{"queue": "q"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := decodeDeath(amqp.Table{headerDeath: v})
			require.Error(t, err)
			assert.Equal(t, "x_death", reasonOf(err))
		})
	}
}

// deliverFrame is a deliver frame of a message on a queue.
func deliverFrame(queue, id string, redelivered bool, headers amqp.Table) *frame {
	return &frame{kind: frameDeliver, queue: queue, redelivered: redelivered,
		msg: message{routingKeys: []string{queue}, props: properties{messageID: id, headers: headers}}}
}

func publishFrame(exchange, routingKey, id string, headers amqp.Table) *frame {
	return &frame{kind: framePublish, msg: message{exchange: exchange, routingKeys: []string{routingKey}, props: properties{messageID: id, headers: headers}}}
}

func kindsOf(obs []tap.Observation) []string {
	var out []string
	for _, o := range obs {
		s := o.Kind.String() + "@" + o.ConsumerGroup
		if o.Outcome != "" {
			s += ":" + o.Outcome
		}
		out = append(out, s)
	}
	return out
}

func TestTrackerAttemptsAndSettlements(t *testing.T) {
	tr := newTracker("own", false, 100, func(err error) { t.Error(err) })
	t0 := time.Unix(1795000000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }

	require.NoError(t, tr.frame("/", publishFrame("", "work", "m1", nil), at(0)))
	require.NoError(t, tr.frame("/", deliverFrame("work", "m1", false, nil), at(1)))
	require.NoError(t, tr.frame("/", deliverFrame("work", "m1", true, nil), at(2)))
	obs := tr.take()
	assert.Equal(t, []string{"publish@", "deliver@work", "settle@work:nack", "deliver@work"}, kindsOf(obs))
	assert.Equal(t, 1, obs[1].Attempt)
	assert.Equal(t, 1, obs[2].Attempt, "the nack settles the first attempt")
	assert.True(t, obs[2].Inferred)
	assert.Equal(t, 2, obs[3].Attempt)

	// A drain settles deliveries before its cutoff only.
	require.NoError(t, tr.frame("/", deliverFrame("work", "m2", false, nil), at(10)))
	tr.take()
	tr.drain("/", "work", time.Time{}, at(5), at(12))
	obs = tr.take()
	require.Equal(t, []string{"settle@work:ack"}, kindsOf(obs))
	assert.Equal(t, "m1", obs[0].MessageID)
	assert.Equal(t, 2, obs[0].Attempt)
	assert.Equal(t, at(12), obs[0].Time)
	tr.drain("/", "work", time.Time{}, at(5), at(13))
	assert.Empty(t, tr.take(), "settled once")
	tr.drain("/", "other", time.Time{}, at(20), at(20))
	tr.drain("/vh2", "work", time.Time{}, at(20), at(20))
	assert.Empty(t, tr.take(), "another queue, another vhost")

	// A dead letter is reported once, and is never settled by a drain.
	dead := amqp.Table{headerDeath: []any{amqp.Table{"queue": "work", "reason": "rejected", "count": int64(1), "time": at(11)}}}
	require.NoError(t, tr.deadCopy("/", &message{exchange: "dlx", routingKeys: []string{"work"}, props: properties{messageID: "m2", headers: dead}}, at(11)))
	require.NoError(t, tr.frame("/", deliverFrame("dead", "m2", false, dead), at(15)))
	obs = tr.take()
	assert.Equal(t, []string{"dead_letter@work", "deliver@dead"}, kindsOf(obs))
	assert.Equal(t, "rejected", obs[0].Reason)
	assert.Equal(t, 1, obs[0].Attempt)
	tr.drain("/", "work", time.Time{}, at(30), at(30))
	assert.Empty(t, tr.take())
}

func TestTrackerCelery(t *testing.T) {
	tr := newTracker("own", false, 100, func(err error) { t.Error(err) })
	now := time.Unix(1795000000, 0)
	task := func(id, parent string, retries int64) amqp.Table {
		h := amqp.Table{"task": "shop.charge", "id": id, "root_id": "root", "retries": retries}
		if parent != "" {
			h["parent_id"] = parent
		}
		return h
	}
	require.NoError(t, tr.frame("/", publishFrame("", "tasks", "", task("root", "", 0)), now))
	require.NoError(t, tr.frame("/", deliverFrame("tasks", "", false, task("root", "", 0)), now))
	// The retry: same task, retries 1, published from its own run.
	require.NoError(t, tr.frame("/", publishFrame("", "tasks", "", task("root", "root", 1)), now))
	require.NoError(t, tr.frame("/", deliverFrame("tasks", "", false, task("root", "root", 1)), now))
	// The next task of the chain.
	require.NoError(t, tr.frame("/", publishFrame("", "tasks", "", task("child", "root", 0)), now))
	obs := tr.take()
	assert.Equal(t, []string{"publish@", "deliver@tasks", "publish@", "settle@tasks:ack", "deliver@tasks", "publish@", "settle@tasks:ack"}, kindsOf(obs))
	for _, o := range obs {
		assert.Equal(t, systemCelery, o.System)
		assert.Equal(t, "shop.charge", o.Operation)
		assert.Equal(t, "root", o.TraceKey)
	}
	assert.Equal(t, []int{1, 1, 2, 1, 2, 1, 2}, []int{obs[0].Attempt, obs[1].Attempt, obs[2].Attempt, obs[3].Attempt, obs[4].Attempt, obs[5].Attempt, obs[6].Attempt})
	assert.Equal(t, "child", obs[5].MessageID)
	assert.Equal(t, []model.Key{{Kind: keyTaskID, Value: "child"}, {Kind: keyTaskID, Value: "root"}}, obs[5].Keys)

	// Celery's own traffic is skipped unless asked for.
	require.NoError(t, tr.frame("/", publishFrame("celery.pidbox", "", "x", nil), now))
	require.NoError(t, tr.frame("/", deliverFrame("celeryev.1234", "y", false, nil), now))
	require.NoError(t, tr.frame("/", deliverFrame("own", "z", false, nil), now))
	assert.Empty(t, tr.take())
}

// TestTrackerCeleryAcksLate: with acks_late a task is acked after its
// run, so a child's publish settles nothing; a drain does.
func TestTrackerCeleryAcksLate(t *testing.T) {
	tr := newTracker("own", false, 100, func(err error) { t.Error(err) })
	tr.acksLate = true
	now := time.Unix(1795000000, 0)
	parent := amqp.Table{"task": "shop.charge", "id": "root", "root_id": "root"}
	child := amqp.Table{"task": "shop.ship", "id": "child", "root_id": "root", "parent_id": "root"}
	require.NoError(t, tr.frame("/", publishFrame("", "tasks", "", parent), now))
	require.NoError(t, tr.frame("/", deliverFrame("tasks", "", false, parent), now))
	require.NoError(t, tr.frame("/", publishFrame("", "tasks", "", child), now))
	assert.Equal(t, []string{"publish@", "deliver@tasks", "publish@"}, kindsOf(tr.take()))
	tr.drain("/", "tasks", time.Time{}, now.Add(time.Second), now.Add(time.Second))
	assert.Equal(t, []string{"settle@tasks:ack"}, kindsOf(tr.take()))
}

func TestTrackerForgetsOldestDeliveries(t *testing.T) {
	tr := newTracker("own", false, 2, func(err error) { t.Error(err) })
	now := time.Unix(1795000000, 0)
	for _, id := range []string{"a", "b", "c"} {
		require.NoError(t, tr.frame("/", deliverFrame("q", id, false, nil), now))
	}
	tr.take()
	assert.Len(t, tr.byKey, 2)
	tr.drain("/", "q", time.Time{}, now.Add(time.Second), now.Add(time.Second))
	var ids []string
	for _, o := range tr.take() {
		ids = append(ids, o.MessageID)
	}
	assert.ElementsMatch(t, []string{"b", "c"}, ids)
	assert.Empty(t, tr.byQueue)
	assert.Empty(t, tr.byMessage)
}

// TestFingerprintSurvivesDeadLettering: a message without a message id
// keeps its name from its publish to its delivery from a dead-letter queue.
func TestFingerprintSurvivesDeadLettering(t *testing.T) {
	published := message{exchange: "", routingKeys: []string{"work"}, props: properties{headers: amqp.Table{"kind": "poison"}, timestamp: 7}}
	deadLettered := published
	deadLettered.exchange = "dlx"
	deadLettered.routingKeys = []string{"work"}
	deadLettered.props.headers = amqp.Table{"kind": "poison", "x-first-death-queue": "work", headerDeath: []any{
		amqp.Table{"queue": "work", "reason": "rejected", "count": int64(1), "exchange": "", "routing-keys": []any{"work"}},
	}}
	d, _, err := decodeDeath(deadLettered.props.headers)
	require.NoError(t, err)
	assert.Equal(t, fingerprint(&published, nil), fingerprint(&deadLettered, &d))
	other := published
	other.props.headers = amqp.Table{"kind": "other"}
	assert.NotEqual(t, fingerprint(&published, nil), fingerprint(&other, nil))
}

// TestDrainSince: a drain leaves deliveries seen before the tap could see
// the queue's dead letters.
func TestDrainSince(t *testing.T) {
	tr := newTracker("own", false, 100, func(err error) { t.Error(err) })
	t0 := time.Unix(1795000000, 0)
	require.NoError(t, tr.frame("/", deliverFrame("work", "early", false, nil), t0))
	require.NoError(t, tr.frame("/", deliverFrame("work", "late", false, nil), t0.Add(2*time.Second)))
	tr.take()
	assert.True(t, tr.pendingQueues.has("/", "work"))
	tr.drain("/", "work", t0.Add(time.Second), t0.Add(time.Minute), t0.Add(time.Minute))
	obs := tr.take()
	require.Len(t, obs, 1)
	assert.Equal(t, "late", obs[0].MessageID)
	tr.drain("/", "work", time.Time{}, t0.Add(time.Minute), t0.Add(time.Minute))
	require.Len(t, tr.take(), 1)
	assert.False(t, tr.pendingQueues.has("/", "work"), "no pending delivery left")
}

// TestTrackerDelayedRetry: dead letters into delay queues are retries.
func TestTrackerDelayedRetry(t *testing.T) {
	tr := newTracker("own", false, 100, func(err error) { t.Error(err) })
	tr.topology.set("/", map[string]bool{"jobs.wait": true}, map[string]bool{"jobs": true})
	now := time.Unix(1795000000, 0)
	require.NoError(t, tr.frame("/", deliverFrame("jobs", "j1", false, nil), now))
	rejected := amqp.Table{headerDeath: []any{amqp.Table{"queue": "jobs", "reason": "rejected", "count": int64(1)}}}
	require.NoError(t, tr.deadCopy("/", &message{exchange: "", routingKeys: []string{"jobs.wait"}, props: properties{messageID: "j1", headers: rejected}}, now))
	back := amqp.Table{headerDeath: []any{
		amqp.Table{"queue": "jobs.wait", "reason": "expired", "count": int64(1)},
		amqp.Table{"queue": "jobs", "reason": "rejected", "count": int64(1)},
	}}
	require.NoError(t, tr.frame("/", deliverFrame("jobs", "j1", false, back), now.Add(time.Second)))
	obs := tr.take()
	assert.Equal(t, []string{"deliver@jobs", "settle@jobs:nack", "deliver@jobs"}, kindsOf(obs))
	assert.Equal(t, 2, obs[2].Attempt, "back from the delay queue: the second attempt")
}

// TestTrackerCleansText: broker text on spans is printable UTF-8 of
// bounded length; what had to change is counted.
func TestTrackerCleansText(t *testing.T) {
	var reasons []string
	tr := newTracker("own", false, 100, func(err error) { reasons = append(reasons, reasonOf(err)) })
	long := strings.Repeat("q", 300)
	require.NoError(t, tr.frame("/", deliverFrame(long, "id\x00\xff", false, nil), time.Unix(1795000000, 0)))
	obs := tr.take()
	require.Len(t, obs, 1)
	assert.Len(t, obs[0].Destination, tap.MaxText)
	assert.Equal(t, "id \uFFFD", obs[0].MessageID)
	assert.Equal(t, []string{"text", "text", "text"}, reasons) // id, queue, routing key
}

// TestUnroutedPublishIsBroadcast: a publish routed to no queue is settled
// by its publish, not left pending.
func TestUnroutedPublishIsBroadcast(t *testing.T) {
	tr := newTracker("own", false, 100, func(err error) { t.Error(err) })
	f := publishFrame("events", "", "e1", nil)
	f.routedQueues = []string{}
	require.NoError(t, tr.frame("/", f, time.Unix(1795000000, 0)))
	obs := tr.take()
	require.Len(t, obs, 1)
	assert.Equal(t, tap.Broadcast, obs[0].Kind)
	assert.Contains(t, obs[0].Attrs, tap.Bool(attrUnroutable, true))

	// Sent to a queue by name, or through a direct exchange, and routed
	// nowhere: a dead letter.
	tr.topology.setExchanges("/", map[string]string{"orders": "direct", "events": "fanout"})
	for _, exchange := range []string{"", "orders"} {
		f = publishFrame(exchange, "missing", "m-"+exchange, nil)
		f.routedQueues = []string{}
		require.NoError(t, tr.frame("/", f, time.Unix(1795000000, 0)))
		obs = tr.take()
		assert.Equal(t, []string{"publish@", "dead_letter@"}, kindsOf(obs), exchange)
		assert.Equal(t, reasonUnroutable, obs[1].Reason)
		assert.NotContains(t, obs[0].Attrs, tap.Bool(attrUnroutable, true))
	}
	// Routed somewhere: a publish.
	f = publishFrame("orders", "paid", "m3", nil)
	f.routedQueues = []string{"paid"}
	require.NoError(t, tr.frame("/", f, time.Unix(1795000000, 0)))
	assert.Equal(t, []string{"publish@"}, kindsOf(tr.take()))
}

// TestTrackerDelayedRetryWithoutTopology: without the management API, a
// message back in a queue it was dead-lettered from, after expiring
// elsewhere, is a retry, not a dead letter.
func TestTrackerDelayedRetryWithoutTopology(t *testing.T) {
	tr := newTracker("own", false, 100, func(err error) { t.Error(err) })
	now := time.Unix(1795000000, 0)
	require.NoError(t, tr.frame("/", deliverFrame("jobs", "j1", false, nil), now))
	back := amqp.Table{headerDeath: []any{
		amqp.Table{"queue": "jobs.wait", "reason": "expired", "count": int64(1)},
		amqp.Table{"queue": "jobs", "reason": "rejected", "count": int64(1)},
	}}
	require.NoError(t, tr.frame("/", deliverFrame("jobs", "j1", false, back), now.Add(time.Second)))
	obs := tr.take()
	assert.Equal(t, []string{"deliver@jobs", "settle@jobs:nack", "deliver@jobs"}, kindsOf(obs))
	assert.Equal(t, 2, obs[2].Attempt)

	// Expired into a dead-letter queue it never came from: a dead letter.
	expired := amqp.Table{headerDeath: []any{amqp.Table{"queue": "jobs", "reason": "expired", "count": int64(1)}}}
	require.NoError(t, tr.frame("/", deliverFrame("jobs.dead", "j2", false, expired), now))
	assert.Equal(t, []string{"deliver@jobs.dead", "dead_letter@jobs"}, kindsOf(tr.take()))
}
