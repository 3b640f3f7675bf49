package chdb

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/flowtrace/flowtrace/storage/chstore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestDataSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	conn, err := Open(dir)
	require.NoError(t, err)
	require.NoError(t, conn.Exec(ctx, "CREATE TABLE kept (v String) ENGINE = MergeTree ORDER BY v", nil))
	require.NoError(t, conn.Exec(ctx, "INSERT INTO kept VALUES ('still here')", nil))
	require.NoError(t, conn.Close())
	require.NoError(t, conn.Close(), "close twice")

	conn, err = Open(dir)
	require.NoError(t, err)
	defer conn.Close()
	out, err := conn.Query(ctx, "SELECT v FROM kept", nil)
	require.NoError(t, err)
	assert.Equal(t, `{"v":"still here"}`+"\n", string(out))
}

func TestMergesRunAtLowerPriority(t *testing.T) {
	conn, err := Open(t.TempDir())
	require.NoError(t, err)
	defer conn.Close()
	out, err := conn.Query(context.Background(), "SELECT value FROM system.server_settings WHERE name = 'os_threads_nice_value_merge_mutate'", nil)
	require.NoError(t, err)
	assert.Equal(t, `{"value":"5"}`+"\n", string(out))
}

func TestOneSessionPerProcess(t *testing.T) {
	first, err := Open("")
	require.NoError(t, err)
	_, err = Open(t.TempDir())
	require.ErrorIs(t, err, ErrInUse)
	require.NoError(t, first.Close())
	second, err := Open("")
	require.NoError(t, err)
	require.NoError(t, second.Close())
}

func TestClosedSessionRefusesWork(t *testing.T) {
	conn, err := Open("")
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	require.ErrorIs(t, conn.Exec(context.Background(), "SELECT 1", nil), errClosed)
}

func TestParametersAreValues(t *testing.T) {
	conn, err := Open("")
	require.NoError(t, err)
	defer conn.Close()
	for _, value := range []string{`it's`, `back\slash`, `'; SELECT 1; --`, "tab\tnew\nline", `\'`} {
		// Params arrive escaped as in TabSeparated; see chstore.Params.
		escaped := strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`).Replace(value)
		out, err := conn.Query(context.Background(), "SELECT {v:String} AS v", chstore.Params{"v": escaped})
		require.NoError(t, err, value)
		var row struct{ V string }
		require.NoError(t, json.Unmarshal(out, &row), string(out))
		assert.Equal(t, value, row.V)
	}
}

func TestQueryErrorsComeBack(t *testing.T) {
	conn, err := Open("")
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Query(context.Background(), "SELECT nonsense(", nil)
	require.ErrorContains(t, err, "Syntax error")
}

// TestMissingLibrarySaysHowToGetIt runs this test binary again without the
// library and reads what it says.
func TestMissingLibrarySaysHowToGetIt(t *testing.T) {
	if os.Getenv("FLOWTRACE_CHILD") == "1" {
		return // never reached: the init stops the process first
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestMissingLibrarySaysHowToGetIt$")
	cmd.Env = append(os.Environ(), "FLOWTRACE_CHILD=1", "CHDB_LIB_PATH=/nonexistent/libchdb.so")
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	require.ErrorAs(t, err, &exitErr, string(out))
	assert.Equal(t, 1, exitErr.ExitCode())
	assert.Contains(t, string(out), "needs libchdb.so")
	assert.Contains(t, string(out), "/nonexistent/libchdb.so")
	assert.Contains(t, string(out), "make deps")
	assert.Contains(t, string(out), "npm pack @chdb/lib-linux-x64-gnu@26.5.3")
	assert.NotContains(t, string(out), "panic")
}

func TestVersion(t *testing.T) {
	version, err := Version()
	require.NoError(t, err)
	assert.Regexp(t, `^\d+\.\d+\.\d+`, version)
}
