package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

func (a *app) repoCommands() []*cobra.Command {
	return []*cobra.Command{a.regenRepoCmd(), a.waitRepoCmd()}
}

// Task states (koji.TASK_STATES).
var taskStateNames = []string{"FREE", "OPEN", "CLOSED", "CANCELED", "ASSIGNED", "FAILED"}

type taskInfo struct {
	ID     int64  `json:"id"`
	State  int    `json:"state"`
	Method string `json:"method"`
	Arch   string `json:"arch"`
}

func taskFinished(state int) bool { return state == 2 || state == 3 || state == 5 }

// subscribeEvents subscribes to event subjects and makes sure the server has
// the interest before returning, so no event published after it is missed.
func subscribeEvents(c *bus.Client, addresses ...string) (chan *nats.Msg, func(), error) {
	ch := make(chan *nats.Msg, 1024)
	var subs []*nats.Subscription
	unsub := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, addr := range addresses {
		s, err := c.Conn().ChanSubscribe(bus.EventSubject(addr), ch)
		if err != nil {
			unsub()
			return nil, nil, fmt.Errorf("subscribe %s: %w", bus.EventSubject(addr), err)
		}
		subs = append(subs, s)
	}
	if err := c.Conn().Flush(); err != nil {
		unsub()
		return nil, nil, fmt.Errorf("subscribe: %w", err)
	}
	return ch, unsub, nil
}

// waitTasks waits, without polling, until the tasks finish: it subscribes to
// task state events first, then reads each task's state, then waits for
// events. Exit status 1 if a task did not close successfully.
func (a *app) waitTasks(cmd *cobra.Command, c *bus.Client, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	ctx := cmd.Context()
	ch, unsub, err := subscribeEvents(c, "task.>")
	if err != nil {
		return err
	}
	defer unsub()
	pending := map[int64]bool{}
	for _, id := range ids {
		pending[id] = true
	}
	failed := false
	check := func(id int64) error {
		var t *taskInfo
		if err := c.Call(ctx, "getTaskInfo", []any{id}, nil, &t); err != nil {
			return err
		}
		if t == nil {
			return failf("No such task id: %d", id)
		}
		if !taskFinished(t.State) {
			return nil
		}
		delete(pending, id)
		desc := fmt.Sprintf("%d %s (%s)", t.ID, t.Method, t.Arch)
		if t.State == 2 {
			if !a.quiet {
				a.printf("%s completed successfully\n", desc)
			}
		} else {
			failed = true
			if !a.quiet {
				a.printf("%s %s\n", desc, strings.ToLower(taskStateNames[t.State]))
			}
		}
		return nil
	}
	for _, id := range ids {
		if err := check(id); err != nil {
			return err
		}
	}
	if len(pending) > 0 && !a.quiet {
		a.println("Watching tasks (this may be safely interrupted)...")
	}
	for len(pending) > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case m := <-ch:
			ev, err := bus.EventFromMsg(m)
			if err != nil {
				continue
			}
			id := jsonInt(ev.Props["id"])
			if pending[id] {
				if err := check(id); err != nil {
					return err
				}
			}
		}
	}
	if failed {
		return &exitError{code: exitFail}
	}
	return nil
}

