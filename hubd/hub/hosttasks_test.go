package hub

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

type queue struct {
	Consumer string `json:"consumer"`
	Priority int    `json:"priority"`
	Notify   string `json:"notify"`
}

func heartbeat(t *testing.T, h *TestHost) {
	t.Helper()
	if err := h.Client.Call(ctxT(t), "host.updateHost", []any{0.0, true}, nil, nil); err != nil {
		t.Fatal(err)
	}
}

func pull(t *testing.T, h *TestHost) jetstream.Msg { return h.Pull(t) }

func msgTask(t *testing.T, m jetstream.Msg) (int64, int64) {
	t.Helper()
	id, err1 := strconv.ParseInt(m.Headers().Get(bus.HeaderTaskID), 10, 64)
	attempt, err2 := strconv.ParseInt(m.Headers().Get(bus.HeaderTaskAttempt), 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("bad task message headers %v", m.Headers())
	}
	return id, attempt
}

func isStale(err error) bool { return errors.Is(err, bus.ErrTaskAttemptStale) }

func TestDispatchClaimCloseWithOutput(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	b1 := h.AddHost(t, "builder1", "x86_64")
	b2 := h.AddHost(t, "builder2", "x86_64")
	heartbeat(t, b1)
	var id int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, nil, &id); err != nil {
		t.Fatal(err)
	}
	m := pull(t, b1)
	mid, attempt := msgTask(t, m)
	if mid != id || attempt != 1 {
		t.Fatalf("message for task %d attempt %d", mid, attempt)
	}
	if err := b1.Client.Call(ctx, "host.openTask", []any{id, attempt + 1}, nil, nil); !isStale(err) {
		t.Fatalf("open with a future attempt: %v", err)
	}
	var opened struct {
		Task    bus.Task `json:"task"`
		Request []any    `json:"request"`
	}
	if err := b1.Client.Call(ctx, "host.openTask", []any{id, attempt}, nil, &opened); err != nil {
		t.Fatal(err)
	}
	if opened.Task.State != bus.TaskOpen || *opened.Task.HostID != b1.ID || len(opened.Request) != 1 {
		t.Fatalf("opened %+v", opened)
	}
	// The same message claimed again (a redelivery to another builder) is refused.
	if err := b2.Client.Call(ctx, "host.openTask", []any{id, attempt}, nil, nil); !isStale(err) {
		t.Fatalf("second claim: %v", err)
	}
	// Another host cannot report for the run, nor claim it; it is told whose run it is.
	held := fmt.Sprintf("task %d attempt %d is held by another host, builder1", id, attempt)
	for _, method := range []string{"host.closeTask", "host.failTask", "host.setTaskWeight"} {
		last := any("x")
		if method == "host.setTaskWeight" {
			last = 2.0
		}
		err := b2.Client.Call(ctx, method, []any{id, attempt, last}, nil, nil)
		if f, ok := err.(*bus.Fault); !ok || !isStale(err) || f.Message != held {
			t.Fatalf("%s by another host: %v, want %q", method, err, held)
		}
	}
	if err := b2.Client.Call(ctx, "host.openTask", []any{id, attempt}, nil, nil); err == nil || err.(*bus.Fault).Message != held {
		t.Fatalf("claim of another host's run: %v, want %q", err, held)
	}
	// Output: a log written in two chunks, visible while running.
	b1.Upload(t, id, attempt, "sleep.log", "hello ")
	b1.Upload(t, id, attempt, "sleep.log", "world\n")
	var names []string
	if err := h.Admin.Call(ctx, "listTaskOutput", []any{id}, nil, &names); err != nil || len(names) != 1 || names[0] != "sleep.log" {
		t.Fatalf("live output %v %v", names, err)
	}
	outputs := b1.Finish(t, id, attempt)
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "done"}, outputs, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	var result string
	if err := h.Admin.Call(ctx, "getTaskResult", []any{id}, nil, &result); err != nil || result != "done" {
		t.Fatalf("result %q %v", result, err)
	}
	var b64 string
	if err := h.Admin.Call(ctx, "downloadTaskOutput", []any{id, "sleep.log"}, nil, &b64); err != nil {
		t.Fatal(err)
	}
	data, _ := base64.StdEncoding.DecodeString(b64)
	if string(data) != "hello world\n" {
		t.Fatalf("output %q", data)
	}
	if err := h.Admin.Call(ctx, "downloadTaskOutput", []any{id, "sleep.log"}, map[string]any{"offset": -6, "size": 5}, &b64); err != nil {
		t.Fatal(err)
	}
	if data, _ := base64.StdEncoding.DecodeString(b64); string(data) != "world" {
		t.Fatalf("tail %q", data)
	}
	if err := h.Admin.Call(ctx, "downloadTaskOutput", []any{id, "../etc/passwd"}, nil, nil); err == nil || err.(*bus.Fault).Message != "Invalid file name: ../etc/passwd" {
		t.Fatalf("dotdot: %v", err)
	}
	// A repeated close of the finished run (a retry whose first answer was
	// lost) is answered as the first and changes nothing; a fail of it, or
	// a close from another host, is stale.
	before := h.Store().Applied()
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "again"}, nil, nil); err != nil {
		t.Fatalf("repeated close: %v", err)
	}
	if err := b1.Client.Call(ctx, "host.failTask", []any{id, attempt, "no"}, nil, nil); !isStale(err) {
		t.Fatalf("fail after close: %v", err)
	}
	if err := b2.Client.Call(ctx, "host.closeTask", []any{id, attempt, "x"}, nil, nil); !isStale(err) {
		t.Fatalf("close by another host after close: %v", err)
	}
	if h.Store().Applied() != before {
		t.Fatal("a repeated or refused close changed state")
	}
	if err := h.Admin.Call(ctx, "getTaskResult", []any{id}, nil, &result); err != nil || result != "done" {
		t.Fatalf("result after repeats %q %v", result, err)
	}
}

