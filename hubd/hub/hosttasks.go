package hub

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// The builder's side of tasks: claim, run, report. Every call of a run
// carries the attempt it was dispatched with and is refused when the task
// has moved on (freed, reassigned, canceled): fencing.

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerHostTasks) }

func staleFault(t *taskRecord, attempt int64) *bus.Fault {
	return bus.NewFault(bus.CodeTaskAttemptStale, "task %d attempt %d is stale (task is %s, attempt %d)",
		t.ID, attempt, bus.TaskStateName(t.State), t.Attempt)
}

// checkRun returns the task if the caller's host runs it in this attempt.
func checkRun(v state.View, c *registry.Call, taskID, attempt int64) (*taskRecord, error) {
	t, ok := lookupTask(v, taskID)
	if !ok {
		return nil, bus.GenericError("No such task: %d", taskID)
	}
	if err := heldByOther(v, c, t, attempt); err != nil {
		return nil, err
	}
	if t.State != bus.TaskOpen || t.HostID == nil || *t.HostID != c.Caller.HostID || t.Attempt != attempt {
		return nil, staleFault(t, attempt)
	}
	return t, nil
}

// heldByOther refuses a call for the current attempt of a task that
// another host holds: not a superseded run of the caller's but someone
// else's, named so that the mistake (or the attack) is plain. The code stays
// TaskAttemptStale: to the caller the run is not its own, as for a stale one.
func heldByOther(v state.View, c *registry.Call, t *taskRecord, attempt int64) error {
	if t.HostID == nil || *t.HostID == c.Caller.HostID || t.Attempt != attempt {
		return nil
	}
	holder := fmt.Sprintf("%d", *t.HostID)
	if h, ok := lookupHost(v, registry.Ref{ID: *t.HostID}); ok {
		holder = h.Name
	}
	return bus.NewFault(bus.CodeTaskAttemptStale, "task %d attempt %d is held by another host, %s", t.ID, attempt, holder)
}

func (s *Server) registerHostTasks() {
	idAttempt := []registry.Param{registry.P("task_id"), registry.P("attempt")}
	s.reg.Register(
		registry.Method{
			Name: "host.getTaskQueues", Doc: "The task queues this host may pull from, most urgent first", Access: registry.HostOnly,
			Handler: s.hostGetTaskQueues,
		},
		registry.Method{
			Name: "host.openTask", Doc: "Claim a dispatched task for this host (fenced by attempt)", Access: registry.HostOnly, Write: true,
			Params: idAttempt, Handler: s.hostOpenTask,
		},
		registry.Method{
			Name: "host.setTaskWeight", Doc: "Set the weight of a running task", Access: registry.HostOnly, Write: true,
			Params: append(idAttempt, registry.P("weight")), Handler: s.hostSetTaskWeight,
		},
		registry.Method{
			Name: "host.closeTask", Doc: "Report a task's success and result", Access: registry.HostOnly, Write: true, AnswersRepeats: true,
			Params: append(idAttempt, registry.P("response"), registry.Opt("outputs", nil)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.hostFinishTask(ctx, c, bus.TaskClosed)
			},
		},
		registry.Method{
			Name: "host.failTask", Doc: "Report a task's failure", Access: registry.HostOnly, Write: true, AnswersRepeats: true,
			Params: append(idAttempt, registry.P("response"), registry.Opt("outputs", nil)),
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.hostFinishTask(ctx, c, bus.TaskFailed)
			},
		},
		registry.Method{
			Name: "host.subtask", Doc: "Create a subtask of a running task", Access: registry.HostOnly, Write: true,
			Params: []registry.Param{registry.P("method"), registry.P("arglist"), registry.P("parent"), registry.P("attempt")}, VarKw: "opts",
			Handler: s.hostSubtask,
		},
		registry.Method{
			Name: "host.taskSetWait", Doc: "Mark a task as waiting for its children (or the given ones)", Access: registry.HostOnly, Write: true,
			Params: []registry.Param{registry.P("parent"), registry.P("attempt"), registry.Opt("tasks", nil)}, Handler: s.hostTaskSetWait,
		},
		registry.Method{
			Name: "host.taskWait", Doc: "Return [finished, unfinished] awaited children of a task", Access: registry.HostOnly,
			Params: []registry.Param{registry.P("parent")}, Handler: s.hostTaskWait,
		},
		registry.Method{
			Name: "host.taskWaitResults", Doc: "Return [[id, result], ...] of finished children and stop waiting", Access: registry.HostOnly, Write: true,
			Params: []registry.Param{registry.P("parent"), registry.P("tasks"), registry.Opt("canfail", nil)}, Handler: s.hostTaskWaitResults,
		},
		registry.Method{
			Name: "host.freeTasks", Doc: "Give back tasks this host runs, so they are dispatched again", Access: registry.HostOnly, Write: true,
			Params: []registry.Param{registry.P("tasks")}, Handler: s.hostFreeTasks,
		},
		registry.Method{
			Name: "host.getHostTasks", Doc: "Tasks assigned to or open on this host", Access: registry.HostOnly,
			Handler: s.hostGetHostTasks,
		},
	)
}

