package hub

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/kojibus/kojibus/bus/bustest"
)

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchClientEnv); spec != "" {
		os.Exit(benchClientMain(spec))
	}
	goleak.VerifyTestMain(m, bustest.LeakOptions()...)
}
