package integration

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nuid"

	"github.com/kojibus/kojibus/bus"
)

// writeCall is one createTag call of the fault test.
type writeCall struct {
	name      string
	requestID string
	acked     bool  // the hub answered with a result
	id        int64 // the tag id it answered
	err       error // why it was not acknowledged
}

// tagNames lists the tags whose names start with prefix, as the hub's state has them.
func tagNames(t *testing.T, c *bus.Client, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var tags []struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	if err := c.Call(ctx, "listTags", nil, map[string]any{"pattern": prefix + "*"}, &tags); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tg := range tags {
		out = append(out, tg.Name)
	}
	sort.Strings(out)
	return out
}

// THE FAULT TEST: hubd is killed with SIGKILL in the middle of a stream of
// writes from several clients and restarted on the same data directory.
// Afterwards every acknowledged write is there, state and KOJI_EVENTS agree
// exactly (one event per change, no event without its change, no
// duplicates), and retrying an unacknowledged call with its request id does
// not act twice.
func TestKill9DuringWrites(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	const writers = 6
	const prefix = "ft-"

	var (
		mu     sync.Mutex
		calls  []*writeCall
		acked  atomic.Int64
		stop   = make(chan struct{})
		wg     sync.WaitGroup
		perWr  = make([][]*writeCall, writers)
		killed atomic.Bool
		moved  = newProgress()
	)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				wc := &writeCall{name: fmt.Sprintf("%sw%d-%04d", prefix, w, j), requestID: nuid.Next()}
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				wc.err = callWithID(ctx, admin, "createTag", wc.requestID, []any{wc.name}, nil, &wc.id)
				cancel()
				wc.acked = wc.err == nil
				if wc.acked {
					acked.Add(1)
				} else if !killed.Load() {
					// Before the kill every call must succeed.
					var f *bus.Fault
					if errors.As(wc.err, &f) {
						t.Errorf("createTag %s: %v", wc.name, wc.err)
					}
				}
				mu.Lock()
				calls = append(calls, wc)
				perWr[w] = append(perWr[w], wc)
				mu.Unlock()
				moved.tick()
				if !wc.acked {
					// The hub is down: do not spin.
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		waitOn(t, 60*time.Second, what, cond, func() { close(stop); wg.Wait() }, moved, nil)
	}
	waitFor("40 acknowledged writes", func() bool { return acked.Load() >= 40 })
	killed.Store(true)
	h.Kill9()
	atKill := acked.Load()
	h.Restart()
	waitFor("20 writes acknowledged after the restart", func() bool { return acked.Load() >= atKill+20 })
	close(stop)
	wg.Wait()

	var unacked []*writeCall
	ackedNames := map[string]bool{}
	for _, wc := range calls {
		if wc.acked {
			ackedNames[wc.name] = true
		} else {
			unacked = append(unacked, wc)
		}
	}
	t.Logf("%d calls: %d acknowledged (%d before the kill), %d not", len(calls), len(ackedNames), atKill, len(unacked))
	if len(unacked) == 0 {
		t.Log("no call was in flight at the kill; the retry check only covers replays of acknowledged calls")
	}

	// State after the restart, before any retry: every acknowledged write is there.
	before := tagNames(t, admin, prefix)
	inState := map[string]bool{}
	for _, n := range before {
		inState[n] = true
	}
	for n := range ackedNames {
		if !inState[n] {
			t.Errorf("acknowledged createTag %s is lost", n)
		}
	}
	committed := 0
	for _, wc := range unacked {
		if inState[wc.name] {
			committed++
		}
	}
	t.Logf("%d of the %d unacknowledged calls had committed before the kill", committed, len(unacked))

	// Retry every unacknowledged call with its request id: each succeeds
	// once, whether or not the first attempt committed (then its stored
	// result is replayed), and never fails with "already exists".
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, wc := range unacked {
		var id int64
		if err := callWithID(ctx, admin, "createTag", wc.requestID, []any{wc.name}, nil, &id); err != nil {
			t.Errorf("retry of createTag %s (request %s, first attempt: %v): %v", wc.name, wc.requestID, wc.err, err)
			continue
		}
		if id == 0 {
			t.Errorf("retry of createTag %s returned no id", wc.name)
		}
	}
	// Replaying an acknowledged call answers the same id and creates nothing.
	replayed := 0
	for _, wc := range calls {
		if !wc.acked || replayed == 10 {
			continue
		}
		replayed++
		var id int64
		if err := callWithID(ctx, admin, "createTag", wc.requestID, []any{wc.name}, nil, &id); err != nil || id != wc.id {
			t.Errorf("replay of acknowledged createTag %s (id %d): id %d, %v", wc.name, wc.id, id, err)
		}
	}
	// A new request id for an existing name is a new call: Koji's error.
	if len(calls) > 0 {
		err := callWithID(ctx, admin, "createTag", nuid.Next(), []any{calls[0].name}, nil, nil)
		if !errors.Is(err, bus.ErrGeneric) {
			t.Errorf("createTag of an existing name with a new request id: %v", err)
		}
	}

	after := tagNames(t, admin, prefix)
	want := map[string]bool{}
	for _, wc := range calls {
		want[wc.name] = true
	}
	if len(after) != len(want) {
		t.Errorf("state has %d %s tags after the retries, want %d (one per call)", len(after), prefix, len(want))
	}
	for _, n := range after {
		if !want[n] {
			t.Errorf("state has tag %s that no call created", n)
		}
	}

	// State and events agree exactly once the relay has drained.
	nc := h.HubConn(t)
	h.WaitRelayDrained(t, nc, 30*time.Second)
	events := ReadEvents(t, admin.Conn(), bus.EventSubject("tag.create"))
	evNames := map[string]int{}
	evIDs := map[uint64]string{}
	for _, ev := range events {
		name, _ := ev.Props["tag"].(string)
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		evNames[name]++
		if other, dup := evIDs[ev.ID]; dup {
			t.Errorf("event id %d carries two tag.create events: %s and %s", ev.ID, other, name)
		}
		evIDs[ev.ID] = name
	}
	for n, k := range evNames {
		if k != 1 {
			t.Errorf("tag %s has %d tag.create events, want 1", n, k)
		}
		if !want[n] {
			t.Errorf("event tag.create %s describes a change that does not exist", n)
		}
	}
	for _, n := range after {
		if evNames[n] == 0 {
			t.Errorf("tag %s has no tag.create event", n)
		}
	}
	if len(evNames) != len(after) {
		t.Errorf("%d tags created by events, %d in state", len(evNames), len(after))
	}

	// Each writer's acknowledged calls were sequential: their events are in that order.
	pos := map[string]int{}
	for i, ev := range events {
		if name, _ := ev.Props["tag"].(string); name != "" {
			pos[name] = i
		}
	}
	for w, wcs := range perWr {
		last := -1
		for _, wc := range wcs {
			if !wc.acked {
				continue
			}
			if p := pos[wc.name]; p <= last {
				t.Errorf("writer %d: event of %s out of order", w, wc.name)
			} else {
				last = p
			}
		}
	}
}