func (s *Server) hostGetTaskQueues(ctx context.Context, c *registry.Call) (any, error) {
	var qs []queueRecord
	err := s.store.Read(func(v state.View) error {
		h, ok := lookupHost(v, registry.Ref{ID: c.Caller.HostID})
		if !ok {
			return bus.GenericError("Invalid hostInfo: %d", c.Caller.HostID)
		}
		qs = hostQueues(v, h)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// A queue is recorded in the transaction that first dispatches to it, and
	// its consumer is created by the relay just after: make sure every listed
	// queue has its consumer, so a builder can bind to all of them at once.
	for _, q := range qs {
		if err := s.ensureQueueConsumer(ctx, q); err != nil {
			return nil, err
		}
	}
	return qs, nil
}

func (s *Server) hostOpenTask(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("task_id")
	if err != nil {
		return nil, err
	}
	attempt, err := c.Int("attempt")
	if err != nil {
		return nil, err
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, ok := lookupTask(tx.View, id)
		if !ok {
			return nil, bus.GenericError("No such task: %d", id)
		}
		if t.Attempt != attempt {
			return nil, staleFault(t, attempt)
		}
		if err := heldByOther(tx.View, c, t, attempt); err != nil {
			return nil, err
		}
		h, ok := lookupHost(tx.View, registry.Ref{ID: c.Caller.HostID})
		if !ok {
			return nil, bus.GenericError("Invalid hostInfo: %d", c.Caller.HostID)
		}
		switch t.State {
		case bus.TaskAssigned:
			if t.HostID == nil || *t.HostID != h.ID {
				return nil, staleFault(t, attempt)
			}
		case bus.TaskFree:
			if !h.Enabled || !hostInChannel(tx.View, h.ID, t.ChannelID) || !hostHasArch(h, t.Arch) {
				return nil, bus.ActionNotAllowed("host %s may not run task %d (channel %d, arch %s)", h.Name, t.ID, t.ChannelID, t.Arch)
			}
		default:
			return nil, staleFault(t, attempt)
		}
		t.HostID = &h.ID
		if err := setTaskState(tx, t, bus.TaskOpen); err != nil {
			return nil, err
		}
		return map[string]any{"task": taskInfo(t, false), "request": t.Request}, nil
	})
}

func hostHasArch(h *hostRecord, arch string) bool {
	if arch == "noarch" {
		return true
	}
	for _, a := range splitArches(h.Arches) {
		if a == arch {
			return true
		}
	}
	return false
}

func (s *Server) hostSetTaskWeight(ctx context.Context, c *registry.Call) (any, error) {
	id, err := c.Int("task_id")
	if err != nil {
		return nil, err
	}
	attempt, err := c.Int("attempt")
	if err != nil {
		return nil, err
	}
	w, err := c.Float("weight")
	if err != nil {
		return nil, err
	}
	if w < 0 {
		return nil, bus.ParameterError("weight must not be negative")
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, err := checkRun(tx.View, c, id, attempt)
		if err != nil {
			return nil, err
		}
		old := t.Weight
		t.Weight = w
		tx.Emit("task.weight", map[string]any{"type": "TaskWeightChange", "id": t.ID, "parent": t.Parent, "method": t.Method,
			"attribute": "weight", "old": old, "new": w}, map[string]any{"info": taskInfo(t, false)})
		return nil, tx.Put(taskKey(t.ID), t)
	})
	return nil, err
}

