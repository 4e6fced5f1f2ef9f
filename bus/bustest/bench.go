package bustest

import (
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kojibus/kojibus/bus"
)

// ProcessCPU is the processor time (user and system) this process has used,
// for benchmarks that report what an operation costs the machine.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// RunInFlight runs op n times with inFlight calls at a time and returns how
// many gave up with bus.ErrConflict (a write that lost too many
// compare-and-set rounds: counted, not fatal) and the first other error,
// which ends the worker that met it.
func RunInFlight(n, inFlight int, op func() error) (conflicts int64, err error) {
	var next, lost atomic.Int64
	var once sync.Once
	var wg sync.WaitGroup
	for range inFlight {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				switch e := op(); {
				case errors.Is(e, bus.ErrConflict):
					lost.Add(1)
				case e != nil:
					once.Do(func() { err = e })
					return
				}
			}
		})
	}
	wg.Wait()
	return lost.Load(), err
}
