package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
)

// waitSafety bounds a wait between two looks at the hub when no event came:
// it only covers an event lost on core NATS (e.g. during a reconnect).
const waitSafety = time.Minute

// WaitOpts are Koji's BaseTaskHandler.wait options.
type WaitOpts struct {
	// Tasks are the children to wait for (nil: all children).
	Tasks []int64
	// All waits for every task; otherwise Wait returns when one has finished.
	All bool
	// FailAny: the first failure (not in CanFail) cancels the other children
	// and fails the wait with that child's fault.
	FailAny bool
	// CanFail are children whose failure is returned as a result
	// ({faultCode, faultString}) instead of failing the wait.
	CanFail []int64
}

// Wait waits for subtasks as Koji's wait(): host.taskSetWait marks this run
// waiting (its weight leaves the host's load) and the children awaited; it
// then watches koji.event.task.* for its children finishing (subscribed
// before the first host.taskWait, so nothing is missed; no polling) and
// returns host.taskWaitResults: child id -> result.
func (t *Task) Wait(ctx context.Context, o WaitOpts) (map[int64]json.RawMessage, error) {
	b := t.r.b
	changed := make(chan struct{}, 1)
	parent := strconv.FormatInt(t.ID, 10)
	sub, err := b.nc.Subscribe(bus.EventPrefix+"task.>", func(m *nats.Msg) {
		if m.Header.Get(bus.HeaderPropPrefix+"parent") != parent {
			return
		}
		switch m.Header.Get(bus.HeaderPropPrefix + "new") {
		case "CLOSED", "FAILED", "CANCELED":
			select {
			case changed <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("wait: subscribe: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := b.nc.FlushTimeout(30 * time.Second); err != nil {
		return nil, fmt.Errorf("wait: %w", err)
	}
	var tasks any
	if o.Tasks != nil {
		tasks = o.Tasks
	}
	if err := t.Session().Call(ctx, "host.taskSetWait", []any{t.ID, t.Attempt, tasks}, nil, nil); err != nil {
		return nil, err
	}
	t.r.waiting.Store(true)
	b.signal() // the run's weight no longer counts: maybe a slot is free
	defer func() {
		t.r.waiting.Store(false)
	}()
	canfail := map[int64]bool{}
	for _, id := range o.CanFail {
		canfail[id] = true
	}
	checked := map[int64]bool{}
	safety := time.NewTimer(waitSafety)
	defer safety.Stop()
	var finished []int64
	for {
		var fu [2][]int64
		if err := t.Session().Call(ctx, "host.taskWait", []any{t.ID}, nil, &fu); err != nil {
			return nil, err
		}
		var unfinished []int64
		finished, unfinished = fu[0], fu[1]
		if len(unfinished) == 0 {
			break
		}
		if len(finished) > 0 {
			if !o.All {
				break
			}
			if o.FailAny {
				if err := t.checkFailed(ctx, finished, canfail, checked); err != nil {
					return nil, err
				}
			}
		}
		if !safety.Stop() {
			select {
			case <-safety.C:
			default:
			}
		}
		safety.Reset(waitSafety)
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-changed:
		case <-safety.C:
		}
	}
	ids := finished
	if o.All && o.Tasks != nil {
		ids = o.Tasks
	}
	var canfailArg any
	if o.CanFail != nil {
		canfailArg = o.CanFail
	}
	var pairs [][2]json.RawMessage
	if err := t.Session().Call(ctx, "host.taskWaitResults", []any{t.ID, ids, canfailArg}, nil, &pairs); err != nil {
		return nil, err
	}
	out := make(map[int64]json.RawMessage, len(pairs))
	for _, p := range pairs {
		id, err := strconv.ParseInt(string(p[0]), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("host.taskWaitResults: bad task id %s", p[0])
		}
		out[id] = p[1]
	}
	return out, nil
}

// checkFailed is failany: a failed or canceled child (not in canfail)
// cancels the remaining children and fails the parent with its fault.
func (t *Task) checkFailed(ctx context.Context, finished []int64, canfail, checked map[int64]bool) error {
	for _, id := range finished {
		if canfail[id] || checked[id] {
			continue
		}
		checked[id] = true
		var info bus.Task
		if err := t.Session().Call(ctx, "getTaskInfo", []any{id}, nil, &info); err != nil {
			return err
		}
		if info.State != bus.TaskFailed && info.State != bus.TaskCanceled {
			continue
		}
		t.Logger.Info("subtask failed or was canceled: canceling the others", "subtask", id)
		fmt.Fprintf(t.Log, "subtask %d %s; canceling the other subtasks\n", id, bus.TaskStateName(info.State))
		if err := t.Session().Call(ctx, "cancelTaskChildren", []any{t.ID}, nil, nil); err != nil {
			t.Logger.Warn("cancelTaskChildren", "err", err)
		}
		if err := t.Session().Call(ctx, "getTaskResult", []any{id}, nil, nil); err != nil {
			return err
		}
		return bus.GenericError("Subtask %d failed", id)
	}
	return nil
}

// sleep(n): Koji's SleepTask, as a child process `sleep n` in its own
// process group so that a cancel kills it.
func sleepHandler(ctx context.Context, t *Task, a Args) (any, error) {
	n, err := a.Number(0, "n", 0, true)
	if err != nil {
		return nil, err
	}
	if n < 0 {
		return nil, bus.ParameterError("sleep: n must not be negative")
	}
	fmt.Fprintf(t.Log, "sleeping %gs\n", n)
	if n == 0 {
		return nil, nil // nothing to wait for (Koji's sleep is time.sleep too)
	}
	return nil, t.Command(ctx, "sleep", strconv.FormatFloat(n, 'f', -1, 64))
}

// fork(n=5, m=37): the test parent of kojibus. Koji's ForkTask spawns n
// `sleep m` processes on the builder and returns at once; kojibus' fork
// makes n subtasks sleep(m) (labels sleep-0 ... sleep-<n-1>), waits for all
// of them (failany) and returns their results, in order.
func forkHandler(ctx context.Context, t *Task, a Args) (any, error) {
	n, err := a.Number(0, "n", 5, false)
	if err != nil {
		return nil, err
	}
	m, err := a.Number(1, "m", 37, false)
	if err != nil {
		return nil, err
	}
	if n < 0 || n > 1000 {
		return nil, bus.ParameterError("fork: n must be between 0 and 1000")
	}
	ids := make([]int64, 0, int(n))
	for i := 0; i < int(n); i++ {
		id, err := t.Subtask(ctx, "sleep", []any{m}, SubtaskOpts{Label: fmt.Sprintf("sleep-%d", i)})
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(t.Log, "subtask %d: sleep(%g)\n", id, m)
		ids = append(ids, id)
	}
	out := make([]json.RawMessage, 0, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	res, err := t.Wait(ctx, WaitOpts{Tasks: ids, All: true, FailAny: true})
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		out = append(out, res[id])
	}
	return out, nil
}

// waitTimeout is Koji's WaitrepoTask.TIMEOUT.
const waitTimeout = 120 * time.Minute

// repoWatch subscribes to the repo events that can end a wait for a repo.
func repoWatch(t *Task) (chan struct{}, func(), error) {
	b := t.r.b
	changed := make(chan struct{}, 1)
	var subs []*nats.Subscription
	unsub := func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}
	for _, addr := range []string{"repo.done", "repo.problem", "repo.request.done", "build.tag"} {
		s, err := b.nc.Subscribe(bus.EventPrefix+addr, func(*nats.Msg) {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
		if err != nil {
			unsub()
			return nil, nil, err
		}
		subs = append(subs, s)
	}
	if err := b.nc.FlushTimeout(30 * time.Second); err != nil {
		unsub()
		return nil, nil, err
	}
	return changed, unsub, nil
}

// waitrepo(tag, newer_than=None, nvrs=None, min_event=None): Koji's
// WaitrepoTask (weight 0.2). It waits for a READY repo of the tag that has
// the nvrs tagged, was created after newer_than (a timestamp) and at or
// after min_event. It watches koji.event.repo.done (subscribed before the
// first look) instead of polling every 60s, and files a repo.request when
// no repo fits. Returns the repo's info.
func waitrepoHandler(ctx context.Context, t *Task, a Args) (any, error) {
	var tag any
	if ok, err := a.Get(0, "tag", &tag); err != nil || !ok {
		return nil, bus.ParameterError("waitrepo: missing parameter tag")
	}
	var newerThan *float64
	var nt any
	if ok, err := a.Get(1, "newer_than", &nt); err != nil {
		return nil, err
	} else if ok {
		switch x := nt.(type) {
		case float64:
			newerThan = &x
		case string:
			if x != "now" {
				f, err := strconv.ParseFloat(x, 64)
				if err != nil {
					return nil, bus.ParameterError("waitrepo: invalid newer_than: %s", x)
				}
				newerThan = &f
			} else {
				now := float64(time.Now().UnixNano()) / 1e9
				newerThan = &now
			}
		default:
			return nil, bus.ParameterError("waitrepo: invalid newer_than: %v", nt)
		}
	}
	var nvrs []string
	if _, err := a.Get(2, "nvrs", &nvrs); err != nil {
		return nil, err
	}
	var minEvent *int64
	if _, err := a.Get(3, "min_event", &minEvent); err != nil {
		return nil, err
	}
	changed, unsub, err := repoWatch(t)
	if err != nil {
		return nil, err
	}
	defer unsub()
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	s := t.Session()
	fits := func(r *bus.Repo) bool {
		return r != nil && r.State == 1 && (newerThan == nil || r.CreateTS > *newerThan) &&
			(minEvent == nil || r.CreateEvent >= *minEvent)
	}
	var reqID int64
	start := time.Now()
	for {
		ready := true
		if len(nvrs) > 0 {
			var tagged []struct {
				NVR string `json:"nvr"`
			}
			if err := s.Call(ctx, "listTagged", []any{tag}, map[string]any{"inherit": true}, &tagged); err != nil {
				return nil, err
			}
			have := map[string]bool{}
			for _, b := range tagged {
				have[b.NVR] = true
			}
			for _, nvr := range nvrs {
				if !have[nvr] {
					ready = false
					fmt.Fprintf(t.Log, "waiting for %s to be tagged\n", nvr)
					break
				}
			}
		}
		if ready {
			if reqID == 0 {
				var r *bus.Repo
				args := []any{tag}
				if minEvent != nil {
					args = append(args, *minEvent)
				}
				if err := s.Call(ctx, "repo.get", args, nil, &r); err != nil {
					return nil, err
				}
				if fits(r) {
					return r, nil
				}
				kw := map[string]any{}
				if minEvent != nil {
					kw["min_event"] = *minEvent
				}
				if newerThan != nil || len(nvrs) > 0 {
					kw["force"] = true // a repo made from now on has them
				}
				var res bus.RepoRequestResult
				if err := s.Call(ctx, "repo.request", []any{tag}, kw, &res); err != nil {
					return nil, err
				}
				if fits(res.Repo) {
					return res.Repo, nil
				}
				if res.Request == nil {
					return nil, bus.GenericError("repo.request gave neither a repo nor a request")
				}
				reqID = res.Request.ID
				fmt.Fprintf(t.Log, "waiting for repo request %d\n", reqID)
			}
			var chk bus.RepoCheck
			if err := s.Call(ctx, "repo.checkRequest", []any{reqID}, nil, &chk); err != nil {
				return nil, err
			}
			if fits(chk.Repo) {
				return chk.Repo, nil
			}
			if chk.Request != nil && !chk.Request.Active {
				return nil, bus.GenericError("Repo request no longer active")
			}
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) && context.Cause(ctx) == context.DeadlineExceeded {
				return nil, bus.GenericError("Unsuccessfully waited %s for a new %v repo", time.Since(start).Round(time.Second), tag)
			}
			return nil, context.Cause(ctx)
		case <-changed:
		case <-time.After(waitSafety):
			// only covers an event lost on core NATS
		}
	}
}

// newRepo(tag, event=None, src=False, debuginfo=False, separate_src=False):
// Koji's NewRepoTask (weight 0.1) generates the repo on the builder. Until
// kojibus builders make repo metadata the hub generates repos itself
// (hubd/hub/repos.go), so this handler calls the hub's newRepo (a forced
// request for a repo newer than now) and waits for it like waitrepo,
// returning the new repo's id (Koji returns [repo_id, event_id]).
func newRepoHandler(ctx context.Context, t *Task, a Args) (any, error) {
	var tag any
	if ok, err := a.Get(0, "tag", &tag); err != nil || !ok {
		return nil, bus.ParameterError("newRepo: missing parameter tag")
	}
	var event *int64
	if _, err := a.Get(1, "event", &event); err != nil {
		return nil, err
	}
	opts := map[string]bool{}
	for i, name := range []string{"src", "debuginfo", "separate_src"} {
		var v bool
		if _, err := a.Get(2+i, name, &v); err != nil {
			return nil, err
		}
		if v {
			opts[name] = true
		}
	}
	changed, unsub, err := repoWatch(t)
	if err != nil {
		return nil, err
	}
	defer unsub()
	s := t.Session()
	// The hub's newRepo files a forced request for a repo newer than now
	// (host sessions may call it: this task runs on the hub's behalf).
	nkw := map[string]any{}
	if event != nil {
		nkw["event"] = *event
	}
	for name := range opts {
		nkw[name] = true
	}
	var reqID int64
	if err := s.Call(ctx, "newRepo", []any{tag}, nkw, &reqID); err != nil {
		return nil, err
	}
	res := bus.RepoRequestResult{Request: &bus.RepoRequest{ID: reqID}}
	fmt.Fprintf(t.Log, "waiting for repo request %d\n", res.Request.ID)
	for {
		var chk bus.RepoCheck
		if err := s.Call(ctx, "repo.checkRequest", []any{res.Request.ID}, nil, &chk); err != nil {
			return nil, err
		}
		if chk.Repo != nil && chk.Repo.State == 1 {
			fmt.Fprintf(t.Log, "repo %d ready\n", chk.Repo.ID)
			return chk.Repo.ID, nil
		}
		if chk.Request != nil && !chk.Request.Active {
			return nil, bus.GenericError("Repo request no longer active")
		}
		select {
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		case <-changed:
		case <-time.After(waitSafety):
			// only covers an event lost on core NATS
		}
	}
}
