// Command kojibridge mirrors kojibus events to AMQP 1.0 brokers as Koji's protonmsg does.
package main

import (
	"os"

	"github.com/kojibus/kojibus/bridge/bridge"
)

func main() { os.Exit(bridge.Run(os.Args[1:], os.Stderr)) }
