package bus

import (
	"math"
	"runtime/debug"
	"testing"
)

func TestTuneGC(t *testing.T) {
	prevPercent := debug.SetGCPercent(100)
	prevLimit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(prevPercent)
		debug.SetMemoryLimit(prevLimit)
	})
	tests := []struct {
		name, gogc, gomemlimit string
		wantPercent            int
		wantLimit              bool
	}{
		{name: "defaults", wantPercent: DaemonGCPercent, wantLimit: true},
		{name: "GOGC set", gogc: "50", wantPercent: 100, wantLimit: true},
		{name: "GOMEMLIMIT set", gomemlimit: "1GiB", wantPercent: DaemonGCPercent},
		{name: "both set", gogc: "off", gomemlimit: "1GiB", wantPercent: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			debug.SetMemoryLimit(math.MaxInt64)
			t.Setenv("GOGC", tt.gogc)
			t.Setenv("GOMEMLIMIT", tt.gomemlimit)
			_, limit := TuneGC()
			if got := debug.SetGCPercent(100); got != tt.wantPercent {
				t.Errorf("GC percent %d, want %d", got, tt.wantPercent)
			}
			got := debug.SetMemoryLimit(-1)
			switch {
			case tt.wantLimit && (limit <= 0 || got != limit):
				t.Errorf("memory limit %d (TuneGC said %d), want a limit", got, limit)
			case tt.wantLimit && uint64(limit) > availableMemory():
				t.Errorf("memory limit %d above the memory available (%d)", limit, availableMemory())
			case !tt.wantLimit && got != math.MaxInt64:
				t.Errorf("memory limit %d, want none (GOMEMLIMIT set)", got)
			}
		})
	}
}
