package hub

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

func (s *Server) registerTasks() {
	reqOpt := []registry.Param{registry.P("task_id"), registry.Opt("request", false), registry.Opt("strict", false)}
	s.reg.Register(
		registry.Method{
			Name: "makeTask", Doc: "Create a task (admin)", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("method"), registry.P("arglist")}, VarKw: "opts",
			Handler: s.makeTask,
		},
		registry.Method{Name: "getTaskInfo", Doc: "Get information about a task", Params: reqOpt, Handler: s.getTaskInfo},
		registry.Method{
			Name: "getTaskRequest", Doc: "Return the request (method arguments) of a task",
			Params: []registry.Param{registry.P("taskId")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				t, err := s.taskArg(c, "taskId")
				if err != nil {
					return nil, err
				}
				return t.Request, nil
			},
		},
		registry.Method{
			Name: "getTaskResult", Doc: "Return the result of a finished task",
			Params:  []registry.Param{registry.P("taskId"), registry.Opt("raise_fault", true)},
			Handler: s.getTaskResult,
		},
		registry.Method{
			Name: "taskFinished", Doc: "Whether a task has finished",
			Params: []registry.Param{registry.P("taskId")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				t, err := s.taskArg(c, "taskId")
				if err != nil {
					return nil, err
				}
				return bus.TaskFinished(t.State), nil
			},
		},
		registry.Method{Name: "getTaskChildren", Doc: "Return the subtasks of a task", Params: reqOpt, Handler: s.getTaskChildren},
		registry.Method{
			Name: "getTaskDescendents", Doc: "Return all descendents of a task, keyed by parent id",
			Params: []registry.Param{registry.P("task_id"), registry.Opt("request", false)}, Handler: s.getTaskDescendents,
		},
		registry.Method{
			Name: "listTasks", Doc: "List tasks matching opts (Koji's filters) with queryOpts",
			Params: []registry.Param{registry.Opt("opts", nil), registry.Opt("queryOpts", nil)}, Handler: s.listTasks,
		},
		registry.Method{
			Name: "cancelTask", Doc: "Cancel a task (owner, its host or admin); recurses into children", Access: registry.LoggedIn, Write: true,
			Params: []registry.Param{registry.P("task_id"), registry.Opt("recurse", true)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.cancel(ctx, c, "task_id", cancelTask)
			},
		},
		registry.Method{
			Name: "cancelTaskFull", Doc: "Cancel a task and its whole tree (admin)", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("task_id"), registry.Opt("strict", true)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.cancel(ctx, c, "task_id", cancelFull)
			},
		},
		registry.Method{
			Name: "cancelTaskChildren", Doc: "Cancel the children of a task", Access: registry.LoggedIn, Write: true,
			Params: []registry.Param{registry.P("task_id")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.cancel(ctx, c, "task_id", cancelChildren)
			},
		},
		registry.Method{
			Name: "resubmitTask", Doc: "Create a new task with the same request as a failed or canceled one", Access: registry.LoggedIn, Write: true,
			Params: []registry.Param{registry.P("taskID")}, Handler: s.resubmitTask,
		},
		registry.Method{
			Name: "setTaskPriority", Doc: "Change a task's priority (admin)", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("task_id"), registry.P("priority"), registry.Opt("recurse", true)}, Handler: s.setTaskPriority,
		},
		registry.Method{
			Name: "freeTask", Doc: "Free a task so it is dispatched again (admin)", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("task_id")}, Handler: s.freeTask,
		},
		registry.Method{
			Name: "assignTask", Doc: "Pin a task to a host (admin)", Perm: "admin", Write: true,
			Params:  []registry.Param{registry.P("task_id"), registry.P("host"), registry.Opt("force", false), registry.Opt("override", false)},
			Handler: s.assignTask,
		},
	)
}

// taskArg resolves an existing task id argument.
func (s *Server) taskArg(c *registry.Call, name string) (*taskRecord, error) {
	id, err := c.Int(name)
	if err != nil {
		return nil, err
	}
	var t *taskRecord
	_ = s.store.Read(func(v state.View) error {
		t, _ = lookupTask(v, id)
		return nil
	})
	if t == nil {
		return nil, bus.GenericError("No such task: %d", id)
	}
	return t, nil
}

