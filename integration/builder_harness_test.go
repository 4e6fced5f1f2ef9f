package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// AddHost adds a build host with kojictl add-host NAME ARCH... --creds-out
// FILE, sets its capacity with kojictl edit-host --capacity and returns the
// credentials file and the host id.
func (h *Hub) AddHost(t testing.TB, name string, capacity float64, arches ...string) (creds string, id int64) {
	t.Helper()
	creds = filepath.Join(t.TempDir(), name+".creds")
	args := append([]string{"add-host", name}, arches...)
	args = append(args, "--creds-out", creds)
	out, errOut, code := h.Ctl(t, args...)
	if code != 0 {
		t.Fatalf("kojictl add-host %s: exit %d\n%s%s", name, code, out, errOut)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(out), name+" added: id %d", &id); err != nil {
		t.Fatalf("kojictl add-host %s: unexpected output %q: %v", name, out, err)
	}
	capArg := strconv.FormatFloat(capacity, 'f', -1, 64)
	if out, errOut, code := h.Ctl(t, "edit-host", "--capacity", capArg, name); code != 0 {
		t.Fatalf("kojictl edit-host --capacity %s %s: exit %d\n%s%s", capArg, name, code, out, errOut)
	}
	out, errOut, code = h.Ctl(t, "call", "--json-output", "getHost", name)
	var host bus.Host
	if code != 0 || json.Unmarshal([]byte(out), &host) != nil || host.ID != id || host.Capacity != capacity {
		t.Fatalf("kojictl call getHost %s: exit %d, capacity %g (want %g)\n%s%s", name, code, host.Capacity, capacity, out, errOut)
	}
	return creds, id
}

// BuilderProc is a builderd process.
type BuilderProc struct {
	t       testing.TB
	Name    string
	HostID  int64
	Pid     int
	WorkDir string

	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
	mu     sync.Mutex
	done   bool
}

// StartBuilder starts `builderd --creds CREDS --workdir DIR --heartbeat
// 500ms --shutdown-timeout 2s` and waits for "builderd ready". It is stopped
// (SIGTERM) when the test ends, before the hub; its log is printed if the
// test failed. extraArgs follow the others.
func StartBuilder(t testing.TB, name, creds string, hostID int64, extraArgs ...string) *BuilderProc {
	t.Helper()
	b := &BuilderProc{t: t, Name: name, HostID: hostID, WorkDir: t.TempDir(), log: &syncBuffer{}, exited: make(chan struct{})}
	args := append([]string{"--creds", creds, "--workdir", b.WorkDir,
		"--heartbeat", "500ms", "--shutdown-timeout", "2s", "--log-level", "debug"}, extraArgs...)
	cmd := exec.Command(filepath.Join(binDir, "builderd"), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = b.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b.cmd, b.Pid = cmd, cmd.Process.Pid
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			t.Logf("builderd %s (pid %d) log:\n%s", name, b.Pid, b.log.String())
		}
	})
	ready := make(chan struct{}, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(b.log, line)
			if strings.Contains(line, `msg="builderd ready"`) {
				select {
				case ready <- struct{}{}:
				default:
				}
			}
		}
		_, _ = io.Copy(b.log, stderr)
		_ = cmd.Wait()
		close(b.exited)
	}()
	select {
	case <-ready:
	case <-b.exited:
		t.Fatalf("builderd %s exited before it was ready:\n%s", name, b.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("builderd %s not ready after 30s:\n%s", name, b.log.String())
	}
	return b
}

// Kill9 kills builderd with SIGKILL and waits for it to be gone. Its
// children (task processes, in process groups of their own) are not killed.
func (b *BuilderProc) Kill9() { b.signal(syscall.SIGKILL) }

// Stop stops builderd with SIGTERM (SIGKILL after 15s). Safe to call twice.
func (b *BuilderProc) Stop() { b.signal(syscall.SIGTERM) }

// Alive reports whether the process is still running.
func (b *BuilderProc) Alive() bool {
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// Log returns what builderd wrote so far.
func (b *BuilderProc) Log() string { return b.log.String() }

// WaitLog waits until builderd has logged a line containing text.
func (b *BuilderProc) WaitLog(t testing.TB, text string, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		changed := b.log.Changed()
		if strings.Contains(b.log.String(), text) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("builderd %s did not log %q within %s:\n%s", b.Name, text, d, b.log.String())
		}
	}
}

