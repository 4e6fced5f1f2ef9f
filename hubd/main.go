// Command hubd is the kojibus hub.
package main

import (
	"os"

	"github.com/kojibus/kojibus/hubd/hub"
)

func main() { os.Exit(hub.Run(os.Args[1:], os.Stderr)) }
