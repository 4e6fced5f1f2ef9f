package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nuid"

	"github.com/kojibus/kojibus/bus"
)

// Process-level tests of the task engine: hubd and builderd run as
// processes, tasks are made through the API and kojictl, and every
// assertion is about what clients see: task states, results and the
// koji.event.task.* events.

// TestTaskPriorityOrder: tasks queued while the only builder is busy open
// in priority order (lower number first), not in submission order.
func TestTaskPriorityOrder(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	w := WatchTasks(t, admin.Conn())
	creds, hostID := h.AddHost(t, "b1", 1, "x86_64")
	StartBuilder(t, "b1", creds, hostID)

	busy := makeTask(t, admin, "sleep", []any{2}, nil)
	w.WaitFor(t, 15*time.Second, "the first task to open", func(evs []*bus.Event) bool {
		return len(eventsOf(evs, busy, "task.open")) == 1
	})
	prio := map[int64]int{}
	for _, p := range []int{30, 10, 20} {
		prio[makeTask(t, admin, "sleep", []any{0}, map[string]any{"priority": p})] = p
	}
	// All three were queued while the builder was busy.
	if info := taskInfo(t, admin, busy); info.State != bus.TaskOpen {
		t.Fatalf("the busy task is %s when the others were queued, want OPEN (test too slow?)", bus.TaskStateName(info.State))
	}
	var ids []int64
	for id := range prio {
		ids = append(ids, id)
	}
	w.WaitClosed(t, 20*time.Second, append(ids, busy)...)

	var order []int
	busyClosed := false
	for _, ev := range w.Events() {
		if ev.Address == "task.closed" && evTask(ev) == busy {
			busyClosed = true
		}
		if p, ok := prio[evTask(ev)]; ok && ev.Address == "task.open" {
			if !busyClosed {
				t.Errorf("task %d (priority %d) opened before the busy task closed: capacity 1 exceeded", evTask(ev), p)
			}
			if evHost(ev) != hostID {
				t.Errorf("task %d opened on host %d, want %d", evTask(ev), evHost(ev), hostID)
			}
			order = append(order, p)
		}
	}
	if fmt.Sprint(order) != "[10 20 30]" {
		t.Errorf("tasks opened in priority order %v, want [10 20 30]\n%s", order, describeEvents(w.Events()))
	}
}

// TestTaskCapacity: with two builders of capacity 2 and six sleep tasks of
// weight 1, no host ever runs more than two at once, both hosts work, and
// every task closes once.
func TestTaskCapacity(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	w := WatchTasks(t, admin.Conn())
	c1, id1 := h.AddHost(t, "b1", 2, "x86_64")
	c2, id2 := h.AddHost(t, "b2", 2, "x86_64")
	StartBuilder(t, "b1", c1, id1)
	StartBuilder(t, "b2", c2, id2)

	var ids []int64
	for range 6 {
		ids = append(ids, makeTask(t, admin, "sleep", []any{1}, nil))
	}
	w.WaitClosed(t, 25*time.Second, ids...)

	open := map[int64]int{} // host -> open tasks
	maxOpen := map[int64]int{}
	ran := map[int64]int{}     // host -> tasks run
	where := map[int64]int64{} // task -> host it opened on
	mine := map[int64]bool{}
	for _, id := range ids {
		mine[id] = true
	}
	for _, ev := range w.Events() {
		id := evTask(ev)
		if !mine[id] {
			continue
		}
		switch ev.Address {
		case "task.open":
			hst := evHost(ev)
			where[id] = hst
			open[hst]++
			ran[hst]++
			if open[hst] > maxOpen[hst] {
				maxOpen[hst] = open[hst]
			}
		case "task.closed":
			open[where[id]]--
		}
	}
	for _, hst := range []int64{id1, id2} {
		if maxOpen[hst] > 2 {
			t.Errorf("host %d had %d tasks open at once, capacity 2", hst, maxOpen[hst])
		}
		if ran[hst] == 0 {
			t.Errorf("host %d ran no task (ran: %v)", hst, ran)
		}
	}
	if ran[id1]+ran[id2] != 6 || len(ran) != 2 {
		t.Errorf("tasks ran %v times per host, want 6 runs on hosts %d and %d", ran, id1, id2)
	}
	for _, id := range ids {
		if n := len(eventsOf(w.Events(), id, "task.closed")); n != 1 {
			t.Errorf("task %d has %d task.closed events, want 1", id, n)
		}
		info := taskInfo(t, admin, id)
		if info.State != bus.TaskClosed || info.Weight != 1.0 || info.HostID == nil || *info.HostID != where[id] {
			t.Errorf("task %d: state %s weight %g host %v, want CLOSED weight 1 host %d", id, bus.TaskStateName(info.State), info.Weight, info.HostID, where[id])
		}
	}
	t.Logf("max open per host: %v, runs per host: %v", maxOpen, ran)
}

