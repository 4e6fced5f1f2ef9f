package integration

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bridge/rabbittest"
)

// runLocal is a `hubd run-local` process (what go tool task run calls).
type runLocal struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	errb   *syncBuffer
	exited chan struct{}
}

func startRunLocal(t *testing.T, data string, hubArgs ...string) *runLocal {
	t.Helper()
	r := &runLocal{out: &syncBuffer{}, errb: &syncBuffer{}, exited: make(chan struct{})}
	r.cmd = exec.Command(filepath.Join(binDir, "hubd"), append([]string{"run-local", "--data-dir", data, "--"}, hubArgs...)...)
	r.cmd.Env = filteredEnv()
	r.cmd.Stdout, r.cmd.Stderr = r.out, r.errb
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = r.cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		_ = r.cmd.Process.Kill()
		<-r.exited
		if t.Failed() {
			t.Logf("run-local stdout:\n%s\nstderr:\n%s", r.out.String(), r.errb.String())
		}
	})
	return r
}

// waitRunning waits for run-local's "kojibus is running" line.
func (r *runLocal) waitRunning(t *testing.T) {
	t.Helper()
	deadline := time.NewTimer(2 * time.Minute)
	defer deadline.Stop()
	for !strings.Contains(r.out.String(), "kojibus is running") {
		select {
		case <-r.out.Changed():
		case <-r.exited:
			t.Fatalf("run-local exited before it was running: %s", r.errb.String())
		case <-deadline.C:
			t.Fatal("run-local did not come up")
		}
	}
}

// stop sends Ctrl-C's SIGINT and waits for the exit code.
func (r *runLocal) stop(t *testing.T) int {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-r.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("run-local did not stop on SIGINT")
	}
	return r.cmd.ProcessState.ExitCode()
}

// procsUsing lists the live processes whose command line names dir.
func procsUsing(dir string) []string {
	entries, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(dir)) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat")); err == nil {
			if end := bytes.LastIndexByte(stat, ')'); end > 0 && bytes.HasPrefix(bytes.TrimSpace(stat[end+1:]), []byte("Z")) {
				continue // a zombie has exited
			}
		}
		out = append(out, e.Name()+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return out
}

func needBusybox(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("no /bin/busybox for the demo buildroot (go tool task deps installs busybox-static)")
	}
}

// TestRunLocalPortTaken: with the port taken, run-local fails at once,
// names the address and the reason, suggests --listen and leaves nothing running.
func TestRunLocalPortTaken(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()
	data := filepath.Join(t.TempDir(), "fresh")
	start := time.Now()
	r := startRunLocal(t, data, "--listen", addr)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("run-local still running with its port taken")
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("run-local took %s to fail, want < 2s", took)
	}
	if code := r.cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	for _, want := range []string{"cannot listen on " + addr, "address already in use", "--listen"} {
		if !strings.Contains(r.errb.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, r.errb.String())
		}
	}
	if left := procsUsing(data); len(left) > 0 {
		t.Errorf("processes left behind: %v", left)
	}
}

// TestRunLocalListenChanged: a second start with another --listen on the
// same data directory moves the saved profile (and the builder's
// credentials) to the new address; Ctrl-C stops both processes each time.
func TestRunLocalListenChanged(t *testing.T) {
	needBusybox(t)
	data := filepath.Join(t.TempDir(), "data")
	profile := filepath.Join(data, "kojictl.conf")
	for i, port := range []int{rabbittest.FreePort(t), rabbittest.FreePort(t)} {
		addr := "127.0.0.1:" + strconv.Itoa(port)
		r := startRunLocal(t, data, "--listen", addr)
		r.waitRunning(t)
		text, err := os.ReadFile(profile)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^server = nats://` + regexp.QuoteMeta(addr) + `$`).Match(text) {
			t.Fatalf("start %d: profile does not point at %s:\n%s", i, addr, text)
		}
		if out, errOut, code := RunCtl(t, "-c", profile, "hello"); code != 0 || !strings.Contains(out, "kojiadmin") {
			t.Fatalf("start %d: kojictl hello: exit %d\n%s%s", i, code, out, errOut)
		}
		// the builder's credentials follow too: it comes up ready
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _, _ := RunCtl(t, "-c", profile, "--quiet", "list-hosts", "--ready")
			if strings.TrimSpace(out) != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("start %d: no ready host at %s", i, addr)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if code := r.stop(t); code != 0 {
			t.Errorf("start %d: exit code %d after Ctrl-C, want 0", i, code)
		}
		if left := procsUsing(data); len(left) > 0 {
			t.Fatalf("start %d: processes left behind: %v", i, left)
		}
	}
}
