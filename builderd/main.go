// Command builderd is the kojibus build host daemon.
package main

import (
	"fmt"
	"os"
)

// The task engine arrives with Core II; until then builderd says so and exits non-zero.
func main() {
	fmt.Fprintln(os.Stderr, "builderd: the task engine is not built yet (Core II)")
	os.Exit(1)
}