// JetStream accepts the ack of a builder whose AckWait expired
// (nats-server#6937). Here both builders get the message; only the claim
// by attempt decides who runs it, so the stale ack is harmless.
func TestStaleAckIsHarmless(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	b1 := h.AddHost(t, "b1", "x86_64")
	b2 := h.AddHost(t, "b2", "x86_64")
	var id int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, nil, &id); err != nil {
		t.Fatal(err)
	}
	m1 := pull(t, b1)
	// Shorten the queue's AckWait so the message is redelivered to b2.
	hubJS, _ := jetstream.New(h.Conn())
	cname := m1.Headers().Get("Nats-Consumer")
	if md, err := m1.Metadata(); err == nil {
		cname = md.Consumer
	}
	cons, err := hubJS.Consumer(ctx, bus.TasksStream, cname)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cons.CachedInfo().Config
	cfg.AckWait = 300 * time.Millisecond
	if _, err := hubJS.UpdateConsumer(ctx, bus.TasksStream, cfg); err != nil {
		t.Fatal(err)
	}
	// b1 stalls without InProgress; the server redelivers the message (no
	// wake-up is sent for a redelivery), and b2's blocking pull gets it.
	b2cons, err := b2.JS.Consumer(ctx, bus.TasksStream, cname)
	if err != nil {
		t.Fatal(err)
	}
	batch, err := b2cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var m2 jetstream.Msg
	for m := range batch.Messages() {
		m2 = m
	}
	if m2 == nil {
		t.Fatal("no redelivery to b2")
	}
	if md, _ := m2.Metadata(); md.NumDelivered < 2 {
		t.Fatalf("expected a redelivery, got delivery %d", md.NumDelivered)
	}
	_, attempt := msgTask(t, m2)
	if err := b2.Client.Call(ctx, "host.openTask", []any{id, attempt}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// b1 wakes up: its claim is refused, and its ack (accepted by JetStream) decides nothing.
	if err := b1.Client.Call(ctx, "host.openTask", []any{id, attempt}, nil, nil); !isStale(err) {
		t.Fatalf("stale builder's claim: %v", err)
	}
	if err := m1.DoubleAck(ctx); err != nil {
		t.Logf("stale ack: %v", err)
	}
	if err := b2.Client.Call(ctx, "host.closeTask", []any{id, attempt, nil}, nil, nil); err != nil {
		t.Fatal(err)
	}
	_ = m2.DoubleAck(ctx)
	var info bus.Task
	if err := h.Admin.Call(ctx, "getTaskInfo", []any{id}, nil, &info); err != nil || info.State != bus.TaskClosed || *info.HostID != b2.ID {
		t.Fatalf("task %+v %v", info, err)
	}
}