// TestTaskPinned: a task made with assign=b2 runs on b2 only, even while b1
// is idle and b2 is busy with the previous pinned task.
func TestTaskPinned(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	w := WatchTasks(t, admin.Conn())
	c1, id1 := h.AddHost(t, "b1", 2, "x86_64")
	c2, id2 := h.AddHost(t, "b2", 1, "x86_64")
	StartBuilder(t, "b1", c1, id1)
	StartBuilder(t, "b2", c2, id2)

	var ids []int64
	for range 2 {
		ids = append(ids, makeTask(t, admin, "sleep", []any{1}, map[string]any{"assign": "b2"}))
	}
	// A free task in between shows that b1 is alive and taking work.
	free := makeTask(t, admin, "sleep", []any{0}, nil)
	w.WaitClosed(t, 20*time.Second, append(ids, free)...)
	evs := w.Events()
	for _, id := range ids {
		if got := eventsOf(evs, id, ""); len(got) == 0 || got[0].Address != "task.assigned" || evHost(got[0]) != id2 {
			t.Errorf("task %d: events\n%s want task.assigned to host %d first", id, describeEvents(got), id2)
		}
		opens := eventsOf(evs, id, "task.open")
		if len(opens) != 1 {
			t.Errorf("task %d opened %d times, want 1", id, len(opens))
		}
		for _, ev := range opens {
			if evHost(ev) != id2 {
				t.Errorf("pinned task %d opened on host %d, want b2 (%d)", id, evHost(ev), id2)
			}
		}
		if info := taskInfo(t, admin, id); info.State != bus.TaskClosed || info.HostID == nil || *info.HostID != id2 {
			t.Errorf("task %d: state %s host %v, want CLOSED on %d", id, bus.TaskStateName(info.State), info.HostID, id2)
		}
	}
	// b2 has capacity 1: the second pinned task waited for the first
	// although b1 had room.
	var order []string
	for _, ev := range evs {
		if (evTask(ev) == ids[0] || evTask(ev) == ids[1]) && (ev.Address == "task.open" || ev.Address == "task.closed") {
			order = append(order, fmt.Sprintf("%s %d", ev.Address, evTask(ev)))
		}
	}
	want := []string{"task.open " + strconv.FormatInt(ids[0], 10), "task.closed " + strconv.FormatInt(ids[0], 10),
		"task.open " + strconv.FormatInt(ids[1], 10), "task.closed " + strconv.FormatInt(ids[1], 10)}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("pinned tasks ran as %v, want %v", order, want)
	}
	if opens := eventsOf(evs, free, "task.open"); len(opens) != 1 || evHost(opens[0]) != id1 {
		t.Errorf("free task %d opens %s, want one on b1 (%d)", free, describeEvents(opens), id1)
	}
}

