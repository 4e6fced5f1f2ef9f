package storage

import (
	"testing"
	"time"
)

func TestQueueKeepsOrderAndExpires(t *testing.T) {
	dir := t.TempDir()
	q, err := OpenQueue(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var entries []QueueEntry
	for _, seq := range []uint64{30, 10, 20, 40} { // appended out of order: the queue orders by sequence
		entries = append(entries, QueueEntry{Seq: seq, Address: "a", ID: "m", Created: t0.Add(time.Duration(seq) * time.Minute), Props: map[string]any{"id": seq}})
	}
	if err := q.Append(entries); err != nil {
		t.Fatal(err)
	}
	if err := q.Append(entries[:1]); err != nil { // a retried append changes nothing
		t.Fatal(err)
	}
	n, oldest, err := q.Stats()
	if err != nil || n != 4 || !oldest.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("stats %d %v %v", n, oldest, err)
	}
	got, err := q.Peek(3)
	if err != nil || len(got) != 3 || got[0].Seq != 10 || got[1].Seq != 20 || got[2].Seq != 30 {
		t.Fatalf("peek %+v %v", got, err)
	}
	old, err := q.DropOlderThan(t0.Add(25 * time.Minute))
	if err != nil || len(old) != 2 || old[0].Seq != 10 || old[1].Seq != 20 {
		t.Fatalf("dropped %+v %v", old, err)
	}
	if err := q.Delete([]uint64{30}); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	// durable: reopened, the rest is there
	q, err = OpenQueue(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	got, err = q.Peek(10)
	if err != nil || len(got) != 1 || got[0].Seq != 40 || got[0].Props["id"] != float64(40) {
		t.Fatalf("after reopen %+v %v", got, err)
	}
}
