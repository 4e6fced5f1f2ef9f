package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kojibus/kojibus/builderd/internal/buildroot"
	"github.com/kojibus/kojibus/builderd/internal/runroot"
	"github.com/kojibus/kojibus/bus"
)

// The runroot plugin's builder part (Koji's plugins/builder/runroot.py):
// the `runroot` task runs a command in a buildroot of a tag's repo.
// Enabled with builderd --plugin runroot; configured by runroot.conf in
// the plugin configuration directory, read unchanged.

// runrootWeight is RunRootTask._taskWeight.
const runrootWeight = 2.0

// runrootPlugin is the runroot handler's state on this builder.
type runrootPlugin struct {
	b     *Builder
	conf  *runroot.Config
	cache *buildroot.Cache
	trees *treeReaper
	// self is the builderd executable re-executed as the buildroot init.
	self string
}

// enableRunroot reads runroot.conf and registers the handler.
func (b *Builder) enableRunroot() error {
	conf, err := runroot.LoadConfig(filepath.Join(b.cfg.PluginConfigDir, "runroot.conf"))
	if err != nil {
		return fmt.Errorf("builder: runroot plugin: %w", err)
	}
	b.runroot = &runrootPlugin{
		b: b, conf: conf, self: b.cfg.Self,
		cache: buildroot.NewCache(filepath.Join(b.cfg.WorkDir, "rootfs-cache"), b.log),
		trees: newTreeReaper(filepath.Join(b.cfg.WorkDir, "buildroots"), b.cfg.FailedBuildrootLifetime, b.log),
	}
	b.reg.Register(Handler{Method: "runroot", Weight: runrootWeight, Run: b.runroot.handle})
	return nil
}

// runrootArgs are the task's arguments, with Koji's legacy signature:
// root, arch, command, keep=False, packages=[], mounts=[], repo_id=None,
// skip_setarch=False, weight=None, upload_logs=None, new_chroot=None.
type runrootArgs struct {
	root        any
	arch        string
	command     string
	display     string // the command as the result text names it
	packages    []string
	mounts      []string
	repoID      *int64
	skipSetarch bool
	weight      *float64
	uploadLogs  []string
	newChroot   *bool
}

var runrootParams = []string{"root", "arch", "command", "keep", "packages", "mounts", "repo_id", "skip_setarch", "weight", "upload_logs", "new_chroot"}

func parseRunrootArgs(a Args) (*runrootArgs, error) {
	if len(a.Pos) > len(runrootParams) {
		return nil, paramError("runroot takes at most %d arguments (%d given)", len(runrootParams), len(a.Pos))
	}
	for k := range a.Kw {
		found := false
		for _, p := range runrootParams {
			found = found || p == k
		}
		if !found {
			return nil, paramError("runroot got an unexpected keyword argument '%s'", k)
		}
	}
	var r runrootArgs
	if ok, err := a.Get(0, "root", &r.root); err != nil || !ok {
		return nil, paramError("runroot: missing parameter root")
	}
	if ok, err := a.Get(1, "arch", &r.arch); err != nil || !ok {
		return nil, paramError("runroot: missing parameter arch")
	}
	var cmd any
	if ok, err := a.Get(2, "command", &cmd); err != nil || !ok {
		return nil, paramError("runroot: missing parameter command")
	}
	switch c := cmd.(type) {
	case string:
		r.command, r.display = c, c
	case []any:
		words := make([]string, len(c))
		for i, w := range c {
			s, ok := w.(string)
			if !ok {
				return nil, paramError("runroot: command list items must be strings, not %v", w)
			}
			words[i] = s
		}
		// A list is quoted word by word, as Koji's handler does.
		r.command, r.display = runroot.QuoteCommand(words), strings.Join(words, " ")
	default:
		return nil, paramError("runroot: command must be a string or a list")
	}
	for _, f := range []struct {
		i    int
		name string
		out  any
	}{{4, "packages", &r.packages}, {5, "mounts", &r.mounts}, {6, "repo_id", &r.repoID}, {7, "skip_setarch", &r.skipSetarch},
		{8, "weight", &r.weight}, {9, "upload_logs", &r.uploadLogs}, {10, "new_chroot", &r.newChroot}} {
		if _, err := a.Get(f.i, f.name, f.out); err != nil {
			return nil, err
		}
	}
	return &r, nil
}

