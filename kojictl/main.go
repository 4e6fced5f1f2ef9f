// Command kojictl is the kojibus command line client: Koji's verbs and
// options over NATS. All logic lives in package cli.
package main

import (
	"os"

	"github.com/kojibus/kojibus/kojictl/cli"
)

func main() { os.Exit(cli.Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }
