package rabbitmqtapreceiver

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"
)

// TestCaptureFrames records the firehose frames of a synthetic workload on
// the local broker into testdata/frames.jsonl, for the decoder tests,
// fuzz seeds and benchmarks: FLOWTRACE_CAPTURE=1 go test -run
// TestCaptureFrames ./receivers/rabbitmqtapreceiver/
func TestCaptureFrames(t *testing.T) {
	if os.Getenv("FLOWTRACE_CAPTURE") == "" {
		t.Skip("set FLOWTRACE_CAPTURE=1 to capture frames from the local broker")
	}
	p := uniquePrefix("capture")
	api := testAPI(managementAddr(t))
	defer api.client.CloseIdleConnections()
	_, err := api.setTracing(context.Background(), "/", true)
	require.NoError(t, err)
	_, ch := dial(t)
	capture, err := ch.QueueDeclare(p+"capture", false, true, false, false, nil)
	require.NoError(t, err)
	for _, key := range []string{"publish.#", "deliver.#"} {
		require.NoError(t, ch.QueueBind(capture.Name, key, traceExchange, false, nil))
	}
	frames, err := ch.Consume(capture.Name, "", true, false, false, false, nil)
	require.NoError(t, err)

	_, w := dial(t)
	declareWorkload(t, "/", w, p)
	publish := func(queue string, msg amqp.Publishing) {
		require.NoError(t, w.PublishWithContext(context.Background(), "", queue, false, false, msg))
	}
	for i := range 100 {
		msg := amqp.Publishing{
			ContentType: "application/json", Timestamp: time.Unix(1795000000+int64(i), 0), Priority: uint8(i % 3),
			Body: fmt.Appendf(nil, `{"n":%d}`, i),
			Headers: amqp.Table{"tenant": "acme", "attempt": int32(1), "flags": []any{"a", int64(2)},
				"nested": amqp.Table{"k": true, "ratio": 0.5}},
		}
		if i%10 < 7 {
			msg.MessageId = fmt.Sprintf("%smsg-%d", p, i)
		}
		if i%4 == 0 {
			msg.CorrelationId = fmt.Sprintf("%sc-%d", p, i/4)
		}
		if i%3 == 0 {
			msg.Headers["traceparent"] = fmt.Sprintf("00-4bf92f3577b34da6a3ce929d0e0e%04x-00f067aa0ba902b7-01", i)
		}
		publish(p+"audit", msg)
	}
	for i := range 40 {
		id := fmt.Sprintf("%04x0000-1111-2222-3333-444455556666", i)
		root := fmt.Sprintf("%04x0000-1111-2222-3333-444455556666", i-i%2)
		var parent any
		if i%2 == 1 {
			parent = root
		}
		publish(p+"orders", amqp.Publishing{
			ContentType: "application/json", ContentEncoding: "utf-8", CorrelationId: id, DeliveryMode: 2,
			ReplyTo: "9b1d2f3e-0000-3567-9286-8026fd1114ed",
			Body:    fmt.Appendf(nil, `[[%d], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]`, i),
			Headers: amqp.Table{"lang": "py", "task": "shop.charge", "id": id, "root_id": root, "parent_id": parent,
				"retries": int64(i % 3), "eta": nil, "expires": nil, "group": nil, "group_index": nil,
				"shadow": nil, "argsrepr": fmt.Sprintf("(%d,)", i), "kwargsrepr": "{}", "origin": "gen1@localhost",
				"ignore_result": false, "timelimit": []any{nil, nil}},
		})
	}
	for i := range 40 {
		publish(p+"work", amqp.Publishing{MessageId: fmt.Sprintf("%swork-%d", p, i), Body: fmt.Appendf(nil, `{"w":%d}`, i)})
	}

	_, c := dial(t)
	require.NoError(t, c.Qos(1, 0, false))
	work, err := c.Consume(p+"work", "", false, false, false, false, nil)
	require.NoError(t, err)
	for i := 0; i < 40; i++ {
		d := next(t, work)
		switch {
		case i < 20:
			require.NoError(t, d.Nack(false, true))
			require.NoError(t, next(t, work).Ack(false))
		default:
			require.NoError(t, d.Reject(false))
		}
	}
	for q, n := range map[string]int{p + "audit": 100, p + "orders": 40, p + "dead": 20} {
		ds, err := c.Consume(q, "", false, false, false, false, nil)
		require.NoError(t, err)
		for range n {
			require.NoError(t, next(t, ds).Ack(false))
		}
	}

	want := 100*2 + 40*2 + 20*3 + 20*2 + 20
	out, err := os.Create(frameRecordFile)
	require.NoError(t, err)
	defer out.Close()
	enc := json.NewEncoder(out)
	for n := 0; n < want; {
		select {
		case d := <-frames:
			if !strings.Contains(d.RoutingKey, p) && !strings.Contains(fmt.Sprint(d.Headers["routing_keys"]), p) {
				continue // another client's traffic
			}
			headers, err := tag(d.Headers)
			require.NoError(t, err)
			raw, err := json.Marshal(headers)
			require.NoError(t, err)
			require.NoError(t, enc.Encode(capturedFrame{RoutingKey: d.RoutingKey, Exchange: d.Exchange, Headers: raw, Body: string(d.Body)}))
			n++
		case <-time.After(10 * time.Second):
			t.Fatalf("captured %d frames of %d", n, want)
		}
	}
}
