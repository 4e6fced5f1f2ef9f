package cli

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

// Task commands: koji's make-task, list-tasks, taskinfo, watch-task,
// watch-logs, cancel, resubmit, set-task-priority, free-task, assign-task,
// and kojibus' list-task-output and download-task-output. Watching is live:
// task state events (koji.event.task.>) and upload chunks (bus.UploadsStream)
// drive it, never a poll loop.

func (a *app) taskCommands() []*cobra.Command {
	return []*cobra.Command{
		a.makeTaskCmd(), a.listTasksCmd(), a.taskinfoCmd(), a.watchTaskCmd(), a.watchLogsCmd(),
		a.cancelCmd(), a.resubmitCmd(), a.setTaskPriorityCmd(), a.freeTaskCmd(), a.assignTaskCmd(),
		a.listTaskOutputCmd(), a.downloadTaskOutputCmd(),
	}
}

// taskRow is a getTaskInfo/listTasks row with what the commands use.
type taskRow struct {
	bus.Task
	Request   json.RawMessage `json:"request"`
	OwnerName string          `json:"owner_name"`
	children  []*taskRow
	sub       bool
}

// taskLabel is koji.taskLabel: "method (extra)" for the methods whose
// request says more than the arch, else "method (arch)".
func taskLabel(method, arch string, request json.RawMessage) string {
	var params []any
	_ = decodeJSON(request, &params)
	extra := ""
	str := func(v any) string {
		if m, ok := v.(map[string]any); ok {
			if n, ok := m["name"]; ok {
				return fmt.Sprint(n)
			}
		}
		if s, ok := v.(string); ok {
			return s
		}
		return pyRepr(v)
	}
	switch method {
	case "newRepo", "distRepo":
		if len(params) > 0 {
			extra = str(params[0])
		}
	case "waitrepo":
		if len(params) > 0 {
			extra = str(params[0])
			if len(params) > 2 {
				if nvrs, ok := params[2].([]any); ok {
					for _, n := range nvrs {
						extra += ", " + str(n)
					}
				}
			}
		}
	case "createrepo":
		if len(params) > 1 {
			extra = str(params[1])
		}
	case "build":
		if len(params) > 1 {
			src := str(params[0])
			if !strings.Contains(src, "://") {
				src = filepath.Base(src)
			}
			extra = str(params[1]) + ", " + src
		}
	}
	if extra != "" {
		return method + " (" + extra + ")"
	}
	return method + " (" + arch + ")"
}

func (t *taskRow) label() string { return taskLabel(t.Method, t.Arch, t.Request) }

// parseTaskIDs converts task id arguments, with msg as the usage error.
func parseTaskIDs(cmd *cobra.Command, args []string, msg string) ([]int64, error) {
	ids := make([]int64, 0, len(args))
	for _, s := range args {
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, usagef(cmd, "%s", msg)
		}
		ids = append(ids, n)
	}
	return ids, nil
}

func (a *app) getTask(ctx context.Context, c *bus.Client, id int64, request bool) (*taskRow, error) {
	var kw map[string]any
	if request {
		kw = map[string]any{"request": true}
	}
	var t *taskRow
	if err := c.Call(ctx, "getTaskInfo", []any{id}, kw, &t); err != nil {
		return nil, err
	}
	return t, nil
}

// asctime is Python's time.asctime(time.localtime(ts)).
func asctime(ts float64) string {
	sec := int64(ts)
	return time.Unix(sec, int64((ts-float64(sec))*1e9)).Local().Format("Mon Jan _2 15:04:05 2006")
}

// --- make-task ---------------------------------------------------------------

// makeTaskArg is koji's arg_filter, extended: an argument that starts like a
// Python list, dict, tuple or quoted string is read as a Python literal.
func makeTaskArg(s string) any {
	if t := strings.TrimSpace(s); t != "" && strings.ContainsRune("[{(\"'", rune(t[0])) {
		if v, err := parsePyLiteral(t); err == nil {
			return v
		}
	}
	return argFilter(s, false)
}

func (a *app) makeTaskCmd() *cobra.Command {
	var channel, arch string
	var priority int32 // Koji's task priority is a database int4
	var watch bool
	cmd := &cobra.Command{
		Use:   "make-task [options] <method> [<arg> ...]",
		Short: "[admin] Create an arbitrary task",
		Long: `Create an arbitrary task (makeTask). Arguments are filtered as koji's
arg_filter does (integers, floats, None/True/False, else strings); an argument
that starts with [ { ( or a quote is read as a Python literal.`,
		Args: minArgs(1, "Please specify task method at least"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			arglist := make([]any, 0, len(args)-1)
			for _, s := range args[1:] {
				if intOverflows(s) {
					// koji: xmlrpc's OverflowError
					return failf("argument %s: int exceeds XML-RPC limits (%d to %d)", s, math.MinInt64, math.MaxInt64)
				}
				arglist = append(arglist, makeTaskArg(s))
			}
			kw := map[string]any{}
			f := cmd.Flags()
			if f.Changed("channel") {
				kw["channel"] = channel
			}
			if f.Changed("priority") {
				kw["priority"] = priority
			}
			if f.Changed("arch") {
				kw["arch"] = arch
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			var id int64
			if err := c.Call(ctx, "makeTask", []any{args[0], arglist}, kw, &id); err != nil {
				return err
			}
			if a.jsonOut && !watch {
				return a.printJSON(map[string]any{"task_id": id})
			}
			a.printf("Created task id %d\n", id)
			if !watch {
				return nil
			}
			return a.watchTasks(ctx, c, []int64{id}, a.quiet)
		},
	}
	f := cmd.Flags()
	f.StringVar(&channel, "channel", "", "set channel")
	f.Int32Var(&priority, "priority", 0, "set priority")
	f.BoolVar(&watch, "watch", false, "watch the task")
	f.StringVar(&arch, "arch", "", "set arch")
	return cmd
}

// --- list-tasks ----------------------------------------------------------------

// taskSelection is the task selection options of list-tasks and watch-task (koji's _list_tasks).
type taskSelection struct {
	mine                             bool
	user, arch, method, channel, hst string
	after, before                    string
	all                              bool
	states                           []string // --state: names, instead of the active states
}

func (s *taskSelection) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.BoolVar(&s.mine, "mine", false, "Just print your tasks")
	f.StringVar(&s.user, "user", "", "Only tasks for this user")
	f.StringVar(&s.arch, "arch", "", "Only tasks for this architecture")
	f.StringVar(&s.method, "method", "", "Only tasks of this method")
	f.StringVar(&s.channel, "channel", "", "Only tasks in this channel")
	f.StringVar(&s.hst, "host", "", "Only tasks for this host")
	f.StringSliceVar(&s.states, "state", nil, "Only tasks in this state (FREE, OPEN, ASSIGNED, CLOSED, CANCELED, FAILED; repeat or separate with commas; default: FREE, OPEN and ASSIGNED)")
}

