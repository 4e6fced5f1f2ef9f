package buildroot

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	MaybeInit()
	goleak.VerifyTestMain(m)
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// busyboxRoot is one busybox root filesystem shared (read-only, as a
// lower layer) by the tests of the package.
func busyboxRoot(t *testing.T) string {
	t.Helper()
	rootOnce.Do(func() {
		rootDir, rootErr = os.MkdirTemp("", "kojibus-busybox-")
		if rootErr == nil {
			rootErr = MakeBusyboxRoot(rootDir, BusyboxPath)
		}
	})
	if rootErr != nil {
		t.Fatalf("busybox root (go tool task deps installs busybox-static): %v", rootErr)
	}
	return rootDir
}

// layers returns a Spec with a private overlay over the busybox root.
func layers(t *testing.T) Spec {
	t.Helper()
	dir := t.TempDir()
	s := Spec{Lower: busyboxRoot(t), Upper: filepath.Join(dir, "upper"), Work: filepath.Join(dir, "work"), Root: filepath.Join(dir, "root"),
		NewChroot: true, InternalDev: true, Hostname: "buildroot", TeeLog: "/builddir/runroot.log",
		Env: []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/builddir"}}
	for _, d := range []string{s.Upper, s.Work, s.Root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// run runs spec to the end and returns its output, exit code and setup error.
func run(t *testing.T, ctx context.Context, spec Spec) (string, int, error) {
	t.Helper()
	p, err := Command("/proc/self/exe", spec)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p.Cmd.Stdout, p.Cmd.Stderr = &out, &out
	err = p.Cmd.Start()
	p.Started()
	if err != nil {
		t.Fatal(err)
	}
	stop := context.AfterFunc(ctx, func() { _ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM) })
	defer stop()
	werr := p.Cmd.Wait()
	if serr := p.SetupError(); serr != nil {
		return out.String(), -1, serr
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		code = ee.ExitCode()
	} else if werr != nil {
		t.Fatal(werr)
	}
	return out.String(), code, nil
}

func TestCommandRunsInNamespacesAndLeavesNothingMounted(t *testing.T) {
	spec := layers(t)
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "input.txt"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	spec.Mounts = []Mount{{Source: src, Target: "/mnt/src", Fstype: "none", Options: "bind"}}
	spec.Command = `echo hello; hostname; cat /mnt/src/input.txt; echo out > /mnt/src/written; ps -o pid,comm | wc -l; cat /proc/1/cmdline | tr '\0' ' '; echo; ls /dev/null /builddir; cat /tmp/runroot_mounts; exit 3`
	out, code, err := run(t, t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 3 || len(lines) < 7 || lines[0] != "hello" || lines[1] != "buildroot" || lines[2] != "from the host" {
		t.Fatalf("exit %d, output:\n%s", code, out)
	}
	// PID namespace: the init, sh, ps, wc and the header line only.
	if n := strings.TrimSpace(lines[3]); n != "5" && n != "4" {
		t.Errorf("processes seen inside (with header): %s\n%s", n, out)
	}
	if !strings.Contains(lines[4], initArg) {
		t.Errorf("PID 1 is %q, want the init", lines[4])
	}
	if !strings.Contains(out, "/dev/null") || !strings.Contains(out, spec.Root+"/mnt/src") {
		t.Errorf("no /dev/null or mount record:\n%s", out)
	}
	if b, err := os.ReadFile(filepath.Join(src, "written")); err != nil || string(b) != "out\n" {
		t.Errorf("write through the bind mount: %q %v", b, err)
	}
	// The tee'd log is in the overlay's upper layer; the lower is untouched.
	if b, err := os.ReadFile(filepath.Join(spec.Upper, "builddir/runroot.log")); err != nil || !strings.HasPrefix(string(b), "hello\n") {
		t.Errorf("runroot.log in the upper layer: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(busyboxRoot(t), "builddir/runroot.log")); err == nil {
		t.Error("the command wrote into the cached root")
	}
	if m := mountsUnder(filepath.Dir(spec.Root)); len(m) != 0 {
		t.Fatalf("mounts left on the host: %v", m)
	}
}

func TestSetupErrorsAreReported(t *testing.T) {
	spec := layers(t)
	spec.Command = "true"
	spec.Mounts = []Mount{{Source: "/nonexistent-kojibus", Target: "/mnt/x", Fstype: "none", Options: "bind"}}
	_, _, err := run(t, t.Context(), spec)
	var se *SetupErr
	if !errors.As(err, &se) || !strings.HasPrefix(se.Msg, "Unable to mount "+spec.Root+"/mnt/x: ") {
		t.Fatalf("err = %v", err)
	}
	// A symlink in the buildroot may not lead a mount out of it.
	spec = layers(t)
	spec.Command = "true"
	if err := os.Symlink("/etc", filepath.Join(spec.Upper, "escape")); err != nil {
		t.Fatal(err)
	}
	spec.Mounts = []Mount{{Source: t.TempDir(), Target: "/escape/x", Fstype: "none", Options: "bind"}}
	if _, _, err := run(t, t.Context(), spec); !errors.As(err, &se) || se.Msg != "read-write mount point is not safe: /escape/x" {
		t.Fatalf("symlinked mount point: %v", err)
	}
	if m := mountsUnder(filepath.Dir(spec.Root)); len(m) != 0 {
		t.Fatalf("mounts left on the host: %v", m)
	}
}

func TestTerminateKillsTheWholeTree(t *testing.T) {
	for _, newChroot := range []bool{true, false} {
		t.Run(map[bool]string{true: "new chroot", false: "old chroot"}[newChroot], func(t *testing.T) {
			spec := layers(t)
			spec.NewChroot = newChroot
			marker := t.TempDir()
			spec.Mounts = []Mount{{Source: marker, Target: "/mnt/m", Fstype: "none", Options: "bind"}}
			// A background child and a foreground sleep; writing the fifo
			// (which waits for this test to read it) says both run. Their
			// duration is unusual, so that the check for leftovers below
			// does not see other packages' sleeps running meanwhile.
			started := filepath.Join(marker, "started")
			if err := unix.Mkfifo(started, 0o600); err != nil {
				t.Fatal(err)
			}
			spec.Command = "sleep 7301 & echo $! > /mnt/m/bg; echo > /mnt/m/started; sleep 7301"
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan int, 1)
			go func() {
				_, code, _ := run(t, ctx, spec)
				done <- code
			}()
			running := make(chan error, 1)
			go func() {
				_, err := os.ReadFile(started) // returns once the command wrote and closed it
				running <- err
			}()
			select {
			case err := <-running:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(20 * time.Second):
				if w, err := os.OpenFile(started, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
					_ = w.Close() // lets the reader go
				}
				t.Fatal("command did not start")
			}
			cancel()
			select {
			case code := <-done:
				if code == 0 {
					t.Fatal("terminated command exited 0")
				}
			case <-time.After(20 * time.Second):
				t.Fatal("init did not end after SIGTERM")
			}
			if m := mountsUnder(filepath.Dir(spec.Root)); len(m) != 0 {
				t.Fatalf("mounts left on the host: %v", m)
			}
			out, _ := exec.Command("pgrep", "-f", "sleep 7301").Output()
			if len(bytes.TrimSpace(out)) != 0 {
				t.Fatalf("processes left: %s", out)
			}
		})
	}
}

func TestSafeJoin(t *testing.T) {
	root := t.TempDir()
	if err := os.Symlink("/", filepath.Join(root, "up")); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ path, want, err string }{
		{"/mnt/a", root + "/mnt/a", ""},
		{"mnt", "", "invalid mount point: mnt"},
		{"/mnt/../etc", "", "invalid mount point: /mnt/../etc"},
		{"/up/etc", "", "read-write mount point is not safe: /up/etc"},
	}
	for _, tc := range cases {
		got, err := SafeJoin(root, tc.path)
		if (err == nil) != (tc.err == "") || err != nil && err.Error() != tc.err || got != tc.want {
			t.Errorf("SafeJoin(%q) = %q, %v; want %q, %s", tc.path, got, err, tc.want, tc.err)
		}
	}
}

func TestLinux32Personality(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("runs on an x86_64 (amd64) host only: setarch i686 is its 32-bit personality")
	}
	spec := layers(t)
	spec.Command = "uname -m"
	spec.Linux32 = true
	out, code, err := run(t, t.Context(), spec)
	if err != nil || code != 0 || strings.TrimSpace(out) != "i686" {
		t.Fatalf("uname -m with the 32-bit personality: %q exit %d %v", out, code, err)
	}
}
