package bus

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// DaemonGCPercent is the garbage collector's target for kojibus daemons.
// A hub, builder or bridge makes many short-lived allocations per message
// (JSON, NATS headers) on a small live heap, so Go's default of 100 spends a
// large share of the CPU collecting: 400 made the task engine about a fifth
// faster in the benchmarks. DaemonMemoryShare of the machine's (or the
// cgroup's) memory is a soft limit above which the collector runs as often
// as needed, so a large state still fits.
const (
	DaemonGCPercent   = 400
	DaemonMemoryShare = 0.5
)

// TuneGC sets the collector of a daemon process: DaemonGCPercent unless the
// GOGC environment variable says otherwise, and a soft memory limit of
// DaemonMemoryShare of the available memory unless GOMEMLIMIT does. It
// returns the percent and limit it set (0: left as configured).
func TuneGC() (percent int, limit int64) {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(DaemonGCPercent)
		percent = DaemonGCPercent
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if mem := availableMemory(); mem > 0 {
			limit = int64(float64(mem) * DaemonMemoryShare)
			debug.SetMemoryLimit(limit)
		}
	}
	return percent, limit
}

// availableMemory is the machine's memory, or the process's cgroup (v2)
// limit when that is lower; 0 when neither can be read.
func availableMemory() uint64 {
	var mem uint64
	var si syscall.Sysinfo_t
	if syscall.Sysinfo(&si) == nil {
		mem = uint64(si.Totalram) * uint64(si.Unit)
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && n > 0 && (mem == 0 || n < mem) {
			mem = n // "max" (no limit) does not parse
		}
	}
	return mem
}