// TestTaskForkWaits: fork(2, 1) makes two sleep(1) subtasks, waits for both
// (its weight leaves the load while it waits, so a capacity-1 host runs the
// children) and closes after them with their results.
func TestTaskForkWaits(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	w := WatchTasks(t, admin.Conn())
	creds, hostID := h.AddHost(t, "b1", 1, "x86_64")
	StartBuilder(t, "b1", creds, hostID)

	parent := makeTask(t, admin, "fork", []any{2, 1}, nil)
	w.WaitClosed(t, 25*time.Second, parent)
	evs := w.Events()
	var children []int64
	closedChildren := 0
	parentClosedAt := -1
	for i, ev := range evs {
		if evParent(ev) == parent && ev.Address == "task.free" {
			children = append(children, evTask(ev))
		}
		if evParent(ev) == parent && ev.Address == "task.closed" {
			closedChildren++
		}
		if evTask(ev) == parent && ev.Address == "task.closed" {
			parentClosedAt = i
			if closedChildren != 2 {
				t.Errorf("parent closed after %d of its children closed, want 2", closedChildren)
			}
		}
	}
	if len(children) != 2 {
		t.Fatalf("fork(2, 1) made %d subtasks %v, want 2\n%s", len(children), children, describeEvents(evs))
	}
	for _, c := range children {
		if n := len(eventsOf(evs, c, "task.closed")); n != 1 {
			t.Errorf("child %d: %d task.closed events, want 1", c, n)
		}
		if n := len(eventsOf(evs, c, "task.open")); n != 1 {
			t.Errorf("child %d: %d task.open events, want 1", c, n)
		}
	}
	if parentClosedAt < 0 {
		t.Fatal("no task.closed for the parent")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var kids []bus.Task
	if err := admin.Call(ctx, "getTaskChildren", []any{parent}, nil, &kids); err != nil {
		t.Fatal(err)
	}
	var kidIDs []int64
	labels := map[string]bool{}
	for _, k := range kids {
		kidIDs = append(kidIDs, k.ID)
		if k.Label != nil {
			labels[*k.Label] = true
		}
		if k.State != bus.TaskClosed || k.Method != "sleep" || k.Parent == nil || *k.Parent != parent {
			t.Errorf("child %d: state %s method %s parent %v", k.ID, bus.TaskStateName(k.State), k.Method, k.Parent)
		}
	}
	sort.Slice(kidIDs, func(i, j int) bool { return kidIDs[i] < kidIDs[j] })
	if fmt.Sprint(kidIDs) != fmt.Sprint(children) || !labels["sleep-0"] || !labels["sleep-1"] {
		t.Errorf("getTaskChildren: ids %v labels %v, want %v with labels sleep-0, sleep-1", kidIDs, labels, children)
	}
	var result []json.RawMessage
	if err := admin.Call(ctx, "getTaskResult", []any{parent}, nil, &result); err != nil {
		t.Fatal(err)
	}
	if len(result) != 2 {
		t.Errorf("fork result %s, want one entry per child", result)
	}
	for i, c := range children {
		var childResult json.RawMessage
		if err := admin.Call(ctx, "getTaskResult", []any{c}, nil, &childResult); err != nil {
			t.Fatal(err)
		}
		if i < len(result) && string(result[i]) != string(childResult) {
			t.Errorf("fork result[%d] = %s, child %d's result is %s", i, result[i], c, childResult)
		}
	}
	if info := taskInfo(t, admin, parent); info.State != bus.TaskClosed {
		t.Errorf("parent is %s, want CLOSED", bus.TaskStateName(info.State))
	}
}

// waitProcs waits until cond holds for the builder's `sleep` children.
func waitProcs(t *testing.T, b *BuilderProc, d time.Duration, what string, cond func([]int) bool) []int {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		pids := childProcs(b.Pid, "sleep")
		if cond(pids) {
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s: sleep children of builderd %d are %v", d, what, b.Pid, pids)
		}
		// /proc has no change notification; a process exit is seen on a short poll.
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTaskCancelKillsProcess: kojictl cancel of a running sleep(60) kills
// the `sleep 60` process within a few seconds and the task is CANCELED.
func TestTaskCancelKillsProcess(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	w := WatchTasks(t, admin.Conn())
	creds, hostID := h.AddHost(t, "b1", 1, "x86_64")
	b := StartBuilder(t, "b1", creds, hostID)

	id := makeTask(t, admin, "sleep", []any{60}, nil)
	w.WaitFor(t, 15*time.Second, "the task to open", func(evs []*bus.Event) bool {
		return len(eventsOf(evs, id, "task.open")) == 1
	})
	pids := waitProcs(t, b, 10*time.Second, "the sleep 60 process to start", func(p []int) bool { return len(p) == 1 })
	cmdline, _ := readCmdline(pids[0])
	if cmdline != "sleep 60" {
		t.Errorf("builderd's child %d runs %q, want \"sleep 60\"", pids[0], cmdline)
	}

	start := time.Now()
	ctlOrCall(t, h, admin, []string{"cancel", strconv.FormatInt(id, 10)}, "cancelTask", []any{id}, nil)
	w.WaitFor(t, 5*time.Second, "task.canceled", func(evs []*bus.Event) bool {
		return len(eventsOf(evs, id, "task.canceled")) == 1
	})
	waitProcs(t, b, 5*time.Second, "the sleep 60 process to be killed", func(p []int) bool { return len(p) == 0 })
	t.Logf("sleep process gone %v after kojictl cancel started", time.Since(start).Round(time.Millisecond))
	if info := taskInfo(t, admin, id); info.State != bus.TaskCanceled {
		t.Errorf("task is %s, want CANCELED", bus.TaskStateName(info.State))
	}
	// The builder gives the slot back without reporting a result: a new
	// task runs on it, and the canceled one gets no later event.
	next := makeTask(t, admin, "sleep", []any{0}, nil)
	w.WaitClosed(t, 15*time.Second, next)
	evs := eventsOf(w.Events(), id, "")
	if len(evs) != 3 || evs[0].Address != "task.free" || evs[1].Address != "task.open" || evs[2].Address != "task.canceled" || evOld(evs[2]) != "OPEN" {
		t.Errorf("canceled task's events:\n%s want task.free, task.open, task.canceled (OPEN->CANCELED)", describeEvents(evs))
	}
	if info := taskInfo(t, admin, id); info.State != bus.TaskCanceled {
		t.Errorf("task is %s after the builder finished with it, want CANCELED", bus.TaskStateName(info.State))
	}
}

func readCmdline(pid int) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.ReplaceAll(string(data), "\x00", " ")), nil
}

