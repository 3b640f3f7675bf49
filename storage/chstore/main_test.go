package chstore_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/storage/chdb"
	"github.com/flowtrace/flowtrace/storage/chstore"
)

// engine is the process's one embedded ClickHouse session. Tests isolate
// themselves by database, not by session: chDB allows one session per process.
var engine chstore.Conn

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "chstore-test-")
	if err != nil {
		panic(err)
	}
	engine, err = chdb.Open(dir)
	if err != nil {
		panic(err)
	}
	code := m.Run()
	engine.Close()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString("goleak: " + err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
