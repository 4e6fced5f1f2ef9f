package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readmeBlock is a ```sh block of README.md.
type readmeBlock struct {
	line int    // of the opening fence
	skip string // the reason of a <!-- readme-test: skip (...) --> before it
	text string
}

// readmeBlocks extracts README.md's shell blocks in order.
func readmeBlocks(t *testing.T) []readmeBlock {
	t.Helper()
	data, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []readmeBlock
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != "```sh" {
			continue
		}
		b := readmeBlock{line: i + 1}
		if i > 0 {
			if reason, ok := strings.CutPrefix(strings.TrimSpace(lines[i-1]), "<!-- readme-test: skip"); ok {
				b.skip = strings.TrimSuffix(strings.TrimSpace(reason), "-->")
			}
		}
		var body []string
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
			body = append(body, lines[i])
		}
		b.text = strings.Join(body, "\n")
		blocks = append(blocks, b)
	}
	return blocks
}

// commands turns a block into a script and the output it shows: in a
// block of "$ command" lines, the other lines are the output shown.
func (b readmeBlock) commands() (script string, shown []string) {
	if !strings.HasPrefix(strings.TrimSpace(b.text), "$ ") {
		return b.text, nil
	}
	var cmds []string
	for _, l := range strings.Split(b.text, "\n") {
		if c, ok := strings.CutPrefix(l, "$ "); ok {
			cmds = append(cmds, c)
		} else if strings.TrimSpace(l) != "" {
			shown = append(shown, l)
		}
	}
	return strings.Join(cmds, "\n"), shown
}

// TestReadmeBlocks runs README.md's shell blocks in order, as a new user
// would after `go tool task run` on a fresh data directory (hubd run-local
// with its builder), in a directory with bin/ and .kojibus/, KOJIBUS_CONFIG
// and PATH set as the README says. Only blocks marked
// <!-- readme-test: skip (...) --> are left out.
func TestReadmeBlocks(t *testing.T) {
	needBusybox(t)
	work := t.TempDir()
	data := filepath.Join(work, ".kojibus")
	if err := os.Symlink(binDir, filepath.Join(work, "bin")); err != nil {
		t.Fatal(err)
	}
	r := startRunLocal(t, data, "--listen", "127.0.0.1:-1")
	r.waitRunning(t)
	env := append(filteredEnv(), "KOJIBUS_CONFIG="+filepath.Join(data, "kojictl.conf"), "PATH="+filepath.Join(work, "bin")+":"+os.Getenv("PATH"))
	ran := 0
	for _, b := range readmeBlocks(t) {
		if b.skip != "" {
			t.Logf("README.md:%d skipped: %s", b.line, b.skip)
			continue
		}
		script, shown := b.commands()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
		cmd.Dir, cmd.Env = work, env
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("README.md:%d: %v\n%s\noutput:\n%s", b.line, err, script, out)
		}
		for _, want := range shown {
			if strings.Contains(want, "nats://") {
				continue // the test's hub listens on a port of its own
			}
			if _, who, ok := strings.Cut(want, ", "); ok && strings.HasSuffix(want, "!") {
				want = ", " + who // hello greets in a language picked at random, as koji's
			}
			if !strings.Contains(string(out), want) {
				t.Errorf("README.md:%d: output lacks %q:\n%s", b.line, want, out)
			}
		}
		ran++
	}
	if ran < 6 {
		t.Fatalf("ran %d README blocks: the README's blocks were not found", ran)
	}
	if code := r.stop(t); code != 0 {
		t.Errorf("run-local exit code %d after Ctrl-C", code)
	}
	if left := procsUsing(data); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
}
