package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
)

// list-tags asks for its rows page by page and prints every tag once,
// whatever the page size.
func TestListTagsPages(t *testing.T) {
	h := startHub(t)
	old := pageSize
	pageSize = 3
	t.Cleanup(func() { pageSize = old })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const tags = 8
	var want []string
	for i := range tags {
		name := fmt.Sprintf("paged-%02d", i)
		if err := h.Admin.Call(ctx, "createTag", []any{name}, nil, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, name)
	}
	// Every listTags request the hub gets, as a monitor sees it.
	var mu sync.Mutex
	var offsets []int
	monitor := h.Connect(t, "monitor")
	sub, err := monitor.Subscribe(bus.IdentityAPISubject("*", "listTags"), func(m *nats.Msg) {
		var req struct {
			Kwargs struct {
				QueryOpts struct {
					Limit, Offset int
				} `json:"queryOpts"`
			} `json:"kwargs"`
		}
		_ = json.Unmarshal(m.Data, &req)
		mu.Lock()
		defer mu.Unlock()
		if req.Kwargs.QueryOpts.Limit != pageSize {
			t.Errorf("listTags asked for %d rows, want %d", req.Kwargs.QueryOpts.Limit, pageSize)
		}
		offsets = append(offsets, req.Kwargs.QueryOpts.Offset)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := monitor.Flush(); err != nil {
		t.Fatal(err)
	}

	r := kojictl(t, h.ProfilePath(), "", "list-tags", "paged-*")
	if r.code != 0 {
		t.Fatalf("list-tags: exit %d: %s", r.code, r.err)
	}
	if got := strings.Fields(r.out); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("list-tags printed %v, want %v", got, want)
	}
	// The monitor's callback may run a little after kojictl has its replies.
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(offsets)
		mu.Unlock()
		if n >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	// 8 tags (and any the hub made itself) in pages of 3: 0, 3, 6, ... until a short page.
	if len(offsets) < 3 || offsets[0] != 0 || offsets[1] != 3 || offsets[2] != 6 {
		t.Fatalf("listTags pages at offsets %v, want 0, 3, 6...", offsets)
	}
}
