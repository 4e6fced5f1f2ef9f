package builder

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/kojibus/kojibus/bus/bustest"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/kojibus/kojibus/builderd/internal/buildroot"
	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
	"github.com/kojibus/kojibus/hubd/hub"
)

func TestMain(m *testing.M) {
	buildroot.MaybeInit()        // the test binary is the buildroot init of runroot tests
	bustest.MaybeClientProcess() // and the client process of benchmarks
	goleak.VerifyTestMain(m, bustest.LeakOptions()...)
}

// addHost adds a host as kojictl add-host --creds-out does and returns the
// path of its credentials file.
func addHost(t testing.TB, h *hub.TestHub, name string, arches ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Admin.Call(ctx, "addHost", []any{name, arches}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var creds bus.HostCredentials
	if err := h.Admin.Call(ctx, "createHostCredentials", []any{name}, nil, &creds); err != nil {
		t.Fatal(err)
	}
	server := creds.Server
	if server == "" {
		server = h.Profile.Server
	}
	pairs := [][2]string{{"server", server}}
	pairs = append(pairs, [2]string{"authtype", "password"}, [2]string{"user", creds.User}, [2]string{"password", creds.Password}, [2]string{"host", creds.Host})
	path := filepath.Join(t.TempDir(), name+".conf")
	if err := bus.WriteFileAtomic(path, config.Write(config.KV{Section: "koji", Pairs: pairs}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startBuilder(t testing.TB, creds string, mutate func(*Config)) *Builder {
	t.Helper()
	p, err := bus.LoadProfile(creds, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Profile: p, WorkDir: t.TempDir(), Heartbeat: 500 * time.Millisecond, SafetyWake: 30 * time.Second,
		ShutdownTimeout: 5 * time.Second, Logger: testLogger(t)}
	if mutate != nil {
		mutate(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// taskEvents records koji.event.task.* as the admin sees them.
type taskEvents struct {
	mu     sync.Mutex
	events []*bus.Event
	ch     chan struct{}
	sub    *nats.Subscription
}

func watchTasks(t *testing.T, h *hub.TestHub) *taskEvents {
	t.Helper()
	w := &taskEvents{ch: make(chan struct{}, 1)}
	sub, err := h.Admin.Conn().Subscribe(bus.EventPrefix+"task.>", func(m *nats.Msg) {
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
	if err := h.Admin.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	w.sub = sub
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

// waitFor waits until cond holds for the events seen so far.
func (w *taskEvents) waitFor(t *testing.T, d time.Duration, what string, cond func([]*bus.Event) bool) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		ok := cond(w.events)
		w.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-w.ch:
		case <-deadline.C:
			w.mu.Lock()
			defer w.mu.Unlock()
			var seen []string
			for _, ev := range w.events {
				seen = append(seen, fmt.Sprintf("%s(%v)", ev.Address, ev.Props["id"]))
			}
			t.Fatalf("timed out waiting for %s; events: %s", what, strings.Join(seen, " "))
		}
	}
}

func stateOf(ev *bus.Event, id int64) bool {
	n, ok := propInt(ev.Props["id"])
	return ok && n == id
}

func hasState(evs []*bus.Event, id int64, addr string) bool {
	for _, ev := range evs {
		if ev.Address == addr && stateOf(ev, id) {
			return true
		}
	}
	return false
}

func makeTask(t *testing.T, h *hub.TestHub, method string, args []any, kw map[string]any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var id int64
	if err := h.Admin.Call(ctx, "makeTask", []any{method, args}, kw, &id); err != nil {
		t.Fatal(err)
	}
	return id
}

func taskInfo(t *testing.T, h *hub.TestHub, id int64) bus.Task {
	t.Helper()
	var info bus.Task
	if err := h.Admin.Call(context.Background(), "getTaskInfo", []any{id}, nil, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

func TestSleepTaskCloses(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	w := watchTasks(t, h)
	b := startBuilder(t, creds, nil)
	id := makeTask(t, h, "sleep", []any{0}, nil)
	w.waitFor(t, 20*time.Second, "task closed", func(evs []*bus.Event) bool { return hasState(evs, id, "task.closed") })
	info := taskInfo(t, h, id)
	if info.State != bus.TaskClosed || info.HostID == nil || *info.HostID != b.HostID() {
		t.Fatalf("task %+v, want CLOSED on host %d", info, b.HostID())
	}
	if !hasState(w.events, id, "task.open") {
		t.Fatal("no task.open event")
	}
	// The weight the handler declared reached the hub.
	if info.Weight != 1.0 {
		t.Fatalf("weight %v", info.Weight)
	}
	// The work directory is gone.
	waitUntil(t, 5*time.Second, "work dir removed", func() bool {
		_, err := os.Stat(b.taskDir(id, 1))
		return errors.Is(err, os.ErrNotExist)
	})
	// The host record shows the heartbeat with the methods.
	var host bus.Host
	if err := h.Admin.Call(context.Background(), "getHost", []any{"builder1"}, nil, &host); err != nil {
		t.Fatal(err)
	}
	if !host.Ready || host.UpdateTS == nil {
		t.Fatalf("host after heartbeat: %+v", host)
	}
}

// waitUntil polls cond with a deadline. It is for state that sends no
// notification: a process that exits (/proc, kill -0), a directory that is
// removed; hub state is awaited through events instead.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestSleepTaskLogIsUploaded(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	w := watchTasks(t, h)
	startBuilder(t, creds, nil)
	id := makeTask(t, h, "sleep", []any{2}, nil)
	w.waitFor(t, 20*time.Second, "task open", func(evs []*bus.Event) bool { return hasState(evs, id, "task.open") })

	// Live: the first line is published while the task still runs.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	js, err := jetstream.New(h.Admin.Conn())
	if err != nil {
		t.Fatal(err)
	}
	cons, err := js.OrderedConsumer(ctx, bus.UploadsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.UploadFilter(0, id, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("no live log chunk: %v", err)
	}
	if !strings.Contains(string(m.Data()), "sleeping 2s") || m.Headers().Get(bus.HeaderUploadName) != "sleep.log" ||
		m.Headers().Get(bus.HeaderUploadFinal) != "" || !strings.HasSuffix(m.Headers().Get("Nats-Msg-Id"), fmt.Sprintf("-%d-1-sleep=2Elog-0", id)) {
		t.Fatalf("first chunk %q headers %v", m.Data(), m.Headers())
	}
	if info := taskInfo(t, h, id); info.State != bus.TaskOpen {
		t.Fatalf("task %s before the live chunk was checked", bus.TaskStateName(info.State))
	}

	// Finished: the log is an output of the task.
	w.waitFor(t, 20*time.Second, "task closed", func(evs []*bus.Event) bool { return hasState(evs, id, "task.closed") })
	var names []string
	if err := h.Admin.Call(ctx, "listTaskOutput", []any{id}, nil, &names); err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "sleep.log" {
		t.Fatalf("outputs %v", names)
	}
	var b64 string
	if err := h.Admin.Call(ctx, "downloadTaskOutput", []any{id, "sleep.log"}, nil, &b64); err != nil {
		t.Fatal(err)
	}
	text, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || string(text) != "sleeping 2s\n" {
		t.Fatalf("sleep.log %q (%v)", text, err)
	}
}

func TestForkRunsSubtasks(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64") // capacity 2.0
	w := watchTasks(t, h)
	startBuilder(t, creds, nil)
	id := makeTask(t, h, "fork", []any{2, 1}, nil)
	w.waitFor(t, 30*time.Second, "fork finished", func(evs []*bus.Event) bool {
		return hasState(evs, id, "task.closed") || hasState(evs, id, "task.failed")
	})
	info := taskInfo(t, h, id)
	if info.State != bus.TaskClosed {
		err := h.Admin.Call(context.Background(), "getTaskResult", []any{id}, nil, nil)
		t.Fatalf("fork %s: %v", bus.TaskStateName(info.State), err)
	}
	var children []bus.Task
	if err := h.Admin.Call(context.Background(), "getTaskChildren", []any{id}, nil, &children); err != nil {
		t.Fatal(err)
	}
	if len(children) != 2 {
		t.Fatalf("%d children", len(children))
	}
	for i, c := range children {
		if c.State != bus.TaskClosed || c.Method != "sleep" || c.Label == nil || *c.Label != fmt.Sprintf("sleep-%d", i) {
			t.Fatalf("child %+v", c)
		}
	}
	var res []any
	if err := h.Admin.Call(context.Background(), "getTaskResult", []any{id}, nil, &res); err != nil {
		t.Fatal(err)
	}
	if len(res) != 2 || res[0] != nil || res[1] != nil {
		t.Fatalf("fork result %v", res)
	}
	// The waiting parent's weight left the load: on a capacity-2 host both
	// children (weight 1 each) ran at the same time as their parent.
	open, most := map[int64]bool{}, 0
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range w.events {
		cid, _ := propInt(ev.Props["id"])
		switch {
		case ev.Address == "task.open" && cid != id:
			open[cid] = true
		case ev.Address == "task.closed":
			delete(open, cid)
		}
		most = max(most, len(open))
	}
	if most != 2 {
		t.Fatalf("at most %d children open at once, want 2", most)
	}
}

func TestForkFailsWhenAChildFails(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	if err := h.Admin.Call(context.Background(), "editHost", []any{"builder1"}, map[string]any{"capacity": 4.0}, nil); err != nil {
		t.Fatal(err)
	}
	w := watchTasks(t, h)
	startBuilder(t, creds, nil)
	// sleep(-1) fails with a ParameterError: failany fails the parent.
	id := makeTask(t, h, "fork", []any{2, -1}, nil)
	w.waitFor(t, 30*time.Second, "fork failed", func(evs []*bus.Event) bool { return hasState(evs, id, "task.failed") })
	err := h.Admin.Call(context.Background(), "getTaskResult", []any{id}, nil, nil)
	if !errors.Is(err, bus.ErrParameter) {
		t.Fatalf("fork result error %v, want the child's ParameterError", err)
	}
}

func TestCancelKillsProcess(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	w := watchTasks(t, h)
	b := startBuilder(t, creds, nil)
	id := makeTask(t, h, "sleep", []any{300}, nil)
	var pid int
	waitUntil(t, 20*time.Second, "sleep process", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if r := b.running[id]; r != nil {
			if p := r.PIDs(); len(p) == 1 {
				pid = p[0]
			}
		}
		return pid != 0
	})
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("process %d not running: %v", pid, err)
	}
	start := time.Now()
	if err := h.Admin.Call(context.Background(), "cancelTask", []any{id}, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 3*time.Second, "process gone", func() bool { return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) })
	if d := time.Since(start); d > time.Second {
		t.Fatalf("killed after %v", d)
	}
	waitUntil(t, 5*time.Second, "run ended", func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.running) == 0 })
	if _, err := os.Stat(b.taskDir(id, 1)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("work directory of the killed run: %v, want it removed", err)
	}
	if info := taskInfo(t, h, id); info.State != bus.TaskCanceled {
		t.Fatalf("state %s", bus.TaskStateName(info.State))
	}
	// The canceled run reported nothing: no closed/failed event.
	w.mu.Lock()
	defer w.mu.Unlock()
	if hasState(w.events, id, "task.closed") || hasState(w.events, id, "task.failed") {
		t.Fatal("a canceled run reported a result")
	}
}

// A builderd killed during runs leaves their work directories: the next one
// removes them when it starts, and keeps the rest of its work directory.
func TestLeftoverRunDirectoriesRemovedAtStart(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	work := t.TempDir()
	for _, run := range []string{"7-1", "8-3"} {
		if err := os.MkdirAll(filepath.Join(work, "tasks", run, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(work, "tasks", run, "sub", "out.log"), []byte("left"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	keep := filepath.Join(work, "rootfs-cache", "kept")
	if err := os.MkdirAll(keep, 0o755); err != nil {
		t.Fatal(err)
	}
	startBuilder(t, creds, func(c *Config) { c.WorkDir = work })
	left, err := os.ReadDir(filepath.Join(work, "tasks"))
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Fatalf("%d run directories left after start, want none", len(left))
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatalf("the rootfs cache went too: %v", err)
	}
}

func TestUnknownMethodNotTaken(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	w := watchTasks(t, h)
	startBuilder(t, creds, nil)
	odd := makeTask(t, h, "buildArch", []any{"x"}, nil)
	// A task after it that the builder can run proves it looked at the queue.
	id := makeTask(t, h, "sleep", []any{0}, nil)
	w.waitFor(t, 20*time.Second, "sleep closed", func(evs []*bus.Event) bool { return hasState(evs, id, "task.closed") })
	if info := taskInfo(t, h, odd); info.State != bus.TaskFree || info.HostID != nil {
		t.Fatalf("buildArch task %s host %v", bus.TaskStateName(info.State), info.HostID)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if hasState(w.events, odd, "task.open") {
		t.Fatal("task without a handler was opened")
	}
}

func TestCapacityLimitsOpenTasks(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	if err := h.Admin.Call(context.Background(), "editHost", []any{"builder1"}, map[string]any{"capacity": 2.0}, nil); err != nil {
		t.Fatal(err)
	}
	w := watchTasks(t, h)
	startBuilder(t, creds, nil)
	ids := []int64{
		makeTask(t, h, "sleep", []any{1}, nil),
		makeTask(t, h, "sleep", []any{1}, nil),
		makeTask(t, h, "sleep", []any{1}, nil),
	}
	w.waitFor(t, 30*time.Second, "all closed", func(evs []*bus.Event) bool {
		for _, id := range ids {
			if !hasState(evs, id, "task.closed") {
				return false
			}
		}
		return true
	})
	// Replay: never more than two OPEN at once.
	open, most := map[int64]bool{}, 0
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, ev := range w.events {
		id, _ := propInt(ev.Props["id"])
		switch ev.Address {
		case "task.open":
			open[id] = true
		case "task.closed", "task.failed", "task.canceled", "task.free":
			delete(open, id)
		}
		most = max(most, len(open))
	}
	if most != 2 {
		t.Fatalf("at most %d tasks open at once, want 2", most)
	}
}

func TestGracefulStopFreesRunningTasks(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	w := watchTasks(t, h)
	b := startBuilder(t, creds, func(c *Config) { c.ShutdownTimeout = 300 * time.Millisecond })
	id := makeTask(t, h, "sleep", []any{300}, nil)
	var pid int
	waitUntil(t, 20*time.Second, "sleep process", func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		if r := b.running[id]; r != nil {
			if p := r.PIDs(); len(p) == 1 {
				pid = p[0]
			}
		}
		return pid != 0
	})
	b.Stop()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still there after Stop: %v", pid, err)
	}
	w.waitFor(t, 10*time.Second, "task freed", func(evs []*bus.Event) bool { return hasState(evs, id, "task.free") })
	if info := taskInfo(t, h, id); info.State != bus.TaskFree {
		t.Fatalf("state %s", bus.TaskStateName(info.State))
	}
	var host bus.Host
	if err := h.Admin.Call(context.Background(), "getHost", []any{"builder1"}, nil, &host); err != nil {
		t.Fatal(err)
	}
	if host.Ready {
		t.Fatal("stopped host still ready")
	}
}

func TestWaitrepoAndNewRepo(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	creds := addHost(t, h, "builder1", "x86_64")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Admin.Call(ctx, "createTag", []any{"f40-build"}, map[string]any{"arches": "x86_64"}, nil); err != nil {
		t.Fatal(err)
	}
	w := watchTasks(t, h)
	startBuilder(t, creds, nil)

	wr := makeTask(t, h, "waitrepo", []any{"f40-build"}, nil)
	w.waitFor(t, 30*time.Second, "waitrepo finished", func(evs []*bus.Event) bool {
		return hasState(evs, wr, "task.closed") || hasState(evs, wr, "task.failed")
	})
	var repo bus.Repo
	if err := h.Admin.Call(ctx, "getTaskResult", []any{wr}, nil, &repo); err != nil {
		t.Fatal(err)
	}
	if repo.ID == 0 || repo.TagName != "f40-build" || repo.State != 1 {
		t.Fatalf("waitrepo result %+v", repo)
	}
	if info := taskInfo(t, h, wr); info.Weight != 0.2 {
		t.Fatalf("waitrepo weight %v", info.Weight)
	}

	nr := makeTask(t, h, "newRepo", []any{"f40-build"}, nil)
	w.waitFor(t, 30*time.Second, "newRepo finished", func(evs []*bus.Event) bool {
		return hasState(evs, nr, "task.closed") || hasState(evs, nr, "task.failed")
	})
	var repoID int64
	if err := h.Admin.Call(ctx, "getTaskResult", []any{nr}, nil, &repoID); err != nil {
		t.Fatal(err)
	}
	if repoID <= repo.ID {
		t.Fatalf("newRepo made repo %d, want one newer than %d", repoID, repo.ID)
	}
	var info *bus.Repo
	if err := h.Admin.Call(ctx, "repoInfo", []any{repoID}, nil, &info); err != nil {
		t.Fatal(err)
	}
	if info == nil || info.State != 1 {
		t.Fatalf("repo %d: %+v", repoID, info)
	}

	// waitrepo of a tag that does not exist fails with the hub's error.
	bad := makeTask(t, h, "waitrepo", []any{"no-such-tag"}, nil)
	w.waitFor(t, 30*time.Second, "waitrepo failed", func(evs []*bus.Event) bool { return hasState(evs, bad, "task.failed") })
	if err := h.Admin.Call(ctx, "getTaskResult", []any{bad}, nil, nil); err == nil || !strings.Contains(err.Error(), "no-such-tag") {
		t.Fatalf("waitrepo of a missing tag: %v", err)
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"--creds"}, {"--creds", "x", "extra"}, {"--creds", filepath.Join(t.TempDir(), "missing.conf")}} {
		var out strings.Builder
		if code := Run(args, &out); code != 2 || out.Len() == 0 {
			t.Errorf("Run(%q) = %d, output %q", args, code, out.String())
		}
	}
}

func TestNotifySubject(t *testing.T) {
	cases := map[string]string{
		"koji.tasks.3.x86_64.p1020": "koji.notify.tasks.3.x86_64",
		"koji.tasks.host.7":         "koji.notify.tasks.host.7",
		"koji.tasks.bogus":          "",
		"other.subject":             "",
	}
	for in, want := range cases {
		if got := notifySubject(in); got != want {
			t.Errorf("notifySubject(%q) = %q, want %q", in, got, want)
		}
	}
}

// A result the hub refuses for its size (hub.conf MaxResultSize) fails the
// task with the hub's reason, at once, instead of being offered again.
func TestResultBeyondTheHubsLimitFailsTheTask(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "hub.conf")
	if err := os.WriteFile(conf, []byte("[hub]\nMaxResultSize = 1000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := hub.StartTestHub(t, func(c *hub.Config) { c.HubConf = conf })
	creds := addHost(t, h, "builder1", "x86_64")
	w := watchTasks(t, h)
	reg := DefaultRegistry()
	reg.Register(Handler{Method: "sleep", Run: func(ctx context.Context, t *Task, a Args) (any, error) {
		return strings.Repeat("x", 5000), nil
	}})
	startBuilder(t, creds, func(c *Config) { c.Handlers = reg })
	id := makeTask(t, h, "sleep", []any{0}, nil)
	w.waitFor(t, 20*time.Second, "task failed", func(evs []*bus.Event) bool { return hasState(evs, id, "task.failed") })
	err := h.Admin.Call(context.Background(), "getTaskResult", []any{id}, nil, nil)
	var f *bus.Fault
	if !errors.As(err, &f) || f.Code != bus.CodeParameterError || !strings.Contains(f.Message, "task result of 5,002 bytes exceeds the limit of 1,000 (MaxResultSize)") {
		t.Fatalf("getTaskResult = %v, want the hub's refusal", err)
	}
}
