package natstapreceiver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/flowtrace/flowtrace/receivers/internal/tap"
)

// refusing refuses the first refusals batches it is given (all of them
// when refusals is negative), then takes them.
type refusing struct {
	consumertest.TracesSink
	mu       sync.Mutex
	refusals int
	calls    int
}

func (r *refusing) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	r.mu.Lock()
	r.calls++
	refuse := r.refusals < 0 || r.calls <= r.refusals
	r.mu.Unlock()
	if refuse {
		return errors.New("queue full")
	}
	return r.TracesSink.ConsumeTraces(ctx, td)
}

func (r *refusing) callCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func coreConfig(t *testing.T, prefix string) *Config {
	cfg := createDefaultConfig()
	cfg.URL = localNATS(t)
	cfg.Subjects = []string{prefix + ".>"}
	return cfg
}

// streamConfig is a tap's config for one stream on the server at url.
func streamConfig(url, name string) *Config {
	cfg := createDefaultConfig()
	cfg.URL = url
	cfg.Streams = []StreamConfig{{Name: name}}
	return cfg
}

func publishCore(t *testing.T, nc *nats.Conn, prefix string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		m := nats.NewMsg(prefix + ".events")
		m.Header.Set(headerMsgID, fmt.Sprintf("%s-%d", prefix, i))
		m.Data = []byte("synthetic")
		require.NoError(t, nc.PublishMsg(m))
	}
	require.NoError(t, nc.Flush())
}

// TestRefusedSpansRetried has the pipeline refuse the first batches: they
// are sent again until taken, none is dropped.
func TestRefusedSpansRetried(t *testing.T) {
	prefix := uniqueName("ftrefuse")
	cfg := coreConfig(t, prefix)
	nc, _ := client(t, cfg.URL)
	sink := &refusing{refusals: 3}
	startTapWith(t, cfg, sink)

	publishCore(t, nc, prefix, 5)
	eventually(t, "every publish despite the refusals", func() bool { return sink.SpanCount() == 5 })
	assert.Greater(t, sink.callCount(), 3, "the refused batches were sent again")
	for i := 1; i <= 5; i++ {
		found := false
		for _, td := range sink.AllTraces() {
			rss := td.ResourceSpans()
			for j := 0; j < rss.Len(); j++ {
				spans := rss.At(j).ScopeSpans().At(0).Spans()
				for k := 0; k < spans.Len(); k++ {
					if spanMatches(spans.At(k), map[string]any{tap.AttrMessageID: fmt.Sprintf("%s-%d", prefix, i)}) {
						found = true
					}
				}
			}
		}
		assert.True(t, found, "message %d", i)
	}
}

// TestShutdownWhilePipelineRefuses stops a tap whose pipeline refuses
// everything: the retry ends with the tap, Shutdown returns.
func TestShutdownWhilePipelineRefuses(t *testing.T) {
	prefix := uniqueName("ftrefuseall")
	cfg := coreConfig(t, prefix)
	nc, _ := client(t, cfg.URL)
	sink := &refusing{refusals: -1}
	r := startTapWith(t, cfg, sink)

	publishCore(t, nc, prefix, 3)
	eventually(t, "a refused batch sent again", func() bool { return sink.callCount() >= 2 })
	require.NoError(t, r.tap.Shutdown(context.Background()))
	require.NoError(t, r.tap.Shutdown(context.Background()), "twice")
	assert.Zero(t, sink.SpanCount())
}
