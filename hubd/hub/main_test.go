package hub

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/kojibus/kojibus/bus/bustest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, bustest.LeakOptions()...) }
