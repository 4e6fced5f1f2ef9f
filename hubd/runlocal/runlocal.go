// Package runlocal is `hubd run-local` (what `go tool task run` calls): it
// starts hubd and one builderd for this machine on a data directory, says
// what it does one line per step with the noise kept in logs there, and
// stops both on Ctrl-C. Any failure stops what it started before it returns,
// so nothing is left running.
package runlocal

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
	"github.com/kojibus/kojibus/kojictl/cli"
)

// The files run-local writes once into a fresh data directory.
const (
	// hub.conf: the sidetag and runroot plugins with the seed's example
	// policy (at most 10 sidetags per user, on every base tag); edit it,
	// then SIGHUP hubd.
	hubConf = `[hub]
Plugins = sidetag_hub runroot_hub

[policy]
sidetag =
    compare number_of_tags < 10 :: allow
    all :: deny
tag =
    is_sidetag_owner :: allow
    is_sidetag_owner fromtag :: allow
    has_perm admin tag :: allow
    all :: deny
`
	sidetagConf = "[sidetag]\nremove_empty = true\n"
	// runroot.conf (Koji's format): no extra mounts in the demo.
	runrootConf = "# see docs/runroot.md; builderd reads it at start: restart it after an edit\n[paths]\n"
)

// startTimeout bounds the wait for the hub's first answer.
const startTimeout = 60 * time.Second

// stopTimeout is how long a process gets after SIGTERM before SIGKILL.
const stopTimeout = 15 * time.Second

// runner is one run-local invocation.
type runner struct {
	stdout, stderr io.Writer
	bin            string // directory of hubd and builderd
	data           string
	hubArgs        []string
	procs          []*proc
}

// proc is a child process and its exit.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// Run is `hubd run-local [--data-dir DIR] [--bin DIR] [-- hubd options]` and returns the exit code.
func Run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubd run-local", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data-dir", "./.kojibus", "data directory of the hub and the builder")
	bin := fs.String("bin", "", "directory holding hubd and builderd (default: this program's)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *bin == "" {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintf(stderr, "run-local: %v\n", err)
			return 1
		}
		*bin = filepath.Dir(exe)
	}
	abs, err := filepath.Abs(*data)
	if err != nil {
		fmt.Fprintf(stderr, "run-local: %v\n", err)
		return 1
	}
	r := &runner{stdout: stdout, stderr: stderr, bin: *bin, data: abs, hubArgs: fs.Args()}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err = r.run(ctx)
	r.stopAll()
	switch {
	case err == nil || (errors.Is(err, context.Canceled) && ctx.Err() != nil):
		fmt.Fprintln(stdout, "stopped hubd and builderd")
		return 0
	default:
		fmt.Fprintf(stderr, "run-local: %v\n", err)
		return 1
	}
}

// step prints what is being done, one line.
func (r *runner) step(format string, args ...any) {
	fmt.Fprintf(r.stdout, "- "+format+"\n", args...)
}

func (r *runner) run(ctx context.Context) error {
	r.step("data directory %s", r.data)
	if err := r.writeConfigs(); err != nil {
		return err
	}
	hub, err := r.start("hubd", append([]string{"--data-dir", r.data, "--config", r.path("hub.conf"),
		"--plugin-config-dir", r.path("plugins")}, r.hubArgs...)...)
	if err != nil {
		return err
	}
	if err := r.waitHub(ctx, hub); err != nil {
		return err
	}
	if err := r.demoRoot(ctx); err != nil {
		return err
	}
	host, arch, err := r.registerHost(ctx)
	if err != nil {
		return err
	}
	builder, err := r.start("builderd", "--creds", r.path("builder.creds"), "--workdir", r.path("builder"),
		"--plugin", "runroot", "--plugin-config-dir", r.path("plugins"))
	if err != nil {
		return err
	}
	ctl := filepath.Join(r.bin, "kojictl") + " -c " + r.path("kojictl.conf")
	fmt.Fprintf(r.stdout, "\nkojibus is running: hubd and builderd (%s, %s), data and logs in %s. Ctrl-C stops both.\nIn another terminal, try:\n\n", host, arch, r.data)
	for _, c := range []string{"hello", "list-hosts", "make-task --watch sleep 2", "list-tasks", "watch-events --follow",
		"runroot demo-build " + arch + " echo hello"} {
		fmt.Fprintf(r.stdout, "    %s %s\n", ctl, c)
	}
	fmt.Fprintln(r.stdout)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-hub.done:
		return r.exited(hub)
	case <-builder.done:
		return r.exited(builder)
	}
}

func (r *runner) path(name string) string { return filepath.Join(r.data, name) }

