// Command builderd is the kojibus build host daemon.
package main

import (
	"os"

	"github.com/kojibus/kojibus/builderd/builder"
)

func main() { os.Exit(builder.Run(os.Args[1:], os.Stderr)) }
