package flowsim

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/flowtrace/flowtrace/model"
)

var t0 = time.Date(2026, time.March, 2, 10, 0, 0, 0, time.UTC)

func ms(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }

func trace(c byte) string { return strings.Repeat(string(c), 32) }
func span(c byte) string  { return strings.Repeat(string(c), 16) }

// handFlow builds a flow event by event.
type handFlow struct{ flowBuilder }

func (h *handFlow) message(system, id string) int {
	return h.newMessage(message{system: system, id: id, parent: -1})
}

// event adds ev to msg, with the message's system and id.
func (h *handFlow) event(msg int, ev model.Event) {
	ev.System, ev.MessageID = h.msgs[msg].system, h.msgs[msg].id
	h.add(msg, ev)
}

// TestTruthByHand checks the truth of small flows against values worked out
// by hand from README.md.
func TestTruthByHand(t *testing.T) {
	tests := []struct {
		name  string
		build func(h *handFlow)
		want  TruthFlow
	}{
		{
			// Retry topics are attempts on the base topic; a publish to the
			// .dlq topic dead-letters the message. The publish side is the
			// lowest attempt's; Processing the highest attempt's.
			name: "kafka retry topic then dlq",
			build: func(h *handFlow) {
				m := h.message("kafka", "m1")
				group := "billing-consumer"
				h.event(m, model.Event{Time: ms(0), Kind: model.EventPublish, Destination: "payments", Service: "checkout", TraceID: trace('1'), SpanID: span('1')})
				h.event(m, model.Event{Time: ms(10), Kind: model.EventDeliver, Destination: "payments", Service: "billing", ConsumerGroup: group, TraceID: trace('1'), SpanID: span('2')})
				h.event(m, model.Event{Time: ms(11), Kind: model.EventProcess, Destination: "payments", Service: "billing", ConsumerGroup: group, Duration: 50 * time.Millisecond, Outcome: "error", TraceID: trace('1'), SpanID: span('3')})
				h.event(m, model.Event{Time: ms(61), Kind: model.EventPublish, Destination: "payments.retry.1", Service: "billing", TraceID: trace('1'), SpanID: span('4')})
				h.event(m, model.Event{Time: ms(1061), Kind: model.EventDeliver, Destination: "payments.retry.1", Service: "billing", ConsumerGroup: group, TraceID: trace('1'), SpanID: span('5')})
				h.event(m, model.Event{Time: ms(1062), Kind: model.EventProcess, Destination: "payments.retry.1", Service: "billing", ConsumerGroup: group, Duration: 20 * time.Millisecond, Outcome: "error", TraceID: trace('1'), SpanID: span('6')})
				h.event(m, model.Event{Time: ms(1082), Kind: model.EventPublish, Destination: "payments.dlq", Service: "billing", ConsumerGroup: group, Reason: "retries exhausted", TraceID: trace('1'), SpanID: span('7')})
			},
			want: TruthFlow{
				Name: "checkout payments", Status: model.FlowDeadLettered, Start: ms(0), End: ms(1082), Retries: 1, DeadLetters: 1,
				Hops: []TruthHop{{
					System: "kafka", MessageID: "m1", ConsumerGroup: "billing-consumer", Producer: "checkout", Consumer: "billing",
					Destination: "payments", QueueWait: 10 * time.Millisecond, Processing: 20 * time.Millisecond, Attempts: 2, Outcome: model.HopDeadLettered,
				}},
			},
		},
		{
			// A dead-letter naming no group applies to the hops not acked.
			name: "fanout with a groupless dead letter",
			build: func(h *handFlow) {
				m := h.message("rabbitmq", "m2")
				h.event(m, model.Event{Time: ms(0), Kind: model.EventPublish, Destination: "orders", Service: "checkout", FlowName: "orders-fanout", TraceID: trace('2'), SpanID: span('1')})
				h.event(m, model.Event{Time: ms(5), Kind: model.EventDeliver, Destination: "billing.orders", Service: "billing", Attempt: 1, TraceID: trace('2'), SpanID: span('2')})
				h.event(m, model.Event{Time: ms(6), Kind: model.EventProcess, Destination: "billing.orders", Service: "billing", Attempt: 1, Duration: 30 * time.Millisecond, TraceID: trace('2'), SpanID: span('3')})
				h.event(m, model.Event{Time: ms(37), Kind: model.EventSettle, Destination: "billing.orders", Service: "billing", Attempt: 1, Outcome: "ack", TraceID: trace('2'), SpanID: span('4')})
				h.event(m, model.Event{Time: ms(8), Kind: model.EventDeliver, Destination: "audit.orders", Service: "audit", Attempt: 1, TraceID: trace('2'), SpanID: span('5')})
				h.event(m, model.Event{Time: ms(9), Kind: model.EventProcess, Destination: "audit.orders", Service: "audit", Attempt: 1, Duration: 40 * time.Millisecond, Outcome: "error", TraceID: trace('2'), SpanID: span('6')})
				h.event(m, model.Event{Time: ms(50), Kind: model.EventSettle, Destination: "audit.orders", Service: "audit", Attempt: 1, Outcome: "nack", TraceID: trace('2'), SpanID: span('7')})
				h.event(m, model.Event{Time: ms(100), Kind: model.EventDeliver, Destination: "audit.orders", Service: "audit", Attempt: 2, TraceID: trace('2'), SpanID: span('8')})
				h.event(m, model.Event{Time: ms(101), Kind: model.EventProcess, Destination: "audit.orders", Service: "audit", Attempt: 2, Duration: 10 * time.Millisecond, Outcome: "error", TraceID: trace('2'), SpanID: span('9')})
				h.event(m, model.Event{Time: ms(112), Kind: model.EventSettle, Destination: "audit.orders", Service: "audit", Attempt: 2, Outcome: "reject", TraceID: trace('2'), SpanID: span('a')})
				h.event(m, model.Event{Time: ms(113), Kind: model.EventDeadLetter, Destination: "audit.orders", Reason: "rejected", TraceID: trace('2'), SpanID: span('b')})
			},
			want: TruthFlow{
				Name: "orders-fanout", Status: model.FlowDeadLettered, Start: ms(0), End: ms(113), Retries: 1, DeadLetters: 1,
				Hops: []TruthHop{
					{
						System: "rabbitmq", MessageID: "m2", ConsumerGroup: "audit", Producer: "checkout", Consumer: "audit",
						Destination: "audit.orders", QueueWait: 8 * time.Millisecond, Processing: 10 * time.Millisecond, Attempts: 2, Outcome: model.HopDeadLettered,
					},
					{
						System: "rabbitmq", MessageID: "m2", ConsumerGroup: "billing", Producer: "checkout", Consumer: "billing",
						Destination: "billing.orders", QueueWait: 5 * time.Millisecond, Processing: 30 * time.Millisecond, Attempts: 1, Outcome: model.HopAcked,
					},
				},
			},
		},
		{
			// Without a broker id the identity is the smallest span reference:
			// here the consumer's, in a new trace that sorts first.
			name: "links only",
			build: func(h *handFlow) {
				m := h.message("nats", "")
				pub := model.SpanRef{TraceID: trace('b'), SpanID: span('1')}
				h.event(m, model.Event{Time: ms(0), Kind: model.EventPublish, Destination: "signups", Service: "web", TraceID: pub.TraceID, SpanID: pub.SpanID, ParentSpanID: span('f')})
				h.event(m, model.Event{Time: ms(7), Kind: model.EventDeliver, Destination: "signups", Service: "mailer", TraceID: trace('a'), SpanID: span('2'), Links: []model.SpanRef{pub}})
				h.event(m, model.Event{Time: ms(8), Kind: model.EventProcess, Destination: "signups", Service: "mailer", Duration: 5 * time.Millisecond, TraceID: trace('a'), SpanID: span('3'), ParentSpanID: span('2')})
			},
			want: TruthFlow{
				Name: "web signups", Status: model.FlowCompleted, Start: ms(0), End: ms(13),
				Hops: []TruthHop{{
					System: "nats", MessageID: trace('a') + "-" + span('2'), ConsumerGroup: "mailer", Producer: "web", Consumer: "mailer",
					Destination: "signups", QueueWait: 7 * time.Millisecond, Processing: 5 * time.Millisecond, Attempts: 1, Outcome: model.HopAcked,
				}},
			},
		},
		{
			name: "expired before anyone received it",
			build: func(h *handFlow) {
				m := h.message("rabbitmq", "m4")
				h.event(m, model.Event{Time: ms(0), Kind: model.EventPublish, Destination: "invoices", Service: "billing", TraceID: trace('4'), SpanID: span('1')})
				h.event(m, model.Event{Time: ms(30_000), Kind: model.EventExpire, Destination: "invoices", Reason: "expired", TraceID: trace('4'), SpanID: span('2')})
			},
			want: TruthFlow{
				Name: "billing invoices", Status: model.FlowFailed, Start: ms(0), End: ms(30_000),
				Hops: []TruthHop{{System: "rabbitmq", MessageID: "m4", Producer: "billing", Destination: "invoices", Outcome: model.HopExpired}},
			},
		},
		{
			// The publish side is the lowest attempt's; DeliverTime the
			// earliest deliver even when a process started before it;
			// Processing the highest attempt's longest; the name the smallest
			// hint; the end a process end.
			name: "celery retry",
			build: func(h *handFlow) {
				m := h.message("celery", "t1")
				h.event(m, model.Event{Time: ms(0), Kind: model.EventPublish, Destination: "celery", Service: "web", FlowName: "zeta", TraceID: trace('5'), SpanID: span('1')})
				h.event(m, model.Event{Time: ms(10), Kind: model.EventProcess, Destination: "celery", Service: "worker", Attempt: 1, Duration: 5 * time.Millisecond, Outcome: "error", TraceID: trace('5'), SpanID: span('2')})
				h.event(m, model.Event{Time: ms(15), Kind: model.EventPublish, Destination: "celery", Service: "worker", Attempt: 2, TraceID: trace('5'), SpanID: span('3')})
				h.event(m, model.Event{Time: ms(3015), Kind: model.EventDeliver, Destination: "celery", Service: "worker", Attempt: 2, TraceID: trace('5'), SpanID: span('4')})
				h.event(m, model.Event{Time: ms(3016), Kind: model.EventProcess, Destination: "celery", Service: "worker", Attempt: 2, Duration: 100 * time.Millisecond, TraceID: trace('5'), SpanID: span('5')})
				h.event(m, model.Event{Time: ms(3016), Kind: model.EventProcess, Destination: "celery", Service: "worker", Attempt: 2, Duration: 200 * time.Millisecond, FlowName: "alpha", TraceID: trace('5'), SpanID: span('6')})
			},
			want: TruthFlow{
				Name: "alpha", Status: model.FlowCompleted, Start: ms(0), End: ms(3216), Retries: 1,
				Hops: []TruthHop{{
					System: "celery", MessageID: "t1", ConsumerGroup: "worker", Producer: "web", Consumer: "worker",
					Destination: "celery", QueueWait: 3015 * time.Millisecond, Processing: 200 * time.Millisecond, Attempts: 2, Outcome: model.HopAcked,
				}},
			},
		},
		{
			name: "delivered, never settled",
			build: func(h *handFlow) {
				m := h.message("rabbitmq", "m6")
				h.event(m, model.Event{Time: ms(0), Kind: model.EventPublish, Destination: "orders", Service: "checkout", TraceID: trace('6'), SpanID: span('1')})
				h.event(m, model.Event{Time: ms(40), Kind: model.EventDeliver, Destination: "billing.orders", Service: "billing", Attempt: 1, TraceID: trace('6'), SpanID: span('2')})
			},
			want: TruthFlow{
				Name: "checkout orders", Status: model.FlowStuck, Start: ms(0), End: ms(40),
				Hops: []TruthHop{{
					System: "rabbitmq", MessageID: "m6", ConsumerGroup: "billing", Producer: "checkout", Consumer: "billing",
					Destination: "billing.orders", QueueWait: 40 * time.Millisecond, Attempts: 1, Outcome: model.HopStuck,
				}},
			},
		},
		{
			name: "callback",
			build: func(h *handFlow) {
				m := h.message("http", "cb_1")
				h.event(m, model.Event{Time: ms(0), Kind: model.EventCallbackRequest, Destination: "/v1/exports", Service: "exports-api", TraceID: trace('7'), SpanID: span('1')})
				h.event(m, model.Event{Time: ms(5000), Kind: model.EventCallbackReceive, Service: "reporting", Duration: 120 * time.Millisecond, TraceID: trace('8'), SpanID: span('2')})
			},
			want: TruthFlow{
				Name: "exports-api /v1/exports", Status: model.FlowCompleted, Start: ms(0), End: ms(5120),
				Hops: []TruthHop{{
					System: "http", MessageID: "cb_1", ConsumerGroup: "reporting", Producer: "exports-api", Consumer: "reporting",
					Destination: "/v1/exports", QueueWait: 5 * time.Second, Processing: 120 * time.Millisecond, Attempts: 1, Outcome: model.HopAcked,
				}},
			},
		},
		{
			// A batch consumer span applies to each linked message on its own.
			name: "batch",
			build: func(h *handFlow) {
				first, second := h.message("redis", ""), h.message("redis", "")
				a := model.SpanRef{TraceID: trace('c'), SpanID: span('1')}
				b := model.SpanRef{TraceID: trace('d'), SpanID: span('1')}
				h.event(first, model.Event{Time: ms(0), Kind: model.EventPublish, Destination: "clicks", Service: "web-bff", TraceID: a.TraceID, SpanID: a.SpanID})
				h.event(second, model.Event{Time: ms(100), Kind: model.EventPublish, Destination: "clicks", Service: "ios-bff", TraceID: b.TraceID, SpanID: b.SpanID})
				h.events = append(h.events, genEvent{msgs: []int{first, second}, Event: model.Event{
					Time: ms(300), Kind: model.EventProcess, System: "redis", Destination: "clicks", Service: "loader", ConsumerGroup: "loaders",
					Duration: 50 * time.Millisecond, TraceID: trace('0'), SpanID: span('2'), Links: []model.SpanRef{a, b},
				}})
			},
			want: TruthFlow{
				Name: "web-bff clicks", Status: model.FlowCompleted, Start: ms(0), End: ms(350),
				Hops: []TruthHop{
					{
						System: "redis", MessageID: trace('c') + "-" + span('1'), ConsumerGroup: "loaders", Producer: "web-bff", Consumer: "loader",
						Destination: "clicks", QueueWait: 300 * time.Millisecond, Processing: 50 * time.Millisecond, Attempts: 1, Outcome: model.HopAcked,
					},
					{
						System: "redis", MessageID: trace('d') + "-" + span('1'), ConsumerGroup: "loaders", Producer: "ios-bff", Consumer: "loader",
						Destination: "clicks", QueueWait: 200 * time.Millisecond, Processing: 50 * time.Millisecond, Attempts: 1, Outcome: model.HopAcked,
					},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &handFlow{}
			tt.build(h)
			got := h.truth()
			require.Equal(t, tt.want.Hops, got.Hops)
			assert.Equal(t, tt.want.Name, got.Name)
			assert.Equal(t, tt.want.Status, got.Status)
			assert.True(t, tt.want.Start.Equal(got.Start), "start %s", got.Start)
			assert.True(t, tt.want.End.Equal(got.End), "end %s", got.End)
			assert.Equal(t, tt.want.Retries, got.Retries)
			assert.Equal(t, tt.want.DeadLetters, got.DeadLetters)
		})
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct {
		ev          model.Event
		wantKind    model.EventKind
		wantDest    string
		wantAttempt uint16
	}{
		{model.Event{Kind: model.EventDeliver, Destination: "orders"}, model.EventDeliver, "orders", 0},
		{model.Event{Kind: model.EventDeliver, Destination: "orders.retry.1"}, model.EventDeliver, "orders", 2},
		{model.Event{Kind: model.EventProcess, Destination: "shop.orders.retry.3", Attempt: 1}, model.EventProcess, "shop.orders", 4},
		{model.Event{Kind: model.EventDeliver, Destination: "orders.retry.x"}, model.EventDeliver, "orders.retry.x", 0},
		{model.Event{Kind: model.EventPublish, Destination: "orders.dlq"}, model.EventDeadLetter, "orders", 0},
		{model.Event{Kind: model.EventDeliver, Destination: "orders.dlq"}, model.EventDeliver, "orders.dlq", 0},
	}
	for _, tt := range tests {
		t.Run(string(tt.ev.Kind)+" "+tt.ev.Destination, func(t *testing.T) {
			kind, dest, attempt := normalize(tt.ev)
			assert.Equal(t, tt.wantKind, kind)
			assert.Equal(t, tt.wantDest, dest)
			assert.Equal(t, tt.wantAttempt, attempt)
		})
	}
}
