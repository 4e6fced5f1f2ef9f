// Package buildroot makes buildroots and runs commands in them, without
// mock: a cached root filesystem (lower) under a private writable overlay,
// entered by a re-executed builderd ("init") in new Linux namespaces (mount
// always; pid, ipc and uts for a new chroot), with /proc, /dev, /builddir,
// the requested mounts, and chroot. Every mount is made inside the init's
// private mount namespace, recorded, and undone deepest first when the
// command ends; should the init be killed, the kernel drops the namespace
// and its mounts with it, so the host never sees one.
package buildroot

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initArg is argv[1] of the re-executed builderd that sets a buildroot up.
const initArg = "__kojibus_buildroot_init"

// Mount is one mount inside the buildroot, as `mount -t Fstype -o Options
// Source <root>Target` (Koji's runroot mounts).
type Mount struct {
	Source  string `json:"source"`
	Target  string `json:"target"`
	Fstype  string `json:"fstype"`
	Options string `json:"options"`
}

// Spec is what the init needs: the layers, the mounts and the command.
type Spec struct {
	// Lower is the cached root filesystem (read-only); Upper and Work the
	// overlay's private writable layer; Root where the merged tree is mounted.
	Lower string `json:"lower"`
	Upper string `json:"upper"`
	Work  string `json:"work"`
	Root  string `json:"root"`
	// NewChroot adds pid, ipc and uts namespaces (mock's --new-chroot);
	// false is a plain chroot in a private mount namespace.
	NewChroot bool `json:"new_chroot"`
	// InternalDev makes a private /dev (tmpfs with the usual nodes); false
	// binds the host's /dev.
	InternalDev bool    `json:"internal_dev"`
	Mounts      []Mount `json:"mounts"`
	// MountLog, a host path, receives one line per mount command (Koji's do_mounts.log).
	MountLog string `json:"mount_log,omitempty"`
	Hostname string `json:"hostname,omitempty"`
	// Linux32 runs the command with the 32-bit personality (setarch).
	Linux32 bool `json:"linux32,omitempty"`
	// Command runs as /bin/sh -c Command in /builddir, stdin /dev/null,
	// stdout and stderr to the init's stdout and to TeeLog inside the root.
	Command string   `json:"command"`
	TeeLog  string   `json:"tee_log,omitempty"`
	Env     []string `json:"env,omitempty"`
}

// MountsRecord is where, inside the root, the init records what it mounted
// (Koji's /tmp/runroot_mounts).
const MountsRecord = "/tmp/runroot_mounts"

// setupFailed is the init's exit code when the buildroot could not be set
// up; the reason is on the error pipe.
const setupFailed = 125

// Process is a buildroot run: the re-executed builderd that sets the
// buildroot up and runs the command. The caller sets Cmd's output, starts
// it with Start and, after Cmd.Wait, asks SetupError.
type Process struct {
	Cmd        *exec.Cmd
	errR, errW *os.File
}

// Command prepares spec's run: self (normally /proc/self/exe, builderd)
// re-executed as the init in new namespaces, in a process group of its own,
// killed if builderd dies.
func Command(self string, spec Spec) (*Process, error) {
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, initArg, string(data))
	cmd.ExtraFiles = []*os.File{w} // fd 3 in the init: its setup error
	flags := uintptr(unix.CLONE_NEWNS)
	if spec.NewChroot {
		flags |= unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}
	return &Process{Cmd: cmd, errR: r, errW: w}, nil
}

// Started closes the parent's copy of the error pipe's write end; call it
// right after Cmd.Start (whether or not Start succeeded).
func (p *Process) Started() { _ = p.errW.Close() }

// SetupError reads the init's error pipe after it exited: nil when the
// setup succeeded (the exit code is then the command's).
func (p *Process) SetupError() error {
	defer func() { _ = p.errR.Close() }()
	b, _ := io.ReadAll(p.errR)
	if len(b) == 0 {
		return nil
	}
	return &SetupErr{Msg: strings.TrimSpace(string(b))}
}

// SetupErr is a failure to set the buildroot up, with Koji's message.
type SetupErr struct{ Msg string }

func (e *SetupErr) Error() string { return e.Msg }

// MaybeInit runs the init when this process was re-executed as one; it
// never returns then. Call it first thing in main (and TestMain).
func MaybeInit() {
	if len(os.Args) < 3 || os.Args[1] != initArg {
		return
	}
	var spec Spec
	errOut := os.NewFile(3, "errpipe")
	if err := json.Unmarshal([]byte(os.Args[2]), &spec); err != nil {
		fmt.Fprintf(errOut, "bad buildroot spec: %v", err)
		os.Exit(setupFailed)
	}
	code, err := runInit(spec)
	if err != nil {
		fmt.Fprint(errOut, err.Error())
		os.Exit(setupFailed)
	}
	os.Exit(code)
}