func (b *BuilderProc) signal(sig syscall.Signal) {
	b.mu.Lock()
	done := b.done
	b.done = true
	b.mu.Unlock()
	if done {
		return
	}
	_ = b.cmd.Process.Signal(sig)
	select {
	case <-b.exited:
	case <-time.After(15 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
}

// childProcs lists the pids of the processes named comm whose parent is ppid (from /proc).
func childProcs(ppid int, comm string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(data)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		fields := strings.Fields(s[end+1:])
		if len(fields) < 2 || s[open+1:end] != comm {
			continue
		}
		if fields[0] == "Z" { // a zombie has exited
			continue
		}
		if p, err := strconv.Atoi(fields[1]); err == nil && p == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// TaskWatch records koji.event.task.> as a client connection sees them, in
// the order they arrive (the hub's commit order).
type TaskWatch struct {
	mu     sync.Mutex
	events []*bus.Event
	ch     chan struct{}
}

// WatchTasks subscribes to koji.event.task.> on nc.
func WatchTasks(t testing.TB, nc *nats.Conn) *TaskWatch {
	t.Helper()
	w := &TaskWatch{ch: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(bus.EventPrefix+"task.>", func(m *nats.Msg) {
		ev, err := bus.EventFromMsg(m)
		if err != nil {
			return
		}
		w.mu.Lock()
		w.events = append(w.events, ev)
		w.mu.Unlock()
		select {
		case w.ch <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

// Events returns a copy of the events seen so far.
func (w *TaskWatch) Events() []*bus.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*bus.Event(nil), w.events...)
}

// WaitFor waits until cond holds for the events seen so far; it fails the
// test after d.
func (w *TaskWatch) WaitFor(t testing.TB, d time.Duration, what string, cond func([]*bus.Event) bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		if cond(w.Events()) {
			return
		}
		select {
		case <-w.ch:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s; task events seen:\n%s", d, what, describeEvents(w.Events()))
		}
	}
}

// WaitClosed waits for a task.closed event of every id.
func (w *TaskWatch) WaitClosed(t testing.TB, d time.Duration, ids ...int64) {
	t.Helper()
	w.WaitFor(t, d, fmt.Sprintf("task.closed of %v", ids), func(evs []*bus.Event) bool {
		closed := map[int64]bool{}
		for _, ev := range evs {
			if ev.Address == "task.closed" {
				closed[evTask(ev)] = true
			}
		}
		for _, id := range ids {
			if !closed[id] {
				return false
			}
		}
		return true
	})
}

// evTask is the task id of a task event.
func evTask(ev *bus.Event) int64 { n, _ := propInt64(ev.Props["id"]); return n }

// evParent is the parent task id of a task event (0: none).
func evParent(ev *bus.Event) int64 { n, _ := propInt64(ev.Props["parent"]); return n }

// evHost is the host of the task after the change (body info.host_id, 0: none).
func evHost(ev *bus.Event) int64 {
	var body struct {
		Info struct {
			HostID *int64 `json:"host_id"`
		} `json:"info"`
	}
	if json.Unmarshal(ev.Body, &body) != nil || body.Info.HostID == nil {
		return 0
	}
	return *body.Info.HostID
}

func evOld(ev *bus.Event) string { s, _ := ev.Props["old"].(string); return s }
func evNew(ev *bus.Event) string { s, _ := ev.Props["new"].(string); return s }

func propInt64(v any) (int64, bool) {
	switch x := v.(type) {
	case float64:
		return int64(x), true
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	}
	return 0, false
}

// eventsOf returns the events of task id (optionally only of one address), in order.
func eventsOf(evs []*bus.Event, id int64, address string) []*bus.Event {
	var out []*bus.Event
	for _, ev := range evs {
		if evTask(ev) == id && (address == "" || ev.Address == address) {
			out = append(out, ev)
		}
	}
	return out
}

func describeEvents(evs []*bus.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		fmt.Fprintf(&b, "  #%d %-14s task %d parent %d %s->%s host %d\n", ev.ID, ev.Address, evTask(ev), evParent(ev), evOld(ev), evNew(ev), evHost(ev))
	}
	return b.String()
}

// makeTask creates a task with the admin client and returns its id.
func makeTask(t testing.TB, c *bus.Client, method string, args []any, opts map[string]any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var id int64
	if err := c.Call(ctx, "makeTask", []any{method, args}, opts, &id); err != nil {
		t.Fatalf("makeTask %s%v %v: %v", method, args, opts, err)
	}
	return id
}

// taskInfo is getTaskInfo(id).
func taskInfo(t testing.TB, c *bus.Client, id int64) bus.Task {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var info *bus.Task
	if err := c.Call(ctx, "getTaskInfo", []any{id}, nil, &info); err != nil {
		t.Fatalf("getTaskInfo %d: %v", id, err)
	}
	if info == nil {
		t.Fatalf("getTaskInfo %d: no such task", id)
	}
	return *info
}

// stateRecord reads the materialized state entry key (e.g. "task.12") from
// the state bucket with the hub role's connection (after WaitRelayDrained).
func stateRecord(t testing.TB, nc *nats.Conn, key string, out any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bus.StateBucket)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, key)
	if err != nil {
		t.Fatalf("state key %s: %v", key, err)
	}
	if err := json.Unmarshal(e.Value(), out); err != nil {
		t.Fatalf("state key %s: %v", key, err)
	}
}

// ctlOrCall runs a kojictl verb; if this kojictl does not have it yet, it
// makes the equivalent API call with the client instead (and says so).
func ctlOrCall(t testing.TB, h *Hub, c *bus.Client, verb []string, method string, args []any, out any) string {
	t.Helper()
	stdout, stderr, code := h.Ctl(t, verb...)
	if code != 0 && strings.Contains(stderr, "unknown command") {
		t.Logf("kojictl has no %q verb yet: calling %s through the client", verb[0], method)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Call(ctx, method, args, nil, out); err != nil {
			t.Fatalf("%s%v: %v", method, args, err)
		}
		return ""
	}
	if code != 0 {
		t.Fatalf("kojictl %v: exit %d\n%s%s", verb, code, stdout, stderr)
	}
	return stdout
}
