package kafkatapreceiver

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// outageProxy stands between the tap and the broker: down cuts every
// connection and refuses new ones, up accepts them again on the same
// address. It injects the failure; the broker behind it is real.
type outageProxy struct {
	t       *testing.T
	addr    string // what the broker advertises, and the tap dials
	backend string // where the broker really listens

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newOutageProxy(t *testing.T) *outageProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &outageProxy{t: t, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}, ln: ln}
	t.Cleanup(func() {
		p.down()
		p.wg.Wait()
	})
	return p
}

// advertised is the broker's listener, naming the proxy as its address so
// the cluster's metadata sends clients through the proxy.
type advertised struct {
	net.Listener
	addr net.Addr
}

func (a advertised) Addr() net.Addr { return a.addr }

// listen is the cluster's ListenFn.
func (p *outageProxy) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	p.backend = ln.Addr().String()
	proxyAddr, err := net.ResolveTCPAddr("tcp", p.addr)
	if err != nil {
		return nil, err
	}
	return advertised{Listener: ln, addr: proxyAddr}, nil
}

// direct dials the broker itself, not the proxy: the application's clients
// keep working through the outage.
func (p *outageProxy) direct(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, p.backend)
}

func (p *outageProxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", p.backend)
			if err != nil {
				_ = client.Close()
				continue
			}
			p.mu.Lock()
			p.conns[client], p.conns[server] = struct{}{}, struct{}{}
			p.mu.Unlock()
			p.wg.Add(2)
			pipe := func(dst, src net.Conn) {
				defer p.wg.Done()
				_, _ = io.Copy(dst, src)
				_ = dst.Close()
				_ = src.Close()
			}
			go pipe(client, server)
			go pipe(server, client)
		}
	}()
}

// down closes the listener and every connection through the proxy.
func (p *outageProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

// start forwards connections, once the broker listens.
func (p *outageProxy) start() {
	p.serve(p.ln)
}

// up listens again on the proxy's address.
func (p *outageProxy) up() {
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(p.t, err)
	p.serve(ln)
}

// counter reads a tap counter's total.
func counter[N int64 | float64](t *testing.T, u *tapUnderTest, name string) N {
	t.Helper()
	m, err := u.tel.GetMetric(name)
	if err != nil {
		return 0
	}
	var total N
	for _, p := range m.Data.(metricdata.Sum[N]).DataPoints {
		total += p.Value
	}
	return total
}

// connected reads the flowtrace.tap.connected gauge: 1 while the tap has
// its broker, 0 once it noticed it lost it, -1 before it was recorded.
func connected(t *testing.T, u *tapUnderTest) int64 {
	t.Helper()
	m, err := u.tel.GetMetric("flowtrace.tap.connected")
	if err != nil {
		return -1
	}
	points := m.Data.(metricdata.Gauge[int64]).DataPoints
	require.Len(t, points, 1)
	return points[0].Value
}

// TestBrokerOutage cuts the tap from the broker mid-stream while the
// application keeps producing: the tap reconnects, counts the gap, and
// taps every record produced before, during and after the outage.
func TestBrokerOutage(t *testing.T) {
	run := runID()
	topic := "events-" + run
	proxy := newOutageProxy(t)
	newCluster(t, kfake.SeedTopics(1, topic), kfake.ListenFn(proxy.listen))
	proxy.start()

	cfg := testConfig([]string{proxy.addr}, topic)
	u := startTap(t, cfg)
	producer := newClient(t, []string{proxy.backend}, kgo.Dialer(proxy.direct))
	produce := func(n int) {
		for range n {
			require.NoError(t, producer.ProduceSync(context.Background(), &kgo.Record{Topic: topic, Value: []byte("{}")}).FirstErr())
		}
	}

	produce(5)
	u.waitSpans(t, 5)
	require.Zero(t, counter[int64](t, u, "flowtrace.tap.gaps"))
	require.EqualValues(t, 1, connected(t, u))

	proxy.down()
	produce(10)
	// The broker stays away until the tap has noticed.
	require.Eventually(t, func() bool { return connected(t, u) == 0 }, waitLimit, waitTick, "the tap did not notice the outage")
	proxy.up()
	produce(5)

	u.waitSpans(t, 20)
	require.Eventually(t, func() bool { return counter[int64](t, u, "flowtrace.tap.gaps") >= 1 }, waitLimit, waitTick)
	assert.Greater(t, counter[float64](t, u, "flowtrace.tap.gap_seconds"), 0.0)
	assert.EqualValues(t, 1, connected(t, u))

	// Every record, once: offsets 0 to 19.
	offsets := u.offsets(t)
	require.Len(t, offsets, 20)
	for offset := range int64(20) {
		assert.Equal(t, 1, offsets[offset], "offset %d", offset)
	}
}
