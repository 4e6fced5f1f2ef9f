package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
)

// A write near the limits survives a kill -9 of hubd right after its
// acknowledgement: a tag whose extra makes its transaction nearly as large
// as a message may be (the tag and its tag.create event each carry it), and
// one whose extra is nested as deeply as an argument may be. Both are there
// after the restart with their extras whole, each with one event, and the
// hub never voids a transaction it acknowledged.
func TestKill9AfterLargeAndDeepWrites(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "hub.conf")
	// An extra may take almost a whole request here (the default is 256 KiB).
	if err := os.WriteFile(conf, []byte("[hub]\nMaxExtraSize = 4000000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := StartHub(t, "--config", conf)
	admin := h.AdminClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// 3.9 MB in 1,000 strings: the request is within MaxRequestSize (4 MiB),
	// MaxStringSize and MaxExtraKeys, the transaction about 7.8 MB of the
	// 8 MiB a message may take.
	large := map[string]any{}
	for i := range 1000 {
		large["key-"+strconv.Itoa(i)] = strings.Repeat("v", 3900)
	}
	// Nested bus.MaxArgDepth levels deep: {"k": [[...]]}.
	deep := map[string]any{"k": json.RawMessage(strings.Repeat("[", bus.MaxArgDepth-1) + "1" + strings.Repeat("]", bus.MaxArgDepth-1))}
	writes := []struct {
		name  string
		extra map[string]any
	}{{"kill-large", large}, {"kill-deep", deep}}
	for _, w := range writes {
		if err := admin.Call(ctx, "createTag", []any{w.name}, map[string]any{"extra": w.extra}, nil); err != nil {
			t.Fatalf("createTag %s: %v", w.name, err)
		}
	}
	// Right after the last acknowledgement: the relay has likely not
	// finished the transactions, so the restarted view has to load them.
	h.Kill9()
	h.Restart()

	for _, w := range writes {
		var tag struct {
			Name  string         `json:"name"`
			Extra map[string]any `json:"extra"`
		}
		if err := admin.Call(ctx, "getTag", []any{w.name}, nil, &tag); err != nil || tag.Name != w.name {
			t.Fatalf("acknowledged createTag %s after kill -9 and restart: %+v, %v", w.name, tag.Name, err)
		}
		want, _ := json.Marshal(w.extra)
		got, _ := json.Marshal(tag.Extra)
		if string(got) != string(want) {
			t.Errorf("tag %s: extra of %d bytes after the restart, want %d", w.name, len(got), len(want))
		}
	}
	h.WaitRelayDrained(t, h.HubConn(t), 60*time.Second)
	created := map[string]int{}
	for _, ev := range ReadEvents(t, admin.Conn(), bus.EventSubject("tag.create")) {
		name, _ := ev.Props["tag"].(string)
		created[name]++
	}
	for _, w := range writes {
		if created[w.name] != 1 {
			t.Errorf("tag %s has %d tag.create events, want 1", w.name, created[w.name])
		}
	}
	// The archive serves both events (the large one alone in its page).
	for _, w := range writes {
		deadline := time.Now().Add(30 * time.Second)
		for {
			var page bus.EventPage
			err := admin.Call(ctx, "queryEvents", nil, map[string]any{"address": "tag.create", "props": map[string]any{"tag": w.name}, "limit": 1}, &page)
			if err != nil {
				t.Fatalf("queryEvents for %s: %v", w.name, err)
			}
			if len(page.Events) == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the archive has no tag.create event of %s", w.name)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if strings.Contains(h.log.String(), "undecodable transaction") {
		t.Errorf("the restarted hub voided a transaction:\n%s", h.log.String())
	}
}