func (s *taskSelection) any() bool {
	return s.mine || s.user != "" || s.arch != "" || s.method != "" || s.channel != "" || s.hst != "" || len(s.states) > 0
}

// stateNumbers reads --state.
func (s *taskSelection) stateNumbers(cmd *cobra.Command) ([]int, error) {
	var states []int
	for _, name := range s.states {
		n := bus.TaskStateByName(strings.TrimSpace(name))
		if n < 0 {
			return nil, usagef(cmd, "unknown task state: %s (one of %s)", name, strings.Join(bus.TaskStateNames, ", "))
		}
		states = append(states, n)
	}
	return states, nil
}

// parseTimeOpt reads koji's TimeOption values: a unix timestamp or a date/time.
func parseTimeOpt(v string) (float64, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		return f, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, v, time.Local); err == nil {
			return float64(t.UnixMicro()) / 1e6, nil
		}
	}
	return 0, fmt.Errorf("invalid time specification: %s", v)
}

// list returns the selected tasks ordered by priority and creation time,
// children threaded under their parents (koji's _list_tasks).
func (s *taskSelection) list(ctx context.Context, cmd *cobra.Command, c *bus.Client) ([]*taskRow, json.RawMessage, error) {
	opts := map[string]any{"decode": true}
	states, err := s.stateNumbers(cmd)
	switch {
	case err != nil:
		return nil, nil, err
	case len(states) > 0:
		opts["state"] = states
	case !s.all:
		opts["state"] = []int{bus.TaskFree, bus.TaskOpen, bus.TaskAssigned}
	}
	for name, v := range map[string]string{"startedAfter": s.after, "startedBefore": s.before} {
		if v == "" {
			continue
		}
		ts, err := parseTimeOpt(v)
		if err != nil {
			return nil, nil, usagef(cmd, "%s", err)
		}
		opts[name] = ts
	}
	if s.mine {
		if s.user != "" {
			return nil, nil, failf("GenericError: Can't specify 'mine' and 'user' in same time")
		}
		var u *bus.LoggedInUser
		if err := c.Call(ctx, "getLoggedInUser", nil, nil, &u); err != nil {
			return nil, nil, err
		}
		if u == nil {
			return nil, nil, failf("Unable to determine user")
		}
		opts["owner"] = u.ID
	}
	if s.user != "" {
		var u *bus.User
		if err := c.Call(ctx, "getUser", []any{idOrName(s.user)}, nil, &u); err != nil {
			return nil, nil, err
		}
		if u == nil {
			return nil, nil, failf("No such user: %s", s.user)
		}
		opts["owner"] = u.ID
	}
	if s.arch != "" {
		opts["arch"] = strings.Fields(parseArches(s.arch))
	}
	if s.method != "" {
		opts["method"] = s.method
	}
	if s.channel != "" {
		var ch *bus.Channel
		if err := c.Call(ctx, "getChannel", []any{idOrName(s.channel)}, nil, &ch); err != nil {
			return nil, nil, err
		}
		if ch == nil {
			return nil, nil, failf("No such channel: %s", s.channel)
		}
		opts["channel_id"] = ch.ID
	}
	if s.hst != "" {
		var h *bus.Host
		if err := c.Call(ctx, "getHost", []any{idOrName(s.hst)}, nil, &h); err != nil {
			return nil, nil, err
		}
		if h == nil {
			return nil, nil, failf("No such host: %s", s.hst)
		}
		opts["host_id"] = h.ID
	}
	// koji asks for order "priority,create_time"; the hub orders by one
	// field, so the rows are ordered here.
	raw, err := callPaged(ctx, c, "listTasks", []any{opts}, nil)
	if err != nil {
		return nil, nil, err
	}
	var rows []*taskRow
	if err := json.Unmarshal(raw, &rows); err != nil {
		return nil, nil, fmt.Errorf("listTasks: %w", err)
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Priority != rows[j].Priority {
			return rows[i].Priority < rows[j].Priority
		}
		if rows[i].CreateTS != rows[j].CreateTS {
			return rows[i].CreateTS < rows[j].CreateTS
		}
		return rows[i].ID < rows[j].ID
	})
	byID := map[int64]*taskRow{}
	for _, t := range rows {
		byID[t.ID] = t
	}
	for _, t := range rows {
		if t.Parent != nil {
			if p := byID[*t.Parent]; p != nil {
				p.children = append(p.children, t)
				t.sub = true
			}
		}
	}
	return rows, raw, nil
}

// printTaskLine is koji's print_task.
func (a *app) printTaskLine(t *taskRow, depth int) {
	indent := ""
	if depth > 0 {
		indent = strings.Repeat("  ", depth-1) + " +"
	}
	a.printf("%-8d %-4d %-20s %-8s %-10s %s%s\n", t.ID, t.Priority, t.OwnerName, bus.TaskStateName(t.State), t.Arch, indent, t.label())
	for _, child := range t.children {
		a.printTaskLine(child, depth+1)
	}
}

func (a *app) listTasksCmd() *cobra.Command {
	var sel taskSelection
	cmd := &cobra.Command{
		Use:   "list-tasks [options]",
		Short: "Print the list of tasks",
		Args:  exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if sel.all && sel.after == "" {
				return usagef(cmd, "--all must be used with --after")
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			rows, raw, err := sel.list(ctx, cmd, c)
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(raw)
			}
			if len(rows) == 0 {
				a.println("(no tasks)")
				return nil
			}
			if !a.quiet {
				a.println("ID       Pri  Owner                State    Arch       Name")
			}
			for _, t := range rows {
				if !t.sub {
					a.printTaskLine(t, 0)
				}
			}
			return nil
		},
	}
	sel.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&sel.before, "before", "", "List tasks completed before this time (timestamp or YYYY-MM-DD[ HH:MM[:SS]])")
	f.StringVar(&sel.after, "after", "", "List tasks completed after this time (same format as for --before)")
	f.BoolVar(&sel.all, "all", false, "List also finished tasks (valid only with --after)")
	return cmd
}

