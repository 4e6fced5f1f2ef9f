package storage

import (
	"encoding/json"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// sidetagEvents returns the three events of createSideTag number n as the
// relay publishes them: the shape the archive stores most under load.
func sidetagEvents(n int, seq uint64, at time.Time) []Event {
	name := "f30-build-side-" + strconv.Itoa(n)
	tag := map[string]any{"id": n, "name": name, "perm_id": nil, "perm": nil, "arches": "x86_64", "locked": false,
		"maven_support": false, "maven_include_all": false,
		"extra": map[string]any{"sidetag": true, "sidetag_user": "kojiadmin", "sidetag_user_id": 1}}
	base := map[string]any{"id": 1, "name": "f30-build", "perm_id": nil, "perm": nil, "arches": "x86_64", "locked": false,
		"maven_support": false, "maven_include_all": false, "extra": map[string]any{}}
	target := map[string]any{"id": n, "name": name, "build_tag": n, "build_tag_name": name, "dest_tag": n, "dest_tag_name": name}
	body := func(v map[string]any) json.RawMessage { b, _ := json.Marshal(v); return b }
	id := seq // the commit's sequence, shared by its events
	return []Event{
		{Seq: seq, ID: id, Time: at, Address: "tag.create",
			Props: map[string]any{"type": "TagCreate", "tag": name, "user": "kojiadmin"},
			Body:  body(map[string]any{"tag": tag, "parent": base, "user": "kojiadmin"})},
		{Seq: seq + 1, ID: id, Time: at, Address: "target.create",
			Props: map[string]any{"type": "TargetCreate", "target": name, "build_tag": name, "dest_tag": name, "user": "kojiadmin"},
			Body:  body(map[string]any{"target": target, "user": "kojiadmin"})},
		{Seq: seq + 2, ID: id, Time: at, Address: "sidetag.create",
			Props: map[string]any{"type": "SidetagCreate", "tag": name, "basetag": "f30-build", "user": "kojiadmin"},
			Body:  body(map[string]any{"tag": tag, "basetag": base, "user": "kojiadmin"})},
	}
}

// BenchmarkArchivePutBatch stores sidetag events in batches of eight
// commits, as the archive takes them under load, and reports the processor
// time each event costs the whole process (Pebble's flushes and compactions
// included), which is what archiving takes from a hub on a busy machine.
func BenchmarkArchivePutBatch(b *testing.B) {
	a, err := Open(b.TempDir(), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	const commits = 8
	at := time.Now()
	var batches [][]Event
	for i := 0; i < b.N; i += 3 * commits {
		var batch []Event
		for c := range commits {
			n := i/3 + c + 1
			batch = append(batch, sidetagEvents(n, uint64(3*n-2), at.Add(time.Duration(n)*time.Millisecond))...)
		}
		batches = append(batches, batch)
	}
	cpu0 := processCPU()
	b.ResetTimer()
	for _, batch := range batches {
		if err := a.PutBatch(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	events := float64(len(batches) * 3 * commits)
	b.ReportMetric(float64(processCPU()-cpu0)/events, "cpu-ns/event")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/events, "ns/event")
	b.ReportMetric(0, "ns/op")
}

// processCPU is the processor time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
