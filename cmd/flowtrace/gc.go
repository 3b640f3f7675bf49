package main

import (
	"bufio"
	"bytes"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Garbage collection defaults. flowtrace allocates for every span it reads
// and row it writes; at Go's default GOGC of 100 the collector's work takes
// a fifth of the CPU under load. A GOGC of 400 cuts that to a few percent,
// and a soft memory limit at half the memory available (the container's
// limit, or the machine's) makes the collector work harder before the
// memory_limiter processor, at 60 %, starts refusing data. GOGC and
// GOMEMLIMIT, when set, win.
const defaultGCPercent = 400

// tuneGC applies the defaults that getenv leaves unset, and returns what it
// set for the log: the GC percent (0 if untouched) and the memory limit in
// bytes (0 if untouched or unknown).
func tuneGC(getenv func(string) string, availableMemory func() uint64) (gcPercent int, memoryLimit int64) {
	if getenv("GOGC") == "" {
		gcPercent = defaultGCPercent
		debug.SetGCPercent(gcPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		if total := availableMemory(); total > 0 && total < 1<<62 {
			memoryLimit = int64(total / 2)
			debug.SetMemoryLimit(memoryLimit)
		}
	}
	return gcPercent, memoryLimit
}

// availableMemory is the least of the machine's memory and the cgroup's
// limit (v2, then v1); 0 when none can be read.
func availableMemory() uint64 {
	var least uint64
	consider := func(v uint64) {
		if v > 0 && (least == 0 || v < least) {
			least = v
		}
	}
	consider(memTotal("/proc/meminfo"))
	consider(cgroupLimit("/sys/fs/cgroup/memory.max"))
	consider(cgroupLimit("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
	return least
}

// memTotal reads MemTotal (in kB) from a meminfo file, in bytes.
func memTotal(path string) uint64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	s := bufio.NewScanner(bytes.NewReader(data))
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}

// cgroupLimit reads a cgroup memory limit in bytes; 0 for none ("max").
func cgroupLimit(path string) uint64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0
	}
	return v
}