// handle is RunRootTask.handler.
func (p *runrootPlugin) handle(ctx context.Context, t *Task, a Args) (any, error) {
	args, err := parseRunrootArgs(a)
	if err != nil {
		return nil, err
	}
	s := t.Session()
	if args.weight != nil {
		if err := s.Call(ctx, "host.setTaskWeight", []any{t.ID, t.Attempt, max(*args.weight, 0.5)}, nil, nil); err != nil {
			return nil, err
		}
	}
	// Everything about the mounts is checked before anything is made.
	mounts, err := p.conf.Plan(args.mounts)
	if err != nil {
		return nil, err
	}
	var bc struct {
		ID     int64          `json:"id"`
		Name   string         `json:"name"`
		Arches *string        `json:"arches"`
		Extra  map[string]any `json:"extra"`
	}
	if err := s.Call(ctx, "getBuildConfig", []any{args.root}, nil, &bc); err != nil {
		return nil, err
	}
	brArch, err := p.buildrootArch(args.arch, bc.Name, bc.Arches)
	if err != nil {
		return nil, err
	}
	repoID, err := p.repo(ctx, t, args, bc.Name)
	if err != nil {
		return nil, err
	}
	src, err := p.source(ctx, t, bc.Name, bc.Extra)
	if err != nil {
		return nil, err
	}
	newChroot := true // mock's default is the new chroot (nspawn)
	if v, ok := bc.Extra["mock.new_chroot"]; ok {
		newChroot = bus.OptionTruthy(v)
	}
	if args.newChroot != nil {
		newChroot = *args.newChroot
	}

	tree := filepath.Join(p.b.cfg.WorkDir, "buildroots", strconv.FormatInt(t.ID, 10)+"-"+strconv.FormatInt(t.Attempt, 10))
	var brID int64
	if err := s.Call(ctx, "host.newBuildRoot", []any{repoID, brArch, t.ID}, map[string]any{"extra": map[string]any{"path": tree}}, &brID); err != nil {
		return nil, err
	}
	if err := s.Call(ctx, "host.setBuildRootState", []any{brID, "BUILDING", t.ID}, nil, nil); err != nil {
		return nil, err
	}
	failed := true
	defer func() {
		// Expired in any case (a new context: the task's may be canceled).
		ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if err := s.Call(ectx, "host.setBuildRootState", []any{brID, "EXPIRED", t.ID}, nil, nil); err != nil {
			t.Logger.Warn("expire buildroot", "buildroot", brID, "err", err)
		}
		// A failed command's tree stays for save-failed-tree; the rest goes now.
		if failed && ctx.Err() == nil {
			p.trees.keep(tree)
		} else if err := os.RemoveAll(tree); err != nil {
			t.Logger.Warn("remove buildroot", "path", tree, "err", err)
		}
	}()

	workDir, err := t.WorkDir()
	if err != nil {
		return nil, err
	}
	rootLog, err := os.Create(filepath.Join(workDir, "root.log"))
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = rootLog.Close()
		uploadIfAny(ctx, t, filepath.Join(workDir, "root.log"), "root.log")
	}()
	lower, release, err := p.cache.Get(ctx, bc.ID, repoID, src, rootLog)
	if err != nil {
		return nil, bus.NewFault(bus.CodeBuildrootError, "could not make the root filesystem of %s: %v", bc.Name, err)
	}
	defer release()
	spec := buildroot.Spec{
		Lower: lower, Upper: filepath.Join(tree, "upper"), Work: filepath.Join(tree, "work"), Root: filepath.Join(tree, "root"),
		NewChroot: newChroot, InternalDev: p.conf.InternalDevSetup == nil || *p.conf.InternalDevSetup,
		Hostname: "buildroot-" + strconv.FormatInt(brID, 10),
		Linux32:  !args.skipSetarch && bus.Is32Bit(bus.CanonArch(brArch)),
		Env:      []string{"HOME=/builddir", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=vt100", "SHELL=/bin/sh", "LANG=C.UTF-8"},
	}
	for _, d := range []string{spec.Upper, spec.Work, spec.Root} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if len(args.packages) > 0 {
		if err := p.installPackages(ctx, t, spec, args.packages, rootLog); err != nil {
			return nil, err
		}
	}

	for _, m := range mounts {
		spec.Mounts = append(spec.Mounts, buildroot.Mount{Source: m.Source, Target: m.Target, Fstype: m.Fstype, Options: m.Options})
	}
	spec.MountLog = filepath.Join(workDir, "do_mounts.log")
	spec.Command = args.command
	spec.TeeLog = "/builddir/runroot.log"
	code, err := p.run(ctx, t, spec, t.Log)
	uploadIfAny(ctx, t, spec.MountLog, "do_mounts.log")
	if err != nil {
		return nil, err
	}
	for _, l := range args.uploadLogs {
		if f := treeFile(spec, l); f != "" {
			if err := t.Upload(ctx, f, path.Base(l)); err != nil {
				return nil, err
			}
		}
	}
	if code != 0 {
		return nil, bus.NewFault(bus.CodeBuildrootError, "%s", exitStatus(args.display, code))
	}
	failed = false
	return runroot.ResultText(args.display), nil
}

