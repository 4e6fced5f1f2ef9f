package hub

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/kojibus/kojibus/bus/bustest"
)

func TestMain(m *testing.M) {
	bustest.MaybeClientProcess() // the test binary is the client process of benchmarks
	goleak.VerifyTestMain(m, bustest.LeakOptions()...)
}
