package hub

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/policy"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of the task part of the state bucket.
//
//	task.<id>                     taskRecord (getTaskInfo's fields, request, result, attempt)
//	taskchild.<parent>.<child>    true: child is a subtask of parent
//	tasklabel.<parent>.<label>    child id: a child with this label exists (Koji's UNIQUE(parent, label))
//	seq.task                      the task id sequence
//
// Each hub's view files the tasks ASSIGNED to or OPEN on a host under that
// host (taskGroups); the index is not stored.
//
// Dispatch to builders (the work queue, fencing by attempt) is in
// dispatch.go and hosttasks.go; this file holds Koji's task model.

const defaultTaskPriority = 20 // koji.PRIO_DEFAULT

type taskRecord struct {
	bus.Task
	Request json.RawMessage `json:"request"`
	Result  json.RawMessage `json:"result,omitempty"`
	// Attempt numbers the task's runs; every builder call of a run carries it
	// and the hub refuses a stale one (fencing, Core II).
	Attempt int64 `json:"attempt"`
	// Pinned tasks (created with assign, or assignTask) go back to their host when freed.
	Pinned bool `json:"pinned,omitempty"`
	// Retries counts runs lost with their host; past maxTaskRetries the task fails.
	Retries int `json:"retries,omitempty"`
	// Outputs are the files of the accepted run, stored under <id>/<OutputAttempt>/<name>.
	Outputs       []outputFile `json:"outputs,omitempty"`
	OutputAttempt int64        `json:"output_attempt,omitempty"`
}

func taskKey(id int64) string { return "task." + strconv.FormatInt(id, 10) }
func taskChildKey(parent, child int64) string {
	return "taskchild." + strconv.FormatInt(parent, 10) + "." + strconv.FormatInt(child, 10)
}
func taskLabelKey(parent int64, label string) string {
	return "tasklabel." + strconv.FormatInt(parent, 10) + "." + state.EscapeKey(label)
}

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerTasks) }

func lookupTask(v state.View, id int64) (*taskRecord, bool) {
	var t taskRecord
	if ok, err := v.GetJSON(taskKey(id), &t); !ok || err != nil {
		return nil, false
	}
	return &t, true
}

