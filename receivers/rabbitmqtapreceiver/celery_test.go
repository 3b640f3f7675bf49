package rabbitmqtapreceiver

import (
	"bytes"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const python = "/usr/bin/python3"

// celeryApp is a Celery application with a chain's two tasks; the first
// fails once and retries.
const celeryApp = `import os
from celery import Celery

app = Celery("app", broker=os.environ["FT_BROKER"])
app.conf.task_default_queue = os.environ["FT_QUEUE"]
app.conf.worker_hijack_root_logger = False
app.conf.broker_connection_retry_on_startup = True


@app.task(bind=True, max_retries=3)
def charge(self, order):
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    return order


@app.task
def ship(order):
    return order
`

// TestCeleryChain runs a real Celery worker: a chain of two tasks whose
// first retries once is one flow of two hops with one retry.
func TestCeleryChain(t *testing.T) {
	t.Parallel()
	if err := exec.Command(python, "-c", "import celery").Run(); err != nil {
		t.Skipf("python3-celery is not installed: %v", err)
	}
	// A vhost of its own: Celery declares exchanges of its own
	// (celery.pidbox, one named after its queue), all deleted with it.
	vhost := privateVHost(t, "celery")
	rt := startTap(t, "celery", func(cfg *Config) { cfg.VHosts = []string{vhost} })
	p := rt.prefix
	queue := p + "tasks"
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "app.py"), []byte(celeryApp), 0o600))
	env := append(os.Environ(), "FT_BROKER=amqp://guest:guest@"+amqpAddr(t)+"/"+url.PathEscape(vhost), "FT_QUEUE="+queue, "PYTHONDONTWRITEBYTECODE=1")

	var workerLog bytes.Buffer
	worker := exec.Command(python, "-m", "celery", "-A", "app", "worker", "--pool=solo", "-Q", queue,
		"-n", "flowtrace-test-"+p+"@localhost", "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=INFO")
	worker.Dir, worker.Env = dir, env
	worker.Stdout, worker.Stderr = &workerLog, &workerLog
	require.NoError(t, worker.Start())
	t.Cleanup(func() {
		_ = worker.Process.Kill()
		_ = worker.Wait()
		if t.Failed() {
			t.Logf("celery worker:\n%s", workerLog.String())
		}
	})

	produce := exec.Command(python, "-c", `from app import charge, ship
from celery import chain
chain(charge.s(17), ship.s()).apply_async()
`)
	produce.Dir, produce.Env = dir, env
	out, err := produce.CombinedOutput()
	require.NoError(t, err, "%s", out)

	want := []string{"completed retries=1 dead_letters=0 hops=2 [celery/app.charge@tasks:acked:2 celery/app.ship@tasks:acked:1]"}
	assertFlows(t, rt.traces, p, 50*time.Second, want)

	// The second task's hop was published from the first's.
	hops := flowHops(t, spansOf(rt.traces, p))
	require.Len(t, hops, 2)
	byOp := map[string]string{}
	for _, h := range hops {
		byOp[h.Operation] = h.HopID
	}
	for _, h := range hops {
		if h.Operation == "app.ship" {
			assert.Equal(t, byOp["app.charge"], h.ParentHopID)
		}
	}
}