func TestLostHostTasksAreDispatchedAgain(t *testing.T) {
	h := StartTestHub(t, func(c *Config) { c.HostTimeout = time.Hour; c.MaxTaskRetries = 1 })
	ctx := ctxT(t)
	b1 := h.AddHost(t, "b1", "x86_64")
	b2 := h.AddHost(t, "b2", "x86_64")
	heartbeat(t, b1)
	var id int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{9}}, nil, &id); err != nil {
		t.Fatal(err)
	}
	m := pull(t, b1)
	_, attempt := msgTask(t, m)
	if err := b1.Client.Call(ctx, "host.openTask", []any{id, attempt}, nil, nil); err != nil {
		t.Fatal(err)
	}
	events := taskEvents(t, h)
	// b1 goes silent: the monitor, looking two hours ahead, sees it lost.
	if err := h.monitor.check(ctx, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// The relay may still be delivering the task.open of the claim: wait for
	// the transition the monitor made.
	for ev := nextEvent(t, events); ev.Address != "task.free"; ev = nextEvent(t, events) {
		if ev.Address != "task.open" {
			t.Fatalf("event %s, want task.free", ev.Address)
		}
	}
	var host bus.Host
	if err := h.Admin.Call(ctx, "getHost", []any{"b1"}, nil, &host); err != nil || host.Ready {
		t.Fatalf("lost host still ready: %+v %v", host, err)
	}
	// The lost run's late result is refused.
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "late"}, nil, nil); !isStale(err) {
		t.Fatalf("late close: %v", err)
	}
	m2 := pull(t, b2)
	_, attempt2 := msgTask(t, m2)
	if attempt2 != attempt+1 {
		t.Fatalf("re-dispatched as attempt %d", attempt2)
	}
	heartbeat(t, b2)
	if err := b2.Client.Call(ctx, "host.openTask", []any{id, attempt2}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// Losing a host again exceeds MaxTaskRetries: the task fails with the reason.
	if err := h.monitor.check(ctx, time.Now().Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	err := h.Admin.Call(ctx, "getTaskResult", []any{id}, nil, nil)
	var f *bus.Fault
	if !errors.As(err, &f) || f.Message != "task 1 lost its host b2 2 times; giving up" {
		t.Fatalf("result after second loss: %v", err)
	}
}

func TestHigherPriorityQueueFirstAndSubtasks(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	b := h.AddHost(t, "b", "x86_64")
	var low, high int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{1}}, map[string]any{"priority": 30}, &low); err != nil {
		t.Fatal(err)
	}
	if err := h.Admin.Call(ctx, "makeTask", []any{"fork", []any{}}, map[string]any{"priority": 10}, &high); err != nil {
		t.Fatal(err)
	}
	// Both must be in their queues before the pull can show the order.
	b.WaitQueued(t, low)
	b.WaitQueued(t, high)
	m := pull(t, b)
	if id, _ := msgTask(t, m); id != high {
		t.Fatalf("took task %d first, want the priority 10 task %d", id, high)
	}
	_, attempt := msgTask(t, m)
	if err := b.Client.Call(ctx, "host.openTask", []any{high, attempt}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var child int64
	if err := b.Client.Call(ctx, "host.subtask", []any{"sleep", []any{0}, high, attempt}, map[string]any{"label": "c1"}, &child); err != nil {
		t.Fatal(err)
	}
	if err := b.Client.Call(ctx, "host.subtask", []any{"sleep", []any{0}, high, attempt + 5}, nil, nil); !isStale(err) {
		t.Fatalf("subtask from a stale attempt: %v", err)
	}
	if err := b.Client.Call(ctx, "host.taskSetWait", []any{high, attempt}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var waited [2][]int64
	if err := b.Client.Call(ctx, "host.taskWait", []any{high}, nil, &waited); err != nil || len(waited[1]) != 1 || waited[1][0] != child {
		t.Fatalf("taskWait %v %v", waited, err)
	}
	// The child (priority 9) now outranks the remaining priority 30 task.
	b.WaitQueued(t, child)
	cm := pull(t, b)
	if id, _ := msgTask(t, cm); id != child {
		t.Fatalf("took %d, want child %d", id, child)
	}
	_, ca := msgTask(t, cm)
	if err := b.Client.Call(ctx, "host.openTask", []any{child, ca}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Client.Call(ctx, "host.failTask", []any{child, ca, map[string]any{"faultCode": 1000, "faultString": "boom"}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Client.Call(ctx, "host.taskWaitResults", []any{high, []int64{child}}, nil, nil); err == nil || err.(*bus.Fault).Message != "boom" {
		t.Fatalf("results without canfail: %v", err)
	}
	var results [][]any
	if err := b.Client.Call(ctx, "host.taskWaitResults", []any{high, []int64{child}, []int64{child}}, nil, &results); err != nil || len(results) != 1 {
		t.Fatalf("results with canfail: %v %v", results, err)
	}
	if r, _ := results[0][1].(map[string]any); r["faultString"] != "boom" {
		t.Fatalf("canfail result %v", results[0])
	}
	_ = context.Background
}

// A task the hub has OPEN on a host whose heartbeat says it does not run it
// (the builder lost it) is dispatched again; one opened just now is not.
func TestHeartbeatGivesBackLostRuns(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	b := h.AddHost(t, "b", "x86_64")
	var ids [2]int64
	var attempts [2]int64
	for i := range ids {
		if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{1}}, nil, &ids[i]); err != nil {
			t.Fatal(err)
		}
		m := pull(t, b)
		id, attempt := msgTask(t, m)
		if err := b.Client.Call(ctx, "host.openTask", []any{id, attempt}, nil, nil); err != nil {
			t.Fatal(err)
		}
		ids[i], attempts[i] = id, attempt
	}
	// The first run started a minute ago as far as the hub knows.
	_, err := h.Store().Update(ctx, "", func(tx *state.Txn) (any, error) {
		task, _ := lookupTask(tx.View, ids[0])
		old := *task.StartTS - 60
		task.StartTS = &old
		return nil, tx.Put(taskKey(task.ID), task)
	})
	if err != nil {
		t.Fatal(err)
	}
	var before []map[string]any
	if err := b.Client.Call(ctx, "host.getHostTasks", nil, nil, &before); err != nil || len(before) != 2 {
		t.Fatalf("host tasks before: %v %v", before, err)
	}
	if err := b.Client.Call(ctx, "host.updateHost", []any{0.0, true}, map[string]any{"data": map[string]any{"tasks": []int64{}}}, nil); err != nil {
		t.Fatal(err)
	}
	var infos []bus.Task
	if err := h.Admin.Call(ctx, "getTaskInfo", []any{[]int64{ids[0], ids[1]}}, nil, &infos); err != nil {
		t.Fatal(err)
	}
	if infos[0].State != bus.TaskFree || infos[1].State != bus.TaskOpen {
		t.Fatalf("after heartbeat: %d is %s, %d is %s", ids[0], bus.TaskStateName(infos[0].State), ids[1], bus.TaskStateName(infos[1].State))
	}
	var after []map[string]any
	if err := b.Client.Call(ctx, "host.getHostTasks", nil, nil, &after); err != nil || len(after) != 1 {
		t.Fatalf("host tasks after: %v %v", after, err)
	}
	if err := b.Client.Call(ctx, "host.closeTask", []any{ids[0], attempts[0], nil}, nil, nil); !isStale(err) {
		t.Fatalf("late close of a given-back run: %v", err)
	}
}

// openRun is a sleep task a ready builder has claimed.
type openRun struct {
	h           *TestHub
	b           *TestHost
	id, attempt int64
	msg         jetstream.Msg
}

// openSleepTask starts a hub whose one builder claims a new sleep task.
func openSleepTask(t *testing.T) openRun {
	t.Helper()
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	b := h.AddHost(t, "builder1", "x86_64")
	heartbeat(t, b)
	run := openRun{h: h, b: b}
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, nil, &run.id); err != nil {
		t.Fatal(err)
	}
	run.msg = pull(t, b)
	_, run.attempt = msgTask(t, run.msg)
	if err := b.Client.Call(ctx, "host.openTask", []any{run.id, run.attempt}, nil, nil); err != nil {
		t.Fatal(err)
	}
	return run
}

// A run's output files become Object Store objects without a copy: the
// builder's list (size, chunks, digest) is checked, and the object reads
// back through the plain Object Store API, which verifies the digest.
func TestReportedOutputs(t *testing.T) {
	run := openSleepTask(t)
	h, b1, id, attempt, ctx := run.h, run.b, run.id, run.attempt, ctxT(t)
	b1.Upload(t, id, attempt, "sleep.log", "hello ")
	b1.Upload(t, id, attempt, "sleep.log", "world\n")
	good := b1.Finish(t, id, attempt)["outputs"].([]bus.UploadedFile)[0]

	bad := []struct {
		name    string
		outputs any
		want    string
	}{
		{"not a list", "sleep.log", "parameter 'outputs'"},
		{"dotdot", []bus.UploadedFile{{Name: "../sleep.log", Size: good.Size, Chunks: good.Chunks, Digest: good.Digest}}, "invalid output file name"},
		{"absolute", []bus.UploadedFile{{Name: "/etc/passwd", Size: 1, Chunks: 1, Digest: good.Digest}}, "invalid output file name"},
		{"negative size", []bus.UploadedFile{{Name: "a.log", Size: -1, Chunks: 1, Digest: good.Digest}}, "invalid size"},
		{"data without chunks", []bus.UploadedFile{{Name: "a.log", Size: 5, Chunks: 0, Digest: good.Digest}}, "invalid size"},
		{"bad digest", []bus.UploadedFile{{Name: "a.log", Size: 5, Chunks: 1, Digest: "MD5=abc"}}, "invalid digest"},
		{"short digest", []bus.UploadedFile{{Name: "a.log", Size: 5, Chunks: 1, Digest: "SHA-256=AAAA"}}, "invalid digest"},
		{"twice", []bus.UploadedFile{good, good}, "listed twice"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			before := h.Store().Applied()
			err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "done"}, map[string]any{"outputs": tt.outputs}, nil)
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != bus.CodeParameterError || !strings.Contains(f.Message, tt.want) {
				t.Fatalf("close with %v: %v, want a ParameterError with %q", tt.outputs, err, tt.want)
			}
			if h.Store().Applied() != before {
				t.Fatal("a refused close changed state")
			}
		})
	}
	var info bus.Task
	if err := h.Admin.Call(ctx, "getTaskInfo", []any{id}, nil, &info); err != nil || info.State != bus.TaskOpen {
		t.Fatalf("after refused closes: %+v %v", info, err)
	}

	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "done"}, map[string]any{"outputs": []bus.UploadedFile{good}}, nil); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(h.Conn())
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, bus.TaskOutputStore)
	if err != nil {
		t.Fatal(err)
	}
	name := strconv.FormatInt(id, 10) + "/" + strconv.FormatInt(attempt, 10) + "/sleep.log"
	data, err := obs.GetBytes(ctx, name)
	if err != nil || string(data) != "hello world\n" {
		t.Fatalf("object %s: %q %v", name, data, err)
	}
	var files map[string]map[string]any
	if err := h.Admin.Call(ctx, "listTaskOutput", []any{id}, map[string]any{"stat": true}, &files); err != nil {
		t.Fatal(err)
	}
	if st := files["sleep.log"]; len(files) != 1 || st["st_size"] != "12" || st["st_mtime"] == nil {
		t.Fatalf("listTaskOutput(stat=True) = %v, want sleep.log of 12 bytes", files)
	}
}

