package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/storage"
)

// queryEventsUntil polls queryEvents until it returns want events (the
// archive follows the stream a few milliseconds behind the commit).
func queryEventsUntil(t *testing.T, c *bus.Client, kwargs map[string]any, want int) bus.EventPage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		var page bus.EventPage
		if err := c.Call(ctx, "queryEvents", nil, kwargs, &page); err != nil {
			t.Fatalf("queryEvents(%v): %v", kwargs, err)
		}
		if len(page.Events) >= want {
			return page
		}
		select {
		case <-ctx.Done():
			t.Fatalf("queryEvents(%v): %d events after 15s, want %d", kwargs, len(page.Events), want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func archivedNames(evs []bus.ArchivedEvent) []string {
	out := []string{}
	for _, e := range evs {
		out = append(out, fmt.Sprintf("%s:%v", e.Address, e.Props["user"]))
	}
	return out
}

func TestArchiveQueryEvents(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := float64(time.Now().Add(-time.Second).UnixMicro()) / 1e6
	for _, u := range []string{"u1", "u2", "u3"} {
		if err := h.Admin.Call(ctx, "createUser", []any{u}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Admin.Call(ctx, "grantPermission", []any{"u2", "tag"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	all := queryEventsUntil(t, h.Admin, nil, 4)
	if len(all.Events) != 4 || all.Cursor != nil {
		t.Fatalf("all events: %v cursor %v", archivedNames(all.Events), all.Cursor)
	}
	for i, e := range all.Events {
		if e.Seq == 0 || e.ID == 0 || e.TS < start || (i > 0 && (e.Seq <= all.Events[i-1].Seq || e.ID <= all.Events[i-1].ID)) {
			t.Fatalf("event %d: %+v", i, e)
		}
	}
	ids := make([]uint64, 4)
	for i, e := range all.Events {
		ids[i] = e.ID
	}
	if got := string(all.Events[0].Body); got == "" || got == "null" {
		t.Fatalf("body of user.create = %s", got)
	}
	anon := h.Anonymous()
	tests := []struct {
		name   string
		kwargs map[string]any
		want   []string
	}{
		{"address", map[string]any{"address": "user.create"}, []string{"user.create:u1", "user.create:u2", "user.create:u3"}},
		{"glob", map[string]any{"address": "*.create", "order": "desc"}, []string{"user.create:u3", "user.create:u2", "user.create:u1"}},
		{"prefix", map[string]any{"address": "user.>", "limit": 1}, []string{"user.create:u1"}},
		{"prop", map[string]any{"props": map[string]any{"user": "u2"}}, []string{"user.create:u2", "user.perm.grant:u2"}},
		{"two props", map[string]any{"props": map[string]any{"user": "u2", "perm": "tag"}}, []string{"user.perm.grant:u2"}},
		{"after id", map[string]any{"after": ids[1]}, []string{"user.create:u3", "user.perm.grant:u2"}},
		{"before id", map[string]any{"before": ids[1]}, []string{"user.create:u1"}},
		{"id range", map[string]any{"after": ids[0], "before": ids[3]}, []string{"user.create:u2", "user.create:u3"}},
		{"since", map[string]any{"since_ts": all.Events[3].TS}, []string{"user.perm.grant:u2"}},
		{"until", map[string]any{"until_ts": all.Events[1].TS}, []string{"user.create:u1"}},
		{"nothing", map[string]any{"address": "tag.create"}, []string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var page bus.EventPage
			if err := anon.Call(ctx, "queryEvents", nil, tt.kwargs, &page); err != nil {
				t.Fatal(err)
			}
			if got := archivedNames(page.Events); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}

	// Paging: limit 1 with the cursor visits all four, then the cursor is null.
	var seen []uint64
	var cursor any
	for range 10 {
		var page bus.EventPage
		if err := anon.Call(ctx, "queryEvents", nil, map[string]any{"limit": 1, "order": "desc", "cursor": cursor}, &page); err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Events {
			seen = append(seen, e.ID)
		}
		if page.Cursor == nil {
			break
		}
		cursor = *page.Cursor
	}
	if want := []uint64{ids[3], ids[2], ids[1], ids[0]}; !reflect.DeepEqual(seen, want) {
		t.Fatalf("paged ids %v, want %v", seen, want)
	}

	// getLastEvent / getEvent, Koji's {id, ts}.
	var last bus.EventInfo
	if err := anon.Call(ctx, "getLastEvent", nil, nil, &last); err != nil {
		t.Fatal(err)
	}
	if last.ID != ids[3] || last.TS != all.Events[3].TS {
		t.Fatalf("getLastEvent = %+v, want id %d ts %v", last, ids[3], all.Events[3].TS)
	}
	var before *bus.EventInfo
	if err := anon.Call(ctx, "getLastEvent", []any{all.Events[2].TS}, nil, &before); err != nil {
		t.Fatal(err)
	}
	if before == nil || before.ID != ids[1] {
		t.Fatalf("getLastEvent(before=%v) = %+v, want id %d", all.Events[2].TS, before, ids[1])
	}
	var ev *bus.EventInfo
	if err := anon.Call(ctx, "getEvent", []any{ids[2]}, nil, &ev); err != nil {
		t.Fatal(err)
	}
	if ev == nil || ev.ID != ids[2] || ev.TS != all.Events[2].TS {
		t.Fatalf("getEvent(%d) = %+v", ids[2], ev)
	}
	// Ids are commit sequences: not dense. An id without an event is None, or
	// Koji's error with strict.
	missing := ids[3] + 1000
	ev = &bus.EventInfo{}
	if err := anon.Call(ctx, "getEvent", []any{missing}, nil, &ev); err != nil || ev != nil {
		t.Fatalf("getEvent(%d) = %+v, %v; want None", missing, ev, err)
	}
	if err := anon.Call(ctx, "getEvent", []any{missing}, map[string]any{"strict": true}, nil); !isArchiveFault(err, bus.CodeGenericError, "query returned no rows") {
		t.Fatalf("getEvent strict: %v", err)
	}
	if err := anon.Call(ctx, "getLastEvent", []any{start - 3600}, nil, nil); !isArchiveFault(err, bus.CodeGenericError, "query returned no rows") {
		t.Fatalf("getLastEvent before everything: %v", err)
	}
	if err := anon.Call(ctx, "getLastEvent", []any{start - 3600, false}, nil, &ev); err != nil || ev != nil {
		t.Fatalf("getLastEvent before everything, not strict: %+v %v", ev, err)
	}
}

func isArchiveFault(err error, code int, msg string) bool {
	var f *bus.Fault
	return errors.As(err, &f) && f.Code == code && f.Message == msg
}

func TestArchiveBadArguments(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.Admin.Call(ctx, "createUser", []any{"x1"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	queryEventsUntil(t, h.Admin, nil, 1)
	tests := []struct {
		method string
		args   []any
		kwargs map[string]any
		code   int
		msg    string
	}{
		{"getLastEvent", []any{"yesterday"}, nil, bus.CodeGenericError, "Invalid type for before: <class 'str'>"},
		{"getLastEvent", []any{[]int{1}}, nil, bus.CodeGenericError, "Invalid type for before: <class 'list'>"},
		{"getEvent", []any{"one"}, nil, bus.CodeParameterError, ""},
		{"getEvent", nil, nil, bus.CodeParameterError, ""},
		{"queryEvents", nil, map[string]any{"limit": 0}, bus.CodeParameterError, "queryEvents(): limit must be between 1 and 1000, got 0"},
		{"queryEvents", nil, map[string]any{"limit": 1001}, bus.CodeParameterError, "queryEvents(): limit must be between 1 and 1000, got 1001"},
		{"queryEvents", nil, map[string]any{"order": "up"}, bus.CodeParameterError, `queryEvents(): order must be 'asc' or 'desc', got "up"`},
		{"queryEvents", nil, map[string]any{"cursor": "nope"}, bus.CodeParameterError, `queryEvents(): invalid cursor "nope"`},
		{"queryEvents", nil, map[string]any{"after": -1}, bus.CodeParameterError, "queryEvents(): 'after' must not be negative"},
		{"queryEvents", nil, map[string]any{"address": "user.[x"}, bus.CodeParameterError, ""},
		{"queryEvents", nil, map[string]any{"props": map[string]any{"user": []string{"a"}}}, bus.CodeParameterError, "queryEvents(): property user: want a string, number, boolean or None"},
		{"queryEvents", nil, map[string]any{"props": "user=x1"}, bus.CodeParameterError, ""},
		{"queryEvents", nil, map[string]any{"since_ts": "today"}, bus.CodeParameterError, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s%v%v", tt.method, tt.args, tt.kwargs), func(t *testing.T) {
			err := h.Admin.Call(ctx, tt.method, tt.args, tt.kwargs, nil)
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != tt.code || (tt.msg != "" && f.Message != tt.msg) {
				t.Fatalf("err = %v, want code %d %q", err, tt.code, tt.msg)
			}
		})
	}
}

func TestArchiveEmpty(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The bootstrap seeds state without events: nothing to report yet.
	err := h.Admin.Call(ctx, "getLastEvent", nil, nil, nil)
	if !isArchiveFault(err, bus.CodeGenericError, "query returned no rows") {
		t.Fatalf("getLastEvent on a fresh hub: %v", err)
	}
	var page bus.EventPage
	if err := h.Admin.Call(ctx, "queryEvents", nil, nil, &page); err != nil || len(page.Events) != 0 || page.Cursor != nil {
		t.Fatalf("queryEvents on a fresh hub: %+v %v", page, err)
	}
}

// A restarted hub resumes its durable consumer: every event is archived
// exactly once, under the same hub id.
func TestArchiveResumesAfterRestart(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	run := func(users ...string) {
		srv, err := New(Config{DataDir: dir, ListenPort: -1, Durability: bus.DurabilityInterval, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer srv.Stop()
		p, err := bus.LoadProfile(srv.ProfilePath(), "")
		if err != nil {
			t.Fatal(err)
		}
		p.Server = srv.URL() // the profile keeps the first run's port
		c, err := p.Dial(ctx, "test")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := p.Login(ctx, c); err != nil {
			t.Fatal(err)
		}
		for _, u := range users {
			if err := c.Call(ctx, "createUser", []any{u}, nil, nil); err != nil {
				t.Fatal(err)
			}
		}
		// Wait for everything created so far, across runs.
		var total int
		for _, u := range []string{"r1", "r2", "r3", "r4"} {
			if _, err := os.Stat(filepath.Join(dir, "hub-id")); err != nil {
				t.Fatal(err)
			}
			var uu *bus.User
			if err := c.Call(ctx, "getUser", []any{u}, nil, &uu); err != nil {
				t.Fatal(err)
			}
			if uu != nil {
				total++
			}
		}
		page := queryEventsUntil(t, c, map[string]any{"address": "user.create"}, total)
		if len(page.Events) != total {
			t.Fatalf("archived %d user.create events, want %d: %v", len(page.Events), total, archivedNames(page.Events))
		}
	}
	run("r1", "r2")
	id1, err := os.ReadFile(filepath.Join(dir, "hub-id"))
	if err != nil {
		t.Fatal(err)
	}
	// The archive as it was then, for a later run to have lost its tail.
	earlier := filepath.Join(t.TempDir(), "archive")
	if err := os.CopyFS(earlier, os.DirFS(filepath.Join(dir, "archive"))); err != nil {
		t.Fatal(err)
	}
	run("r3", "r4")
	id2, _ := os.ReadFile(filepath.Join(dir, "hub-id"))
	if string(id1) != string(id2) {
		t.Fatalf("hub id changed across restarts: %q -> %q", id1, id2)
	}
	// And again, without new writes: no duplicates from redelivery.
	run()
	// An archive restored from an earlier copy (a backup, or a disk that
	// lost its last writes) is behind its consumer, which acked what it
	// lost: the consumer is recreated from the archive's last event, and
	// r3 and r4 are archived again.
	if err := os.RemoveAll(filepath.Join(dir, "archive")); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "archive"), os.DirFS(earlier)); err != nil {
		t.Fatal(err)
	}
	run()
	// A lost archive directory is rebuilt from the stream: the consumer is
	// ahead of the empty archive and is recreated from its start.
	if err := os.RemoveAll(filepath.Join(dir, "archive")); err != nil {
		t.Fatal(err)
	}
	run()
}

// An archive consumer an earlier version made with one ack per event is
// replaced by one that acks a stored batch at once, from the archive's own
// position: every event is archived, and a single ack per batch leaves
// nothing pending.
func TestArchiveReplacesAConsumerThatAckedEachEvent(t *testing.T) {
	h := StartTestHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, u := range []string{"a1", "a2", "a3"} {
		if err := h.Admin.Call(ctx, "createUser", []any{u}, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := h.js.Stream(ctx, bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	// A second archive in its own directory, whose consumer an earlier
	// version created with explicit acks and never got to use.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hub-id"), []byte("earlier\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Durable: archiveConsumerPrefix + "earlier", FilterSubject: bus.EventPrefix + ">", AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	a := newArchiveService(h.js, dir, slog.New(slog.DiscardHandler))
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	for {
		ci, err := stream.Consumer(ctx, archiveConsumerPrefix+"earlier")
		if err != nil {
			t.Fatal(err)
		}
		cinfo := ci.CachedInfo()
		if cinfo.Config.AckPolicy != jetstream.AckAllPolicy {
			t.Fatalf("archive consumer acks with %v, want all", cinfo.Config.AckPolicy)
		}
		if cinfo.AckFloor.Stream >= last && cinfo.NumAckPending == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("archive consumer acked up to %d with %d pending, want %d and none", cinfo.AckFloor.Stream, cinfo.NumAckPending, last)
		case <-time.After(10 * time.Millisecond):
		}
	}
	got, ok, err := a.arc.Last()
	if err != nil || !ok || got.Seq != last {
		t.Fatalf("archive's last event %d (%v, %v), want %d", got.Seq, ok, err, last)
	}
	n := 0
	for seq := uint64(1); seq <= last; seq++ {
		if _, err := stream.GetMsg(ctx, seq); err == nil {
			n++
		}
	}
	evs, _, err := a.arc.Query(storage.Filter{Limit: storage.MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != n {
		t.Fatalf("archived %d events, want the stream's %d", len(evs), n)
	}
}
