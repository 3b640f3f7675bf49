// Package brokertest finds the local brokers the tests talk to: RabbitMQ,
// NATS and Redis on loopback, as this project's machines run them.
package brokertest

import (
	"net"
	"os"
	"testing"
	"time"
)

// Addr returns the address of a local broker from the environment variable
// env, else def, and checks something listens there. When nothing does, the
// test fails under CI (CI=true), where the brokers are part of the machine,
// and is skipped elsewhere.
func Addr(t testing.TB, env, def string) string {
	t.Helper()
	addr := os.Getenv(env)
	if addr == "" {
		addr = def
	}
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("no broker at %s (%s): %v", addr, env, err)
		}
		t.Skipf("no broker at %s (set %s): %v", addr, env, err)
	}
	_ = conn.Close()
	return addr
}
