package hub

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// openTask moves a task to OPEN directly in state (no builder exists in these tests).
func openTask(t *testing.T, h *TestHub, id int64) {
	t.Helper()
	_, err := h.Store().Update(ctxT(t), "", func(tx *state.Txn) (any, error) {
		task, ok := lookupTask(tx.View, id)
		if !ok {
			return nil, errors.New("no task")
		}
		return nil, setTaskState(tx, task, bus.TaskOpen)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func taskEvents(t *testing.T, h *TestHub) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 64)
	sub, err := h.Admin.Conn().ChanSubscribe(bus.EventPrefix+"task.>", ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	_ = h.Admin.Conn().Flush()
	return ch
}

func nextEvent(t *testing.T, ch chan *nats.Msg) *bus.Event {
	t.Helper()
	select {
	case m := <-ch:
		ev, err := bus.EventFromMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return nil
}

func TestMakeTaskDefaultsAndEvent(t *testing.T) {
	h := StartTestHub(t, nil)
	events := taskEvents(t, h)
	ctx := ctxT(t)
	var id int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{5}}, nil, &id); err != nil {
		t.Fatal(err)
	}
	var info bus.Task
	if err := h.Admin.Call(ctx, "getTaskInfo", []any{id}, nil, &info); err != nil {
		t.Fatal(err)
	}
	if info.State != bus.TaskFree || info.Priority != 20 || info.Arch != "noarch" || info.Weight != 1.0 || info.Method != "sleep" || info.Owner != 1 {
		t.Fatalf("task = %+v", info)
	}
	var ch bus.Channel
	if err := h.Admin.Call(ctx, "getChannel", []any{info.ChannelID}, nil, &ch); err != nil || ch.Name != "default" {
		t.Fatalf("channel %+v %v", ch, err)
	}
	ev := nextEvent(t, events)
	if ev.Address != "task.free" || ev.Props["new"] != "FREE" || ev.Props["old"] != nil || ev.Props["method"] != "sleep" || ev.Props["type"] != "TaskStateChange" {
		t.Fatalf("event = %+v", ev)
	}
	var req []any
	if err := h.Admin.Call(ctx, "getTaskRequest", []any{id}, nil, &req); err != nil || len(req) != 1 {
		t.Fatalf("request %v %v", req, err)
	}
}

func TestTaskErrorsChangeNothing(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	var id int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{1}}, nil, &id); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		method string
		args   []any
		kwargs map[string]any
		code   int
		msg    string
	}{
		{"strict info", "getTaskInfo", []any{9999}, map[string]any{"strict": true}, bus.CodeGenericError, "query returned no rows"},
		{"parent not open", "makeTask", []any{"sleep", []any{}}, map[string]any{"parent": id}, bus.CodeGenericError, "Parent task (id 1) is not open"},
		{"bad parent", "makeTask", []any{"sleep", []any{}}, map[string]any{"parent": 777}, bus.CodeGenericError, "Invalid parent task: 777"},
		{"bad channel", "makeTask", []any{"sleep", []any{}}, map[string]any{"channel": "nope"}, bus.CodeGenericError, "No such channel: nope"},
		{"bad option", "makeTask", []any{"sleep", []any{}}, map[string]any{"colour": "red"}, bus.CodeParameterError, "makeTask(): unknown task option 'colour'"},
		{"arglist type", "makeTask", []any{"sleep", "x"}, nil, bus.CodeParameterError, "makeTask(): parameter 'arglist' must be a list"},
		{"result open", "getTaskResult", []any{id}, nil, bus.CodeGenericError, "Task 1 is not finished"},
		{"resubmit free", "resubmitTask", []any{id}, nil, bus.CodeGenericError, "Task 1 is not canceled or failed"},
		{"no task", "cancelTask", []any{4242}, nil, bus.CodeGenericError, "No such task: 4242"},
		{"task id type", "getTaskInfo", []any{"one"}, nil, bus.CodeParameterError, "getTaskInfo(): parameter 'task_id' must be an integer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.Store().Applied()
			err := h.Admin.Call(ctx, tc.method, tc.args, tc.kwargs, nil)
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != tc.code || f.Message != tc.msg {
				t.Fatalf("err = %v, want %s: %s", err, bus.FaultName(tc.code), tc.msg)
			}
			if h.Store().Applied() != before {
				t.Fatal("state changed")
			}
		})
	}
	alice := h.UserClient(t, "alice")
	err := alice.Call(ctx, "cancelTask", []any{id}, nil, nil)
	if !errors.Is(err, bus.ErrActionNotAllowed) || err.(*bus.Fault).Message != "Cannot cancel task, not owner" {
		t.Fatalf("non-owner cancel: %v", err)
	}
	if err := alice.Call(ctx, "makeTask", []any{"sleep", []any{}}, nil, nil); !errors.Is(err, bus.ErrActionNotAllowed) {
		t.Fatalf("non-admin makeTask: %v", err)
	}
}

