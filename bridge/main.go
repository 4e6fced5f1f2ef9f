// Command kojibridge mirrors kojibus events to AMQP 1.0 brokers as Koji's protonmsg does.
package main

import (
	"fmt"
	"os"
)

// Placeholder until the protonmsg bridge issue lands.
func main() {
	fmt.Fprintln(os.Stderr, "kojibridge: not built yet (protonmsg bridge issue)")
	os.Exit(1)
}
