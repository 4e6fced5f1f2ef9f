package storage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus/bustest"
)

// TestFullDiskFailsPutsAndReopens: a write the disk cannot take is an
// error (Pebble's own reaction is a panic), later writes fail the same way,
// and once space is freed the archive opens again with every event it
// stored and takes writes.
func TestFullDiskFailsPutsAndReopens(t *testing.T) {
	disk := bustest.MountTmpfs(t, 32<<20)
	dir := filepath.Join(disk, "archive")
	a, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	filler := bustest.FillUntilFree(t, disk, "filler", 1<<20)
	body := []byte(`"` + strings.Repeat("x", 100<<10) + `"`)
	event := func(seq uint64) []Event {
		return []Event{{Seq: seq, ID: seq, Address: "tag.create", Body: body, Time: time.Now(), Props: map[string]any{}}}
	}
	var stored uint64
	for ; stored < 100; stored++ {
		if err = a.PutBatch(event(stored + 1)); err != nil {
			break
		}
	}
	if !errors.Is(err, ErrFailed) {
		t.Fatalf("after %d events on a full disk: %v, want ErrFailed", stored, err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := a.PutBatch(event(stored + 1)); !errors.Is(err, ErrFailed) {
		t.Fatalf("a failed archive took a write: %v", err)
	}
	_ = a.Close() // the write it failed is reported again
	if a, err = Open(dir, nil); err != nil {
		t.Fatalf("open again: %v", err)
	}
	defer a.Close()
	if last, ok, err := a.Last(); err != nil || !ok || last.Seq != stored {
		t.Fatalf("last event after opening again: %d %v %v, want %d", last.Seq, ok, err, stored)
	}
	if err := a.PutBatch(event(stored + 1)); err != nil {
		t.Fatalf("write after opening again: %v", err)
	}
}