func (s *Server) makeTask(ctx context.Context, c *registry.Call) (any, error) {
	method, err := c.String("method")
	if err != nil {
		return nil, err
	}
	var arglist []any
	if err := c.Decode("arglist", &arglist); err != nil {
		return nil, bus.ParameterError("makeTask(): parameter 'arglist' must be a list")
	}
	request, _ := json.Marshal(arglist)
	opts, err := decodeTaskOpts(c.Extra())
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := s.createTaskTx(tx, c.Caller, method, request, opts)
		if err != nil {
			return nil, err
		}
		return t.ID, nil
	})
}

func decodeTaskOpts(extra map[string]json.RawMessage) (taskOpts, error) {
	var o taskOpts
	for k, v := range extra {
		var err error
		switch k {
		case "parent", "owner":
			var n *int64
			err = json.Unmarshal(v, &n)
			if k == "parent" {
				o.Parent = n
			} else {
				o.Owner = n
			}
		case "label", "channel", "arch", "assign":
			var sv *string
			err = json.Unmarshal(v, &sv)
			switch k {
			case "label":
				o.Label = sv
			case "channel":
				o.Channel = sv
			case "arch":
				o.Arch = sv
			case "assign":
				o.Assign = sv
			}
		case "priority":
			err = json.Unmarshal(v, &o.Priority)
		case "weight":
			err = json.Unmarshal(v, &o.Weight)
		default:
			return o, bus.ParameterError("makeTask(): unknown task option '%s'", k)
		}
		if err != nil {
			return o, bus.ParameterError("makeTask(): task option '%s': %v", k, err)
		}
	}
	return o, nil
}

func (s *Server) getTaskInfo(ctx context.Context, c *registry.Call) (any, error) {
	withReq, err := c.Bool("request")
	if err != nil {
		return nil, err
	}
	strict, err := c.Bool("strict")
	if err != nil {
		return nil, err
	}
	// One id (the usual call), or, as Koji accepts, a list of ids answered by a list.
	id, idErr := c.Int("task_id")
	var ids []int64
	if idErr != nil {
		if err := c.Decode("task_id", &ids); err != nil {
			return nil, idErr
		}
		out := make([]any, len(ids))
		err := s.store.Read(func(v state.View) error {
			for i, id := range ids {
				b, err := s.taskInfoAnswer(v, id, withReq)
				switch {
				case err != nil:
					return err
				case b != nil:
					out[i] = b
				case strict:
					return bus.GenericError("No such task: %d", id)
				}
			}
			return nil
		})
		return out, err
	}
	var out json.RawMessage
	err = s.store.Read(func(v state.View) error {
		out, err = s.taskInfoAnswer(v, id, withReq)
		return err
	})
	switch {
	case err != nil:
		return nil, err
	case out == nil && strict:
		return nil, bus.GenericError("query returned no rows")
	case out == nil:
		return nil, nil
	}
	return out, nil
}

// taskInfoAnswer is getTaskInfo's encoded answer for one task (nil: no
// such task), from the cache of answers by revision when it has it.
func (s *Server) taskInfoAnswer(v state.View, id int64, withReq bool) (json.RawMessage, error) {
	raw, rev, ok := v.Get(taskKey(id))
	if !ok {
		return nil, nil
	}
	key := taskInfoKey{id: id, rev: rev, withRequest: withReq}
	if b, ok := s.taskInfos.get(key); ok {
		return b, nil
	}
	b, err := taskInfoJSON(raw, withReq)
	if err != nil {
		return nil, fmt.Errorf("task %d: %w", id, err)
	}
	s.taskInfos.put(key, b)
	return b, nil
}

func (s *Server) getTaskResult(ctx context.Context, c *registry.Call) (any, error) {
	t, err := s.taskArg(c, "taskId")
	if err != nil {
		return nil, err
	}
	raise, err := c.Bool("raise_fault")
	if err != nil {
		return nil, err
	}
	switch t.State {
	case bus.TaskClosed:
		return t.Result, nil
	case bus.TaskCanceled:
		return nil, bus.GenericError("Task %d is canceled", t.ID)
	case bus.TaskFailed:
		var f bus.Fault
		if err := json.Unmarshal(t.Result, &f); err != nil || f.Code == 0 {
			f = *bus.GenericError("Task %d failed", t.ID)
		}
		if raise {
			return nil, &f
		}
		return map[string]any{"faultCode": f.Code, "faultString": f.Message}, nil
	}
	return nil, bus.GenericError("Task %d is not finished", t.ID)
}