// Events are replayable in commit order from KOJI_EVENTS after a kill -9
// and restart, and the restarted hub's archive serves the same history.
func TestEventsReplayInOrderAfterRestart(t *testing.T) {
	h := StartHub(t)
	admin := h.AdminClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var names []string
	create := func(n int) {
		for range n {
			name := fmt.Sprintf("replay-%03d", len(names))
			if err := admin.Call(ctx, "createTag", []any{name}, nil, nil); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
	}
	create(15)
	h.Kill9()
	h.Restart()
	create(10)
	h.WaitRelayDrained(t, h.HubConn(t), 30*time.Second)

	all := ReadEvents(t, admin.Conn(), bus.EventPrefix+">")
	var got []string
	for i, ev := range all {
		if i > 0 {
			prev := all[i-1]
			if ev.Seq != prev.Seq+1 {
				t.Errorf("stream sequence jumps from %d to %d", prev.Seq, ev.Seq)
			}
			if ev.ID < prev.ID {
				t.Errorf("event id goes back from %d to %d at seq %d", prev.ID, ev.ID, ev.Seq)
			}
			if ev.Time.Before(prev.Time) {
				t.Errorf("event time goes back at seq %d", ev.Seq)
			}
		}
		if ev.Address == "tag.create" {
			got = append(got, ev.Props["tag"].(string))
		}
	}
	if strings.Join(got, " ") != strings.Join(names, " ") {
		t.Fatalf("tag.create events replayed as\n%v\nwant\n%v", got, names)
	}

	// The archive of the restarted hub has caught up with the same history,
	// in the same order, through its durable consumer.
	deadline := time.Now().Add(15 * time.Second)
	for {
		var archived []bus.ArchivedEvent
		var cursor any
		for {
			var page bus.EventPage
			if err := admin.Call(ctx, "queryEvents", nil, map[string]any{"limit": 7, "cursor": cursor}, &page); err != nil {
				t.Fatal(err)
			}
			archived = append(archived, page.Events...)
			if page.Cursor == nil {
				break
			}
			cursor = *page.Cursor
		}
		if len(archived) == len(all) {
			for i, ev := range archived {
				s := all[i]
				if ev.Seq != s.Seq || ev.ID != s.ID || ev.Address != s.Address || fmt.Sprint(ev.Props["tag"]) != fmt.Sprint(s.Props["tag"]) {
					t.Fatalf("archived event %d = %+v, stream has seq %d id %d %s %v", i, ev, s.Seq, s.ID, s.Address, s.Props)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("archive has %d events, stream %d", len(archived), len(all))
		}
		time.Sleep(20 * time.Millisecond)
	}
	var last bus.EventInfo
	if err := admin.Call(ctx, "getLastEvent", nil, nil, &last); err != nil || last.ID != all[len(all)-1].ID {
		t.Fatalf("getLastEvent = %+v, %v; want id %d", last, err, all[len(all)-1].ID)
	}
}