func TestSubtasksCancelResubmitPriority(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	var parent int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"fork", []any{2}}, map[string]any{"priority": 10, "arch": "x86_64"}, &parent); err != nil {
		t.Fatal(err)
	}
	openTask(t, h, parent)
	var kids [2]int64
	for i, label := range []string{"a", "b"} {
		if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{i}}, map[string]any{"parent": parent, "label": label}, &kids[i]); err != nil {
			t.Fatal(err)
		}
	}
	// A child with an existing label is not created twice.
	var again int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, map[string]any{"parent": parent, "label": "a"}, &again); err != nil || again != kids[0] {
		t.Fatalf("same label: %d %v, want %d", again, err, kids[0])
	}
	var children []bus.Task
	if err := h.Admin.Call(ctx, "getTaskChildren", []any{parent}, nil, &children); err != nil || len(children) != 2 {
		t.Fatalf("children %v %v", children, err)
	}
	if children[0].Priority != 9 || children[0].Arch != "x86_64" || *children[0].Parent != parent {
		t.Fatalf("child defaults %+v", children[0])
	}
	if err := h.Admin.Call(ctx, "setTaskPriority", []any{parent, 3}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var desc map[string][]bus.Task
	if err := h.Admin.Call(ctx, "getTaskDescendents", []any{parent}, nil, &desc); err != nil {
		t.Fatal(err)
	}
	if len(desc) != 3 || len(desc[jsonID(parent)]) != 2 || desc[jsonID(parent)][1].Priority != 3 {
		t.Fatalf("descendents %+v", desc)
	}
	if err := h.Admin.Call(ctx, "cancelTask", []any{parent}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var states []bus.Task
	if err := h.Admin.Call(ctx, "getTaskInfo", []any{[]int64{parent, kids[0], kids[1]}}, nil, &states); err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if st.State != bus.TaskCanceled || st.CompletionTS == nil {
			t.Fatalf("after recursive cancel: %+v", st)
		}
	}
	err := h.Admin.Call(ctx, "getTaskResult", []any{parent}, nil, nil)
	if f, ok := err.(*bus.Fault); !ok || f.Message != "Task 1 is canceled" {
		t.Fatalf("result of canceled: %v", err)
	}
	if err := h.Admin.Call(ctx, "setTaskPriority", []any{parent, 1}, nil, nil); err == nil {
		t.Fatal("priority of a finished task changed")
	}
	if err := h.Admin.Call(ctx, "resubmitTask", []any{kids[0]}, nil, nil); err == nil || err.(*bus.Fault).Message != "Cannot resubmit subtask: 2" {
		t.Fatalf("resubmit subtask: %v", err)
	}
	var newID int64
	if err := h.Admin.Call(ctx, "resubmitTask", []any{parent}, nil, &newID); err != nil {
		t.Fatal(err)
	}
	var nt bus.Task
	if err := h.Admin.Call(ctx, "getTaskInfo", []any{newID}, nil, &nt); err != nil || nt.Method != "fork" || nt.State != bus.TaskFree || nt.Priority != 3 || nt.Arch != "x86_64" {
		t.Fatalf("resubmitted %+v %v", nt, err)
	}

	var list []map[string]any
	if err := h.Admin.Call(ctx, "listTasks", []any{map[string]any{"state": []int{bus.TaskCanceled}, "parent": nil}, map[string]any{"order": "-id"}}, nil, &list); err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0]["owner_name"] != "kojiadmin" {
		t.Fatalf("top-level canceled tasks: %v", list)
	}
	var count int
	if err := h.Admin.Call(ctx, "listTasks", []any{map[string]any{"method": "sleep"}, map[string]any{"countOnly": true}}, nil, &count); err != nil || count != 2 {
		t.Fatalf("count of sleep tasks %d %v", count, err)
	}
}

func jsonID(id int64) string {
	b, _ := json.Marshal(id)
	return string(b)
}

func TestListTasksOrdersByKojiFields(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	for _, p := range []int{30, 10, 30, 20} {
		if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{p}}, map[string]any{"priority": p}, nil); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		order string
		want  string
	}{
		{"priority,create_ts", "2 4 1 3"},
		{"-priority,id", "1 3 4 2"},
		{"-id", "4 3 2 1"},
	}
	for _, tc := range cases {
		var rows []bus.Task
		if err := h.Admin.Call(ctx, "listTasks", []any{nil, map[string]any{"order": tc.order}}, nil, &rows); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rows {
			got = append(got, jsonID(r.ID))
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("order %q: %v, want %s", tc.order, got, tc.want)
		}
	}
	err := h.Admin.Call(ctx, "listTasks", []any{nil, map[string]any{"order": "bogus"}}, nil, nil)
	if f, ok := err.(*bus.Fault); !ok || f.Message != "Invalid order field: bogus" {
		t.Fatalf("bad order: %v", err)
	}
}
