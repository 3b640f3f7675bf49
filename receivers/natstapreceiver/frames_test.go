package natstapreceiver

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// frame is one message the tap reads: an ack or an advisory, as it came
// off the wire.
type frame struct {
	Subject string `json:"subject"`
	Data    string `json:"data"`
}

const framesFile = "frames.json"

// loadFrames reads the frames captured from a real server.
func loadFrames(tb testing.TB) []frame {
	tb.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", framesFile))
	require.NoError(tb, err)
	var frames []frame
	require.NoError(tb, json.Unmarshal(raw, &frames))
	require.NotEmpty(tb, frames)
	return frames
}

// TestCaptureFrames records the acks and advisories of a workload on the
// local server into testdata/frames.json, for the decoder's tests, fuzz
// seeds and benchmarks. It runs only with FLOWTRACE_NATS_CAPTURE=1; the
// message bodies are synthetic and never part of a frame.
func TestCaptureFrames(t *testing.T) {
	if os.Getenv("FLOWTRACE_NATS_CAPTURE") == "" {
		t.Skip("set FLOWTRACE_NATS_CAPTURE=1 to capture frames from the local server")
	}
	addr := localNATS(t)
	name := "CAPTURE"
	nc, js := client(t, addr)
	_ = js.DeleteStream(context.Background(), name)
	stream := createStream(t, js, name)
	ctx := context.Background()
	var mu sync.Mutex
	var frames []frame
	record := func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		frames = append(frames, frame{Subject: m.Subject, Data: string(m.Data)})
	}
	for _, subject := range []string{"$JS.ACK." + name + ".>", "$JS.EVENT.ADVISORY.CONSUMER.*." + name + ".*", "$JS.EVENT.METRIC.CONSUMER.ACK." + name + ".*"} {
		sub, err := nc.Subscribe(subject, record)
		require.NoError(t, err)
		t.Cleanup(func() { _ = sub.Unsubscribe() })
	}
	require.NoError(t, nc.Flush())
	workers, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 2, SampleFrequency: "100%"})
	require.NoError(t, err)
	for _, verb := range []string{"ack", "retry", "dead", "term", "progress", "next", "delay"} {
		_, err := js.Publish(ctx, name+".orders."+verb, []byte("synthetic"))
		require.NoError(t, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		batch, err := workers.Fetch(10, jetstream.FetchMaxWait(300*time.Millisecond))
		require.NoError(t, err)
		n := 0
		for m := range batch.Messages() {
			n++
			md, _ := m.Metadata()
			switch subjectVerb(m.Subject()) {
			case "ack":
				require.NoError(t, m.Ack())
			case "retry":
				if md.NumDelivered == 1 {
					require.NoError(t, m.Nak())
				} else {
					require.NoError(t, m.DoubleAck(ctx))
				}
			case "dead":
				require.NoError(t, m.Nak())
			case "term":
				require.NoError(t, m.Term())
			case "progress":
				require.NoError(t, m.InProgress())
				require.NoError(t, m.Ack())
			case "next":
				require.NoError(t, nc.Publish(m.Reply(), []byte("+NXT")))
			case "delay":
				if md.NumDelivered == 1 {
					require.NoError(t, m.NakWithDelay(10*time.Millisecond))
				} else {
					require.NoError(t, m.Ack())
				}
			}
		}
		if n == 0 {
			break
		}
	}
	require.NoError(t, nc.Flush())
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	out, err := json.MarshalIndent(frames, "", "  ")
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join("testdata", framesFile), append(out, '\n'), 0o644))
	t.Logf("captured %d frames", len(frames))
}