// writeConfigs writes the demo's hub.conf and plugin configs when missing.
func (r *runner) writeConfigs() error {
	if err := os.MkdirAll(r.path("plugins"), 0o700); err != nil {
		return err
	}
	for name, text := range map[string]string{"hub.conf": hubConf, "plugins/sidetag.conf": sidetagConf, "plugins/runroot.conf": runrootConf} {
		p := r.path(name)
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// start runs a program of r.bin in its own process group (Ctrl-C reaches
// only run-local, which stops it), its output in <data>/<name>.log, and
// killed by the kernel should run-local die first.
func (r *runner) start(name string, args ...string) (*proc, error) {
	logPath := r.path(name + ".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "=== %s %s\n", time.Now().UTC().Format(time.RFC3339), name)
	cmd := exec.Command(filepath.Join(r.bin, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	r.step("starting %s (log: %s)", name, logPath)
	// Pdeathsig follows the thread that started the child: keep it alive.
	runtime.LockOSThread()
	err = cmd.Start()
	if err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	r.procs = append(r.procs, p)
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// exited reports a child that ended on its own, with the last lines of its log.
func (r *runner) exited(p *proc) error {
	return fmt.Errorf("%s exited (%v); the end of %s:\n%s", p.name, p.err, p.log, lastLines(p.log, 3))
}

// stopAll sends SIGTERM to every child still running, then SIGKILL after stopTimeout.
func (r *runner) stopAll() {
	for i := len(r.procs) - 1; i >= 0; i-- {
		p := r.procs[i]
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// waitHub waits until the hub answers with its profile, or fails as soon as hubd exits.
func (r *runner) waitHub(ctx context.Context, hub *proc) error {
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(r.path("kojictl.conf")); err == nil {
			if _, err := r.ctl(ctx, "--quiet", "hello"); err == nil {
				r.step("hubd answers (profile: %s)", r.path("kojictl.conf"))
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-hub.done:
			return r.exited(hub)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("hubd did not answer within %s; see %s", startTimeout, hub.log)
		}
	}
}

// ctl runs a kojictl command in-process with the hub's profile.
func (r *runner) ctl(ctx context.Context, args ...string) (string, error) {
	var out, errb bytes.Buffer
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	code := cli.RunContext(cctx, append([]string{"-c", r.path("kojictl.conf")}, args...), strings.NewReader(""), &out, &errb)
	if code != 0 {
		return out.String(), fmt.Errorf("kojictl %s: %s", strings.Join(args, " "), strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// demoRoot makes the busybox root the demo tag's buildroots come from,
// installing busybox-static with apt-get when it is missing.
func (r *runner) demoRoot(ctx context.Context) error {
	root := r.path("demo-rootfs")
	if _, err := os.Stat(filepath.Join(root, "bin")); err == nil {
		return nil
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		r.step("installing busybox-static with apt-get (log: %s)", r.path("setup.log"))
		if err := r.runLogged(ctx, "apt-get", "update", "-q"); err != nil {
			return err
		}
		if err := r.runLogged(ctx, "apt-get", "install", "-y", "-q", "--no-install-recommends", "busybox-static"); err != nil {
			return err
		}
	}
	r.step("making the demo buildroot %s", root)
	return r.runLogged(ctx, filepath.Join(r.bin, "builderd"), "--make-busybox-root", root)
}

// runLogged runs a command to its end with its output in <data>/setup.log.
func (r *runner) runLogged(ctx context.Context, name string, args ...string) error {
	logf, err := os.OpenFile(r.path("setup.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	if name == "apt-get" && os.Geteuid() != 0 {
		cmd = exec.CommandContext(ctx, "sudo", append([]string{name}, args...)...)
	}
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w (see %s)", name, strings.Join(args, " "), err, r.path("setup.log"))
	}
	return nil
}

// registerHost makes this machine a build host with its credentials in
// <data>/builder.creds, and the demo tag, unless they exist.
func (r *runner) registerHost(ctx context.Context) (host, arch string, err error) {
	host, err = os.Hostname()
	if err != nil {
		return "", "", err
	}
	host, _, _ = strings.Cut(host, ".")
	out, err := exec.CommandContext(ctx, "uname", "-m").Output()
	if err != nil {
		return "", "", fmt.Errorf("uname -m: %w", err)
	}
	arch = strings.TrimSpace(string(out))
	creds := r.path("builder.creds")
	if _, err := os.Stat(creds); err != nil {
		if _, err := r.ctl(ctx, "--quiet", "hostinfo", host); err == nil {
			return "", "", fmt.Errorf("host %s exists but %s is gone: remove the data directory to start over", host, creds)
		}
		r.step("registering this machine as build host %s (%s)", host, arch)
		for _, args := range [][]string{
			{"add-host", "--creds-out", creds, host, arch},
			{"add-host-to-channel", host, "createrepo"},
			{"add-host-to-channel", "--new", host, "runroot"},
		} {
			if _, err := r.ctl(ctx, args...); err != nil {
				return "", "", err
			}
		}
	}
	if err := followServer(r.path("kojictl.conf"), creds); err != nil {
		return "", "", err
	}
	if _, err := r.ctl(ctx, "--quiet", "taginfo", "demo-build"); err != nil {
		r.step("making the demo tag demo-build")
		if _, err := r.ctl(ctx, "add-tag", "--arches", arch, "-x", "kojibus.rootfs="+r.path("demo-rootfs"), "demo-build"); err != nil {
			return "", "", err
		}
	}
	return host, arch, nil
}

// followServer sets the server of the credentials file to the profile's
// (the hub's address this start, which --listen may have changed).
func followServer(profile, creds string) error {
	p, err := config.Load(profile)
	if err != nil {
		return err
	}
	server, _ := p.Section("koji").Get("server")
	data, err := os.ReadFile(creds)
	if err != nil {
		return err
	}
	out, changed, err := config.SetValue(data, "koji", "server", server)
	if err != nil || !changed {
		return err
	}
	return bus.WriteFileAtomic(creds, out, 0o600)
}

// lastLines returns the last n lines of a file.
func lastLines(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(string(data), "\n"), "\n") {
		if !strings.HasPrefix(l, "=== ") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  " + strings.Join(lines, "\n  ")
}
