package hub

import (
	"encoding/json"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

func TestTaskInfoCacheIsBounded(t *testing.T) {
	var c taskInfoCache
	for i := 0; i < 5*taskInfoCacheSize; i++ {
		c.put(taskInfoKey{id: int64(i), rev: 1}, json.RawMessage("{}"))
	}
	if n := c.len(); n > 2*taskInfoCacheSize {
		t.Fatalf("%d answers kept, want at most %d", n, 2*taskInfoCacheSize)
	}
	if _, ok := c.get(taskInfoKey{id: 0, rev: 1}); ok {
		t.Fatal("the oldest answer is still kept")
	}
	last := taskInfoKey{id: 5*taskInfoCacheSize - 1, rev: 1}
	if _, ok := c.get(last); !ok {
		t.Fatal("the newest answer is gone")
	}
	if _, ok := c.get(taskInfoKey{id: last.id, rev: 2}); ok {
		t.Fatal("an answer for another revision")
	}
}

// getTaskInfo answers from its cache only for the revision the answer was
// made from: every change shows at once.
func TestGetTaskInfoFollowsChanges(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx := ctxT(t)
	var id int64
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, map[string]any{"priority": 10}, &id); err != nil {
		t.Fatal(err)
	}
	info := func(kw map[string]any) bus.Task {
		t.Helper()
		var task bus.Task
		if err := h.Admin.Call(ctx, "getTaskInfo", []any{id}, kw, &task); err != nil {
			t.Fatal(err)
		}
		return task
	}
	for prio := 10; prio <= 12; prio++ {
		if prio > 10 {
			if err := h.Admin.Call(ctx, "setTaskPriority", []any{id, prio}, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		for range 2 { // the second answer comes from the cache
			if got := info(nil); got.Priority != prio {
				t.Fatalf("priority %d, want %d", got.Priority, prio)
			}
		}
	}
	var withReq map[string]any
	if err := h.Admin.Call(ctx, "getTaskInfo", []any{id}, map[string]any{"request": true}, &withReq); err != nil {
		t.Fatal(err)
	}
	if req, ok := withReq["request"].([]any); !ok || len(req) != 1 {
		t.Fatalf("request=True answer %v, want the request [0]", withReq)
	}
	if got := info(nil); got.State != bus.TaskFree {
		t.Fatalf("state %d", got.State)
	}
	if h.Server.taskInfos.len() == 0 {
		t.Fatal("no answer cached")
	}
}
