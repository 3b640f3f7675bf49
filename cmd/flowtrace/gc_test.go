package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	eightGiB := func() uint64 { return 8 << 30 }

	gc, limit := tuneGC(getenv, eightGiB)
	assert.Equal(t, 400, gc)
	assert.Equal(t, int64(4<<30), limit)
	assert.Equal(t, 400, debug.SetGCPercent(100), "applied")
	assert.Equal(t, int64(4<<30), debug.SetMemoryLimit(-1))

	env["GOGC"], env["GOMEMLIMIT"] = "100", "1GiB"
	debug.SetMemoryLimit(1 << 30)
	gc, limit = tuneGC(getenv, eightGiB)
	assert.Zero(t, gc, "the operator's GOGC wins")
	assert.Zero(t, limit, "the operator's GOMEMLIMIT wins")
	assert.Equal(t, int64(1<<30), debug.SetMemoryLimit(-1))

	delete(env, "GOMEMLIMIT")
	_, limit = tuneGC(getenv, func() uint64 { return 0 })
	assert.Zero(t, limit, "no limit when the memory is unknown")
}

func TestAvailableMemory(t *testing.T) {
	assert.Positive(t, availableMemory(), "this machine's memory")

	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		return path
	}
	assert.Equal(t, uint64(24*1024*1024*1024), memTotal(write("meminfo", "MemTotal:       25165824 kB\nMemFree: 1 kB\n")))
	assert.Zero(t, memTotal(write("garbage", "MemTotal: lots\n")))
	assert.Equal(t, uint64(2<<30), cgroupLimit(write("memory.max", "2147483648\n")))
	assert.Zero(t, cgroupLimit(write("unlimited", "max\n")))
	assert.Zero(t, cgroupLimit(filepath.Join(dir, "missing")))
}