func taskChildren(v state.View, parent int64) []int64 {
	prefix := "taskchild." + strconv.FormatInt(parent, 10) + "."
	var ids []int64
	for _, k := range v.Keys("taskchild", prefix) {
		if id, err := strconv.ParseInt(strings.TrimPrefix(k, prefix), 10, 64); err == nil {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// taskOpts are make_task's options.
type taskOpts struct {
	Parent   *int64
	Label    *string
	Owner    *int64
	Channel  *string
	Arch     *string
	Priority *int
	Assign   *string
	Weight   *float64
}

// createTaskTx is Koji's make_task: it validates, picks channel and priority
// (Koji's default channel and priority policies; the policy engine replaces
// chooseChannel/choosePriority), stores the task and emits task.free (or
// task.assigned when pinned to a host). A child with an existing label is
// returned instead of created (idempotent failover, as Koji).
func (s *Server) createTaskTx(tx *state.Txn, caller *registry.Caller, method string, request json.RawMessage, o taskOpts) (*taskRecord, error) {
	if method == "" {
		return nil, bus.ParameterError("task method must not be empty")
	}
	var parent *taskRecord
	if o.Parent != nil {
		p, ok := lookupTask(tx.View, *o.Parent)
		if !ok {
			return nil, bus.GenericError("Invalid parent task: %d", *o.Parent)
		}
		if p.State != bus.TaskOpen {
			return nil, bus.GenericError("Parent task (id %d) is not open", *o.Parent)
		}
		parent = p
		if o.Label != nil {
			var existing int64
			if ok, _ := tx.GetJSON(taskLabelKey(p.ID, *o.Label), &existing); ok {
				if t, ok := lookupTask(tx.View, existing); ok {
					return t, nil
				}
			}
		}
	}
	now := nowTS()
	t := &taskRecord{Task: bus.Task{
		State: bus.TaskFree, CreateTS: now, CreateTime: bus.KojiTime(now),
		Method: method, Arch: "noarch", Priority: defaultTaskPriority, Weight: 1.0,
		Label: o.Label,
	}, Request: request}
	if parent != nil {
		t.Parent = &parent.ID
		t.Owner = parent.Owner
		t.Arch = parent.Arch
		t.Priority = parent.Priority - 1
	}
	if o.Owner != nil {
		if _, ok := lookupUser(tx.View, registry.Ref{ID: *o.Owner}); !ok {
			return nil, bus.GenericError("No such user: %d", *o.Owner)
		}
		t.Owner = *o.Owner
	} else if parent == nil {
		if caller == nil || caller.UserID == 0 {
			return nil, bus.GenericError("task must have an owner")
		}
		t.Owner = caller.UserID
	}
	if o.Arch != nil {
		if !archTokenRE.MatchString(*o.Arch) {
			return nil, bus.GenericError("Invalid arch: %q", *o.Arch)
		}
		t.Arch = *o.Arch
	}
	if o.Priority != nil {
		t.Priority = *o.Priority
	}
	if o.Weight != nil {
		if *o.Weight < 0 {
			return nil, bus.ParameterError("weight must not be negative")
		}
		t.Weight = *o.Weight
	}
	ch, err := s.taskPolicies(tx.View, t, o, parent)
	if err != nil {
		return nil, err
	}
	t.ChannelID = ch.ID
	t.ID = tx.NextID("task")
	if o.Assign != nil {
		h, ok := lookupHost(tx.View, registry.Ref{Name: *o.Assign})
		if !ok {
			return nil, bus.GenericError("No such host: %s", *o.Assign)
		}
		t.State = bus.TaskAssigned
		t.HostID = &h.ID
		t.Pinned = true
	}
	if err := dispatchTaskTx(tx, t); err != nil {
		return nil, err
	}
	if parent != nil {
		if err := tx.Put(taskChildKey(parent.ID, t.ID), true); err != nil {
			return nil, err
		}
		if o.Label != nil {
			if err := tx.Put(taskLabelKey(parent.ID, *o.Label), t.ID); err != nil {
				return nil, err
			}
		}
	}
	// One event for the transition that happened, unlike Koji, which always
	// says FREE even for a task created ASSIGNED.
	emitTaskState(tx, t, nil)
	return t, nil
}

// taskPolicies applies the channel and priority policies as Koji's
// make_task does; it returns the channel and adjusts t.Priority.
func (s *Server) taskPolicies(v state.View, t *taskRecord, o taskOpts, parent *taskRecord) (*bus.Channel, error) {
	data := policy.Data{"method": t.Method, "arch": t.Arch, "label": nil, "owner": t.Owner, "user_id": t.Owner, "parent": nil}
	if t.Label != nil {
		data["label"] = *t.Label
	}
	if parent != nil {
		data["parent"] = parent.ID
	}
	for k, val := range policyDataFromTaskArgs(v, t.Method, t.Request) {
		data[k] = val
	}
	var requested *bus.Channel
	if o.Channel != nil {
		data["req_channel"] = *o.Channel
		ch, err := chooseChannel(v, o.Channel, nil)
		if err != nil {
			return nil, err
		}
		requested = ch
	}
	res, err := s.applyPolicy(v, "channel", data)
	if err != nil {
		return nil, err
	}
	var ch *bus.Channel
	words := strings.Fields(res)
	switch {
	case len(words) == 0:
		// no rule matched: Koji logs and uses the default channel
		if ch, err = chooseChannel(v, nil, nil); err != nil {
			return nil, err
		}
	case words[0] == "use" && len(words) > 1:
		if ch, err = chooseChannel(v, &words[1], nil); err != nil {
			return nil, err
		}
	case words[0] == "parent":
		if parent == nil {
			return nil, bus.GenericError("Invalid channel policy result (no parent task): %s", res)
		}
		if ch, err = chooseChannel(v, nil, parent); err != nil {
			return nil, err
		}
	case words[0] == "req":
		if requested == nil {
			return nil, bus.GenericError("Invalid channel policy result (no channel requested): %s", res)
		}
		ch = requested
	case words[0] == "use":
		return nil, bus.GenericError("Invalid result from channel policy")
	default:
		return nil, bus.GenericError("Invalid channel policy result: %s", res)
	}
	res, err = s.applyPolicy(v, "priority", data)
	if err != nil {
		return nil, err
	}
	words = strings.Fields(res)
	switch {
	case len(words) == 0 || words[0] == "stay":
	case (words[0] == "set" || words[0] == "adjust") && len(words) > 1:
		n, err := strconv.Atoi(words[1])
		if err != nil {
			return nil, bus.GenericError("Invalid result from priority policy")
		}
		if words[0] == "set" {
			t.Priority = n
		} else {
			t.Priority += n
		}
	case words[0] == "set" || words[0] == "adjust":
		return nil, bus.GenericError("Invalid result from priority policy")
	default:
		return nil, bus.GenericError("Invalid priority policy result: %s", res)
	}
	return ch, nil
}

// taskParamNames are the positional parameters of the task methods kojibus
// knows (their handlers' signatures, as Koji's parse_task_params reads them).
var taskParamNames = map[string][]string{
	"build":    {"src", "target", "opts"},
	"waitrepo": {"tag", "newer_than", "nvrs"},
	"newRepo":  {"tag", "event", "src", "debuginfo", "separate_src"},
	"runroot":  {"root", "arch", "command"},
}

// policyDataFromTaskArgs is Koji's policy_data_from_task_args: source,
// target, tag, build_tag and scratch taken from the task's arguments.
func policyDataFromTaskArgs(v state.View, method string, request json.RawMessage) policy.Data {
	var args []any
	if json.Unmarshal(request, &args) != nil {
		return nil
	}
	params := map[string]any{}
	if n := len(args); n > 0 {
		if kw, ok := args[n-1].(map[string]any); ok && kw["__starstar"] == true {
			for k, val := range kw {
				if k != "__starstar" {
					params[k] = val
				}
			}
			args = args[:n-1]
		}
	}
	for i, name := range taskParamNames[method] {
		if i < len(args) {
			params[name] = args[i]
		}
	}
	data := policy.Data{}
	first := func(keys ...string) (any, bool) {
		for _, k := range keys {
			if val, ok := params[k]; ok {
				return val, true
			}
		}
		return nil, false
	}
	if method != "newRepo" {
		if src, ok := first("src", "spec_url", "url"); ok {
			data["source"] = src
		}
	}
	if tgt, ok := first("target", "build_target", "target_info"); ok {
		if m, isMap := tgt.(map[string]any); isMap {
			tgt = m["name"]
		}
		data["target"] = tgt
	}
	for _, field := range []string{"tag", "build_tag"} {
		val, ok := first(field, field+"_id", field+"_info")
		if !ok {
			continue
		}
		if m, isMap := val.(map[string]any); isMap {
			val = m["id"]
		}
		if tg, found := lookupTag(v, refOf(val)); found {
			data[field] = tg.ID
		} else {
			data[field] = nil
		}
	}
	if opts, ok := params["opts"].(map[string]any); ok {
		data["scratch"] = opts["scratch"]
	}
	return data
}

// chooseChannel applies Koji's default channel policy: the requested
// channel, else the parent's, else "default".
func chooseChannel(v state.View, requested *string, parent *taskRecord) (*bus.Channel, error) {
	var ch bus.Channel
	switch {
	case requested != nil:
		var id int64
		if ok, _ := v.GetJSON(channelNameKey(*requested), &id); !ok {
			return nil, bus.GenericError("No such channel: %s", *requested)
		}
		if ok, _ := v.GetJSON(channelKey(id), &ch); !ok {
			return nil, bus.GenericError("No such channel: %s", *requested)
		}
		if !ch.Enabled {
			return nil, bus.GenericError("Channel %s is disabled.", *requested)
		}
	case parent != nil:
		if ok, _ := v.GetJSON(channelKey(parent.ChannelID), &ch); !ok {
			return nil, bus.GenericError("invalid channel policy")
		}
	default:
		var id int64
		if ok, _ := v.GetJSON(channelNameKey("default"), &id); !ok {
			return nil, bus.GenericError("No such channel: default")
		}
		_, _ = v.GetJSON(channelKey(id), &ch)
	}
	return &ch, nil
}

// emitTaskState stages task.<state> with protonmsg's properties and body.
func emitTaskState(tx *state.Txn, t *taskRecord, old *int) {
	var oldName any
	if old != nil {
		oldName = bus.TaskStateName(*old)
	}
	newName := bus.TaskStateName(t.State)
	props := map[string]any{
		"type": "TaskStateChange", "id": t.ID, "parent": t.Parent, "method": t.Method,
		"attribute": "state", "old": oldName, "new": newName,
	}
	info := taskInfoWith{Task: t.Task, Request: rawOrNull(t.Request)}
	// the channel's name, as Koji's task info in protonmsg bodies has it
	var ch bus.Channel
	if ok, _ := tx.GetJSON(channelKey(t.ChannelID), &ch); ok {
		info.Channel = ch.Name
	}
	if t.State == bus.TaskClosed && len(t.Result) > 0 {
		info.Result = t.Result
	}
	tx.Emit("task."+strings.ToLower(newName), props, map[string]any{"attribute": "state", "old": oldName, "new": newName, "info": info})
}

// taskInfoWith is a task as getTaskInfo shows it with its request (and, in
// state events, its result), encoded straight from the record.
type taskInfoWith struct {
	bus.Task
	Request json.RawMessage `json:"request"`
	Result  json.RawMessage `json:"result,omitempty"`
	Channel string          `json:"channel,omitempty"` // in state events only
}

// taskInfo renders a task as getTaskInfo does, optionally with its request.
func taskInfo(t *taskRecord, withRequest bool) any {
	if withRequest {
		return taskInfoWith{Task: t.Task, Request: rawOrNull(t.Request)}
	}
	return t.Task
}

// rawOrNull is raw, or JSON null when it is empty.
func rawOrNull(raw json.RawMessage) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage("null")
	}
	return raw
}

// taskInfoMap is taskInfo as a map, for answers that add fields to it.
func taskInfoMap(t *taskRecord, withRequest bool) map[string]any {
	b, _ := json.Marshal(t.Task)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	if withRequest {
		m["request"] = t.Request
	}
	return m
}

// setTaskState moves a task to a new state with Koji's timestamps and the event.
func setTaskState(tx *state.Txn, t *taskRecord, newState int) error {
	old := t.State
	t.State = newState
	now := nowTS()
	switch newState {
	case bus.TaskOpen:
		t.StartTS = &now
		st := bus.KojiTime(now)
		t.StartTime = &st
	case bus.TaskClosed, bus.TaskCanceled, bus.TaskFailed:
		t.CompletionTS = &now
		ct := bus.KojiTime(now)
		t.CompletionTime = &ct
	case bus.TaskFree:
		t.HostID = nil
	}
	if err := tx.Put(taskKey(t.ID), t); err != nil {
		return err
	}
	emitTaskState(tx, t, &old)
	return nil
}

// taskGroups files a task (state.Indexer of the task kind) under the host
// it is ASSIGNED to or OPEN on, so that heartbeats, the host monitor and
// host.getHostTasks find a host's tasks without scanning every task, and
// under its state while it is active (FREE, OPEN, ASSIGNED), so that
// listTasks of active tasks (koji list-tasks without --all) reads those
// only. Finished tasks, the most of them by far, are filed under nothing.
// It reads only the two fields of the record.
func taskGroups(_ string, val []byte) []string {
	var t struct {
		State  int    `json:"state"`
		HostID *int64 `json:"host_id"`
	}
	if json.Unmarshal(val, &t) != nil || !activeTaskState(t.State) {
		return nil
	}
	groups := []string{activeTaskGroup(t.State)}
	if t.HostID != nil && (t.State == bus.TaskOpen || t.State == bus.TaskAssigned) {
		groups = append(groups, strconv.FormatInt(*t.HostID, 10))
	}
	return groups
}

func activeTaskState(state int) bool {
	return state == bus.TaskFree || state == bus.TaskOpen || state == bus.TaskAssigned
}

// activeTaskGroup is the group of active tasks in state (host groups are
// bare numbers).
func activeTaskGroup(state int) string { return "state." + strconv.Itoa(state) }

// hostTasks returns the tasks ASSIGNED to or OPEN on a host.
func hostTasks(v state.View, hostID int64) []*taskRecord {
	var out []*taskRecord
	for _, k := range v.Group("task", strconv.FormatInt(hostID, 10)) {
		id, err := strconv.ParseInt(strings.TrimPrefix(k, "task."), 10, 64)
		if err != nil {
			continue
		}
		if t, ok := lookupTask(v, id); ok {
			out = append(out, t)
		}
	}
	return out
}

func jsonMarshal(v any) (json.RawMessage, error) { return json.Marshal(v) }
