package cli

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// promptingProfile writes a profile for user with no password line.
func promptingProfile(t *testing.T, user string) string {
	t.Helper()
	h := startHub(t)
	if err := h.Admin.Call(context.Background(), "createUser", []any{user}, map[string]any{"password": "pw-" + user}, nil); err != nil {
		t.Fatal(err)
	}
	path := userProfile(t, h, user, "")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := regexp.MustCompile(`(?m)^password = .*\n`).ReplaceAllString(string(data), "")
	if strings.Contains(text, "password =") {
		t.Fatalf("profile still has a password:\n%s", text)
	}
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestProfileWithoutPasswordReadsItFromStdin(t *testing.T) {
	profile := promptingProfile(t, "alice")
	runSteps(t, profile, []step{
		{name: "password on stdin", args: []string{"--password-stdin", "hello"}, stdin: "pw-alice\n", out: []string{", alice!\n", "Authenticated via password\n"}},
		{name: "wrong password on stdin", args: []string{"--password-stdin", "hello"}, stdin: "nope\n", code: 1, errText: "invalid username or password"},
		{name: "nothing on stdin", args: []string{"--password-stdin", "hello"}, code: 1, errText: "no password on standard input"},
		{name: "no terminal to ask on", args: []string{"hello"}, stdin: "pw-alice\n", code: 1, errText: "profile [koji] has no password for alice: type it on a terminal, or give it with --password-stdin"},
		{name: "noauth needs none", args: []string{"--noauth", "hello"}, out: []string{", anonymous user!\n"}},
	})
}

// openPTY opens a pseudo-terminal pair (/dev/ptmx), as a user's terminal.
func openPTY(t *testing.T) (master, tty *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return master, tty
}

func TestProfileWithoutPasswordAsksOnTheTerminal(t *testing.T) {
	profile := promptingProfile(t, "alice")
	master, tty := openPTY(t)
	// Typed ahead: the terminal keeps the line until kojictl reads it.
	if _, err := master.WriteString("pw-alice\n"); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code := RunContext(ctx, []string{"-c", profile, "hello"}, tty, &out, &errb)
	if code != 0 || !strings.Contains(out.String(), ", alice!\n") {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	if errb.String() != "Password for alice: \n" {
		t.Fatalf("stderr %q, want the prompt", errb.String())
	}
}
