package hub

import (
	"context"
	"encoding/base64"
	"errors"
	"github.com/kojibus/kojibus/hubd/internal/state"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
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
	// Another host cannot report for the run.
	if err := b2.Client.Call(ctx, "host.closeTask", []any{id, attempt, "x"}, nil, nil); !isStale(err) {
		t.Fatalf("close by another host: %v", err)
	}
	// Output: a log written in two chunks, visible while running.
	subj := bus.UploadSubject(id, attempt, "sleep.log")
	for i, chunk := range []string{"hello ", "world\n"} {
		msg := nats.NewMsg(subj)
		msg.Data = []byte(chunk)
		if i == 1 {
			msg.Header.Set(bus.HeaderUploadFinal, "1")
		}
		if _, err := b1.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	if err := h.Admin.Call(ctx, "listTaskOutput", []any{id}, nil, &names); err != nil || len(names) != 1 || names[0] != "sleep.log" {
		t.Fatalf("live output %v %v", names, err)
	}
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "done"}, nil, nil); err != nil {
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
	// A late close of the finished run changes nothing.
	before := h.Store().Applied()
	if err := b1.Client.Call(ctx, "host.closeTask", []any{id, attempt, "again"}, nil, nil); !isStale(err) {
		t.Fatalf("second close: %v", err)
	}
	if h.Store().Applied() != before {
		t.Fatal("a refused close changed state")
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
