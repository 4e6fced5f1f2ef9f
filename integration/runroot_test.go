package integration

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
)

// runrootStack is a hub with Plugins = runroot_hub, a builderd with the
// runroot plugin in the runroot channel, runroot.conf with a default mount
// and a safe root, and a tag demo-build whose buildroots come from a
// busybox root filesystem.
type runrootStack struct {
	h        *Hub
	b        *BuilderProc
	hostRoot string // what /mnt/kojitest is bound from
	arch     string
}

func hostArch() string {
	if runtime.GOARCH == "amd64" {
		return "x86_64"
	}
	if runtime.GOARCH == "arm64" {
		return "aarch64"
	}
	return runtime.GOARCH
}

func runrootSetup(t *testing.T) *runrootStack {
	t.Helper()
	dir := t.TempDir()
	hubConf := filepath.Join(dir, "hub.conf")
	if err := os.WriteFile(hubConf, []byte("[hub]\nPlugins = runroot_hub\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &runrootStack{hostRoot: t.TempDir(), arch: hostArch()}
	for _, d := range []string{"default", "safe/work"} {
		if err := os.MkdirAll(filepath.Join(s.hostRoot, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(s.hostRoot, "default/motd"), []byte("default mount here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	plugins := filepath.Join(dir, "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := "[paths]\ndefault_mounts = /mnt/kojitest/default\nsafe_roots = /mnt/kojitest/safe\n\n" +
		"[path0]\nmountpoint = /mnt/kojitest\npath = " + s.hostRoot + "\nfstype = none\noptions = ro,bind\n"
	if err := os.WriteFile(filepath.Join(plugins, "runroot.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	s.h = StartHub(t, "--config", hubConf)
	creds, id := s.h.AddHost(t, "rr1", 4, s.arch)
	ctl(t, s.h, "add-host-to-channel", "--new", "rr1", "runroot")
	s.b = StartBuilder(t, "rr1", creds, id, "--plugin", "runroot", "--plugin-config-dir", plugins)
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command(filepath.Join(binDir, "builderd"), "--make-busybox-root", rootfs).CombinedOutput(); err != nil {
		t.Fatalf("builderd --make-busybox-root: %v\n%s", err, out)
	}
	ctl(t, s.h, "add-tag", "--arches", s.arch, "-x", "kojibus.rootfs="+rootfs, "demo-build")
	return s
}

// hostMounts lists the host's mounts below dir.
func hostMounts(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.HasPrefix(f[4], dir) {
			out = append(out, f[4])
		}
	}
	return out
}

func TestRunrootThroughKojictl(t *testing.T) {
	s := runrootSetup(t)
	h := s.h
	if err := os.WriteFile(filepath.Join(s.hostRoot, "safe/work/in.txt"), []byte("input from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// No repo yet: the task waits for one (a waitrepo subtask) and runs.
	// The default mount is there read-only, the requested one read-write.
	out, errOut, code := h.Ctl(t, "runroot", "--use-shell", "-m", "/mnt/kojitest/safe/work", "demo-build", s.arch,
		"echo hello | tr a-z A-Z; cat /mnt/kojitest/default/motd; touch /mnt/kojitest/default/x || echo default is read-only;",
		"cat /mnt/kojitest/safe/work/in.txt; echo result > /mnt/kojitest/safe/work/out.txt; hostname; pwd")
	want := "HELLO\ndefault mount here\n"
	if code != 0 || !strings.HasPrefix(out, want) || !strings.Contains(out, "default is read-only\ninput from the host\nbuildroot-") || !strings.HasSuffix(out, "/builddir\n") {
		t.Fatalf("runroot: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	if b, err := os.ReadFile(filepath.Join(s.hostRoot, "safe/work/out.txt")); err != nil || string(b) != "result\n" {
		t.Fatalf("write through the requested mount: %q %v", b, err)
	}

	// A list command is quoted word by word; --use-shell lets the shell parse it.
	out, errOut, code = h.Ctl(t, "runroot", "demo-build", s.arch, "echo", "a  b", "$HOME", "it's")
	if code != 0 || out != "a  b $HOME it's\n" {
		t.Fatalf("list command: exit %d %q %s", code, out, errOut)
	}
	out, _, code = h.Ctl(t, "runroot", "--use-shell", "demo-build", s.arch, "echo", "$HOME")
	if code != 0 || out != "/builddir\n" {
		t.Fatalf("--use-shell: exit %d %q", code, out)
	}

	// The other options: --nowait --task-id, -w, --repo-id, --watch, and
	// the chroot kinds.
	out, _, code = h.Ctl(t, "runroot", "--nowait", "--task-id", "-w", "3", "demo-build", s.arch, "true")
	id := strings.TrimSpace(out)
	if code != 0 || strings.Contains(id, "\n") || id == "" {
		t.Fatalf("--nowait --task-id: exit %d %q", code, out)
	}
	if _, errOut, code := h.Ctl(t, "watch-task", "--quiet", id); code != 0 {
		t.Fatalf("watch-task %s: %d %s", id, code, errOut)
	}
	var info struct {
		Weight float64 `json:"weight"`
	}
	if err := json.Unmarshal([]byte(ctl(t, h, "call", "--json-output", "getTaskInfo", id)), &info); err != nil || info.Weight != 3 {
		t.Fatalf("-w 3: task weight %v %v", info.Weight, err)
	}
	var repo struct {
		ID int64 `json:"id"`
	}
	if err := json.Unmarshal([]byte(ctl(t, h, "call", "--json-output", "getRepo", "demo-build")), &repo); err != nil || repo.ID == 0 {
		t.Fatalf("getRepo: %v", err)
	}
	// PID 1 is the buildroot's init in a new chroot (own pid namespace),
	// the host's in an old one.
	pid1 := "tr '\\0' ' ' < /proc/1/cmdline; echo"
	out, _, code = h.Ctl(t, "runroot", "--repo-id", strconv.FormatInt(repo.ID, 10), "--use-shell", "demo-build", s.arch, pid1)
	if code != 0 || !strings.Contains(out, "__kojibus_buildroot_init") {
		t.Fatalf("--repo-id, new chroot: exit %d %q", code, out)
	}
	out, _, code = h.Ctl(t, "runroot", "--old-chroot", "--use-shell", "demo-build", s.arch, pid1)
	if code != 0 || strings.Contains(out, "__kojibus_buildroot_init") || strings.TrimSpace(out) == "" {
		t.Fatalf("--old-chroot: exit %d %q (want the host's PID 1)", code, out)
	}
	out, _, code = h.Ctl(t, "runroot", "--watch", "demo-build", s.arch, "true")
	if code != 0 || !strings.Contains(out, "runroot") || !strings.Contains(out, "closed") {
		t.Fatalf("--watch: exit %d\n%s", code, out)
	}

	// noarch runs on the tag's arch the host has.
	out, _, code = h.Ctl(t, "runroot", "demo-build", "noarch", "uname", "-m")
	if code != 0 || strings.TrimSpace(out) != runtime.GOARCH && strings.TrimSpace(out) != s.arch {
		t.Fatalf("noarch: exit %d %q", code, out)
	}

	// A failing command: its output (then the builder's note of the
	// failure), exit status 1, the task FAILED with Koji's parseStatus text,
	// the tree kept for save-failed-tree.
	out, _, code = h.Ctl(t, "runroot", "--task-id", "demo-build", s.arch, "sh", "-c", "echo failing; exit 3")
	lines := strings.SplitN(out, "\n", 2)
	if code != 1 || len(lines) != 2 || lines[1] != "failing\ntask failed: BuildrootError: sh exited with status 3\n" {
		t.Fatalf("failing command: exit %d %q", code, out)
	}
	failedID := strings.TrimSpace(lines[0])
	out, errOut, code = h.Ctl(t, "taskinfo", failedID)
	if code != 0 || !strings.Contains(out, "State: failed") {
		t.Fatalf("taskinfo %s: %d\n%s%s", failedID, code, out, errOut)
	}
	res, resErr, _ := h.Ctl(t, "call", "getTaskResult", failedID)
	if !strings.Contains(res+resErr, "BuildrootError: sh exited with status 3") {
		t.Fatalf("failed task's result: %s", res+resErr)
	}
	var brs []bus.Buildroot
	out = ctl(t, h, "call", "--json-output", "listBuildroots", "taskID="+failedID)
	if err := json.Unmarshal([]byte(out), &brs); err != nil || len(brs) != 1 || brs[0].State != bus.BuildrootExpired || brs[0].Extra["path"] == nil {
		t.Fatalf("buildroot record of the failed task: %v\n%s", err, out)
	}
	tree := brs[0].Extra["path"].(string)
	if _, err := os.Stat(filepath.Join(tree, "upper/builddir/runroot.log")); err != nil {
		t.Fatalf("failed buildroot tree not kept: %v", err)
	}

	// Refused before anything is mounted, with Koji's messages.
	for _, tc := range []struct{ mount, msg string }{
		{"/etc", "read-write mount point is not safe: /etc"},
		{"/mnt/kojitest/safe/../default", "read-write mount point is not safe: /mnt/kojitest/default"},
	} {
		out, errOut, code = h.Ctl(t, "runroot", "-m", tc.mount, "demo-build", s.arch, "true")
		if code != 1 || !strings.Contains(out+errOut, tc.msg) {
			t.Fatalf("-m %s: exit %d\n%s%s", tc.mount, code, out, errOut)
		}
	}
	if err := os.Symlink("/etc", filepath.Join(s.hostRoot, "safe/link")); err != nil {
		t.Fatal(err)
	}
	out, errOut, code = h.Ctl(t, "runroot", "-m", "/mnt/kojitest/safe/link", "demo-build", s.arch, "true")
	if code != 1 || !strings.Contains(out+errOut, "read-write mount point is not safe: /mnt/kojitest/safe/link") {
		t.Fatalf("mount through a symlink: exit %d\n%s%s", code, out, errOut)
	}

	// Permission: a user without runroot is refused.
	admin := h.AdminClient(t)
	if err := admin.Call(t.Context(), "createUser", []any{"dev"}, map[string]any{"password": "dev-secret-pw"}, nil); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = RunCtl(t, "-c", h.WriteProfile(t, "dev", "dev-secret-pw"), "runroot", "demo-build", s.arch, "true")
	if code != 1 || !strings.Contains(errOut, "runroot permission required (logged in as dev)") {
		t.Fatalf("runroot without permission: exit %d %s", code, errOut)
	}

	// Nothing stays mounted; only the failed tree stays on disk.
	if m := hostMounts(t, s.b.WorkDir); len(m) != 0 {
		t.Fatalf("mounts left on the host: %v", m)
	}
	trees, _ := os.ReadDir(filepath.Join(s.b.WorkDir, "buildroots"))
	if len(trees) != 1 || filepath.Join(s.b.WorkDir, "buildroots", trees[0].Name()) != tree {
		t.Fatalf("buildroot trees left: %v (want only %s)", trees, tree)
	}
}

// Ctrl-C on kojictl runroot cancels the task: the command's processes are
// killed, nothing stays mounted and the tree is removed. The output is
// printed live: "started" arrives while the command still runs.
func TestRunrootInterruptCancels(t *testing.T) {
	s := runrootSetup(t)
	ctl(t, s.h, "regen-repo", "demo-build")
	cmd := exec.Command(filepath.Join(binDir, "kojictl"), "-c", s.h.Profile, "runroot", "--use-shell", "demo-build", s.arch,
		"echo started; sleep 4242 & sleep 4243")
	cmd.Env = append(filteredEnv(), "HOME="+t.TempDir())
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	deadline := time.After(60 * time.Second)
	for !strings.Contains(out.String(), "started\n") {
		select {
		case <-out.Changed():
		case <-deadline:
			t.Fatalf("no live output:\n%s\nbuilder:\n%s", out.String(), s.b.Log())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out.String(), "User interrupt: canceling runroot task") {
		t.Fatalf("interrupted runroot: %v\n%s", err, out.String())
	}
	// The run has ended when builderd says so: by then the handler has
	// removed the tree and the init's namespace, processes and mounts with
	// it, is gone.
	s.b.WaitLog(t, `msg="run ended: task taken away by the hub"`, 30*time.Second)
	pg, _ := exec.Command("pgrep", "-f", "sleep 424[23]").Output()
	trees, _ := os.ReadDir(filepath.Join(s.b.WorkDir, "buildroots"))
	if len(bytes.TrimSpace(pg)) != 0 || len(trees) != 0 || len(hostMounts(t, s.b.WorkDir)) != 0 {
		t.Fatalf("after cancel: processes %q, trees %v, mounts %v", pg, trees, hostMounts(t, s.b.WorkDir))
	}
}

// A real Debian buildroot: mmdebstrap with the tag's build group packages,
// and a command that needs one of them.
func TestRunrootDebianBuildroot(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: mmdebstrap takes half a minute (run without -short, as CI does)")
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		t.Fatal("mmdebstrap is not installed (go tool task deps installs it)")
	}
	s := runrootSetup(t)
	ctl(t, s.h, "add-tag", "--arches", s.arch, "-x", "kojibus.rootfs.debian=bookworm", "deb-build")
	ctl(t, s.h, "add-group", "deb-build", "build")
	ctl(t, s.h, "add-group-pkg", "deb-build", "build", "make")
	// The first run bootstraps the root (half a minute here; more on a slow mirror).
	out, errOut, code := RunCtlTimeout(t, 10*time.Minute, "-c", s.h.Profile, "runroot", "deb-build", s.arch, "make", "--version")
	if code != 0 || !strings.HasPrefix(out, "GNU Make ") {
		t.Fatalf("make in the Debian buildroot: exit %d\n%s%s\nbuilder:\n%s", code, out, errOut, s.b.Log())
	}
	// --package installs into this buildroot only (apt-get, network on).
	out, errOut, code = RunCtlTimeout(t, 5*time.Minute, "-c", s.h.Profile, "runroot", "--package", "hello", "deb-build", s.arch, "hello")
	if code != 0 || out != "Hello, world!\n" {
		t.Fatalf("--package hello: exit %d\n%s%s", code, out, errOut)
	}
	if _, _, code = s.h.Ctl(t, "runroot", "deb-build", s.arch, "hello"); code != 1 {
		t.Fatalf("hello without --package: exit %d, want 1 (not in the cached root)", code)
	}
}