func (s *Server) getTaskChildren(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("task_id")
	if err != nil {
		return nil, err
	}
	withReq, err := c.Bool("request")
	if err != nil {
		return nil, err
	}
	strict, err := c.Bool("strict")
	if err != nil {
		return nil, err
	}
	out := []any{}
	err = s.store.Read(func(v state.View) error {
		if _, ok := lookupTask(v, id); !ok && strict {
			return bus.GenericError("No such task: %d", id)
		}
		for _, cid := range taskChildren(v, id) {
			if t, ok := lookupTask(v, cid); ok {
				out = append(out, taskInfo(t, withReq))
			}
		}
		return nil
	})
	return out, err
}

func (s *Server) getTaskDescendents(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("task_id")
	if err != nil {
		return nil, err
	}
	withReq, err := c.Bool("request")
	if err != nil {
		return nil, err
	}
	out := map[string][]any{}
	err = s.store.Read(func(v state.View) error {
		if _, ok := lookupTask(v, id); !ok {
			return bus.GenericError("No such task: %d", id)
		}
		queue := []int64{id}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			kids := []any{}
			for _, cid := range taskChildren(v, cur) {
				if t, ok := lookupTask(v, cid); ok {
					kids = append(kids, taskInfo(t, withReq))
					queue = append(queue, cid)
				}
			}
			out[strconv.FormatInt(cur, 10)] = kids
		}
		return nil
	})
	return out, err
}

// cancel modes
const (
	cancelTask = iota
	cancelFull
	cancelChildren
)

func (s *Server) cancel(ctx context.Context, c *registry.Call, arg string, mode int) (any, error) {
	id, err := c.Int(arg)
	if err != nil {
		return nil, err
	}
	recurse := true
	strict := true
	switch mode {
	case cancelTask:
		if recurse, err = c.Bool("recurse"); err != nil {
			return nil, err
		}
	case cancelFull:
		if strict, err = c.Bool("strict"); err != nil {
			return nil, err
		}
	}
	isAdmin := s.hasPerm(c.Caller.UserID, "admin", true)
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, ok := lookupTask(tx.View, id)
		if !ok {
			return nil, bus.GenericError("No such task: %d", id)
		}
		if !isAdmin && t.Owner != c.Caller.UserID && (c.Caller.HostID == 0 || t.HostID == nil || *t.HostID != c.Caller.HostID) {
			return nil, bus.ActionNotAllowed("Cannot cancel task, not owner")
		}
		switch mode {
		case cancelFull:
			if t.Parent != nil && strict {
				return nil, bus.GenericError("Task %d is not top-level (parent=%d)", t.ID, *t.Parent)
			}
			return nil, cancelTree(tx, t, true)
		case cancelChildren:
			for _, cid := range taskChildren(tx.View, t.ID) {
				if child, ok := lookupTask(tx.View, cid); ok {
					if err := cancelTree(tx, child, true); err != nil {
						return nil, err
					}
				}
			}
			return nil, nil
		}
		return nil, cancelTree(tx, t, recurse)
	})
	return nil, err
}

// cancelTree cancels t (if unfinished) and, with recurse, its descendents.
func cancelTree(tx *state.Txn, t *taskRecord, recurse bool) error {
	if !bus.TaskFinished(t.State) {
		if err := setTaskState(tx, t, bus.TaskCanceled); err != nil {
			return err
		}
	}
	if !recurse {
		return nil
	}
	for _, cid := range taskChildren(tx.View, t.ID) {
		if child, ok := lookupTask(tx.View, cid); ok {
			if err := cancelTree(tx, child, true); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Server) resubmitTask(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("taskID")
	if err != nil {
		return nil, err
	}
	isAdmin := s.hasPerm(c.Caller.UserID, "admin", true)
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, ok := lookupTask(tx.View, id)
		if !ok {
			return nil, bus.GenericError("No such task: %d", id)
		}
		if !isAdmin && t.Owner != c.Caller.UserID {
			return nil, bus.ActionNotAllowed("Cannot resubmit task, not owner")
		}
		if t.Parent != nil {
			return nil, bus.GenericError("Cannot resubmit subtask: %d", t.ID)
		}
		if t.State != bus.TaskCanceled && t.State != bus.TaskFailed {
			return nil, bus.GenericError("Task %d is not canceled or failed", t.ID)
		}
		var channel bus.Channel
		_, _ = tx.GetJSON(channelKey(t.ChannelID), &channel)
		owner, arch, prio, weight := t.Owner, t.Arch, t.Priority, t.Weight
		nt, err := s.createTaskTx(tx, c.Caller, t.Method, t.Request, taskOpts{
			Owner: &owner, Arch: &arch, Priority: &prio, Channel: &channel.Name, Weight: &weight,
		})
		if err != nil {
			return nil, err
		}
		return nt.ID, nil
	})
}