// run runs spec's command in the buildroot; it returns the command's exit
// code, or the setup's error with Koji's message.
func (p *runrootPlugin) run(ctx context.Context, t *Task, spec buildroot.Spec, out io.Writer) (int, error) {
	proc, err := buildroot.Command(p.self, spec)
	if err != nil {
		return 0, err
	}
	proc.Cmd.Stdout, proc.Cmd.Stderr = out, out
	werr := t.Run(ctx, proc.Cmd, proc.Started)
	if serr := proc.SetupError(); serr != nil {
		return 0, bus.GenericError("%s", serr.Error())
	}
	if ctx.Err() != nil {
		return 0, context.Cause(ctx)
	}
	if code, ok := buildroot.ExitCode(werr); ok {
		return code, nil
	}
	return 0, bus.NewFault(bus.CodeBuildrootError, "buildroot: %v", werr)
}

// installPackages is mock --install: apt-get in the buildroot (network on).
func (p *runrootPlugin) installPackages(ctx context.Context, t *Task, spec buildroot.Spec, pkgs []string, log io.Writer) error {
	if _, err := os.Stat(filepath.Join(spec.Lower, "usr/bin/apt-get")); err != nil {
		return bus.NewFault(bus.CodeBuildrootError, "cannot install %s: the buildroot has no package manager (apt-get)", strings.Join(pkgs, " "))
	}
	quoted := make([]string, len(pkgs))
	for i, pk := range pkgs {
		quoted[i] = runroot.QuoteCommand([]string{pk})
	}
	spec.Command = "export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q --no-install-recommends " + strings.Join(quoted, " ")
	fmt.Fprintf(log, "installing packages: %s\n", strings.Join(pkgs, " "))
	code, err := p.run(ctx, t, spec, log)
	if err != nil {
		return err
	}
	if code != 0 {
		return bus.NewFault(bus.CodeBuildrootError, "package installation failed: %s", exitStatus("apt-get", code))
	}
	return nil
}

// buildrootArch is the handler's arch choice: noarch runs on the first of
// the tag's arches this host has.
func (p *runrootPlugin) buildrootArch(arch, tag string, tagArches *string) (string, error) {
	if arch != "noarch" {
		return arch, nil
	}
	p.b.mu.Lock()
	hostArches := splitArches(p.b.host.Arches)
	p.b.mu.Unlock()
	if len(hostArches) == 0 {
		return "", bus.NewFault(bus.CodeBuildError, "No arch list for this host")
	}
	if tagArches == nil || strings.TrimSpace(*tagArches) == "" {
		return "", bus.NewFault(bus.CodeBuildError, "No arch list for tag: %s", tag)
	}
	for _, ta := range splitArches(*tagArches) {
		for _, ha := range hostArches {
			if bus.CanonArch(ta) == bus.CanonArch(ha) {
				return bus.CanonArch(ta), nil
			}
		}
	}
	return "", bus.NewFault(bus.CodeBuildError, "host does not match tag arches: %s (%s)", tag, *tagArches)
}

