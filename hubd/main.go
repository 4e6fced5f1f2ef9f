// Command hubd is the kojibus hub. `hubd run-local` runs a hub and a
// builder for this machine (go tool task run).
package main

import (
	"os"

	"github.com/kojibus/kojibus/hubd/hub"
	"github.com/kojibus/kojibus/hubd/runlocal"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "run-local" {
		os.Exit(runlocal.Run(os.Args[2:], os.Stdout, os.Stderr))
	}
	os.Exit(hub.Run(os.Args[1:], os.Stderr))
}
