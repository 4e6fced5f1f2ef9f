package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/storage"
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
	// The archive serves both events.
	for _, w := range writes {
		waitArchived(ctx, t, admin, w.name)
	}
	if strings.Contains(h.log.String(), "undecodable transaction") {
		t.Errorf("the restarted hub voided a transaction:\n%s", h.log.String())
	}
}

// A record in the archive that cannot be read back, as an earlier version
// stored one (an event nested deeper than the decoder goes, the newest in
// the archive), does not keep hubd from starting, and the event API answers
// with the other events around it.
func TestHubStartsOverAnArchiveRecordItCannotRead(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, name := range []string{"before-1", "before-2"} {
		if err := admin.Call(ctx, "createTag", []any{name}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	h.WaitRelayDrained(t, h.HubConn(t), 30*time.Second)
	last := ReadEvents(t, admin.Conn(), bus.EventPrefix+">")
	waitArchived(ctx, t, admin, "before-2")
	h.Stop()

	// The earlier version archived the stream's next event nested 10,000 deep.
	arc, err := storage.Open(filepath.Join(h.Dir, "archive"), nil)
	if err != nil {
		t.Fatal(err)
	}
	top := last[len(last)-1]
	deep := storage.Event{Seq: top.Seq + 1, ID: top.ID + 1, Address: "tag.create", Props: map[string]any{"tag": "deep-old"},
		Body: json.RawMessage(strings.Repeat("[", 10000) + strings.Repeat("]", 10000)), Time: top.Time.Add(time.Millisecond)}
	if err := arc.Put(deep); err != nil {
		t.Fatal(err)
	}
	if err := arc.Close(); err != nil {
		t.Fatal(err)
	}

	h.Restart()
	// The stream's event at the deep record's sequence is the one that
	// record stands for; the ones after it are archived as usual.
	for _, name := range []string{"after-1", "after-2"} {
		if err := admin.Call(ctx, "createTag", []any{name}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	newest := waitArchived(ctx, t, admin, "after-2")
	var page bus.EventPage
	if err := admin.Call(ctx, "queryEvents", nil, map[string]any{"address": "tag.create", "limit": 100}, &page); err != nil {
		t.Fatalf("queryEvents over the unreadable record: %v", err)
	}
	got := map[string]bool{}
	for _, ev := range page.Events {
		got[fmt.Sprint(ev.Props["tag"])] = true
	}
	if !got["before-1"] || !got["before-2"] || !got["after-2"] || got["deep-old"] {
		t.Errorf("queryEvents(tag.create) has %v", got)
	}
	var lastEv bus.EventInfo
	if err := admin.Call(ctx, "getLastEvent", nil, nil, &lastEv); err != nil || lastEv.ID != newest.ID {
		t.Errorf("getLastEvent = %+v, %v; want id %d", lastEv, err, newest.ID)
	}
	var info *bus.EventInfo
	if err := admin.Call(ctx, "getEvent", []any{deep.ID}, nil, &info); err != nil {
		t.Errorf("getEvent(%d) of the unreadable record: %v", deep.ID, err)
	}
	if n := strings.Count(h.log.String(), "cannot be read back"); n != 1 {
		t.Errorf("the unreadable record was reported %d times, want once:\n%s", n, h.log.String())
	}
}

// waitArchived waits until the archive has the tag.create event of tag and returns it.
func waitArchived(ctx context.Context, t *testing.T, c *bus.Client, tag string) bus.ArchivedEvent {
	t.Helper()
	for {
		var page bus.EventPage
		if err := c.Call(ctx, "queryEvents", nil, map[string]any{"address": "tag.create", "props": map[string]any{"tag": tag}}, &page); err != nil {
			t.Fatalf("queryEvents for %s: %v", tag, err)
		}
		if len(page.Events) == 1 {
			return page.Events[0]
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the archive has no tag.create event of %s", tag)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