// hostFinishTask closes or fails a run: the files the builder reports
// (outputs) become objects of the task output store first (under the
// attempt, so a stale run's files are never listed), then the state changes
// if the attempt is still current.
func (s *Server) hostFinishTask(ctx context.Context, c *registry.Call, final int) (any, error) {
	id, err := c.Int("task_id")
	if err != nil {
		return nil, err
	}
	attempt, err := c.Int("attempt")
	if err != nil {
		return nil, err
	}
	var response any
	if err := c.Decode("response", &response); err != nil {
		return nil, err
	}
	var files []bus.UploadedFile
	if !c.IsNull("outputs") {
		if err := c.Decode("outputs", &files); err != nil {
			return nil, err
		}
	}
	if err := checkUploadedFiles(files); err != nil {
		return nil, err
	}
	repeated := false
	if err := s.store.Read(func(v state.View) error {
		var rerr error
		_, repeated, rerr = acceptsRun(v, c, id, attempt, final)
		return rerr
	}); err != nil || repeated {
		return nil, err // a repeated report is answered as the first was
	}
	outputs, err := s.recordOutputs(ctx, c.Caller.HostID, id, attempt, files)
	if err != nil {
		return nil, err
	}
	result, _ := json.Marshal(response)
	if final == bus.TaskFailed {
		result, _ = json.Marshal(faultFromResponse(response, id))
	}
	if err := s.hubConf.Limits.checkResult(result); err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		t, repeated, err := acceptsRun(tx.View, c, id, attempt, final)
		if err != nil || repeated {
			return nil, err // a concurrent repeat was first
		}
		t.Result = result
		t.Outputs = outputs
		t.OutputAttempt = attempt
		return nil, setTaskState(tx, t, final)
	})
	if err == nil {
		s.purgeStaleUploads(ctx, id, attempt)
	}
	return nil, err
}

// acceptsRun checks that the caller's run (attempt) may report its result
// (checkRun), or tells that it already ended the task in state final: a
// repeated close or fail is answered as the first was.
func acceptsRun(v state.View, c *registry.Call, taskID, attempt int64, final int) (t *taskRecord, repeated bool, err error) {
	if t, err = checkRun(v, c, taskID, attempt); err == nil {
		return t, false, nil
	}
	t, ok := lookupTask(v, taskID)
	if ok && t.State == final && t.OutputAttempt == attempt && t.Attempt == attempt &&
		t.HostID != nil && *t.HostID == c.Caller.HostID {
		return t, true, nil
	}
	return nil, false, err
}

// faultFromResponse turns failTask's response ({faultCode, faultString} as
// Koji's builders send) into a stored fault.
func faultFromResponse(resp any, taskID int64) *bus.Fault {
	if m, ok := resp.(map[string]any); ok {
		code := bus.CodeGenericError
		if n, ok := m["faultCode"].(json.Number); ok {
			if v, err := n.Int64(); err == nil {
				code = int(v)
			}
		}
		if msg, ok := m["faultString"].(string); ok {
			return bus.NewFault(code, "%s", msg)
		}
	}
	if msg, ok := resp.(string); ok {
		return bus.GenericError("%s", msg)
	}
	return bus.GenericError("Task %d failed", taskID)
}

func (s *Server) hostSubtask(ctx context.Context, c *registry.Call) (any, error) {
	method, err := c.String("method")
	if err != nil {
		return nil, err
	}
	var arglist []any
	if err := c.Decode("arglist", &arglist); err != nil {
		return nil, bus.ParameterError("host.subtask(): parameter 'arglist' must be a list")
	}
	parent, err := c.Int("parent")
	if err != nil {
		return nil, err
	}
	attempt, err := c.Int("attempt")
	if err != nil {
		return nil, err
	}
	opts, err := decodeTaskOpts(c.Extra())
	if err != nil {
		return nil, err
	}
	if opts.Parent != nil || opts.Owner != nil || opts.Assign != nil {
		return nil, bus.ParameterError("host.subtask(): parent, owner and assign are not options here")
	}
	request, _ := json.Marshal(arglist)
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		if _, err := checkRun(tx.View, c, parent, attempt); err != nil {
			return nil, err
		}
		o := opts
		o.Parent = &parent
		t, err := s.createTaskTx(tx, c.Caller, method, request, o)
		if err != nil {
			return nil, err
		}
		return t.ID, nil
	})
}