// The chunks of an attempt that lost its task are purged when a later
// attempt's result is accepted; the accepted attempt's stay.
func TestStaleAttemptUploadsArePurged(t *testing.T) {
	run := openSleepTask(t)
	h, b1, id, first, m, ctx := run.h, run.b, run.id, run.attempt, run.msg, ctxT(t)
	b1.Upload(t, id, first, "sleep.log", "first try\n")
	if err := h.Admin.Call(ctx, "freeTask", []any{id}, nil, nil); err != nil {
		t.Fatal(err)
	}
	_ = m.Term()
	m = pull(t, b1)
	_, second := msgTask(t, m)
	if second != first+1 {
		t.Fatalf("attempt %d after %d", second, first)
	}
	if err := b1.Client.Call(ctx, "host.openTask", []any{id, second}, nil, nil); err != nil {
		t.Fatal(err)
	}
	b1.Upload(t, id, second, "sleep.log", "second try\n")
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, second, "done"}, b1.Finish(t, id, second), nil); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(h.Conn())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, bus.UploadsStream)
	if err != nil {
		t.Fatal(err)
	}
	count := func(attempt int64) uint64 {
		info, err := stream.Info(ctx, jetstream.WithSubjectFilter(bus.UploadFilter(0, id, attempt)))
		if err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, c := range info.State.Subjects {
			n += c
		}
		return n
	}
	if n := count(first); n != 0 {
		t.Errorf("%d chunks of the stale attempt left", n)
	}
	if n := count(second); n != 2 {
		t.Errorf("%d chunks of the accepted attempt, want 2 (data and end)", n)
	}
	var b64 string
	if err := h.Admin.Call(ctx, "downloadTaskOutput", []any{id, "sleep.log"}, nil, &b64); err != nil {
		t.Fatal(err)
	}
	if data, _ := base64.StdEncoding.DecodeString(b64); string(data) != "second try\n" {
		t.Fatalf("output %q", data)
	}
}