// repo is the repo the buildroot uses: repo_id's (checked) or the tag's
// latest READY one, waiting for one (a waitrepo subtask) when there is none.
func (p *runrootPlugin) repo(ctx context.Context, t *Task, args *runrootArgs, tag string) (int64, error) {
	s := t.Session()
	var info struct {
		ID      int64  `json:"id"`
		State   int    `json:"state"`
		TagName string `json:"tag_name"`
	}
	if args.repoID != nil {
		if err := s.Call(ctx, "repoInfo", []any{*args.repoID}, map[string]any{"strict": true}, &info); err != nil {
			return 0, err
		}
		if info.TagName != tag {
			return 0, bus.NewFault(bus.CodeBuildError, "build tag (%s) does not match repo tag (%s)", tag, info.TagName)
		}
		if info.State != bus.RepoReady && info.State != bus.RepoExpired {
			return 0, bus.NewFault(bus.CodeBuildError, "repos in the %s state may not be used by runroot", bus.RepoStateNames[info.State])
		}
		return info.ID, nil
	}
	var repo *struct {
		ID int64 `json:"id"`
	}
	if err := s.Call(ctx, "getRepo", []any{tag}, nil, &repo); err != nil {
		return 0, err
	}
	if repo != nil && repo.ID != 0 {
		return repo.ID, nil
	}
	t.Logger.Info("no repo yet: waiting for one", "tag", tag)
	child, err := t.Subtask(ctx, "waitrepo", []any{tag, nil, nil}, SubtaskOpts{})
	if err != nil {
		return 0, err
	}
	results, err := t.Wait(ctx, WaitOpts{Tasks: []int64{child}, All: true, FailAny: true})
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(results[child], &info); err != nil || info.ID == 0 {
		return 0, bus.GenericError("waitrepo %d gave no repo: %s", child, results[child])
	}
	return info.ID, nil
}

// source reads where the tag's root filesystem comes from; the build
// group's packages are looked up only for a Debian root.
func (p *runrootPlugin) source(ctx context.Context, t *Task, tag string, extra map[string]any) (buildroot.Source, error) {
	groupPackages := func() ([]string, error) {
		var groups []struct {
			Name        string `json:"name"`
			PackageList []struct {
				Package string `json:"package"`
			} `json:"packagelist"`
		}
		if err := t.Session().Call(ctx, "getTagGroups", []any{tag}, nil, &groups); err != nil {
			return nil, err
		}
		var pkgs []string
		for _, g := range groups {
			if g.Name == "build" {
				for _, pk := range g.PackageList {
					pkgs = append(pkgs, pk.Package)
				}
			}
		}
		return pkgs, nil
	}
	src, err := buildroot.SourceFromExtra(extra, groupPackages)
	if err != nil {
		if f := (*bus.Fault)(nil); errors.As(err, &f) {
			return src, err
		}
		return src, bus.NewFault(bus.CodeBuildrootError, "tag %s: %v", tag, err)
	}
	return src, nil
}

// treeFile finds a path of the buildroot after the run: in the private
// upper layer when the command wrote it, else in the cached root.
func treeFile(spec buildroot.Spec, p string) string {
	rel := filepath.Clean("/" + p)
	for _, layer := range []string{spec.Upper, spec.Lower} {
		f := filepath.Join(layer, rel)
		if fi, err := os.Lstat(f); err == nil && fi.Mode().IsRegular() {
			return f
		}
	}
	return ""
}

func uploadIfAny(ctx context.Context, t *Task, file, name string) {
	if fi, err := os.Stat(file); err == nil && fi.Size() > 0 {
		if err := t.Upload(context.WithoutCancel(ctx), file, name); err != nil {
			t.Logger.Warn("upload", "file", name, "err", err)
		}
	}
}

// exitStatus is koji.util.parseStatus for the command's first word.
func exitStatus(command string, code int) string {
	name := strings.TrimSuffix(runroot.ResultText(command), " completed successfully")
	if code > 128 {
		return fmt.Sprintf("%s was killed by signal %d", name, code-128)
	}
	return fmt.Sprintf("%s exited with status %d", name, code)
}