// runInit sets the buildroot up, runs the command and undoes the mounts.
func runInit(spec Spec) (int, error) {
	// Nothing mounted here may propagate to the host, whatever the host's
	// propagation (systemd marks / shared).
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return 0, fmt.Errorf("make mounts private: %w", err)
	}
	defer unmountAll(spec.Root)
	mount := func(src, dst, fstype string, flags uintptr, data string) error {
		if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
			return fmt.Errorf("Unable to mount %s: %w", dst, err)
		}
		return nil
	}
	root := spec.Root
	if spec.Lower != "" {
		opts := "lowerdir=" + escapeOverlay(spec.Lower) + ",upperdir=" + escapeOverlay(spec.Upper) + ",workdir=" + escapeOverlay(spec.Work)
		if err := mount("overlay", root, "overlay", 0, opts); err != nil {
			return 0, err
		}
	}
	for _, d := range []string{"proc", "dev", "builddir", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return 0, fmt.Errorf("buildroot /%s: %w", d, err)
		}
	}
	_ = os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	if err := mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return 0, err
	}
	if err := setupDev(root, spec.InternalDev, mount); err != nil {
		return 0, err
	}
	// Network is on, as in Koji: the host's resolver configuration.
	if b, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		_ = os.Remove(filepath.Join(root, "etc/resolv.conf"))
		_ = os.WriteFile(filepath.Join(root, "etc/resolv.conf"), b, 0o644)
	}
	record, err := os.OpenFile(filepath.Join(root, MountsRecord), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return 0, fmt.Errorf("mount record: %w", err)
	}
	defer func() { _ = record.Close() }()
	var mlog io.Writer = io.Discard
	if spec.MountLog != "" {
		if f, err := os.OpenFile(spec.MountLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err == nil {
			defer func() { _ = f.Close() }()
			mlog = f
		}
	}
	for _, m := range spec.Mounts {
		target, err := SafeJoin(root, m.Target)
		if err != nil {
			return 0, err
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			return 0, fmt.Errorf("Unable to mount %s: %w", target, err)
		}
		args := []string{"-t", m.Fstype}
		if m.Options != "" {
			args = append(args, "-o", m.Options)
		}
		args = append(args, m.Source, target)
		fmt.Fprintf(mlog, "Mount command: %q\n", append([]string{"mount"}, args...))
		out, err := exec.Command("mount", args...).CombinedOutput()
		_, _ = mlog.Write(out)
		if err != nil {
			return 0, fmt.Errorf("Unable to mount %s: %s", target, strings.TrimSpace(fmt.Sprintf("mount exited: %v %s", err, out)))
		}
		fmt.Fprintln(record, target)
	}
	if spec.NewChroot && spec.Hostname != "" {
		_ = unix.Sethostname([]byte(spec.Hostname))
	}
	return runCommand(spec)
}

// runCommand runs the command chrooted, passing SIGTERM on, and returns
// its exit code (128+signal when killed).
func runCommand(spec Spec) (int, error) {
	if spec.Linux32 {
		// The personality is the thread's and passes to the child forked
		// from it: keep this goroutine on its thread until Start.
		runtime.LockOSThread()
		if _, _, errno := unix.Syscall(unix.SYS_PERSONALITY, perLinux32, 0, 0); errno != 0 {
			return 0, fmt.Errorf("setarch: %w", errno)
		}
	}
	cmd := exec.Command("/bin/sh", "-c", spec.Command)
	cmd.Dir = "/builddir"
	cmd.Env = spec.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: spec.Root}
	var out io.Writer = os.Stdout
	if spec.TeeLog != "" {
		if f, err := os.Create(filepath.Join(spec.Root, spec.TeeLog)); err == nil {
			defer func() { _ = f.Close() }()
			out = io.MultiWriter(os.Stdout, f)
		}
	}
	cmd.Stdout, cmd.Stderr = out, out
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("run %s: %w", spec.Command, err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-sigs:
			// As PID 1 of the namespace, kill(-1) reaches every process in it.
			if spec.NewChroot {
				_ = syscall.Kill(-1, syscall.SIGKILL)
			} else {
				_ = cmd.Process.Kill()
			}
		case <-done:
		}
	}()
	err := cmd.Wait()
	close(done)
	if spec.NewChroot {
		_ = syscall.Kill(-1, syscall.SIGKILL) // background leftovers go too
	}
	if code, ok := ExitCode(err); ok {
		return code, nil
	}
	return 0, err
}

