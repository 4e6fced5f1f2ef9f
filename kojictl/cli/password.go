package cli

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/kojibus/kojibus/bus"
)

// profilePassword fills in the password of a password profile that names a
// user but holds none, so that no password need be written in the file:
// from standard input with --password-stdin, else asked on the terminal.
// With --noauth the connection is anonymous instead.
func (a *app) profilePassword(p *bus.Profile) error {
	if p.AuthType != "password" || p.User == "" || p.Password != "" {
		return nil
	}
	switch {
	case a.noauth:
		p.AuthType = "noauth"
		return nil
	case a.passwordStdin:
		pw, err := readPasswordLine(a.stdin)
		if err != nil {
			return err
		}
		p.Password = pw
		return nil
	}
	f, ok := a.stdin.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return failf("profile [%s] has no password for %s: type it on a terminal, or give it with --password-stdin", p.Name, p.User)
	}
	fmt.Fprintf(a.stderr, "Password for %s: ", p.User)
	pw, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(a.stderr)
	if err != nil {
		return fmt.Errorf("read password: %w", err)
	}
	p.Password = string(pw)
	return nil
}

// readPasswordLine reads a password, the first line of r (--password-stdin).
func readPasswordLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		if err != nil {
			return "", failf("no password on standard input: %v", err)
		}
		return "", failf("no password on standard input")
	}
	return line, nil
}
