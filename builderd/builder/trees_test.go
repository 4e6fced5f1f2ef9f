package builder

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A kept tree goes after the lifetime; a restarted reaper removes an
// expired tree at once, schedules a later one, and removes a tree nobody
// kept (left by a builderd killed during its run).
func TestTreeReaper(t *testing.T) {
	dir := t.TempDir()
	mk := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "upper"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	removed := make(chan string, 8)
	r := newTreeReaper(dir, 300*time.Millisecond, slog.New(slog.DiscardHandler))
	r.removed = func(tree string) { removed <- tree }
	kept := mk("1-1")
	r.keep(kept)
	if _, err := os.Stat(filepath.Join(kept, treeExpiresFile)); err != nil {
		t.Fatalf("kept tree has no expiry: %v", err)
	}
	if got := waitRemoved(t, removed); got != kept {
		t.Fatalf("removed %s, want %s", got, kept)
	}
	r.Stop()

	expired, later, orphan := mk("2-1"), mk("3-1"), mk("4-1")
	write := func(tree string, at time.Time) {
		if err := os.WriteFile(filepath.Join(tree, treeExpiresFile), []byte(strconv.FormatInt(at.Unix(), 10)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(expired, time.Now().Add(-time.Hour))
	write(later, time.Now().Add(time.Hour))
	r2 := newTreeReaper(dir, time.Hour, slog.New(slog.DiscardHandler))
	r2.removed = func(tree string) { removed <- tree }
	r2.Start()
	defer r2.Stop()
	got := map[string]bool{waitRemoved(t, removed): true, waitRemoved(t, removed): true}
	if !got[expired] || !got[orphan] {
		t.Fatalf("removed %v, want %s and %s", got, expired, orphan)
	}
	if _, err := os.Stat(later); err != nil {
		t.Fatalf("a tree kept for another hour is gone: %v", err)
	}
}

func waitRemoved(t *testing.T, removed <-chan string) string {
	t.Helper()
	select {
	case tree := <-removed:
		if _, err := os.Stat(tree); !os.IsNotExist(err) {
			t.Fatalf("%s reported removed but still there: %v", tree, err)
		}
		return tree
	case <-time.After(10 * time.Second):
		t.Fatal("no tree removed")
		return ""
	}
}