// ExitCode reads a command's Wait error as a shell does: 0 for nil, the
// exit status, or 128+signal when it was killed; false when err is not
// about how the command ended.
func ExitCode(err error) (int, bool) {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, true
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), true
		}
		return ee.ExitCode(), true
	}
	return 0, false
}

// perLinux32 is PER_LINUX32 of <linux/personality.h>, what setarch i686 sets.
const perLinux32 = 0x0008

// setupDev gives the buildroot a /dev: a private tmpfs with the usual
// nodes (mock's internal_dev_setup), or the host's /dev bound.
func setupDev(root string, internal bool, mount func(src, dst, fstype string, flags uintptr, data string) error) error {
	dev := filepath.Join(root, "dev")
	if !internal {
		return mount("/dev", dev, "", unix.MS_BIND|unix.MS_REC, "")
	}
	if err := mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID, "mode=755"); err != nil {
		return err
	}
	for _, n := range []struct {
		name         string
		major, minor uint32
	}{{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}} {
		if err := unix.Mknod(filepath.Join(dev, n.name), unix.S_IFCHR|0o666, int(unix.Mkdev(n.major, n.minor))); err != nil {
			return fmt.Errorf("/dev/%s: %w", n.name, err)
		}
	}
	for _, l := range [][2]string{{"/proc/self/fd", "fd"}, {"/proc/self/fd/0", "stdin"}, {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}} {
		_ = os.Symlink(l[0], filepath.Join(dev, l[1]))
	}
	for _, d := range []string{"pts", "shm"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	if err := mount("devpts", filepath.Join(dev, "pts"), "devpts", unix.MS_NOSUID|unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620"); err != nil {
		return err
	}
	_ = os.Symlink("pts/ptmx", filepath.Join(dev, "ptmx"))
	return mount("tmpfs", filepath.Join(dev, "shm"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777")
}

// unmountAll undoes the mounts deepest first: everything under root in
// mountinfo, in reverse mount order (a path mounted twice comes off twice),
// lazily when a mount is busy; what mountinfo lists is the whole record.
func unmountAll(root string) {
	for range 3 {
		left := mountsUnder(root)
		if len(left) == 0 {
			return
		}
		for _, m := range left {
			if err := unix.Unmount(m, 0); err != nil {
				_ = unix.Unmount(m, unix.MNT_DETACH)
			}
		}
	}
}

// mountsUnder lists the mount points at or below root, newest first.
func mountsUnder(root string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	type mnt struct {
		id   int
		path string
	}
	var out []mnt
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 {
			continue
		}
		p := unescapeMountinfo(f[4])
		if p == root || strings.HasPrefix(p, root+"/") {
			var id int
			_, _ = fmt.Sscanf(f[0], "%d", &id)
			out = append(out, mnt{id, p})
		}
	}
	// Newer mounts (higher ids) sit on top of older ones; deeper paths of
	// the same age come off first.
	sort.Slice(out, func(i, j int) bool {
		if out[i].id != out[j].id {
			return out[i].id > out[j].id
		}
		return len(out[i].path) > len(out[j].path)
	})
	paths := make([]string, len(out))
	for i, m := range out {
		paths[i] = m.path
	}
	return paths
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 is a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &c); err == nil {
				b.WriteByte(byte(c))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// escapeOverlay escapes the characters overlayfs options treat specially.
func escapeOverlay(p string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`).Replace(p)
}

// SafeJoin joins path under root, refusing a path whose components inside
// root are symlinks (which could lead a mount out of the buildroot) or that
// climbs out with "..".
func SafeJoin(root, path string) (string, error) {
	if !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("invalid mount point: %s", path)
	}
	clean := filepath.Clean(path)
	if clean != path && clean+"/" != path || strings.Contains(path, "/../") || strings.HasSuffix(path, "/..") {
		return "", fmt.Errorf("invalid mount point: %s", path)
	}
	cur := root
	for _, part := range strings.Split(strings.Trim(clean, "/"), "/") {
		if part == "" {
			continue
		}
		cur = filepath.Join(cur, part)
		fi, err := os.Lstat(cur)
		if errors.Is(err, os.ErrNotExist) {
			break // made by MkdirAll, as directories
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			return "", fmt.Errorf("read-write mount point is not safe: %s", path)
		}
	}
	return filepath.Join(root, clean), nil
}
