package bustest

import (
	"syscall"
	"time"
)

// ProcessCPU is the processor time (user and system) this process has used,
// for benchmarks that report what an operation costs the machine.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