// The data directory of an earlier version holds a stored index of the
// tasks on each host (hosttask.<host>.<task>); views keep that index now,
// and the hub deletes the stored one when it starts.
func TestStartDeletesTheStoredHostTaskIndex(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := context.Background()
	if _, err := h.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		return nil, tx.Put("hosttask.1.2", true)
	}); err != nil {
		t.Fatal(err)
	}
	if err := h.bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	_ = h.store.Read(func(v state.View) error {
		if keys := v.Keys("hosttask", ""); len(keys) != 0 {
			t.Fatalf("stored index left: %v", keys)
		}
		return nil
	})
}

// TestListTasksOfActiveStatesAgreesWithAScan: listTasks of active states
// reads the views' index of active tasks; at each step, through every
// transition, it answers what a scan of every task (no state filter) does.
func TestListTasksOfActiveStatesAgreesWithAScan(t *testing.T) {
	run := openSleepTask(t) // one OPEN task
	h, ctx := run.h, ctxT(t)
	var free, assigned, canceled int64
	for _, id := range []*int64{&free, &assigned, &canceled} {
		if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, nil, id); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(filter map[string]any) []float64 {
		t.Helper()
		var rows []map[string]any
		if err := h.Admin.Call(ctx, "listTasks", []any{filter, map[string]any{"order": "id"}}, nil, &rows); err != nil {
			t.Fatal(err)
		}
		out := []float64{}
		for _, r := range rows {
			out = append(out, r["id"].(float64))
		}
		return out
	}
	check := func(step string) {
		t.Helper()
		var all []map[string]any
		if err := h.Admin.Call(ctx, "listTasks", []any{nil, map[string]any{"order": "id"}}, nil, &all); err != nil {
			t.Fatal(err)
		}
		for _, states := range [][]int{{bus.TaskFree}, {bus.TaskOpen}, {bus.TaskAssigned}, {bus.TaskFree, bus.TaskOpen, bus.TaskAssigned}, {bus.TaskOpen, bus.TaskCanceled}} {
			want := []float64{}
			for _, r := range all {
				if slices.Contains(states, int(r["state"].(float64))) {
					want = append(want, r["id"].(float64))
				}
			}
			if got := ids(map[string]any{"state": states}); !slices.Equal(got, want) {
				t.Errorf("%s: listTasks of states %v = %v, want %v", step, states, got, want)
			}
		}
	}
	check("created")
	if err := h.Admin.Call(ctx, "assignTask", []any{assigned, "builder1"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Admin.Call(ctx, "cancelTask", []any{canceled}, nil, nil); err != nil {
		t.Fatal(err)
	}
	check("assigned and canceled")
	if err := run.b.Client.Call(ctx, "host.closeTask", []any{run.id, run.attempt, "done"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Admin.Call(ctx, "freeTask", []any{assigned}, nil, nil); err != nil {
		t.Fatal(err)
	}
	check("closed and freed")
	if got := ids(map[string]any{"state": []int{bus.TaskFree}}); !slices.Equal(got, []float64{float64(free), float64(assigned)}) {
		t.Errorf("free tasks %v, want %d and %d", got, free, assigned)
	}
}