// --- taskinfo --------------------------------------------------------------------

// taskParamLines is koji's _parseTaskParams for the methods kojibus runs;
// other methods print no request lines, as koji.
func (a *app) taskParamLines(ctx context.Context, c *bus.Client, method string, id int64) []string {
	var params []any
	raw, err := c.CallRaw(ctx, "getTaskRequest", []any{id}, nil)
	if err != nil || decodeJSON(raw, &params) != nil {
		return []string{"Unable to parse task parameters"}
	}
	var lines []string
	switch method {
	case "newRepo":
		if len(params) > 0 {
			name := fmt.Sprint(params[0])
			var tag *bus.Tag
			if c.Call(ctx, "getTag", []any{params[0]}, nil, &tag) == nil && tag != nil {
				name = tag.Name
			}
			lines = append(lines, "Tag: "+name)
		}
	case "waitrepo":
		if len(params) > 0 {
			lines = append(lines, "Build Target: "+fmt.Sprint(params[0]))
		}
		if len(params) > 1 && params[1] != nil {
			lines = append(lines, "Newer Than: "+fmt.Sprint(params[1]))
		}
		if len(params) > 2 {
			if nvrs, ok := params[2].([]any); ok && len(nvrs) > 0 {
				s := make([]string, len(nvrs))
				for i, n := range nvrs {
					s[i] = fmt.Sprint(n)
				}
				lines = append(lines, "NVRs: "+strings.Join(s, ", "))
			}
		}
	case "createrepo":
		if len(params) > 1 {
			lines = append(lines, "Repo ID: "+fmt.Sprint(params[0]), "Arch: "+fmt.Sprint(params[1]))
		}
	case "build":
		if len(params) > 1 {
			lines = append(lines, "Source: "+fmt.Sprint(params[0]), "Build Target: "+fmt.Sprint(params[1]))
		}
	}
	if len(lines) == 0 {
		// a method koji's CLI has no layout for: its arguments as given
		lines = append(lines, "Arguments: "+pyRepr(params))
	}
	return lines
}

// taskWorkPath is koji's pathinfo.work(volume)/tasks/<id % 10000>/<id>/<name>
// under koji's default topdir.
func taskWorkPath(id int64, volume, name string) string {
	base := "/mnt/koji"
	if volume != "" && volume != "DEFAULT" {
		base += "/vol/" + volume
	}
	return fmt.Sprintf("%s/work/tasks/%d/%d/%s", base, id%10000, id, name)
}