func (s *Server) setTaskPriority(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("task_id")
	if err != nil {
		return nil, err
	}
	prio, err := c.Int("priority")
	if err != nil {
		return nil, err
	}
	recurse, err := c.Bool("recurse")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, ok := lookupTask(tx.View, id)
		if !ok {
			return nil, bus.GenericError("No such task: %d", id)
		}
		if bus.TaskFinished(t.State) {
			return nil, bus.GenericError("Finished task's priority can't be updated")
		}
		queue := []*taskRecord{t}
		for len(queue) > 0 {
			cur := queue[0]
			queue = queue[1:]
			if bus.TaskFinished(cur.State) {
				continue
			}
			cur.Priority = int(prio)
			if err := tx.Put(taskKey(cur.ID), cur); err != nil {
				return nil, err
			}
			if cur.State == bus.TaskFree {
				// Move it to the queue of its new priority; the old message is stale.
				if err := dispatchTaskTx(tx, cur); err != nil {
					return nil, err
				}
			}
			tx.Emit("task.priority", map[string]any{"type": "TaskPriorityChange", "id": cur.ID, "parent": cur.Parent,
				"method": cur.Method, "attribute": "priority", "new": prio}, map[string]any{"info": taskInfo(cur, false)})
			if recurse {
				for _, cid := range taskChildren(tx.View, cur.ID) {
					if child, ok := lookupTask(tx.View, cid); ok {
						queue = append(queue, child)
					}
				}
			}
		}
		return nil, nil
	})
	return nil, err
}

func (s *Server) freeTask(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("task_id")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, ok := lookupTask(tx.View, id)
		if !ok {
			return nil, bus.GenericError("No such task: %d", id)
		}
		if bus.TaskFinished(t.State) {
			return nil, bus.GenericError("Cannot free task %d, state is %s", t.ID, bus.TaskStateName(t.State))
		}
		if t.State == bus.TaskFree {
			return nil, nil
		}
		// A new attempt: a result from the run being freed is now stale.
		t.Pinned = false
		return nil, requeueTx(tx, t)
	})
	return nil, err
}

