package builder

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kojibus/kojibus/builderd/internal/buildroot"
	"github.com/kojibus/kojibus/bus"
)

// DefaultWorkDir is where task work directories go when --workdir is not
// given and it is writable; otherwise a directory under the system temp dir.
const DefaultWorkDir = "/var/lib/kojibus/builder"

// Run is builderd's main: it parses args, runs the builder until SIGINT or
// SIGTERM (then stops gracefully) and returns the exit code.
func Run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("builderd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	creds := fs.String("creds", "", "the host's credentials file (kojictl add-host --creds-out FILE) (required)")
	profile := fs.String("profile", "", "section of the credentials file (default koji)")
	workDir := fs.String("workdir", "", "directory for task work directories (default "+DefaultWorkDir+" or a temp dir)")
	heartbeat := fs.Duration("heartbeat", 5*time.Second, "interval of host.updateHost")
	shutdown := fs.Duration("shutdown-timeout", 5*time.Minute, "on SIGTERM, how long running tasks may finish before they are killed and freed")
	maxJobs := fs.Int("maxjobs", 10, "most tasks running at once")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	var plugins []string
	fs.Func("plugin", "enable a builder plugin (as kojid.conf's plugin): runroot; repeat or space-separate for more", func(v string) error {
		plugins = append(plugins, strings.Fields(v)...)
		return nil
	})
	pluginDir := fs.String("plugin-config-dir", "/etc/kojid/plugins", "directory of the plugins' configuration files (runroot.conf)")
	failedLifetime := fs.Duration("failed-buildroot-lifetime", 4*time.Hour, "how long the buildroot of a failed task stays on disk (kojid's failed_buildroot_lifetime)")
	makeRoot := fs.String("make-busybox-root", "", "make a small busybox root filesystem in DIR (for a tag's kojibus.rootfs extra) and exit")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *makeRoot != "" {
		if err := buildroot.MakeBusyboxRoot(*makeRoot, buildroot.BusyboxPath); err != nil {
			fmt.Fprintf(stderr, "builderd: %v\n", err)
			return 1
		}
		return 0
	}
	if *creds == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: builderd --creds FILE [--workdir DIR] [--heartbeat 5s] [options]")
		fs.PrintDefaults()
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "builderd: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	gcPercent, memLimit := bus.TuneGC()
	log.Debug("garbage collector", "gogc", gcPercent, "memory-limit", memLimit)
	p, err := bus.LoadProfile(*creds, *profile)
	if err != nil {
		fmt.Fprintf(stderr, "builderd: %v\n", err)
		return 2
	}
	dir := *workDir
	if dir == "" {
		dir = DefaultWorkDir
		if err := os.MkdirAll(dir, 0o755); err != nil {
			dir = filepath.Join(os.TempDir(), "kojibus-builder")
		}
	}
	b, err := New(Config{Profile: p, WorkDir: dir, Heartbeat: *heartbeat, ShutdownTimeout: *shutdown, MaxJobs: *maxJobs, Logger: log,
		Plugins: plugins, PluginConfigDir: *pluginDir, FailedBuildrootLifetime: *failedLifetime})
	if err != nil {
		fmt.Fprintf(stderr, "builderd: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	err = b.Start(startCtx)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "builderd: %v\n", err)
		return 1
	}
	log.Info("builderd ready", "server", p.Server, "host", p.Host, "workdir", dir)
	<-ctx.Done()
	stop() // a second signal kills the process at once
	b.Stop()
	return 0
}
