package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

// The runroot plugin's command (Koji's plugins/cli/runroot.py).
func (a *app) runrootCommands() []*cobra.Command { return []*cobra.Command{a.runrootCmd()} }

func (a *app) runrootCmd() *cobra.Command {
	var packages, mounts []string
	var skipSetarch, printID, useShell, newChroot, oldChroot, nowait, watch bool
	var weight, repoID int
	var channel string
	cmd := &cobra.Command{
		Use:   "runroot [options] <tag> <arch> <command>",
		Short: "[admin] Run a command in a buildroot",
		Long: `Run a command in a buildroot of the tag's latest repo on a builder of the
runroot channel (or --channel-override), and print its output (runroot.log)
live, as the builder produces it. The exit status is 1 when the task failed
or was canceled; Ctrl-C cancels the task. Options must come before <tag>.`,
		Args: minArgs(3, "Incorrect number of arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if newChroot && oldChroot {
				return usagef(cmd, "--new-chroot and --old-chroot are mutually exclusive")
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var command any = args[2:]
			if useShell {
				command = strings.Join(args[2:], " ")
			}
			// The options koji's CLI always sends, plus new_chroot when given.
			kw := map[string]any{"channel": nil, "packages": nonNil(packages), "mounts": nonNil(mounts), "repo_id": nil,
				"skip_setarch": skipSetarch, "weight": nil}
			if channel != "" {
				kw["channel"] = channel
			}
			if cmd.Flags().Changed("repo-id") {
				kw["repo_id"] = repoID
			}
			if cmd.Flags().Changed("weight") {
				kw["weight"] = weight
			}
			if newChroot {
				kw["new_chroot"] = true
			} else if oldChroot {
				kw["new_chroot"] = false
			}
			var id int64
			if err := c.Call(ctx, "runroot", []any{args[0], args[1], command}, kw, &id); err != nil {
				var f *bus.Fault
				if errors.As(err, &f) && f.Message == "Invalid method: runroot" {
					a.println("* The runroot plugin appears to not be installed on the koji hub.  Please contact the administrator.")
				}
				return err
			}
			if printID && !a.jsonOut {
				a.println(id)
			}
			if nowait {
				if a.jsonOut {
					return a.printJSON(map[string]any{"task_id": id})
				}
				return nil
			}
			a.sayWhatItWaitsFor(ctx, c, id)
			// --json: one object at the end, with the output collected
			var output bytes.Buffer
			switch {
			case a.jsonOut:
				err = a.followLogs(ctx, c, []int64{id}, &logPrinter{a: a, only: "runroot.log", raw: true, to: &output})
			case watch:
				err = a.watchTasks(ctx, c, []int64{id}, a.quiet)
			default:
				p := &logPrinter{a: a, only: "runroot.log", raw: true, silent: a.quiet}
				err = a.followLogs(ctx, c, []int64{id}, p)
			}
			if ctx.Err() != nil {
				a.println("User interrupt: canceling runroot task")
				cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if cerr := c.Call(cctx, "cancelTask", []any{id}, nil, nil); cerr != nil {
					return cerr
				}
				return &exitError{code: exitFail}
			}
			if err != nil {
				return err
			}
			t, err := a.getTask(ctx, c, id, false)
			if err != nil {
				return err
			}
			if a.jsonOut && t != nil {
				if err := a.printJSON(map[string]any{"task_id": id, "state": bus.TaskStateName(t.State), "output": output.String()}); err != nil {
					return err
				}
			}
			if t == nil || t.State != bus.TaskClosed {
				return &exitError{code: exitFail}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // koji: disable_interspersed_args
	// -p after the verb is --package, as in koji (the global -p, --profile,
	// comes before the verb).
	f.StringArrayVarP(&packages, "package", "p", nil, "make sure this package is in the chroot")
	f.StringArrayVarP(&mounts, "mount", "m", nil, "mount this directory read-write in the chroot")
	f.BoolVar(&skipSetarch, "skip-setarch", false, "bypass normal setarch in the chroot")
	f.IntVarP(&weight, "weight", "w", 0, "set task weight")
	f.StringVar(&channel, "channel-override", "", "use a non-standard channel")
	f.BoolVar(&printID, "task-id", false, "Print the ID of the runroot task")
	f.BoolVar(&useShell, "use-shell", false, "Run command through a shell, otherwise uses exec")
	f.BoolVar(&newChroot, "new-chroot", false, "Run command with the --new-chroot (systemd-nspawn) option to mock")
	f.BoolVar(&oldChroot, "old-chroot", false, "Run command with the --old-chroot (systemd-nspawn) option to mock")
	f.IntVar(&repoID, "repo-id", 0, "ID of the repo to use")
	f.BoolVar(&nowait, "nowait", false, "Do not wait on task")
	f.BoolVar(&watch, "watch", false, "Watch task instead of printing runroot.log")
	return cmd
}

// sayWhatItWaitsFor says once, on stderr, that no ready host serves the
// task's channel and arch now; the task waits for one, as in Koji.
func (a *app) sayWhatItWaitsFor(ctx context.Context, c *bus.Client, id int64) {
	t, err := a.getTask(ctx, c, id, false)
	if err != nil || t == nil || t.State != bus.TaskFree {
		return
	}
	var hosts []bus.Host
	kw := map[string]any{"channelID": t.ChannelID, "arches": []string{t.Arch}, "ready": true, "enabled": true}
	if err := c.Call(ctx, "listHosts", nil, kw, &hosts); err != nil || len(hosts) > 0 {
		return
	}
	channel := fmt.Sprint(t.ChannelID)
	var ch *bus.Channel
	if err := c.Call(ctx, "getChannel", []any{t.ChannelID}, nil, &ch); err == nil && ch != nil {
		channel = ch.Name
	}
	a.warn("Task %d waits for a host: no ready host of channel %s has arch %s now (waiting until one has)", id, channel, t.Arch)
}
