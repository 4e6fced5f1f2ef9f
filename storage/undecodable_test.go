package storage

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

// deepBody is a JSON value that encodes but whose record (one level more)
// the decoder refuses, as an earlier version stored them.
func deepBody(depth int) json.RawMessage {
	return json.RawMessage(strings.Repeat("[", depth) + strings.Repeat("]", depth))
}

// A record that cannot be read back (too deep, too large) is skipped by
// every query and lookup, reported once with its sequence, and does not
// keep the archive from opening, even as its newest record.
func TestUndecodableRecordsAreSkipped(t *testing.T) {
	for _, bits := range epochSizes {
		t.Run(fmt.Sprintf("epoch-bits-%d", bits), func(t *testing.T) { testUndecodableRecordsAreSkipped(t, bits) })
	}
}

func testUndecodableRecordsAreSkipped(t *testing.T, bits uint) {
	var logBuf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	dir := t.TempDir()
	a, err := open(dir, log, bits)
	if err != nil {
		t.Fatal(err)
	}
	events := fixture()
	tail := events[len(events)-1].Time
	tagF30 := map[string]any{"type": "TagCreate", "tag": "f30"}
	events = append(events,
		Event{Seq: 11, ID: 60, Address: "tag.create", Props: tagF30, Body: deepBody(10000), Time: tail.Add(time.Second)},
		Event{Seq: 12, ID: 60, Address: "tag.create", Props: tagF30, Body: json.RawMessage(`{"n":12}`), Time: tail.Add(2 * time.Second)},
		Event{Seq: 13, ID: 61, Address: "tag.create", Props: tagF30, Body: json.RawMessage(`"` + strings.Repeat("x", MaxRecordSize) + `"`), Time: tail.Add(3 * time.Second)},
	)
	if err := a.PutBatch(events); err != nil {
		t.Fatalf("storing the records as an earlier version did: %v", err)
	}
	check := func(a *Archive) {
		t.Helper()
		for _, tc := range []struct {
			f    Filter
			want []uint64
		}{
			{Filter{Limit: MaxLimit}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12}},
			{Filter{Address: "tag.create"}, []uint64{1, 2, 12}},
			{Filter{Props: map[string]string{"tag": "f30"}, Order: Desc, Limit: 2}, []uint64{12, 10}},
			{Filter{AfterID: 59}, []uint64{12}},
			{Filter{AfterID: 60}, []uint64{}},
		} {
			got, _, err := a.Query(tc.f)
			if err != nil || !reflect.DeepEqual(seqs(got), tc.want) {
				t.Errorf("Query(%+v) = %v, %v; want %v", tc.f, seqs(got), err, tc.want)
			}
		}
		// Paging past the skipped records: a page of 2 from the end.
		page, cursor, err := a.Query(Filter{Order: Desc, Limit: 2})
		if err != nil || !reflect.DeepEqual(seqs(page), []uint64{12, 10}) || cursor != "10" {
			t.Errorf("first page = %v %q %v", seqs(page), cursor, err)
		}
		last, ok, err := a.Last()
		if err != nil || !ok || last.Seq != 12 {
			t.Errorf("Last() = %d %v %v, want 12 (13 does not decode)", last.Seq, ok, err)
		}
		if seq, err := a.LastSeq(); err != nil || seq != 13 {
			t.Errorf("LastSeq() = %d %v, want 13", seq, err)
		}
		if ev, ok, err := a.FirstOfID(60); err != nil || !ok || ev.Seq != 12 {
			t.Errorf("FirstOfID(60) = %d %v %v, want 12 (11 does not decode)", ev.Seq, ok, err)
		}
		if _, ok, err := a.FirstOfID(61); err != nil || ok {
			t.Errorf("FirstOfID(61) = %v %v, want none", ok, err)
		}
		if ev, ok, err := a.LastBefore(tail.Add(time.Hour)); err != nil || !ok || ev.Seq != 12 {
			t.Errorf("LastBefore(later) = %d %v %v, want 12", ev.Seq, ok, err)
		}
		if ev, ok, err := a.LastBefore(tail.Add(2 * time.Second)); err != nil || !ok || ev.Seq != 10 {
			t.Errorf("LastBefore(seq 12's time) = %d %v %v, want 10", ev.Seq, ok, err)
		}
	}
	check(a)
	check(a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// Opening again does not read the newest record, and the archive goes
	// on taking events after it (a replay of it is still recognised).
	a, err = open(dir, log, bits)
	if err != nil {
		t.Fatalf("open with an undecodable newest record: %v", err)
	}
	defer a.Close()
	check(a)
	if err := a.PutBatch([]Event{events[12], {Seq: 14, ID: 70, Address: "user.create", Body: json.RawMessage(`{}`), Time: tail.Add(4 * time.Second)}}); err != nil {
		t.Fatal(err)
	}
	if got, _, err := a.Query(Filter{AfterID: 59}); err != nil || !reflect.DeepEqual(seqs(got), []uint64{12, 14}) {
		t.Errorf("after the reopen: %v %v", seqs(got), err)
	}
	// Each record was reported once per open, with its sequence.
	for _, seq := range []string{"seq=11 ", "seq=13 "} {
		if n := strings.Count(logBuf.String(), seq); n != 2 {
			t.Errorf("%s reported %d times over two opens, want 2:\n%.2000s", seq, n, logBuf.String())
		}
	}
}

// FuzzDecodeEvent: any event the archive is given, of any depth and size,
// is stored as a record that either reads back as it was or is refused as
// undecodable (never a panic, never a different event); one that is within
// the decoder's depth and MaxRecordSize always reads back.
func FuzzDecodeEvent(f *testing.F) {
	f.Add([]byte(`{"a":[1,2,{"b":null}]}`), "tag.create", "f30", 3)
	f.Add([]byte(`"x"`), "", "", 9999)
	f.Add([]byte(`[]`), "a\x00b", "\xff", 10001)
	f.Add([]byte(`{"k":`), "build.tag", "v", 100)
	f.Fuzz(func(t *testing.T, body []byte, address, prop string, depth int) {
		// Near the decoder's limit, or shallow (most runs: they are fast).
		if depth = max(0, min(depth, 10010)); depth < 9990 {
			depth %= 64
		}
		if !json.Valid(body) {
			body, _ = json.Marshal(string(body))
		}
		// Wrapped depth levels deep, as a hostile value was.
		wrapped := []byte(strings.Repeat("[", depth) + string(body) + strings.Repeat("]", depth))
		ev := Event{Seq: 7, ID: 3, Address: address, Props: map[string]any{"p": prop}, Body: wrapped, Time: time.Unix(1700000000, 5).UTC()}
		rec, err := encodeEvent(&ev)
		if err != nil {
			return // not encodable: PutBatch refuses it, nothing is stored
		}
		got, err := decodeEvent(rec)
		if err != nil {
			if depth+strings.Count(string(body), "[")+strings.Count(string(body), "{") < 9000 && len(rec) <= MaxRecordSize {
				t.Fatalf("a record %d levels deep does not decode: %v", depth, err)
			}
			return
		}
		var a, b bytes.Buffer
		if json.Compact(&a, got.Body) != nil || json.Compact(&b, wrapped) != nil || a.String() != b.String() ||
			got.Seq != 7 || got.ID != 3 || !got.Time.Equal(ev.Time) {
			t.Fatalf("record read back as %+v", got)
		}
	})
}