var newTaskRE = regexp.MustCompile(`(?i)new task[^0-9]*([0-9]+)`)

// TestTaskResubmit: kojictl resubmit --nowait of a canceled task makes a new
// task with the same request, which runs and closes; the old one stays
// CANCELED.
func TestTaskResubmit(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	w := WatchTasks(t, admin.Conn())
	creds, hostID := h.AddHost(t, "b1", 1, "x86_64")

	// Canceled before any builder runs: it never opens.
	old := makeTask(t, admin, "sleep", []any{1}, map[string]any{"priority": 15})
	ctlOrCall(t, h, admin, []string{"cancel", strconv.FormatInt(old, 10)}, "cancelTask", []any{old}, nil)
	w.WaitFor(t, 5*time.Second, "task.canceled", func(evs []*bus.Event) bool {
		return len(eventsOf(evs, old, "task.canceled")) == 1
	})
	StartBuilder(t, "b1", creds, hostID)

	var newID int64
	out := ctlOrCall(t, h, admin, []string{"resubmit", "--nowait", strconv.FormatInt(old, 10)}, "resubmitTask", []any{old}, &newID)
	if newID == 0 {
		m := newTaskRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("kojictl resubmit --nowait printed no new task id:\n%s", out)
		}
		newID, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if newID == old {
		t.Fatalf("resubmit returned the old task id %d", old)
	}
	w.WaitClosed(t, 15*time.Second, newID)

	oldInfo, newInfo := taskInfo(t, admin, old), taskInfo(t, admin, newID)
	if oldInfo.State != bus.TaskCanceled {
		t.Errorf("old task is %s, want CANCELED", bus.TaskStateName(oldInfo.State))
	}
	if n := len(eventsOf(w.Events(), old, "task.open")); n != 0 {
		t.Errorf("the canceled task opened %d times", n)
	}
	if newInfo.State != bus.TaskClosed || newInfo.HostID == nil || *newInfo.HostID != hostID {
		t.Errorf("new task: state %s host %v, want CLOSED on %d", bus.TaskStateName(newInfo.State), newInfo.HostID, hostID)
	}
	if newInfo.Method != oldInfo.Method || newInfo.Priority != oldInfo.Priority || newInfo.Arch != oldInfo.Arch || newInfo.ChannelID != oldInfo.ChannelID || newInfo.Owner != oldInfo.Owner {
		t.Errorf("new task %+v does not match the old one %+v", newInfo, oldInfo)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var oldReq, newReq json.RawMessage
	if err := admin.Call(ctx, "getTaskRequest", []any{old}, nil, &oldReq); err != nil {
		t.Fatal(err)
	}
	if err := admin.Call(ctx, "getTaskRequest", []any{newID}, nil, &newReq); err != nil {
		t.Fatal(err)
	}
	if string(oldReq) != string(newReq) || string(newReq) != "[1]" {
		t.Errorf("requests: old %s new %s, want both [1]", oldReq, newReq)
	}
}

// TestTaskBuilderKilled: a builderd killed with SIGKILL while it runs three
// sleep(3) tasks loses them to the other builder after --host-timeout:
// each is freed under a new attempt, opens on the survivor and closes
// exactly once.
func TestTaskBuilderKilled(t *testing.T) {
	h := StartHub(t, "--host-timeout", "2s")
	admin := h.AdminClient(t)
	w := WatchTasks(t, admin.Conn())
	c1, id1 := h.AddHost(t, "b1", 3, "x86_64")
	c2, id2 := h.AddHost(t, "b2", 3, "x86_64")
	b1 := StartBuilder(t, "b1", c1, id1)

	var ids []int64
	for range 3 {
		ids = append(ids, makeTask(t, admin, "sleep", []any{3}, nil))
	}
	w.WaitFor(t, 15*time.Second, "three tasks open on b1", func(evs []*bus.Event) bool {
		n := 0
		for _, id := range ids {
			if o := eventsOf(evs, id, "task.open"); len(o) == 1 && evHost(o[0]) == id1 {
				n++
			}
		}
		return n == 3
	})
	StartBuilder(t, "b2", c2, id2)
	b1.Kill9()
	killedAt := len(w.Events())
	w.WaitClosed(t, 25*time.Second, ids...)

	evs := w.Events()
	for _, id := range ids {
		mine := eventsOf(evs, id, "")
		var chain []string
		for _, ev := range mine {
			chain = append(chain, fmt.Sprintf("%s(%s->%s@%d)", ev.Address, evOld(ev), evNew(ev), evHost(ev)))
		}
		// free (new), open on b1, free (OPEN->FREE: host lost), open on b2, closed.
		ok := len(mine) == 5 &&
			mine[0].Address == "task.free" && evOld(mine[0]) == "" &&
			mine[1].Address == "task.open" && evHost(mine[1]) == id1 &&
			mine[2].Address == "task.free" && evOld(mine[2]) == "OPEN" &&
			mine[3].Address == "task.open" && evHost(mine[3]) == id2 &&
			mine[4].Address == "task.closed" && evHost(mine[4]) == id2
		if !ok {
			t.Errorf("task %d events %v, want free, open on %d, free after the loss, open on %d, closed", id, chain, id1, id2)
		}
		// The re-dispatch came after the kill.
		for i, ev := range evs {
			if evTask(ev) == id && ev.Address == "task.free" && evOld(ev) == "OPEN" && i < killedAt {
				t.Errorf("task %d was freed before the builder was killed", id)
			}
		}
		info := taskInfo(t, admin, id)
		if info.State != bus.TaskClosed || info.HostID == nil || *info.HostID != id2 {
			t.Errorf("task %d: state %s host %v, want CLOSED on b2 (%d)", id, bus.TaskStateName(info.State), info.HostID, id2)
		}
	}
	// The lost runs' attempts are fenced off: each task is on attempt 2.
	nc := h.HubConn(t)
	h.WaitRelayDrained(t, nc, 20*time.Second)
	for _, id := range ids {
		var rec struct {
			Attempt int64 `json:"attempt"`
			Retries int   `json:"retries"`
		}
		stateRecord(t, nc, "task."+strconv.FormatInt(id, 10), &rec)
		if rec.Attempt != 2 || rec.Retries != 1 {
			t.Errorf("task %d: attempt %d retries %d, want attempt 2 retries 1", id, rec.Attempt, rec.Retries)
		}
	}
	var host bus.Host
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin.Call(ctx, "getHost", []any{"b1"}, nil, &host); err != nil {
		t.Fatal(err)
	}
	if host.Ready {
		t.Errorf("the killed host b1 is still ready")
	}
}

// submission is one makeTask call of the hub fault test.
type submission struct {
	requestID string
	acked     bool
	id        int64
	err       error
}

// TestTaskHubKilled: hubd is killed with SIGKILL under a stream of task
// submissions from several clients while two builders run them, and
// restarted. The builders reconnect and keep working: every acknowledged
// task exists and closes, and the events in KOJI_EVENTS match the state
// transitions one for one.
func TestTaskHubKilled(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	c1, id1 := h.AddHost(t, "b1", 4, "x86_64")
	c2, id2 := h.AddHost(t, "b2", 4, "x86_64")
	b1 := StartBuilder(t, "b1", c1, id1)
	b2 := StartBuilder(t, "b2", c2, id2)

	before := WatchTasks(t, admin.Conn())
	const submitters = 3
	var (
		mu     sync.Mutex
		subs   []*submission
		acked  atomic.Int64
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		killed atomic.Bool
		moved  = newProgress()
	)
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				s := &submission{requestID: nuid.Next()}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				s.err = callWithID(ctx, admin, "makeTask", s.requestID, []any{"sleep", []any{1}}, nil, &s.id)
				cancel()
				s.acked = s.err == nil
				if s.acked {
					acked.Add(1)
				} else if !killed.Load() {
					var f *bus.Fault
					if errors.As(s.err, &f) {
						t.Errorf("makeTask: %v", s.err)
					}
				}
				mu.Lock()
				subs = append(subs, s)
				mu.Unlock()
				moved.tick()
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		// Woken by the submitters and by task events (openNow counts them).
		waitOn(t, 30*time.Second, what, cond, func() { close(stop); wg.Wait() }, moved, before.ch)
	}
	// Kill when tasks are running: their results are reported across the restart.
	openNow := func() int {
		n := 0
		for _, ev := range before.Events() {
			switch ev.Address {
			case "task.open":
				n++
			case "task.closed":
				n--
			}
		}
		return n
	}
	waitFor("15 acknowledged submissions and 3 tasks running", func() bool { return acked.Load() >= 15 && openNow() >= 3 })
	running := openNow()
	killed.Store(true)
	h.Kill9()
	atKill := acked.Load()
	// An outage long enough that running tasks finish while the hub is
	// down: their results are reported once it is back.
	time.Sleep(1500 * time.Millisecond)
	h.Restart()
	waitFor("15 submissions acknowledged after the restart", func() bool { return acked.Load() >= atKill+15 })
	close(stop)
	wg.Wait()

	// Replaying the unacknowledged calls with their request ids settles
	// them: each is then either a task (created once) or a fault.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ackedIDs := map[int64]bool{}
	unacked := 0
	for _, s := range subs {
		if !s.acked {
			unacked++
			if err := callWithID(ctx, admin, "makeTask", s.requestID, []any{"sleep", []any{1}}, nil, &s.id); err != nil {
				t.Errorf("retry of makeTask (request %s, first attempt: %v): %v", s.requestID, s.err, err)
				continue
			}
		}
		if ackedIDs[s.id] {
			t.Errorf("two calls answered task id %d", s.id)
		}
		ackedIDs[s.id] = true
	}
	t.Logf("%d submissions (%d acknowledged before the kill, when %d tasks were running; %d unacknowledged and retried)", len(subs), atKill, running, unacked)

	// Every task closes: wait for the task.closed of those not CLOSED yet
	// (subscribed first, so none is missed between the look and the wait).
	w := WatchTasks(t, admin.Conn())
	var tasks []bus.Task
	if err := admin.Call(ctx, "listTasks", []any{map[string]any{"method": "sleep"}}, nil, &tasks); err != nil {
		t.Fatal(err)
	}
	inState := map[int64]bus.Task{}
	var pending []int64
	for _, tk := range tasks {
		inState[tk.ID] = tk
		if tk.State != bus.TaskClosed {
			pending = append(pending, tk.ID)
		}
	}
	for id := range ackedIDs {
		if _, ok := inState[id]; !ok {
			t.Errorf("acknowledged task %d does not exist", id)
		}
	}
	if len(inState) != len(ackedIDs) {
		t.Errorf("%d sleep tasks in state, %d calls answered: a call made a task twice or a task without a call", len(inState), len(ackedIDs))
	}
	t.Logf("%d tasks, %d not closed yet", len(inState), len(pending))
	w.WaitClosed(t, 30*time.Second, pending...)
	if !b1.Alive() || !b2.Alive() {
		t.Errorf("a builder exited during the hub's restart (b1 alive %v, b2 alive %v)", b1.Alive(), b2.Alive())
	}

	// KOJI_EVENTS against state: per task, free -> (open -> free)* -> open -> closed,
	// each event's old state the previous one's new state; one task.free
	// (no host was lost) and one task.open per attempt.
	nc := h.HubConn(t)
	h.WaitRelayDrained(t, nc, 20*time.Second)
	events := ReadEvents(t, admin.Conn(), bus.EventSubject("task.>"))
	perTask := map[int64][]streamEvent{}
	seenEventID := map[uint64]bool{}
	for _, ev := range events {
		if seenEventID[ev.ID] {
			t.Errorf("event id %d appears twice in KOJI_EVENTS", ev.ID)
		}
		seenEventID[ev.ID] = true
		perTask[evTask(ev.Event)] = append(perTask[evTask(ev.Event)], ev)
	}
	for id := range perTask {
		if _, ok := inState[id]; !ok {
			t.Errorf("events for task %d, which does not exist", id)
		}
	}
	for id := range inState {
		evs := perTask[id]
		var chain []string
		prev := ""
		free, opens, closed := 0, 0, 0
		for _, ev := range evs {
			chain = append(chain, fmt.Sprintf("%s(%s->%s)", ev.Address, evOld(ev.Event), evNew(ev.Event)))
			if evOld(ev.Event) != prev {
				t.Errorf("task %d: event %s says old %q, previous state %q", id, ev.Address, evOld(ev.Event), prev)
			}
			prev = evNew(ev.Event)
			switch ev.Address {
			case "task.free":
				free++
			case "task.open":
				opens++
			case "task.closed":
				closed++
			}
		}
		var rec struct {
			State   int   `json:"state"`
			Attempt int64 `json:"attempt"`
		}
		stateRecord(t, nc, "task."+strconv.FormatInt(id, 10), &rec)
		if free != 1 || closed != 1 || int64(opens) != rec.Attempt || prev != "CLOSED" || rec.State != bus.TaskClosed {
			t.Errorf("task %d: events %v (state %s, attempt %d), want one task.free, one task.open per attempt, one task.closed",
				id, chain, bus.TaskStateName(rec.State), rec.Attempt)
		}
	}
	for _, b := range []*BuilderProc{b1, b2} {
		if !b.Alive() {
			t.Errorf("builderd %s exited", b.Name)
		}
	}
}
