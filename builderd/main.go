// Command builderd is the kojibus build host daemon.
package main

import (
	"os"

	"github.com/kojibus/kojibus/builderd/builder"
	"github.com/kojibus/kojibus/builderd/internal/buildroot"
)

func main() {
	buildroot.MaybeInit() // builderd re-executed to enter a buildroot
	os.Exit(builder.Run(os.Args[1:], os.Stderr))
}