// listOutputVolumes is listTaskOutput(all_volumes=True), names sorted.
func listOutputVolumes(ctx context.Context, c *bus.Client, id int64) ([]string, map[string][]string, error) {
	var files map[string][]string
	if err := c.Call(ctx, "listTaskOutput", []any{id}, map[string]any{"all_volumes": true}, &files); err != nil {
		return nil, nil, err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, files, nil
}

// printTaskInfo is koji's _printTaskInfo.
func (a *app) printTaskInfo(ctx context.Context, c *bus.Client, id int64, level int, recurse, verbose bool) error {
	indent := strings.Repeat(" ", 2*level)
	info, err := a.getTask(ctx, c, id, false)
	if err != nil {
		return err
	}
	if info == nil {
		return bus.GenericError("No such task: %d", id)
	}
	var host *bus.Host
	if info.HostID != nil {
		if err := c.Call(ctx, "getHost", []any{*info.HostID}, nil, &host); err != nil {
			return err
		}
	}
	var buildroots []struct {
		ID      int64  `json:"id"`
		TagName string `json:"tag_name"`
		RepoID  int64  `json:"repo_id"`
	}
	if err := c.Call(ctx, "listBuildroots", nil, map[string]any{"taskID": id}, &buildroots); err != nil && !isInvalidMethod(err) {
		return err
	}
	var builds []struct {
		NVR     string `json:"nvr"`
		BuildID int64  `json:"build_id"`
	}
	if err := c.Call(ctx, "listBuilds", nil, map[string]any{"taskID": id}, &builds); err != nil && !isInvalidMethod(err) {
		return err
	}
	names, files, err := listOutputVolumes(ctx, c, id)
	if err != nil {
		return err
	}
	var logs, output []string
	for _, n := range names {
		for _, vol := range files[n] {
			if strings.HasSuffix(n, ".log") {
				logs = append(logs, taskWorkPath(id, vol, n))
			} else {
				output = append(output, taskWorkPath(id, vol, n))
			}
		}
	}
	var owner *bus.User
	if err := c.Call(ctx, "getUser", []any{info.Owner}, nil, &owner); err != nil {
		return err
	}
	ownerName := fmt.Sprint(info.Owner)
	if owner != nil {
		ownerName = owner.Name
	}
	a.printf("%sTask: %d\n", indent, id)
	a.printf("%sType: %s\n", indent, info.Method)
	if verbose {
		a.printf("%sRequest Parameters:\n", indent)
		for _, line := range a.taskParamLines(ctx, c, info.Method, id) {
			a.printf("%s  %s\n", indent, line)
		}
	}
	a.printf("%sOwner: %s\n", indent, ownerName)
	a.printf("%sState: %s\n", indent, strings.ToLower(bus.TaskStateName(info.State)))
	a.printf("%sCreated: %s\n", indent, asctime(info.CreateTS))
	if info.StartTS != nil && *info.StartTS != 0 {
		a.printf("%sStarted: %s\n", indent, asctime(*info.StartTS))
	}
	if info.CompletionTS != nil && *info.CompletionTS != 0 {
		a.printf("%sFinished: %s\n", indent, asctime(*info.CompletionTS))
	}
	if host != nil {
		a.printf("%sHost: %s\n", indent, host.Name)
	}
	if len(builds) > 0 {
		a.printf("%sBuild: %s (%d)\n", indent, builds[0].NVR, builds[0].BuildID)
	}
	if len(buildroots) > 0 {
		a.printf("%sBuildroots:\n", indent)
		for _, r := range buildroots {
			a.printf("%s  /var/lib/mock/%s-%d-%d/\n", indent, r.TagName, r.ID, r.RepoID)
		}
	}
	section := func(title string, paths []string) {
		a.printf("%s%s:\n", indent, title)
		if len(paths) == 0 {
			a.printf("%s  No outputs reported [1]\n", indent)
		}
		for _, p := range paths {
			a.printf("%s  %s\n", indent, p)
		}
	}
	section("Log Files", logs)
	section("Output", output)
	if len(logs) == 0 || len(output) == 0 {
		a.printf("%s[1] Not all tasks produce outputs, and task outputs are not retained indefinitely.\n", indent)
	}
	a.println("")
	if recurse {
		var children []taskRow
		if err := c.Call(ctx, "getTaskChildren", []any{id}, map[string]any{"request": true}, &children); err != nil {
			return err
		}
		sort.Slice(children, func(i, j int) bool { return children[i].ID < children[j].ID })
		for _, child := range children {
			if err := a.printTaskInfo(ctx, c, child.ID, level+1, true, verbose); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *app) taskinfoCmd() *cobra.Command {
	var recurse, verbose bool
	cmd := &cobra.Command{
		Use:   "taskinfo [options] <task_id> [<task_id> ...]",
		Short: "Show information about a task",
		Args:  minArgs(1, "You must specify at least one task ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ids, err := parseTaskIDs(cmd, args, "task id must be an integer")
			if err != nil {
				return err
			}
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			if a.jsonOut {
				var out []any
				for _, id := range ids {
					t, err := a.getTask(ctx, c, id, true)
					if err != nil {
						return err
					}
					if t == nil {
						return bus.GenericError("No such task: %d", id)
					}
					entry := map[string]any{"info": t.Task, "request": t.Request}
					if recurse {
						var desc json.RawMessage
						if err := c.Call(ctx, "getTaskDescendents", []any{id}, nil, &desc); err != nil {
							return err
						}
						entry["descendents"] = desc
					}
					out = append(out, entry)
				}
				return a.printJSON(out)
			}
			for _, id := range ids {
				if err := a.printTaskInfo(ctx, c, id, 0, recurse, verbose); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&recurse, "recurse", "r", false, "Show children of this task as well")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "Be verbose")
	return cmd
}

// --- watch-task --------------------------------------------------------------------

// taskWatch is koji's TaskWatcher: one watched task and its last seen info.
type taskWatch struct {
	id    int64
	level int
	info  *taskRow
}

func (w *taskWatch) str() string {
	if w.info != nil {
		return fmt.Sprintf("%s%d %s", strings.Repeat("  ", w.level), w.id, w.info.label())
	}
	return fmt.Sprintf("%s%d", strings.Repeat("  ", w.level), w.id)
}

func (w *taskWatch) done() bool    { return w.info != nil && bus.TaskFinished(w.info.State) }
func (w *taskWatch) success() bool { return w.info != nil && w.info.State == bus.TaskClosed }

// taskWatcher watches tasks and their descendants from task events: it
// subscribes first, then reads the current states, then re-reads a task's
// info when an event names it, printing koji's watch_tasks lines.
type taskWatcher struct {
	a      *app
	c      *bus.Client
	quiet  bool
	start  time.Time
	tasks  map[int64]*taskWatch
	order  []int64
	hosts  map[int64]string
	failed bool
}

func (w *taskWatcher) hostName(ctx context.Context, id int64) string {
	if n, ok := w.hosts[id]; ok {
		return n
	}
	var h *bus.Host
	if err := w.c.Call(ctx, "getHost", []any{id}, nil, &h); err != nil || h == nil {
		return strconv.FormatInt(id, 10)
	}
	w.hosts[id] = h.Name
	return h.Name
}

// failure is koji's TaskWatcher.get_failure: the fault of a failed task.
func (w *taskWatcher) failure(ctx context.Context, id int64) string {
	err := w.c.Call(ctx, "getTaskResult", []any{id}, nil, nil)
	var f *bus.Fault
	if errors.As(err, &f) {
		return strings.TrimSpace(f.Error())
	}
	if err != nil {
		return strings.TrimSpace(err.Error())
	}
	return ""
}

func (w *taskWatcher) displayState(ctx context.Context, info *taskRow) string {
	if info == nil {
		return "unknown"
	}
	switch info.State {
	case bus.TaskOpen, bus.TaskAssigned:
		state := strings.ToLower(bus.TaskStateName(info.State))
		if info.HostID != nil {
			return fmt.Sprintf("%s (%s)", state, w.hostName(ctx, *info.HostID))
		}
		return state
	case bus.TaskFailed:
		return "FAILED: " + w.failure(ctx, info.ID)
	}
	return strings.ToLower(bus.TaskStateName(info.State))
}

func (w *taskWatcher) emitJSON(t *taskWatch, old *taskRow) {
	rec := map[string]any{
		"id": t.id, "level": t.level, "method": t.info.Method, "arch": t.info.Arch, "label": t.info.label(),
		"state": bus.TaskStateName(t.info.State), "old_state": nil, "host_id": t.info.HostID, "parent": t.info.Parent,
		"elapsed": time.Since(w.start).Round(time.Millisecond).Seconds(),
	}
	if old != nil {
		rec["old_state"] = bus.TaskStateName(old.State)
	}
	b, _ := json.Marshal(rec)
	w.a.println(string(b))
}

// update is koji's TaskWatcher.update: reads the task and prints its first
// state or its state change. It reports whether the state changed.
func (w *taskWatcher) update(ctx context.Context, t *taskWatch) (bool, error) {
	if t.done() {
		return false, nil
	}
	last := t.info
	info, err := w.a.getTask(ctx, w.c, t.id, true)
	if err != nil {
		return false, err
	}
	if info == nil {
		if !w.quiet {
			w.a.printf("No such task id: %d\n", t.id)
		}
		return false, &exitError{code: exitFail}
	}
	t.info = info
	if last != nil && last.State == info.State {
		return false, nil
	}
	if w.a.jsonOut {
		w.emitJSON(t, last)
	} else if !w.quiet {
		if last != nil {
			w.a.printf("%s: %s -> %s\n", t.str(), w.displayState(ctx, last), w.displayState(ctx, info))
		} else {
			w.a.printf("%s: %s\n", t.str(), w.displayState(ctx, info))
		}
	}
	return last != nil, nil
}

// add starts watching a task (and, from getTaskChildren, its descendants).
func (w *taskWatcher) add(ctx context.Context, id int64, level int) error {
	if _, ok := w.tasks[id]; ok {
		return nil
	}
	t := &taskWatch{id: id, level: level}
	w.tasks[id] = t
	w.order = append(w.order, id)
	if _, err := w.update(ctx, t); err != nil {
		return err
	}
	var children []taskRow
	if err := w.c.Call(ctx, "getTaskChildren", []any{id}, nil, &children); err != nil {
		return err
	}
	for _, child := range children {
		if err := w.add(ctx, child.ID, level+1); err != nil {
			return err
		}
	}
	return nil
}

func (w *taskWatcher) allDone() bool {
	for _, id := range w.order {
		if !w.tasks[id].done() {
			return false
		}
	}
	return true
}

// statusLine is koji's display_tasklist_status.
func (w *taskWatcher) statusLine() {
	var free, open, done, failed int
	for _, id := range w.order {
		switch w.tasks[id].info.State {
		case bus.TaskFailed:
			failed++
		case bus.TaskClosed, bus.TaskCanceled:
			done++
		case bus.TaskOpen, bus.TaskAssigned:
			open++
		case bus.TaskFree:
			free++
		}
	}
	w.a.printf("  %d free  %d open  %d done  %d failed\n", free, open, done, failed)
}

// finished records a finished task: the status line after a change, and failure of a top task.
func (w *taskWatcher) finished(t *taskWatch, changed bool) {
	if changed && !w.quiet && !w.a.jsonOut {
		w.statusLine()
	}
	if t.level == 0 && !t.success() {
		w.failed = true
	}
}

// watchTasks is koji's watch_tasks, live: exit status 1 when a top task did
// not close successfully.
func (a *app) watchTasks(ctx context.Context, c *bus.Client, ids []int64, quiet bool) error {
	if len(ids) == 0 {
		return nil
	}
	events, unsub, err := subscribeEvents(c, "task.>")
	if err != nil {
		return err
	}
	defer unsub()
	w := &taskWatcher{a: a, c: c, quiet: quiet, start: time.Now(), tasks: map[int64]*taskWatch{}, hosts: map[int64]string{}}
	if !quiet && !a.jsonOut {
		a.println("Watching tasks (this may be safely interrupted)...")
	}
	for _, id := range ids {
		if err := w.add(ctx, id, 0); err != nil {
			return err
		}
	}
	for _, id := range w.order {
		if t := w.tasks[id]; t.done() {
			w.finished(t, false)
		}
	}
	for !w.allDone() {
		select {
		case <-ctx.Done():
			if !quiet && !a.jsonOut {
				var running []string
				for _, id := range w.order {
					if t := w.tasks[id]; !t.done() {
						running = append(running, t.str()+": "+w.displayState(context.Background(), t.info))
					}
				}
				a.printf("Tasks still running. You can continue to watch with the 'kojictl watch-task' command.\nRunning Tasks:\n%s\n", strings.Join(running, "\n"))
			}
			return ctx.Err()
		case m := <-events:
			ev, err := bus.EventFromMsg(m)
			if err != nil {
				continue
			}
			id := jsonInt(ev.Props["id"])
			if t, ok := w.tasks[id]; ok {
				changed, err := w.update(ctx, t)
				if err != nil {
					return err
				}
				if t.done() {
					w.finished(t, changed)
				}
				continue
			}
			if p, ok := w.tasks[jsonInt(ev.Props["parent"])]; ok {
				if err := w.add(ctx, id, p.level+1); err != nil {
					return err
				}
				if t := w.tasks[id]; t.done() {
					w.finished(t, false)
				}
			}
		}
	}
	if !quiet && !a.jsonOut {
		a.println("")
		for _, id := range w.order {
			t := w.tasks[id]
			if t.level != 0 {
				continue
			}
			switch t.info.State {
			case bus.TaskClosed:
				a.printf("%s completed successfully\n", t.str())
			case bus.TaskFailed:
				a.printf("%s failed\n", t.str())
			case bus.TaskCanceled:
				a.printf("%s was canceled\n", t.str())
			default:
				a.printf("%s has not completed\n", t.str())
			}
		}
	}
	if w.failed {
		return &exitError{code: exitFail}
	}
	return nil
}

func (a *app) watchTaskCmd() *cobra.Command {
	var sel taskSelection
	cmd := &cobra.Command{
		Use:   "watch-task [options] <task id> [<task id> ...]",
		Short: "Track progress of particular tasks",
		Long: `Track tasks and their subtasks until they finish, printing state changes as
task events arrive (no polling). Exit status 1 if a task given fails or is canceled.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if len(args) > 0 && sel.any() {
				return usagef(cmd, "Selection options cannot be combined with a task list")
			}
			ids, err := parseTaskIDs(cmd, args, "task id must be an integer")
			if err != nil {
				return err
			}
			if !sel.any() && len(ids) == 0 {
				return usagef(cmd, "at least one task id must be specified")
			}
			var c *bus.Client
			if sel.mine {
				c, err = a.session(ctx)
			} else {
				c, err = a.anon(ctx)
			}
			if err != nil {
				return err
			}
			if sel.any() {
				rows, _, err := sel.list(ctx, cmd, c)
				if err != nil {
					return err
				}
				if len(rows) == 0 {
					a.println("(no tasks)")
					return nil
				}
				for _, t := range rows {
					ids = append(ids, t.ID)
				}
			}
			return a.watchTasks(ctx, c, ids, a.quiet)
		},
	}
	sel.flags(cmd)
	return cmd
}

// --- watch-logs ----------------------------------------------------------------------

// logPrinter prints log contents under koji's "==> task:volume:log: <==" headers.
type logPrinter struct {
	a       *app
	only    string
	lastlog string
	// raw prints the contents alone, without headers (runroot's output);
	// silent prints nothing (runroot --quiet).
	raw, silent bool
	// to receives raw output instead of stdout (runroot --json).
	to io.Writer
}

func (p *logPrinter) wanted(name string) bool {
	if p.only != "" {
		return name == p.only
	}
	return strings.HasSuffix(name, "log")
}

func (p *logPrinter) write(task int64, volume, name string, data []byte) {
	if len(data) == 0 || p.silent {
		return
	}
	if p.raw {
		w := p.a.stdout
		if p.to != nil {
			w = p.to
		}
		_, _ = w.Write(data)
		return
	}
	cur := fmt.Sprintf("%d:%s:%s:", task, volume, name)
	if cur != p.lastlog {
		if p.lastlog != "" {
			p.a.printf("\n")
		}
		p.a.printf("==> %s <==\n", cur)
		p.lastlog = cur
	}
	_, _ = p.a.stdout.Write(data)
}

// logChunk is the size watch-logs asks per downloadTaskOutput call (koji's 16 KiB).
const logChunk = 16384

// printStored prints a task's logs as the hub has them (listTaskOutput, downloadTaskOutput).
func (p *logPrinter) printStored(ctx context.Context, c *bus.Client, id int64) error {
	names, files, err := listOutputVolumes(ctx, c, id)
	if err != nil {
		return err
	}
	for _, name := range names {
		if !p.wanted(name) {
			continue
		}
		for _, vol := range files[name] {
			var offset int64
			for {
				var b64 string
				kw := map[string]any{"offset": offset, "size": logChunk}
				if vol != "DEFAULT" {
					kw["volume"] = vol
				}
				if err := c.Call(ctx, "downloadTaskOutput", []any{id, name}, kw, &b64); err != nil {
					return err
				}
				data, err := base64.StdEncoding.DecodeString(b64)
				if err != nil {
					return fmt.Errorf("downloadTaskOutput %d %s: %w", id, name, err)
				}
				if len(data) == 0 {
					break
				}
				p.write(id, vol, name, data)
				offset += int64(len(data))
			}
		}
	}
	return nil
}

// uploadChunk is one upload message for a followed task.
type uploadChunk struct {
	task int64
	name string
	data []byte
	err  error
}

// followedTask is a task whose live upload chunks are being read.
type followedTask struct {
	id        int64
	finished  bool
	processed uint64
	stop      func()
}

// uploadFilter is the upload subject filter of every attempt of a task.
func uploadFilter(id int64) string { return bus.UploadFilter(0, id, 0) }

// followUploads reads a task's upload chunks, in order, from the start of
// the stream, into out.
func followUploads(ctx context.Context, js jetstream.JetStream, id int64, out chan<- uploadChunk) (func(), error) {
	cons, err := js.OrderedConsumer(ctx, bus.UploadsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{uploadFilter(id)}, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return nil, fmt.Errorf("upload consumer for task %d: %w", id, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("upload consumer for task %d: %w", id, err)
	}
	var once sync.Once
	stop := func() { once.Do(it.Stop) }
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				if !errors.Is(err, jetstream.ErrMsgIteratorClosed) && ctx.Err() == nil {
					select {
					case out <- uploadChunk{task: id, err: err}:
					case <-ctx.Done():
					}
				}
				return
			}
			// <UploadPrefix><host>.<task>.<attempt>.<escaped name>
			parts := strings.SplitN(strings.TrimPrefix(m.Subject(), bus.UploadPrefix), ".", 4)
			tok := parts[len(parts)-1]
			name, ok := bus.UnescapeToken(tok)
			if !ok {
				name = tok
			}
			select {
			case out <- uploadChunk{task: id, name: name, data: m.Data()}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return stop, nil
}

// storedChunks counts the upload messages of a task in the stream.
func storedChunks(ctx context.Context, stream jetstream.Stream, id int64) (uint64, error) {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(uploadFilter(id)))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, k := range info.State.Subjects {
		n += k
	}
	return n, nil
}

func (a *app) watchLogsCmd() *cobra.Command {
	var follow, mine bool
	var logName string
	cmd := &cobra.Command{
		Use:   "watch-logs [options] <task id> [<task id> ...]",
		Short: "Watch logs in realtime",
		Long: `Print the *log outputs of tasks under "==> task:volume:log: <==" headers.
With -f/--follow, running tasks are followed live: their log chunks are
printed as the builder uploads them (from the ` + bus.UploadsStream + ` stream), with
their subtasks, until the tasks finish.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var c *bus.Client
			var err error
			var ids []int64
			if mine {
				if len(args) > 0 {
					return usagef(cmd, "Selection options cannot be combined with a task list")
				}
				if c, err = a.session(ctx); err != nil {
					return err
				}
				sel := taskSelection{mine: true}
				rows, _, err := sel.list(ctx, cmd, c)
				if err != nil {
					return err
				}
				if len(rows) == 0 {
					a.println("You've no active tasks.")
					return nil
				}
				for _, t := range rows {
					ids = append(ids, t.ID)
				}
			} else {
				if ids, err = parseTaskIDs(cmd, args, "task id must be an integer"); err != nil {
					return err
				}
				if len(ids) == 0 {
					return usagef(cmd, "at least one task id must be specified")
				}
				if c, err = a.anon(ctx); err != nil {
					return err
				}
			}
			p := &logPrinter{a: a, only: logName}
			if !follow {
				for _, id := range ids {
					t, err := a.getTask(ctx, c, id, false)
					if err != nil {
						return err
					}
					if t == nil {
						return failf("No such task id: %d", id)
					}
					if err := p.printStored(ctx, c, id); err != nil {
						return err
					}
				}
				return nil
			}
			return a.followLogs(ctx, c, ids, p)
		},
	}
	f := cmd.Flags()
	f.StringVar(&logName, "log", "", "Watch only a specific log")
	f.BoolVar(&mine, "mine", false, "Watch logs for all your tasks, task_id arguments are forbidden in this case.")
	f.BoolVarP(&follow, "follow", "f", false, "Follow live output and spawned child tasks until they finish")
	return cmd
}

// followLogs follows tasks' logs live until every followed task has
// finished and its chunks are printed. Events come first: the subscription
// to task events is made before any state is read, so no finish or new
// subtask is missed.
func (a *app) followLogs(ctx context.Context, c *bus.Client, ids []int64, p *logPrinter) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events, unsub, err := subscribeEvents(c, "task.>")
	if err != nil {
		return err
	}
	defer unsub()
	js, err := jetstream.New(c.Conn())
	if err != nil {
		return err
	}
	stream, err := js.Stream(ctx, bus.UploadsStream)
	if err != nil {
		return fmt.Errorf("upload stream %s: %w", bus.UploadsStream, err)
	}
	if !a.quiet && !p.raw {
		a.println("Watching logs (this may be safely interrupted)...")
	}
	chunks := make(chan uploadChunk, 256)
	followed := map[int64]*followedTask{}
	defer func() {
		for _, f := range followed {
			if f.stop != nil {
				f.stop()
			}
		}
	}()
	var add func(id int64, top bool) error
	add = func(id int64, top bool) error {
		if _, ok := followed[id]; ok {
			return nil
		}
		t, err := a.getTask(ctx, c, id, false)
		if err != nil {
			return err
		}
		if t == nil {
			return failf("No such task id: %d", id)
		}
		f := &followedTask{id: id}
		followed[id] = f
		if bus.TaskFinished(t.State) {
			// Finished: the accepted run's stored files.
			f.finished = true
			if err := p.printStored(ctx, c, id); err != nil {
				return err
			}
		} else if f.stop, err = followUploads(ctx, js, id, chunks); err != nil {
			return err
		}
		var children []taskRow
		if err := c.Call(ctx, "getTaskChildren", []any{id}, nil, &children); err != nil {
			return err
		}
		for _, child := range children {
			if err := add(child.ID, false); err != nil {
				return err
			}
		}
		return nil
	}
	for _, id := range ids {
		if err := add(id, true); err != nil {
			return err
		}
	}
	// drained reports whether every followed task finished and all its stored chunks were printed.
	drained := func() (bool, error) {
		for _, f := range followed {
			if !f.finished {
				return false, nil
			}
			if f.stop == nil {
				continue // printed from the stored files
			}
			n, err := storedChunks(ctx, stream, f.id)
			if err != nil {
				return false, err
			}
			if f.processed < n {
				return false, nil
			}
		}
		return true, nil
	}
	for {
		if ok, err := drained(); err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ch := <-chunks:
			if ch.err != nil {
				return fmt.Errorf("task %d output: %w", ch.task, ch.err)
			}
			f := followed[ch.task]
			f.processed++
			if p.wanted(ch.name) {
				p.write(ch.task, "DEFAULT", ch.name, ch.data)
			}
			if !f.finished {
				continue
			}
		case m := <-events:
			if err := a.logsEvent(ctx, m, followed, add); err != nil {
				return err
			}
		}
	}
}

// logsEvent marks followed tasks finished and adds new subtasks.
func (a *app) logsEvent(ctx context.Context, m *nats.Msg, followed map[int64]*followedTask, add func(int64, bool) error) error {
	ev, err := bus.EventFromMsg(m)
	if err != nil {
		return nil
	}
	id := jsonInt(ev.Props["id"])
	if f, ok := followed[id]; ok {
		if s, _ := ev.Props["new"].(string); s != "" && bus.TaskFinished(bus.TaskStateByName(s)) {
			f.finished = true
		}
		return nil
	}
	if _, ok := followed[jsonInt(ev.Props["parent"])]; ok {
		return add(id, false)
	}
	return nil
}

// --- cancel, resubmit, priority, free, assign ------------------------------------------

func (a *app) cancelCmd() *cobra.Command {
	var justone, full, force bool
	cmd := &cobra.Command{
		Use:   "cancel [options] <task_id|build> [<task_id|build> ...]",
		Short: "Cancel tasks and/or builds",
		Args:  minArgs(1, "You must specify at least one task id or build"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var tasks []int64
			var builds []string
			for _, s := range args {
				if n, err := strconv.ParseInt(s, 10, 64); err == nil {
					tasks = append(tasks, n)
					continue
				}
				if _, _, _, err := parseNVR(s); err != nil {
					return usagef(cmd, "please specify only task ids (integer) or builds (n-v-r)")
				}
				builds = append(builds, s)
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			failed := false
			report := func(err error) error {
				var f *bus.Fault
				if errors.As(err, &f) {
					a.warn("%s", f.Message)
					failed = true
					return nil
				}
				return err
			}
			for _, id := range tasks {
				method, kw := "cancelTask", map[string]any{}
				switch {
				case justone:
					kw["recurse"] = false
				case full:
					method = "cancelTaskFull"
					if force {
						kw["strict"] = false
					}
				}
				if err := report(c.Call(ctx, method, []any{id}, kw, nil)); err != nil {
					return err
				}
			}
			for _, b := range builds {
				if err := report(c.Call(ctx, "cancelBuild", []any{b}, map[string]any{"strict": true}, nil)); err != nil {
					return err
				}
			}
			if failed {
				return &exitError{code: exitFail}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&justone, "justone", false, "Do not cancel subtasks")
	f.BoolVar(&full, "full", false, "Full cancellation (admin only)")
	f.BoolVar(&force, "force", false, "Allow subtasks with --full")
	return cmd
}

func (a *app) resubmitCmd() *cobra.Command {
	var wait, nowait bool
	cmd := &cobra.Command{
		Use:   "resubmit [options] <task_id>",
		Short: "Retry a canceled or failed task, using the same parameter as the original task.",
		Args:  exactArgs(1, "Please specify a single task ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ids, err := parseTaskIDs(cmd, args, "Please specify a single task ID")
			if err != nil {
				return err
			}
			quiet := a.quiet
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			if !quiet {
				a.println("Resubmitting the following task:")
				if err := a.printTaskInfo(ctx, c, ids[0], 0, false, true); err != nil {
					return err
				}
			}
			var newID int64
			if err := c.Call(ctx, "resubmitTask", []any{ids[0]}, nil, &newID); err != nil {
				return err
			}
			if !quiet {
				a.printf("Resubmitted task %d as new task %d\n", ids[0], newID)
			}
			if nowait && !wait {
				return nil
			}
			return a.watchTasks(ctx, c, []int64{newID}, quiet)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&wait, "wait", false, "Wait on task, even if running in the background")
	f.BoolVar(&nowait, "nowait", false, "Don't wait on task")
	f.BoolVar(&nowait, "nowatch", false, "An alias for --nowait")
	return cmd
}

// isAdmin is koji's hasPerm('admin') check; when false it also returns the user name.
func (a *app) isAdmin(ctx context.Context, c *bus.Client) (bool, string, error) {
	var ok bool
	if err := c.Call(ctx, "hasPerm", []any{"admin"}, nil, &ok); err != nil {
		return false, "", err
	}
	if ok {
		return true, "", nil
	}
	var u *bus.LoggedInUser
	if err := c.Call(ctx, "getLoggedInUser", nil, nil, &u); err != nil {
		return false, "", err
	}
	name := "anonymous"
	if u != nil {
		name = u.Name
	}
	return false, name, nil
}

func (a *app) setTaskPriorityCmd() *cobra.Command {
	var priority int32 // Koji's task priority is a database int4
	var recurse bool
	cmd := &cobra.Command{
		Use:   "set-task-priority [options] --priority=<priority> <task_id> [<task_id> ...]",
		Short: "[admin] Set task priority",
		Args:  minArgs(1, "You must specify at least one task id"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if !cmd.Flags().Changed("priority") {
				return usagef(cmd, "You must specify --priority")
			}
			ids, err := parseTaskIDs(cmd, args, "Task numbers must be integers")
			if err != nil {
				return err
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			ok, user, err := a.isAdmin(ctx, c)
			if err != nil {
				return err
			}
			if !ok {
				return failf("admin permission required (logged in as %s)", user)
			}
			refused := false
			for _, id := range ids {
				err := c.Call(ctx, "setTaskPriority", []any{id, priority, recurse}, nil, nil)
				var f *bus.Fault
				if errors.As(err, &f) && f.Code == bus.CodeGenericError {
					a.warn("Can't update task priority on closed task: %d", id)
					refused = true
				} else if err != nil {
					return err
				}
			}
			if refused {
				return &exitError{code: exitFail} // every refusal exits 1
			}
			return nil
		},
	}
	cmd.Flags().Int32Var(&priority, "priority", 0, "New priority")
	cmd.Flags().BoolVar(&recurse, "recurse", false, "Change priority of child tasks as well")
	return cmd
}

func (a *app) freeTaskCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "free-task [options] <task_id> [<task_id> ...]",
		Short: "[admin] Free a task",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ids, err := parseTaskIDs(cmd, args, "task_id must be an integer")
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				return usagef(cmd, "please specify at least one task_id")
			}
			c, err := a.session(ctx)
			if err != nil {
				return err
			}
			for _, id := range ids {
				if err := c.Call(ctx, "freeTask", []any{id}, nil, nil); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func (a *app) assignTaskCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "assign-task [options] <task_id> <hostname>",
		Short: "[admin] Assign a task to a host",
		Args:  exactArgs(2, "please specify a task id and a hostname"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ids, err := parseTaskIDs(cmd, args[:1], "please specify a task id and a hostname")
			if err != nil {
				return err
			}
			id, hostname := ids[0], args[1]
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			t, err := a.getTask(ctx, c, id, false)
			if err != nil {
				return err
			}
			if t == nil {
				return bus.GenericError("No such task: %d", id)
			}
			h, err := a.getHost(cmd, c, hostname)
			if err != nil {
				return err
			}
			if h == nil {
				return bus.GenericError("No such host: %s", hostname)
			}
			if c, err = a.session(ctx); err != nil {
				return err
			}
			if ok, _, err := a.isAdmin(ctx, c); err != nil {
				return err
			} else if !ok {
				return usagef(cmd, "This action requires admin privileges")
			}
			var assigned bool
			if err := c.Call(ctx, "assignTask", []any{id, hostname, force}, nil, &assigned); err != nil {
				return err
			}
			if assigned {
				a.printf("assigned task %d to host %s\n", id, hostname)
			} else {
				a.printf("failed to assign task %d to host %s\n", id, hostname)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "force to assign a non-free task")
	return cmd
}

// --- task output -------------------------------------------------------------------

type outputStat struct {
	Size  string `json:"st_size"`
	MTime string `json:"st_mtime"`
}

func (a *app) listTaskOutputCmd() *cobra.Command {
	var stat, allVolumes bool
	cmd := &cobra.Command{
		Use:   "list-task-output [options] <task_id>",
		Short: "List the files a task produced (listTaskOutput)",
		Long: `List a task's output files: one name a line; with --stat the size and
modification time; with --all-volumes the volumes holding each file.`,
		Args: exactArgs(1, "Please specify a single task ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			ids, err := parseTaskIDs(cmd, args, "task id must be an integer")
			if err != nil {
				return err
			}
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			raw, err := c.CallRaw(ctx, "listTaskOutput", []any{ids[0]}, map[string]any{"stat": stat, "all_volumes": allVolumes, "strict": true})
			if err != nil {
				return err
			}
			if a.jsonOut {
				return a.printJSON(raw)
			}
			statLine := func(name, vol string, st outputStat) {
				size, _ := strconv.ParseInt(st.Size, 10, 64)
				mtime, _ := strconv.ParseFloat(st.MTime, 64)
				when := "-"
				if mtime > 0 {
					when = time.Unix(int64(mtime), 0).Local().Format("2006-01-02 15:04:05")
				}
				if vol != "" {
					a.printf("%-40s %-10s %12d  %s\n", name, vol, size, when)
				} else {
					a.printf("%-40s %12d  %s\n", name, size, when)
				}
			}
			switch {
			case stat && allVolumes:
				var out map[string]map[string]outputStat
				if err := json.Unmarshal(raw, &out); err != nil {
					return err
				}
				for _, name := range sortedNames(out) {
					for _, vol := range sortedNames(out[name]) {
						statLine(name, vol, out[name][vol])
					}
				}
			case stat:
				var out map[string]outputStat
				if err := json.Unmarshal(raw, &out); err != nil {
					return err
				}
				for _, name := range sortedNames(out) {
					statLine(name, "", out[name])
				}
			case allVolumes:
				var out map[string][]string
				if err := json.Unmarshal(raw, &out); err != nil {
					return err
				}
				for _, name := range sortedNames(out) {
					a.printf("%s %s\n", name, strings.Join(out[name], " "))
				}
			default:
				var names []string
				if err := json.Unmarshal(raw, &names); err != nil {
					return err
				}
				sort.Strings(names)
				for _, n := range names {
					a.println(n)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&stat, "stat", false, "Show file sizes and modification times")
	cmd.Flags().BoolVar(&allVolumes, "all-volumes", false, "Show the volumes of each file")
	return cmd
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
