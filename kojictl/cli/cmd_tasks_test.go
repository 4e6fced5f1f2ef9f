package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/hub"
)

// running is a kojictl invocation running in the background.
type running struct {
	out, err *syncBuffer
	done     chan int
}

func startKojictl(t *testing.T, profile string, args ...string) *running {
	t.Helper()
	r := &running{out: &syncBuffer{}, err: &syncBuffer{}, done: make(chan int, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	go func() {
		r.done <- RunContext(ctx, append([]string{"-c", profile}, args...), strings.NewReader(""), r.out, r.err)
	}()
	return r
}

// waitOutput waits until stdout contains want (the command prints as events arrive).
func (r *running) waitOutput(t *testing.T, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(r.out.String(), want) {
		select {
		case code := <-r.done:
			r.done <- code
			if strings.Contains(r.out.String(), want) {
				return
			}
			t.Fatalf("command exited %d before printing %q\nstdout:\n%s\nstderr:\n%s", code, want, r.out, r.err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("stdout lacks %q after 20s:\n%s\nstderr:\n%s", want, r.out, r.err)
		}
	}
}

func (r *running) wait(t *testing.T) int {
	t.Helper()
	select {
	case code := <-r.done:
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("command did not exit\nstdout:\n%s\nstderr:\n%s", r.out, r.err)
	}
	return -1
}

// tctx bounds a whole test's calls: generous, as a test of several
// commands under the race detector on a loaded machine takes tens of seconds.
func tctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// claim does what builderd does for the next task queued for host h:
// pulls its message from the host's queues and opens it. It returns the
// task id and attempt.
func claim(t *testing.T, h *hub.TestHost) (int64, int64) {
	t.Helper()
	ctx := tctx(t)
	if err := h.Client.Call(ctx, "host.updateHost", []any{0.0, true}, nil, nil); err != nil {
		t.Fatal(err)
	}
	for {
		m := h.Pull(t)
		id, _ := strconv.ParseInt(m.Headers().Get(bus.HeaderTaskID), 10, 64)
		attempt, _ := strconv.ParseInt(m.Headers().Get(bus.HeaderTaskAttempt), 10, 64)
		err := h.Client.Call(ctx, "host.openTask", []any{id, attempt}, nil, nil)
		if errors.Is(err, bus.ErrTaskAttemptStale) {
			_ = m.Term() // a canceled or superseded run, as builderd drops it
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
		return id, attempt
	}
}

func taskState(t *testing.T, h *hub.TestHub, id int64) bus.Task {
	t.Helper()
	var info *bus.Task
	if err := h.Admin.Call(tctx(t), "getTaskInfo", []any{id}, nil, &info); err != nil || info == nil {
		t.Fatalf("getTaskInfo(%d): %v %v", id, info, err)
	}
	return *info
}

var createdRE = regexp.MustCompile(`^Created task id (\d+)\n$`)

func makeTask(t *testing.T, profile string, args ...string) int64 {
	t.Helper()
	r := kojictl(t, profile, "", append([]string{"make-task"}, args...)...)
	m := createdRE.FindStringSubmatch(r.out)
	if r.code != 0 || m == nil {
		t.Fatalf("make-task %v: exit %d\n%s%s", args, r.code, r.out, r.err)
	}
	id, _ := strconv.ParseInt(m[1], 10, 64)
	return id
}

func TestTaskCommands(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	ctx := tctx(t)
	b1 := h.AddHost(t, "builder1", "x86_64")

	parent := makeTask(t, p, "sleep", "5")
	var req []any
	if err := h.Admin.Call(ctx, "getTaskRequest", []any{parent}, nil, &req); err != nil || len(req) != 1 || req[0] != float64(5) {
		t.Fatalf("request %v %v", req, err)
	}
	// builder1 runs the parent, which spawns a child.
	if id, _ := claim(t, b1); id != parent {
		t.Fatalf("claimed %d, want %d", id, parent)
	}
	var child int64
	if err := b1.Client.Call(ctx, "host.subtask", []any{"child", []any{}, parent, 1}, nil, &child); err != nil {
		t.Fatal(err)
	}
	other := makeTask(t, p, "--priority", "10", "--arch", "x86_64", "--channel", "default", "sleep", "[1, 'a']", "None")
	if err := h.Admin.Call(ctx, "getTaskRequest", []any{other}, nil, &req); err != nil || len(req) != 2 || req[1] != nil {
		t.Fatalf("request %v %v", req, err)
	}
	if l, ok := req[0].([]any); !ok || len(l) != 2 || l[1] != "a" {
		t.Fatalf("python literal arg: %#v", req[0])
	}
	ps, cs, os_ := strconv.FormatInt(parent, 10), strconv.FormatInt(child, 10), strconv.FormatInt(other, 10)
	line := func(id string, pri int, state, arch, name string) string {
		return padRight(id, 8) + " " + padRight(strconv.Itoa(pri), 4) + " " + padRight("kojiadmin", 20) + " " + padRight(state, 8) + " " + padRight(arch, 10) + " " + name + "\n"
	}
	header := "ID       Pri  Owner                State    Arch       Name\n"
	runSteps(t, p, []step{
		{name: "list-tasks", args: []string{"list-tasks"}, exact: ptr(header +
			line(os_, 10, "FREE", "x86_64", "sleep (x86_64)") +
			line(ps, 20, "OPEN", "noarch", "sleep (noarch)") +
			line(cs, 19, "FREE", "noarch", " +child (noarch)"))},
		{name: "list-tasks quiet method", args: []string{"--quiet", "list-tasks", "--mine", "--method", "child"}, exact: ptr(line(cs, 19, "FREE", "noarch", "child (noarch)"))},
		{name: "list-tasks arch", args: []string{"list-tasks", "--arch", "x86_64", "--host", "builder1"}, exact: ptr("(no tasks)\n")},
		{name: "list-tasks host", args: []string{"-q", "list-tasks", "--host", "builder1"}, exact: ptr(line(ps, 20, "OPEN", "noarch", "sleep (noarch)"))},
		{name: "list-tasks state", args: []string{"-q", "list-tasks", "--state", "open"}, exact: ptr(line(ps, 20, "OPEN", "noarch", "sleep (noarch)"))},
		{name: "list-tasks states", args: []string{"-q", "list-tasks", "--state", "FREE,Open", "--state", "assigned", "--method", "child"}, exact: ptr(line(cs, 19, "FREE", "noarch", "child (noarch)"))},
		{name: "list-tasks finished state", args: []string{"list-tasks", "--state", "CLOSED"}, exact: ptr("(no tasks)\n")},
		{name: "list-tasks unknown state", args: []string{"list-tasks", "--state", "DONE"}, code: 2, errText: "unknown task state: DONE"},
		{name: "list-tasks no user", args: []string{"list-tasks", "--user", "nobody"}, code: 1, errText: "No such user: nobody"},
		{name: "list-tasks all without after", args: []string{"list-tasks", "--all"}, code: 2, errText: "--all must be used with --after"},
		{name: "list-tasks json", args: []string{"--json", "list-tasks", "--method", "child"}, out: []string{`"id": ` + cs, `"owner_name": "kojiadmin"`}},
		{name: "taskinfo", args: []string{"taskinfo", ps}, out: []string{
			"re:^Task: " + ps + "\nType: sleep\nOwner: kojiadmin\nState: open\nCreated: \\w{3} \\w{3} [ \\d]\\d \\d\\d:\\d\\d:\\d\\d \\d{4}\nStarted: .+\nHost: builder1\nLog Files:\n  No outputs reported \\[1\\]\nOutput:\n  No outputs reported \\[1\\]\n\\[1\\] Not all tasks produce outputs, and task outputs are not retained indefinitely.\n\n$"}},
		{name: "taskinfo -v -r", args: []string{"taskinfo", "-v", "-r", ps}, out: []string{
			"Type: sleep\nRequest Parameters:\n  Arguments: [5]\nOwner: kojiadmin\n",
			"\n\n  Task: " + cs + "\n  Type: child\n  Request Parameters:\n    Arguments: []\n  Owner: kojiadmin\n  State: free\n"}},
		{name: "taskinfo missing", args: []string{"taskinfo", "99999"}, code: 1, errText: "GenericError: No such task: 99999"},
		{name: "taskinfo bad id", args: []string{"taskinfo", "x"}, code: 2, errText: "task id must be an integer"},

		{name: "set-task-priority", args: []string{"set-task-priority", "--priority", "5", os_}},
		{name: "set-task-priority needs priority", args: []string{"set-task-priority", os_}, code: 2, errText: "You must specify --priority"},
		{name: "assign-task", args: []string{"assign-task", os_, "builder1"}, exact: ptr("assigned task " + os_ + " to host builder1\n")},
		{name: "assign-task not free", args: []string{"assign-task", os_, "builder1"}, exact: ptr("failed to assign task " + os_ + " to host builder1\n")},
		{name: "assign-task no host", args: []string{"assign-task", os_, "nohost"}, code: 1, errText: "No such host: nohost"},
		{name: "assign-task no task", args: []string{"assign-task", "99999", "builder1"}, code: 1, errText: "No such task: 99999"},
	})
	if info := taskState(t, h, other); info.Priority != 5 || info.State != bus.TaskAssigned || info.HostID == nil || *info.HostID != b1.ID {
		t.Fatalf("after set-task-priority and assign-task: %+v", info)
	}
	runSteps(t, p, []step{
		{name: "free-task", args: []string{"free-task", os_}},
		{name: "free-task none", args: []string{"free-task"}, code: 2, errText: "please specify at least one task_id"},
		{name: "assign-task force", args: []string{"assign-task", "-f", ps, "builder1"}, exact: ptr("assigned task " + ps + " to host builder1\n")},
	})
	if info := taskState(t, h, other); info.State != bus.TaskFree || info.HostID != nil {
		t.Fatalf("after free-task: %+v", info)
	}

	// Cancel: --justone leaves the child; a missing task fails the command
	// after the others were canceled; --full refuses a subtask.
	runSteps(t, p, []step{
		{name: "cancel full subtask", args: []string{"cancel", "--full", cs}, code: 1, errText: "Task " + cs + " is not top-level (parent=" + ps + ")"},
		{name: "cancel bad arg", args: []string{"cancel", "x"}, code: 2, errText: "please specify only task ids (integer) or builds (n-v-r)"},
	})
	if taskState(t, h, child).State != bus.TaskFree || taskState(t, h, parent).State != bus.TaskAssigned {
		t.Fatalf("a refused cancel changed state: %+v %+v", taskState(t, h, child), taskState(t, h, parent))
	}
	runSteps(t, p, []step{
		{name: "cancel justone", args: []string{"cancel", "--justone", ps}},
	})
	if taskState(t, h, parent).State != bus.TaskCanceled || taskState(t, h, child).State != bus.TaskFree {
		t.Fatalf("--justone: parent %d child %d", taskState(t, h, parent).State, taskState(t, h, child).State)
	}
	runSteps(t, p, []step{
		{name: "cancel with missing", args: []string{"cancel", cs, "99999"}, code: 1, errText: "No such task: 99999"},
		{name: "cancel full", args: []string{"cancel", "--full", os_}},
		{name: "set-task-priority closed", args: []string{"set-task-priority", "--priority", "3", os_}, code: 1, errText: "Can't update task priority on closed task: " + os_},
		{name: "resubmit open", args: []string{"resubmit", "--nowait", cs}, code: 1, errText: "Cannot resubmit subtask: " + cs},
	})
	for _, id := range []int64{child, other} {
		if s := taskState(t, h, id).State; s != bus.TaskCanceled {
			t.Fatalf("task %d state %d after cancel", id, s)
		}
	}
	r := kojictl(t, p, "", "resubmit", "--nowait", ps)
	m := regexp.MustCompile(`(?s)^Resubmitting the following task:\nTask: ` + ps + `\nType: sleep\nRequest Parameters:\n  Arguments: \[5\]\nOwner: kojiadmin\nState: canceled\n.*\nResubmitted task ` + ps + ` as new task (\d+)\n$`).FindStringSubmatch(r.out)
	if r.code != 0 || m == nil {
		t.Fatalf("resubmit: exit %d\n%s%s", r.code, r.out, r.err)
	}
	newID, _ := strconv.ParseInt(m[1], 10, 64)
	if info := taskState(t, h, newID); info.State != bus.TaskFree || info.Method != "sleep" || info.Parent != nil {
		t.Fatalf("resubmitted task: %+v", info)
	}
	// resubmit without --nowait watches the new task until it finishes.
	w := startKojictl(t, p, "resubmit", os_)
	w.waitOutput(t, "Watching tasks (this may be safely interrupted)...\n")
	w.waitOutput(t, ": free\n")
	re := regexp.MustCompile(`Resubmitted task ` + os_ + ` as new task (\d+)\n`).FindStringSubmatch(w.out.String())
	if re == nil {
		t.Fatalf("resubmit output:\n%s", w.out)
	}
	again, _ := strconv.ParseInt(re[1], 10, 64)
	if err := h.Admin.Call(ctx, "cancelTask", []any{again}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if code := w.wait(t); code != 1 {
		t.Fatalf("resubmit watching a canceled task: exit %d\n%s%s", code, w.out, w.err)
	}
	if want := re[1] + " sleep (x86_64): free -> canceled\n  0 free  0 open  1 done  0 failed\n\n" + re[1] + " sleep (x86_64) was canceled\n"; !strings.HasSuffix(w.out.String(), want) {
		t.Fatalf("resubmit watch output:\n%s\nwant suffix:\n%s", w.out, want)
	}

	// A normal user may not set priorities.
	h.UserClient(t, "alice")
	alice := userProfile(t, h, "alice", "pw-alice-secret")
	runSteps(t, alice, []step{
		{name: "set-task-priority not admin", args: []string{"set-task-priority", "--priority", "1", strconv.FormatInt(newID, 10)}, code: 1, errText: "admin permission required (logged in as alice)"},
		{name: "cancel not owner", args: []string{"cancel", strconv.FormatInt(newID, 10)}, code: 1, errText: "Cannot cancel task, not owner"},
		{name: "make-task not admin", args: []string{"make-task", "sleep"}, code: 1, errText: "ActionNotAllowed"},
	})
}

func TestWatchTaskLive(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	ctx := tctx(t)
	b1 := h.AddHost(t, "builder1", "x86_64")

	// Success: watch-task follows a running task and a subtask born while it watches.
	id := makeTask(t, p, "sleep", "1")
	_, attempt := claim(t, b1)
	w := startKojictl(t, p, "watch-task", strconv.FormatInt(id, 10))
	ids := strconv.FormatInt(id, 10)
	w.waitOutput(t, "Watching tasks (this may be safely interrupted)...\n"+ids+" sleep (noarch): open (builder1)\n")
	var child int64
	if err := b1.Client.Call(ctx, "host.subtask", []any{"child", []any{}, id, attempt}, nil, &child); err != nil {
		t.Fatal(err)
	}
	cs := strconv.FormatInt(child, 10)
	w.waitOutput(t, "  "+cs+" child (noarch): free\n")
	if err := h.Admin.Call(ctx, "cancelTask", []any{child}, nil, nil); err != nil {
		t.Fatal(err)
	}
	w.waitOutput(t, "  "+cs+" child (noarch): free -> canceled\n  0 free  1 open  1 done  0 failed\n")
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "ok"}, nil, nil); err != nil {
		t.Fatalf("close %d/%d: %v\n%s", id, attempt, err, w.out)
	}
	if code := w.wait(t); code != 0 {
		t.Fatalf("watch-task: exit %d\n%s%s", code, w.out, w.err)
	}
	want := "Watching tasks (this may be safely interrupted)...\n" +
		ids + " sleep (noarch): open (builder1)\n" +
		"  " + cs + " child (noarch): free\n" +
		"  " + cs + " child (noarch): free -> canceled\n" +
		"  0 free  1 open  1 done  0 failed\n" +
		ids + " sleep (noarch): open (builder1) -> closed\n" +
		"  0 free  0 open  2 done  0 failed\n" +
		"\n" +
		ids + " sleep (noarch) completed successfully\n"
	if w.out.String() != want {
		t.Fatalf("watch-task output:\n%s\nwant:\n%s", w.out, want)
	}

	// Failure: exit 1 with koji's FAILED line.
	id2 := makeTask(t, p, "sleep", "2")
	_, attempt2 := claim(t, b1)
	ids2 := strconv.FormatInt(id2, 10)
	w = startKojictl(t, p, "watch-task", ids2)
	w.waitOutput(t, ids2+" sleep (noarch): open (builder1)\n")
	if err := b1.Client.Call(ctx, "host.failTask", []any{id2, attempt2, map[string]any{"faultCode": bus.CodeBuildError, "faultString": "it broke"}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if code := w.wait(t); code != 1 {
		t.Fatalf("watch-task of a failed task: exit %d\n%s%s", code, w.out, w.err)
	}
	if want := ids2 + " sleep (noarch): open (builder1) -> FAILED: BuildError: it broke\n  0 free  0 open  0 done  1 failed\n\n" + ids2 + " sleep (noarch) failed\n"; !strings.HasSuffix(w.out.String(), want) {
		t.Fatalf("watch-task output:\n%s\nwant suffix:\n%s", w.out, want)
	}

	// Finished tasks: no wait. Unknown task: koji's message, exit 1.
	r := kojictl(t, p, "", "--quiet", "watch-task", ids, ids2)
	if r.code != 1 || r.out != "" {
		t.Fatalf("quiet watch of finished tasks: exit %d %q %q", r.code, r.out, r.err)
	}
	r = kojictl(t, p, "", "watch-task", "99999")
	if r.code != 1 || !strings.Contains(r.out, "No such task id: 99999\n") {
		t.Fatalf("watch-task missing: exit %d %q %q", r.code, r.out, r.err)
	}
	r = kojictl(t, p, "", "watch-task", "--mine", ids)
	if r.code != 2 || !strings.Contains(r.err, "Selection options cannot be combined with a task list") {
		t.Fatalf("watch-task --mine with ids: exit %d %q", r.code, r.err)
	}
	// make-task --watch: created, then watched to the end.
	w = startKojictl(t, p, "make-task", "--watch", "sleep", "3")
	w.waitOutput(t, ": free\n")
	id3, attempt3 := claim(t, b1)
	w.waitOutput(t, " sleep (noarch): free -> open (builder1)\n")
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id3, attempt3, nil}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if code := w.wait(t); code != 0 || !strings.HasPrefix(w.out.String(), "Created task id "+strconv.FormatInt(id3, 10)+"\n") {
		t.Fatalf("make-task --watch: exit %d\n%s%s", code, w.out, w.err)
	}
}

func TestWatchLogsAndOutput(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	ctx := tctx(t)
	b1 := h.AddHost(t, "builder1", "x86_64")
	id := makeTask(t, p, "sleep", "1")
	_, attempt := claim(t, b1)
	ids := strconv.FormatInt(id, 10)

	w := startKojictl(t, p, "watch-logs", "-f", ids)
	w.waitOutput(t, "Watching logs (this may be safely interrupted)...\n")
	b1.Upload(t, id, attempt, "build.log", "hello ")
	w.waitOutput(t, "==> "+ids+":DEFAULT:build.log: <==\nhello ")
	b1.Upload(t, id, attempt, "result.txt", "not a log")
	b1.Upload(t, id, attempt, "build.log", "world\n")
	w.waitOutput(t, "hello world\n")
	b1.Upload(t, id, attempt, "mock_output.log", "mock says hi\n")
	w.waitOutput(t, "mock says hi\n")
	b1.Upload(t, id, attempt, "build.log", "bye\n")
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "ok"}, b1.Finish(t, id, attempt), nil); err != nil {
		t.Fatal(err)
	}
	if code := w.wait(t); code != 0 {
		t.Fatalf("watch-logs -f: exit %d\n%s%s", code, w.out, w.err)
	}
	want := "Watching logs (this may be safely interrupted)...\n" +
		"==> " + ids + ":DEFAULT:build.log: <==\nhello world\n" +
		"\n==> " + ids + ":DEFAULT:mock_output.log: <==\nmock says hi\n" +
		"\n==> " + ids + ":DEFAULT:build.log: <==\nbye\n"
	if w.out.String() != want {
		t.Fatalf("watch-logs -f output:\n%q\nwant:\n%q", w.out, want)
	}

	out := filepath.Join(t.TempDir(), "b.log")
	runSteps(t, p, []step{
		{name: "watch-logs stored", args: []string{"-q", "watch-logs", ids}, exact: ptr(
			"==> " + ids + ":DEFAULT:build.log: <==\nhello world\nbye\n" +
				"\n==> " + ids + ":DEFAULT:mock_output.log: <==\nmock says hi\n")},
		{name: "watch-logs one log", args: []string{"-q", "watch-logs", "--log", "mock_output.log", ids}, exact: ptr(
			"==> " + ids + ":DEFAULT:mock_output.log: <==\nmock says hi\n")},
		{name: "watch-logs -f finished", args: []string{"-q", "watch-logs", "-f", "--log", "result.txt", ids}, exact: ptr(
			"==> " + ids + ":DEFAULT:result.txt: <==\nnot a log")},
		{name: "list-task-output", args: []string{"list-task-output", ids}, exact: ptr("build.log\nmock_output.log\nresult.txt\n")},
		{name: "list-task-output volumes", args: []string{"list-task-output", "--all-volumes", ids}, exact: ptr("build.log DEFAULT\nmock_output.log DEFAULT\nresult.txt DEFAULT\n")},
		{name: "list-task-output stat", args: []string{"list-task-output", "--stat", ids}, out: []string{"re:(?m)^build.log +16  \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d\n", "re:(?m)^result.txt +9  "}},
		{name: "list-task-output missing", args: []string{"list-task-output", "99999"}, code: 1, errText: "No such task: 99999"},
		{name: "taskinfo outputs", args: []string{"taskinfo", ids}, out: []string{
			"Log Files:\n  /mnt/koji/work/tasks/" + ids + "/" + ids + "/build.log\n  /mnt/koji/work/tasks/" + ids + "/" + ids + "/mock_output.log\nOutput:\n  /mnt/koji/work/tasks/" + ids + "/" + ids + "/result.txt\n\n"}},
		{name: "download stdout", args: []string{"download-task-output", ids, "build.log", "-o", "-"}, exact: ptr("hello world\nbye\n")},
		{name: "download file", args: []string{"download-task-output", ids, "build.log", "-o", out}, exact: ptr("Downloaded build.log (16 bytes) to " + out + "\n")},
		{name: "download missing", args: []string{"download-task-output", ids, "nope.log", "-o", out + ".x"}, code: 1, errText: `no file "nope.log" output by task ` + ids},
	})
	if data, err := os.ReadFile(out); err != nil || string(data) != "hello world\nbye\n" {
		t.Fatalf("downloaded %q %v", data, err)
	}
	if _, err := os.Stat(out + ".x"); !os.IsNotExist(err) {
		t.Fatalf("a failed download left a file: %v", err)
	}
}

// Downloads larger than one chunk are assembled from several calls.
func TestDownloadTaskOutputChunks(t *testing.T) {
	h := startHub(t)
	p := h.ProfilePath()
	b1 := h.AddHost(t, "builder1", "x86_64")
	id := makeTask(t, p, "sleep", "1")
	_, attempt := claim(t, b1)
	var want strings.Builder
	for i := 0; i < 3; i++ {
		chunk := strings.Repeat(strconv.Itoa(i), 300*1024)
		b1.Upload(t, id, attempt, "big.bin", chunk)
		want.WriteString(chunk)
	}
	if err := b1.Client.Call(tctx(t), "host.closeTask", []any{id, attempt, nil}, b1.Finish(t, id, attempt), nil); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "big.bin")
	r := kojictl(t, p, "", "-q", "download-task-output", "-o", out, strconv.FormatInt(id, 10), "big.bin")
	if r.code != 0 {
		t.Fatalf("download: exit %d %s", r.code, r.err)
	}
	if data, err := os.ReadFile(out); err != nil || string(data) != want.String() {
		t.Fatalf("downloaded %d bytes (%v), want %d", len(data), err, want.Len())
	}
	// without a file name: every output file of the task, as koji's download-task
	id2 := makeTask(t, p, "sleep", "1")
	_, attempt2 := claim(t, b1)
	b1.Upload(t, id2, attempt2, "a.log", "log text\n")
	b1.Upload(t, id2, attempt2, "b.txt", "result text\n")
	if err := b1.Client.Call(tctx(t), "host.closeTask", []any{id2, attempt2, nil}, b1.Finish(t, id2, attempt2), nil); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	runSteps(t, p, []step{
		{name: "all files", args: []string{"download-task-output", "-o", dir, strconv.FormatInt(id2, 10)},
			exact: ptr("Downloaded a.log (9 bytes) to " + filepath.Join(dir, "a.log") + "\nDownloaded b.txt (12 bytes) to " + filepath.Join(dir, "b.txt") + "\n")},
		{name: "no files", args: []string{"download-task-output", strconv.FormatInt(id+100, 10)}, code: 1},
	})
	for name, text := range map[string]string{"a.log": "log text\n", "b.txt": "result text\n"} {
		if data, err := os.ReadFile(filepath.Join(dir, name)); err != nil || string(data) != text {
			t.Errorf("%s = %q (%v), want %q", name, data, err, text)
		}
	}
}
