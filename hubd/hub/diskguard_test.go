package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
)

func TestParseFreeSpace(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want FreeSpace
		bad  bool
	}{
		{in: "5%", want: FreeSpace{Percent: 5}},
		{in: "0.5%", want: FreeSpace{Percent: 0.5}},
		{in: "0", want: FreeSpace{}},
		{in: "1048576", want: FreeSpace{Bytes: 1 << 20}},
		{in: "512MiB", want: FreeSpace{Bytes: 512 << 20}},
		{in: "2G", want: FreeSpace{Bytes: 2 << 30}},
		{in: "100%", bad: true},
		{in: "-1%", bad: true},
		{in: "lots", bad: true},
		{in: "5 %", bad: true},
	} {
		got, err := ParseFreeSpace(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("ParseFreeSpace(%q): err %v, want error %v", tc.in, err, tc.bad)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseFreeSpace(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

// TestDiskFull fills the hub's data directory, a small tmpfs, through the
// API until writes are refused; while full, reads and logins answer and
// writes are refused at once with InsufficientResources. Then something else
// takes the rest of the disk: logins are refused too (a store of the NATS
// server may fail a write). Once space is freed, writes resume without a
// restart, and every write that was acknowledged has its state and exactly
// one event.
func TestDiskFull(t *testing.T) {
	dir := bustest.MountTmpfs(t, 128<<20)
	// What the hub writes after the last write it admitted can take tens of
	// MiB on a disk this small (Pebble preallocates each WAL, 4.4 MiB, and
	// flushes memtables of up to 4 MiB; files deleted while open keep their
	// pages), which 5%, the default, leaves on disks of gigabytes.
	const keepFree = 48 << 20
	h := StartTestHub(t, func(c *Config) {
		c.DataDir, c.MinFreeDisk = dir, "48MiB"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	password := "pw-late-secret"
	if err := h.Admin.Call(ctx, "createUser", []any{"late"}, map[string]any{"password": password}, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Admin.Call(ctx, "createTag", []any{"before"}, nil, nil); err != nil {
		t.Fatal(err)
	}

	// Leave 12 MiB above what the hub keeps free, then write tags with
	// 48 KiB of extra each until the hub refuses.
	filler := bustest.FillUntilFree(t, dir, "filler", keepFree+12<<20)
	extra := map[string]any{"pad": strings.Repeat("x", 48<<10)}
	var acked []string
	n := 0
	fillUntilRefused := func() {
		t.Helper()
		for start := n; ; n++ {
			if n-start == 1000 {
				t.Fatalf("%d tags of 48 KiB written and none refused", n-start)
			}
			name := fmt.Sprintf("fill-%d", n)
			err := h.Admin.Call(ctx, "createTag", []any{name}, map[string]any{"extra": extra}, nil)
			if err == nil {
				acked = append(acked, name)
				continue
			}
			if !errors.Is(err, bus.ErrInsufficientResources) || !strings.Contains(err.Error(), "below the 48.0 MiB kept free") {
				t.Fatalf("refused with %v, want InsufficientResources naming the 48 MiB kept free", err)
			}
			t.Logf("%d tags acknowledged, then: %v", len(acked), err)
			n++
			return
		}
	}
	fillUntilRefused()
	if len(acked) == 0 {
		t.Fatal("the first write was refused already")
	}
	// The refusal may come from the writes the guard counts before the disk
	// shows them; 8 MiB below the threshold (and above the logins' reserve)
	// the disk is full for certain.
	below := bustest.FillUntilFree(t, dir, "below", keepFree-8<<20)
	fillUntilRefused()

	// While full: writes refused at once, reads and logins answer.
	start := time.Now()
	err := h.Admin.Call(ctx, "createTag", []any{"while-full"}, nil, nil)
	if !errors.Is(err, bus.ErrInsufficientResources) {
		t.Fatalf("createTag while full: %v, want InsufficientResources", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a refusal took %v", d)
	}
	var tag bus.Tag
	if err := h.Admin.Call(ctx, "getTag", []any{acked[len(acked)-1]}, nil, &tag); err != nil || tag.Name != acked[len(acked)-1] {
		t.Fatalf("getTag while full: %+v, %v", tag, err)
	}
	late := h.Anonymous()
	if err := late.Login(ctx, "late", password); err != nil {
		t.Fatalf("login while full: %v", err)
	}
	var me *bus.LoggedInUser
	if err := late.Call(ctx, "getLoggedInUser", nil, nil, &me); err != nil || me == nil || me.Name != "late" {
		t.Fatalf("getLoggedInUser while full: %+v, %v", me, err)
	}

	// Something else takes the rest of the disk, and a write of the hub
	// fails (logins pass under the reserve, so one gets that far): logins
	// are refused at once too, reads still answer.
	rest := bustest.FillUntilFree(t, dir, "rest", 0)
	for i := 0; ; i++ { // a login that fits in pages already taken is stored
		err := h.Anonymous().Login(ctx, "late", password)
		if errors.Is(err, bus.ErrInsufficientResources) {
			break
		}
		if err != nil || i == 100 {
			t.Fatalf("login %d on a full disk: %v, want InsufficientResources", i, err)
		}
	}
	start = time.Now()
	if err := h.Anonymous().Login(ctx, "late", password); !errors.Is(err, bus.ErrInsufficientResources) {
		t.Fatalf("login with the disk full: %v, want InsufficientResources", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a refused login took %v", d)
	}
	if err := h.Admin.Call(ctx, "getTag", []any{"before"}, nil, &tag); err != nil {
		t.Fatalf("getTag with the disk full: %v", err)
	}

	// Space freed: writes resume by themselves.
	for _, f := range []string{rest, below, filler} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	for {
		err := h.Admin.Call(ctx, "createTag", []any{"after"}, nil, nil)
		if err == nil {
			break
		}
		if !errors.Is(err, bus.ErrInsufficientResources) {
			t.Fatalf("createTag after freeing space: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("writes did not resume: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}

	// Every acknowledged tag is there, with exactly one tag.create event.
	want := append(append([]string{"before"}, acked...), "after")
	page := queryEventsUntil(t, h.Admin, map[string]any{"address": "tag.create", "limit": 1000}, len(want))
	events := map[string]int{}
	for _, ev := range page.Events {
		events[fmt.Sprint(ev.Props["tag"])]++
	}
	for _, name := range want {
		if err := h.Admin.Call(ctx, "getTag", []any{name}, map[string]any{"strict": true}, &tag); err != nil {
			t.Errorf("getTag(%s) after: %v", name, err)
		}
		if events[name] != 1 {
			t.Errorf("tag %s has %d tag.create events, want 1", name, events[name])
		}
	}
	if len(page.Events) != len(want) {
		t.Errorf("%d tag.create events, want %d", len(page.Events), len(want))
	}
}

func TestDiskGuardAdmits(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name        string
		avail       uint64 // of 100 MiB, 5 MiB kept free
		size        int
		reserve     bool
		wantRefused bool
	}{
		{name: "room", avail: 50 * mib, size: 1000},
		{name: "below the threshold", avail: 4 * mib, size: 10, wantRefused: true},
		{name: "a write that would take it below", avail: 5*mib + 100, size: 100, wantRefused: true},
		{name: "a session under the reserve", avail: 4 * mib, size: 10, reserve: true},
		{name: "a session below the reserve", avail: 2 * mib, size: 10, reserve: true, wantRefused: true},
	} {
		g := newDiskGuard(t.TempDir(), FreeSpace{Percent: 5}, slog.New(slog.DiscardHandler))
		g.reading, g.recheck = diskReading{avail: tc.avail, total: 100 * mib}, 1<<62
		err := g.Admit(tc.size, tc.reserve)
		if refused := errors.Is(err, bus.ErrInsufficientResources); refused != tc.wantRefused || (err != nil && !refused) {
			t.Errorf("%s: Admit: %v, want refused %v", tc.name, err, tc.wantRefused)
		}
	}
	// A commit the server refused for lack of space holds every write,
	// sessions too, until the next reading.
	g := newDiskGuard(t.TempDir(), FreeSpace{Percent: 5}, slog.New(slog.DiscardHandler))
	if err := g.check(); err != nil {
		t.Fatal(err)
	}
	if err := g.Refused(errors.New("insufficient resources")); !errors.Is(err, bus.ErrInsufficientResources) {
		t.Fatalf("Refused: %v", err)
	}
	if err := g.Admit(1, true); !errors.Is(err, bus.ErrInsufficientResources) {
		t.Fatalf("a session after a refused commit: %v", err)
	}
	if err := g.check(); err != nil {
		t.Fatal(err)
	}
	if err := g.Admit(1, false); err != nil {
		t.Fatalf("a write after the next reading: %v", err)
	}
}
