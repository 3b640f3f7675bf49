package rabbitmqtapreceiver

import (
	"context"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/flowtrace/flowtrace/receivers/rabbitmqtapreceiver/internal/metadata"
)

// TestLifecycle: Shutdown without Start and twice is fine, and a broker
// that is not there or does not answer does not hold Shutdown up.
func TestLifecycle(t *testing.T) {
	create := func(t *testing.T, cfg *Config) (start, shutdown func() error) {
		set := receivertest.NewNopSettings(metadata.Type)
		f := NewFactory()
		tr, err := f.CreateTraces(context.Background(), set, cfg, new(consumertest.TracesSink))
		require.NoError(t, err)
		mr, err := f.CreateMetrics(context.Background(), set, cfg, new(consumertest.MetricsSink))
		require.NoError(t, err)
		start = func() error {
			if err := tr.Start(context.Background(), componenttest.NewNopHost()); err != nil {
				return err
			}
			return mr.Start(context.Background(), componenttest.NewNopHost())
		}
		shutdown = func() error {
			if err := tr.Shutdown(context.Background()); err != nil {
				return err
			}
			return mr.Shutdown(context.Background())
		}
		return start, shutdown
	}

	t.Run("shutdown_without_start", func(t *testing.T) {
		_, shutdown := create(t, createDefaultConfig())
		require.NoError(t, shutdown())
		require.NoError(t, shutdown())
	})

	t.Run("closed_port", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		cfg := createDefaultConfig()
		cfg.Endpoint = "amqp://" + addr
		cfg.Management.Endpoint = "http://" + addr
		cfg.EnableTracing = true
		start, shutdown := create(t, cfg)
		require.NoError(t, start())
		require.NoError(t, shutdown())
		require.NoError(t, shutdown())
	})

	t.Run("silent_broker", func(t *testing.T) {
		// Accepts connections and never answers: the tap is in the AMQP
		// handshake when it is shut down.
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		accepted := make(chan struct{})
		var conns []net.Conn
		var mu sync.Mutex
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				if len(conns) == 0 {
					close(accepted)
				}
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
		t.Cleanup(func() {
			_ = l.Close()
			wg.Wait()
			for _, c := range conns {
				_ = c.Close()
			}
		})
		cfg := createDefaultConfig()
		cfg.Endpoint = "amqp://" + l.Addr().String()
		cfg.Management.Endpoint = ""
		start, shutdown := create(t, cfg)
		require.NoError(t, start())
		<-accepted
		require.NoError(t, shutdown())
	})
}