func (a *app) regenRepoCmd() *cobra.Command {
	var target, nowait, debuginfo, source, separateSrc bool
	cmd := &cobra.Command{
		Use:   "regen-repo [options] <tag>",
		Short: "Force a repo to be regenerated",
		Args:  exactArgs(1, "A single tag name must be specified"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			name := args[0]
			var info *bus.Tag
			if target {
				var bt *bus.BuildTarget
				if err := c.Call(ctx, "getBuildTarget", []any{name}, nil, &bt); err != nil {
					return err
				}
				if bt == nil {
					return failf("No such build target: %s", name)
				}
				if err := c.Call(ctx, "getTag", []any{bt.BuildTagName}, map[string]any{"strict": true}, &info); err != nil {
					return err
				}
			} else if info, err = a.mustTag(cmd, c, name); err != nil {
				return err
			}
			var targets []bus.BuildTarget
			if err := c.Call(ctx, "getBuildTargets", nil, map[string]any{"buildTagID": info.ID}, &targets); err != nil {
				return err
			}
			if len(targets) == 0 {
				a.warn("%s is not a build tag", info.Name)
			}
			if info.Arches == nil || strings.TrimSpace(*info.Arches) == "" {
				a.warn("Tag %s has an empty arch list", info.Name)
			}
			kw := map[string]any{}
			if debuginfo {
				kw["debuginfo"] = true
			}
			if source {
				kw["src"] = true
			}
			if separateSrc {
				kw["separate_src"] = true
			}
			// Subscribe before asking: the repo.done of this regeneration cannot be missed.
			events, unsub, err := subscribeEvents(c, "repo.done")
			if err != nil {
				return err
			}
			defer unsub()
			// kojibus: newRepo answers with a forced repo request id, not a task id.
			var reqID int64
			if err := c.Call(ctx, "newRepo", []any{info.Name}, kw, &reqID); err != nil {
				return err
			}
			if !a.jsonOut {
				a.printf("Regenerating repo for tag: %s\n", info.Name)
				a.printf("Created repo request: %d\n", reqID)
			}
			if nowait {
				if a.jsonOut {
					return a.printJSON(map[string]any{"tag": info.Name, "request_id": reqID})
				}
				return nil
			}
			w := &repoWaiter{a: a, c: c, tagID: info.ID, tagName: info.Name, request: true, tagged: true, reqID: reqID}
			repo, err := w.wait(ctx, events)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(map[string]any{"tag": info.Name, "request_id": reqID, "repo": repo})
			}
			a.printf("Got repo %d\n", repo.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&target, "target", false, "Interpret the argument as a build target name")
	f.BoolVar(&nowait, "nowait", false, "Don't wait on for regen to finish")
	f.BoolVar(&debuginfo, "debuginfo", false, "Include debuginfo rpms in repo")
	f.BoolVar(&source, "source", false, "Include source rpms in each of repos")
	f.BoolVar(&separateSrc, "separate-source", false, "Include source rpms in separate src repo")
	return cmd
}

// duration is koji.util.duration: minutes:seconds since start.
func duration(start time.Time) string {
	d := time.Since(start)
	return fmt.Sprintf("%d:%02d", int(d.Minutes()), int(d.Seconds())%60)
}

func (a *app) waitRepoCmd() *cobra.Command {
	var builds []string
	var target, request bool
	var timeout float64
	cmd := &cobra.Command{
		Use:   "wait-repo [options] <tag>",
		Short: "Wait for a repo to be regenerated",
		Long: `Wait for a current repo of the tag: one newer than the tag's last change (and,
with --build, containing those builds). kojictl does not poll: it subscribes to
repo.done (and build.tag) events before it checks the current state, then waits
for the events. With --request it files a repo request (requires login).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return usagef(cmd, "Please specify a tag name")
			}
			if len(args) > 1 {
				return usagef(cmd, "Only one tag may be specified")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if timeout <= 0 {
				return usagef(cmd, "--timeout must be positive")
			}
			type nvrT struct{ nvr, name string }
			var nvrs []nvrT
			for _, b := range builds {
				name, _, _, err := parseNVR(b)
				if err != nil {
					return usagef(cmd, "Invalid NVR: %s", b)
				}
				nvrs = append(nvrs, nvrT{b, name})
			}
			var c *bus.Client
			var err error
			if request {
				c, err = a.session(ctx)
			} else {
				c, err = a.anon(ctx)
			}
			if err != nil {
				return err
			}
			var tagID int64
			var tagName string
			var tagInfo *bus.Tag
			if target {
				var bt *bus.BuildTarget
				if err := c.Call(ctx, "getBuildTarget", []any{args[0]}, nil, &bt); err != nil {
					return err
				}
				if bt == nil {
					return usagef(cmd, "No such target: %s", args[0])
				}
				tagID, tagName = bt.BuildTag, bt.BuildTagName
				if err := c.Call(ctx, "getTag", []any{tagID}, map[string]any{"strict": true}, &tagInfo); err != nil {
					return err
				}
			} else {
				if tagInfo, err = a.getTag(cmd, c, args[0]); err != nil {
					return err
				}
				if tagInfo == nil {
					return usagef(cmd, "No such tag: %s", args[0])
				}
				tagID, tagName = tagInfo.ID, tagInfo.Name
				var targets []bus.BuildTarget
				if err := c.Call(ctx, "getBuildTargets", nil, map[string]any{"buildTagID": tagID}, &targets); err != nil {
					return err
				}
				if len(targets) == 0 && !a.quiet {
					a.warn("%s is not a build tag for any target", tagName)
					if err := c.Call(ctx, "getBuildTargets", nil, map[string]any{"destTagID": tagID}, &targets); err != nil {
						return err
					}
					seen := map[string]bool{}
					var maybe []string
					for _, t := range targets {
						if !seen[t.BuildTagName] {
							seen[t.BuildTagName] = true
							maybe = append(maybe, t.BuildTagName)
						}
					}
					if len(maybe) > 0 {
						a.warn("Suggested tags: %s", strings.Join(maybe, ", "))
					}
				}
			}
			if !request && !a.quiet {
				a.warn("The --request option is recommended for faster results")
				if auto, _ := tagInfo.Extra["repo.auto"].(bool); !auto {
					a.warn("This tag is not configured for automatic regeneration")
				}
			}
			// Subscribe first: any repo.done or build.tag after this point reaches us.
			events, unsub, err := subscribeEvents(c, "repo.done", "build.tag")
			if err != nil {
				return err
			}
			defer unsub()
			for _, n := range nvrs {
				var latest []bus.TaggedBuild
				if err := c.Call(ctx, "getLatestBuilds", []any{tagID}, map[string]any{"package": n.name}, &latest); err != nil {
					return err
				}
				if !a.quiet {
					if len(latest) == 0 {
						a.warn("No %s builds in tag %s", n.name, tagName)
					} else if latest[0].NVR != n.nvr {
						a.warn("Latest build in %s is %s, not %s", tagName, latest[0].NVR, n.nvr)
					}
				}
			}
			w := &repoWaiter{a: a, c: c, tagID: tagID, tagName: tagName, request: request}
			for _, n := range nvrs {
				w.nvrs = append(w.nvrs, n.nvr)
			}
			start := time.Now()
			wctx, cancel := context.WithTimeout(ctx, time.Duration(timeout*float64(time.Minute)))
			defer cancel()
			repo, err := w.wait(wctx, events)
			if err != nil {
				if wctx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
					if a.quiet {
						return &exitError{code: exitFail}
					}
					if len(w.nvrs) > 0 {
						return failf("Unsuccessfully waited %s for %s to appear in the %s repo", duration(start), strings.Join(w.nvrs, ", "), tagName)
					}
					return failf("Unsuccessfully waited %s for a new %s repo", duration(start), tagName)
				}
				return err
			}
			if a.jsonOut {
				return a.printJSON(repo)
			}
			if !a.quiet {
				a.printf("Got repo %d\n", repo.ID)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&builds, "build", nil, "Check that the given build is in the newly-generated repo (may be used multiple times)")
	f.BoolVar(&target, "target", false, "Interpret the argument as a build target name")
	f.BoolVar(&request, "request", false, "Create a repo request (requires auth)")
	f.Bool("no-request", false, "Do not create a repo request (the default)")
	f.Float64Var(&timeout, "timeout", 120, "Amount of time to wait (in minutes) before giving up")
	cmd.MarkFlagsMutuallyExclusive("request", "no-request")
	return cmd
}

// repoWaiter waits for a current repo of a tag, driven by events.
type repoWaiter struct {
	a       *app
	c       *bus.Client
	tagID   int64
	tagName string
	request bool
	nvrs    []string

	tagged   bool
	minEvent *int64
	reqID    int64
}

// buildsTagged reports whether every --build NVR is in the tag (inheritance included).
func (w *repoWaiter) buildsTagged(ctx context.Context) (bool, error) {
	for _, nvr := range w.nvrs {
		name, _, _, _ := parseNVR(nvr)
		var tagged []bus.TaggedBuild
		if err := w.c.Call(ctx, "listTagged", []any{w.tagID}, map[string]any{"inherit": true, "package": name}, &tagged); err != nil {
			return false, err
		}
		found := false
		for _, b := range tagged {
			found = found || b.NVR == nvr
		}
		if !found {
			return false, nil
		}
	}
	return true, nil
}

// check advances the wait as far as the current state allows and returns the
// repo once there is one.
func (w *repoWaiter) check(ctx context.Context) (*bus.Repo, error) {
	if !w.tagged {
		ok, err := w.buildsTagged(ctx)
		if err != nil || !ok {
			return nil, err
		}
		w.tagged = true
		var ev *int64
		err = w.c.Call(ctx, "tagLastChangeEvent", []any{w.tagID}, nil, &ev)
		if err != nil && !isInvalidMethod(err) {
			return nil, err
		}
		w.minEvent = ev
		if w.request {
			var res bus.RepoRequestResult
			if err := w.c.Call(ctx, "repo.request", []any{w.tagID}, map[string]any{"min_event": w.minEvent}, &res); err != nil {
				return nil, err
			}
			if res.Repo != nil {
				return res.Repo, nil
			}
			if res.Request == nil {
				return nil, failf("repo.request returned neither a repo nor a request")
			}
			w.reqID = res.Request.ID
			return nil, nil
		}
	}
	if w.request {
		var res bus.RepoCheck
		if err := w.c.Call(ctx, "repo.checkRequest", []any{w.reqID}, nil, &res); err != nil {
			return nil, err
		}
		if res.Repo != nil {
			return res.Repo, nil
		}
		if res.Request != nil && !res.Request.Active {
			return nil, failf("Repo request no longer active")
		}
		return nil, nil
	}
	kw := map[string]any{}
	if w.minEvent != nil {
		kw["min_event"] = *w.minEvent
	}
	var repo *bus.Repo
	if err := w.c.Call(ctx, "getRepo", []any{w.tagID}, kw, &repo); err != nil {
		return nil, err
	}
	if repo != nil && repo.State == bus.RepoReady {
		return repo, nil
	}
	return nil, nil
}

func (w *repoWaiter) wait(ctx context.Context, events <-chan *nats.Msg) (*bus.Repo, error) {
	repo, err := w.check(ctx)
	for repo == nil && err == nil {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case m := <-events:
			ev, perr := bus.EventFromMsg(m)
			if perr != nil {
				continue
			}
			switch ev.Address {
			case "build.tag":
				if w.tagged {
					continue
				}
			case "repo.done":
				if !w.tagged {
					continue
				}
				if t, _ := ev.Props["tag"].(string); t != "" && t != w.tagName {
					continue
				}
			}
			repo, err = w.check(ctx)
		}
	}
	return repo, err
}