func (s *Server) assignTask(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("task_id")
	if err != nil {
		return nil, err
	}
	hostRef, err := c.Ref("host")
	if err != nil {
		return nil, err
	}
	force, err := c.Bool("force")
	if err != nil {
		return nil, err
	}
	res, err := s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, ok := lookupTask(tx.View, id)
		if !ok {
			return nil, bus.GenericError("No such task: %d", id)
		}
		h, ok := lookupHost(tx.View, hostRef)
		if !ok {
			return nil, bus.GenericError("No such host: %s", refText(hostRef))
		}
		if t.State != bus.TaskFree && !(force && !bus.TaskFinished(t.State)) {
			return false, nil
		}
		t.HostID = &h.ID
		t.Pinned = true
		if err := setTaskState(tx, t, bus.TaskAssigned); err != nil {
			return nil, err
		}
		return true, dispatchTaskTx(tx, t)
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// listTasks implements Koji's filters and queryOpts over the task records.
func (s *Server) listTasks(ctx context.Context, c *registry.Call) (any, error) {
	opts, err := c.Map("opts")
	if err != nil {
		return nil, err
	}
	qo, err := readQueryOpts(c, "queryOpts")
	if err != nil {
		return nil, err
	}
	f, err := newTaskFilter(opts)
	if err != nil {
		return nil, err
	}
	var rows []map[string]any
	_ = s.store.Read(func(v state.View) error {
		keys, ok := f.activeTaskKeys(v)
		if !ok {
			keys = v.Keys("task", "task.")
		}
		for _, k := range keys {
			var t taskRecord
			if ok, _ := v.GetJSON(k, &t); !ok || !f.match(&t) {
				continue
			}
			row := taskInfoMap(&t, true)
			row["result"] = nil
			if t.State == bus.TaskClosed {
				row["result"] = t.Result
			}
			if u, ok := lookupUser(v, registry.Ref{ID: t.Owner}); ok {
				row["owner_name"], row["owner_type"] = u.Name, u.UserType
			}
			rows = append(rows, row)
		}
		return nil
	})
	if rows == nil {
		rows = []map[string]any{}
	}
	return applyListOpts(rows, qo)
}

func parseTime(layout, value string) (float64, error) {
	t, err := time.Parse(layout, value)
	if err != nil {
		return 0, err
	}
	return float64(t.UnixMicro()) / 1e6, nil
}

type taskFilter struct {
	in, notIn                     map[string]map[string]bool
	method                        *string
	parentNone                    bool
	createdBefore, createdAfter   *float64
	startedBefore, startedAfter   *float64
	completeBefore, completeAfter *float64
}

func newTaskFilter(opts map[string]any) (*taskFilter, error) {
	f := &taskFilter{in: map[string]map[string]bool{}, notIn: map[string]map[string]bool{}}
	field := map[string]string{"arch": "arch", "state": "state", "owner": "owner", "host_id": "host_id", "channel_id": "channel_id", "parent": "parent"}
	for k, v := range opts {
		switch {
		case k == "decode":
		case k == "method":
			s := fmt.Sprint(v)
			f.method = &s
		case field[k] != "" || (strings.HasPrefix(k, "not_") && field[k[4:]] != ""):
			target := f.in
			name := k
			if strings.HasPrefix(k, "not_") {
				target, name = f.notIn, k[4:]
			}
			if v == nil && name == "parent" {
				f.parentNone = true
				continue
			}
			set := map[string]bool{}
			switch x := v.(type) {
			case []any:
				for _, e := range x {
					set[fmt.Sprint(e)] = true
				}
			default:
				set[fmt.Sprint(x)] = true
			}
			target[name] = set
		case strings.HasSuffix(k, "Before") || strings.HasSuffix(k, "After"):
			ts, err := toTimestamp(v)
			if err != nil {
				return nil, bus.ParameterError("listTasks(): option '%s': %v", k, err)
			}
			switch k {
			case "createdBefore":
				f.createdBefore = &ts
			case "createdAfter":
				f.createdAfter = &ts
			case "startedBefore":
				f.startedBefore = &ts
			case "startedAfter":
				f.startedAfter = &ts
			case "completeBefore":
				f.completeBefore = &ts
			case "completeAfter":
				f.completeAfter = &ts
			default:
				return nil, bus.ParameterError("listTasks(): unknown option '%s'", k)
			}
		default:
			return nil, bus.ParameterError("listTasks(): unknown option '%s'", k)
		}
	}
	return f, nil
}

func toTimestamp(v any) (float64, error) {
	switch x := v.(type) {
	case json.Number:
		return x.Float64()
	case float64:
		return x, nil
	case string:
		for _, layout := range []string{"2006-01-02 15:04:05.999999-07:00", "2006-01-02 15:04:05", "2006-01-02T15:04:05Z07:00", "2006-01-02"} {
			if t, err := parseTime(layout, x); err == nil {
				return t, nil
			}
		}
	}
	return 0, fmt.Errorf("not a timestamp: %v", v)
}

// activeTaskKeys lists, sorted, the tasks in the states the filter asks
// for, from the index of active tasks, when it asks for active states only
// (ok false: the filter needs every task read).
func (f *taskFilter) activeTaskKeys(v state.View) (keys []string, ok bool) {
	states, filtered := f.in["state"]
	if !filtered {
		return nil, false
	}
	for text := range states {
		st, err := strconv.Atoi(text)
		if err != nil || !activeTaskState(st) {
			return nil, false
		}
		keys = append(keys, v.Group("task", activeTaskGroup(st))...)
	}
	slices.Sort(keys)
	return keys, true
}

func (f *taskFilter) match(t *taskRecord) bool {
	vals := map[string]string{
		"arch": t.Arch, "state": strconv.Itoa(t.State), "owner": strconv.FormatInt(t.Owner, 10),
		"channel_id": strconv.FormatInt(t.ChannelID, 10), "host_id": "None", "parent": "None",
	}
	if t.HostID != nil {
		vals["host_id"] = strconv.FormatInt(*t.HostID, 10)
	}
	if t.Parent != nil {
		vals["parent"] = strconv.FormatInt(*t.Parent, 10)
	}
	for k, set := range f.in {
		if !set[vals[k]] {
			return false
		}
	}
	for k, set := range f.notIn {
		if set[vals[k]] {
			return false
		}
	}
	if f.parentNone && t.Parent != nil {
		return false
	}
	if f.method != nil && t.Method != *f.method {
		return false
	}
	before := func(lim *float64, v *float64) bool { return lim == nil || (v != nil && *v < *lim) }
	after := func(lim *float64, v *float64) bool { return lim == nil || (v != nil && *v > *lim) }
	return before(f.createdBefore, &t.CreateTS) && after(f.createdAfter, &t.CreateTS) &&
		before(f.startedBefore, t.StartTS) && after(f.startedAfter, t.StartTS) &&
		before(f.completeBefore, t.CompletionTS) && after(f.completeAfter, t.CompletionTS)
}