func (s *Server) hostTaskSetWait(ctx context.Context, c *registry.Call) (any, error) {
	parent, err := c.Int("parent")
	if err != nil {
		return nil, err
	}
	attempt, err := c.Int("attempt")
	if err != nil {
		return nil, err
	}
	var tasks []int64
	if !c.IsNull("tasks") {
		if err := c.Decode("tasks", &tasks); err != nil {
			return nil, err
		}
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		p, err := checkRun(tx.View, c, parent, attempt)
		if err != nil {
			return nil, err
		}
		ids := tasks
		if ids == nil {
			ids = taskChildren(tx.View, parent)
		}
		yes := true
		p.Waiting = &yes
		if err := tx.Put(taskKey(p.ID), p); err != nil {
			return nil, err
		}
		for _, id := range ids {
			t, ok := lookupTask(tx.View, id)
			if !ok || t.Parent == nil || *t.Parent != parent {
				return nil, bus.GenericError("Task %d is not a child of task %d", id, parent)
			}
			t.Awaited = &yes
			if err := tx.Put(taskKey(t.ID), t); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	return nil, err
}

func (s *Server) hostTaskWait(ctx context.Context, c *registry.Call) (any, error) {
	parent, err := c.Int("parent")
	if err != nil {
		return nil, err
	}
	finished, unfinished := []int64{}, []int64{}
	err = s.store.Read(func(v state.View) error {
		if _, ok := lookupTask(v, parent); !ok {
			return bus.GenericError("No such task: %d", parent)
		}
		for _, id := range taskChildren(v, parent) {
			t, ok := lookupTask(v, id)
			if !ok || t.Awaited == nil || !*t.Awaited {
				continue
			}
			if bus.TaskFinished(t.State) {
				finished = append(finished, id)
			} else {
				unfinished = append(unfinished, id)
			}
		}
		return nil
	})
	return []any{finished, unfinished}, err
}

func (s *Server) hostTaskWaitResults(ctx context.Context, c *registry.Call) (any, error) {
	parent, err := c.Int("parent")
	if err != nil {
		return nil, err
	}
	var tasks, canfail []int64
	if err := c.Decode("tasks", &tasks); err != nil {
		return nil, err
	}
	if !c.IsNull("canfail") {
		if err := c.Decode("canfail", &canfail); err != nil {
			return nil, err
		}
	}
	allowed := map[int64]bool{}
	for _, id := range canfail {
		allowed[id] = true
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		p, ok := lookupTask(tx.View, parent)
		if !ok {
			return nil, bus.GenericError("No such task: %d", parent)
		}
		if p.HostID == nil || *p.HostID != c.Caller.HostID {
			return nil, bus.ActionNotAllowed("task %d does not run on this host", parent)
		}
		results := []any{}
		for _, id := range tasks {
			t, ok := lookupTask(tx.View, id)
			if !ok || t.Parent == nil || *t.Parent != parent {
				return nil, bus.GenericError("Task %d is not a child of task %d", id, parent)
			}
			switch t.State {
			case bus.TaskClosed:
				results = append(results, []any{id, t.Result})
			case bus.TaskFailed, bus.TaskCanceled:
				f := bus.GenericError("Task %d is canceled", id)
				if t.State == bus.TaskFailed {
					var stored bus.Fault
					if json.Unmarshal(t.Result, &stored) == nil && stored.Code != 0 {
						f = &stored
					}
				}
				if !allowed[id] {
					return nil, f
				}
				results = append(results, []any{id, map[string]any{"faultCode": f.Code, "faultString": f.Message}})
			default:
				return nil, bus.GenericError("Task %d is not finished", id)
			}
			t.Awaited = nil
			if err := tx.Put(taskKey(t.ID), t); err != nil {
				return nil, err
			}
		}
		p.Waiting = nil
		if err := tx.Put(taskKey(p.ID), p); err != nil {
			return nil, err
		}
		return results, nil
	})
}

func (s *Server) hostFreeTasks(ctx context.Context, c *registry.Call) (any, error) {
	var tasks []int64
	if err := c.Decode("tasks", &tasks); err != nil {
		return nil, err
	}
	_, err := s.update(ctx, c, func(tx *state.Txn) (any, error) {
		for _, id := range tasks {
			t, ok := lookupTask(tx.View, id)
			if !ok {
				return nil, bus.GenericError("No such task: %d", id)
			}
			if t.HostID == nil || *t.HostID != c.Caller.HostID || (t.State != bus.TaskOpen && t.State != bus.TaskAssigned) {
				continue // already moved on; freeing is idempotent
			}
			if err := requeueTx(tx, t); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	return nil, err
}

// requeueTx frees a task and dispatches it again under a new attempt; a
// pinned task stays pinned to its host.
func requeueTx(tx *state.Txn, t *taskRecord) error {
	next := bus.TaskFree
	if t.Pinned {
		next = bus.TaskAssigned // e.g. saveFailedTree must run where the buildroot is
	}
	if err := setTaskState(tx, t, next); err != nil {
		return err
	}
	return dispatchTaskTx(tx, t)
}

func (s *Server) hostGetHostTasks(ctx context.Context, c *registry.Call) (any, error) {
	out := []map[string]any{}
	_ = s.store.Read(func(v state.View) error {
		for _, t := range hostTasks(v, c.Caller.HostID) {
			m := taskInfoMap(t, false)
			m["attempt"] = t.Attempt
			out = append(out, m)
		}
		return nil
	})
	return out, nil
}

func (s *Server) ensureQueueConsumer(ctx context.Context, q queueRecord) error {
	if _, ok := s.knownConsumers.Load(q.Consumer); ok {
		return nil
	}
	if _, err := s.js.CreateOrUpdateConsumer(ctx, bus.TasksStream, bus.TaskQueueConsumer(q.Consumer, q.Subject)); err != nil {
		return fmt.Errorf("queue %s: %w", q.Consumer, err)
	}
	s.knownConsumers.Store(q.Consumer, true)
	return nil
}
