package storage

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// fixture: 3 commits per address family; ids are commit sequences (not
// dense, shared by the events of one commit), times one second apart.
func fixture() []Event {
	type spec struct {
		id    uint64
		addr  string
		props map[string]any
	}
	specs := []spec{
		{10, "tag.create", map[string]any{"type": "TagCreate", "tag": "f30", "user": "kojiadmin"}},
		{12, "tag.create", map[string]any{"type": "TagCreate", "tag": "f31", "user": "kojiadmin"}},
		{15, "build.tag", map[string]any{"type": "BuildTag", "tag": "f30", "build": 7, "draft": false}},
		{15, "build.untag", map[string]any{"type": "BuildUntag", "tag": "f31", "build": 7}}, // same commit
		{20, "user.create", map[string]any{"type": "UserCreate", "user": "alice"}},
		{23, "task.open", map[string]any{"type": "TaskStateChange", "id": 100, "method": "build"}},
		{24, "task.closed", map[string]any{"type": "TaskStateChange", "id": 100, "method": "build"}},
		{30, "build.tag", map[string]any{"type": "BuildTag", "tag": "f30", "build": 8, "draft": true}},
		{31, "tag\x00odd", map[string]any{"type": "Odd", "na\x00me": "v\x00al"}},
		{40, "repo.done", map[string]any{"type": "RepoDone", "tag": "f30", "repo_id": 3}},
	}
	var out []Event
	for i, s := range specs {
		body, _ := json.Marshal(map[string]any{"n": i})
		out = append(out, Event{
			Seq: uint64(i + 1), ID: s.id, Address: s.addr, Props: s.props, Body: body,
			Time: t0.Add(time.Duration(i) * time.Second),
		})
	}
	return out
}

// openTemp opens a new archive with epochs of two events, so that every
// query crosses epochs; openTempBits with epochs of 2^bits.
func openTemp(t *testing.T) (*Archive, string) {
	t.Helper()
	return openTempBits(t, 1)
}

func openTempBits(t *testing.T, bits uint) (*Archive, string) {
	t.Helper()
	dir := t.TempDir()
	a, err := open(dir, nil, bits)
	if err != nil {
		t.Fatal(err)
	}
	return a, dir
}

func seqs(evs []Event) []uint64 {
	out := []uint64{}
	for _, e := range evs {
		out = append(out, e.Seq)
	}
	return out
}

// epochSizes are the epoch sizes the query tests run with: 2 and 8 events
// (the fixture's ten events in many epochs) and the default.
var epochSizes = []uint{1, 3, defaultEpochBits}

func TestQueryFilters(t *testing.T) {
	for _, bits := range epochSizes {
		t.Run(fmt.Sprintf("epoch-bits-%d", bits), func(t *testing.T) { testQueryFilters(t, bits) })
	}
}

func testQueryFilters(t *testing.T, bits uint) {
	a, _ := openTempBits(t, bits)
	defer a.Close()
	if err := a.PutBatch(fixture()); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		f    Filter
		want []uint64
	}{
		{"all", Filter{}, []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}},
		{"all desc", Filter{Order: Desc}, []uint64{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}},
		{"exact address", Filter{Address: "build.tag"}, []uint64{3, 8}},
		{"exact address no match", Filter{Address: "build"}, []uint64{}},
		{"unknown address", Filter{Address: "nope.nope"}, []uint64{}},
		{"nats prefix", Filter{Address: "build.>"}, []uint64{3, 4, 8}},
		{"glob prefix", Filter{Address: "task.*"}, []uint64{6, 7}},
		{"glob suffix", Filter{Address: "*.tag"}, []uint64{3, 8}},
		{"glob class", Filter{Address: "task.[c]*"}, []uint64{7}},
		{"glob desc", Filter{Address: "*.create", Order: Desc}, []uint64{5, 2, 1}},
		{"address with NUL", Filter{Address: "tag\x00odd"}, []uint64{9}},
		{"prop equals", Filter{Props: map[string]string{"tag": "f30"}}, []uint64{1, 3, 8, 10}},
		{"prop int", Filter{Props: map[string]string{"build": "7"}}, []uint64{3, 4}},
		{"prop bool", Filter{Props: map[string]string{"draft": "True"}}, []uint64{8}},
		{"prop with NUL", Filter{Props: map[string]string{"na\x00me": "v\x00al"}}, []uint64{9}},
		{"two props", Filter{Props: map[string]string{"tag": "f30", "type": "BuildTag"}}, []uint64{3, 8}},
		{"two props none", Filter{Props: map[string]string{"tag": "f31", "type": "BuildTag"}}, []uint64{}},
		{"address and prop", Filter{Address: "build.>", Props: map[string]string{"tag": "f31"}}, []uint64{4}},
		{"glob and prop desc", Filter{Address: "*.tag", Props: map[string]string{"build": "8"}, Order: Desc}, []uint64{8}},
		{"after id", Filter{AfterID: 15}, []uint64{5, 6, 7, 8, 9, 10}},
		{"after id not present", Filter{AfterID: 13}, []uint64{3, 4, 5, 6, 7, 8, 9, 10}},
		{"before id", Filter{BeforeID: 15}, []uint64{1, 2}},
		{"before id not present", Filter{BeforeID: 16}, []uint64{1, 2, 3, 4}},
		{"id range", Filter{AfterID: 12, BeforeID: 30}, []uint64{3, 4, 5, 6, 7}},
		{"id range empty", Filter{AfterID: 30, BeforeID: 31}, []uint64{}},
		{"after last id", Filter{AfterID: 40}, []uint64{}},
		{"since", Filter{Since: t0.Add(7 * time.Second)}, []uint64{8, 9, 10}},
		{"until", Filter{Until: t0.Add(2 * time.Second)}, []uint64{1, 2}},
		{"time range with address", Filter{Address: "build.tag", Since: t0.Add(time.Second), Until: t0.Add(8 * time.Second)}, []uint64{3, 8}},
		{"time range between events", Filter{Since: t0.Add(1500 * time.Millisecond), Until: t0.Add(1600 * time.Millisecond)}, []uint64{}},
		{"everything", Filter{Address: "build.*", Props: map[string]string{"tag": "f30"}, AfterID: 10, BeforeID: 31, Since: t0, Until: t0.Add(time.Hour), Order: Desc}, []uint64{8, 3}},
		{"limit", Filter{Limit: 3}, []uint64{1, 2, 3}},
		{"limit desc", Filter{Limit: 2, Order: Desc, Address: "build.>"}, []uint64{8, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := a.Query(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(seqs(got), tt.want) {
				t.Fatalf("got %v, want %v", seqs(got), tt.want)
			}
		})
	}
}

func TestQueryReturnsWholeEvent(t *testing.T) {
	a, _ := openTemp(t)
	defer a.Close()
	evs := fixture()
	if err := a.PutBatch(evs); err != nil {
		t.Fatal(err)
	}
	got, _, err := a.Query(Filter{Address: "build.untag"})
	if err != nil || len(got) != 1 {
		t.Fatalf("got %v, %v", got, err)
	}
	e := got[0]
	if e.Seq != 4 || e.ID != 15 || e.Address != "build.untag" || !e.Time.Equal(evs[3].Time) || string(e.Body) != `{"n":3}` {
		t.Fatalf("event = %+v", e)
	}
	if e.Props["tag"] != "f31" || PropString(e.Props["build"]) != "7" {
		t.Fatalf("props = %#v", e.Props)
	}
}

func TestQueryErrors(t *testing.T) {
	a, _ := openTemp(t)
	defer a.Close()
	if err := a.PutBatch(fixture()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"x", "0", "-1", "1.5"} {
		if _, _, err := a.Query(Filter{Cursor: c}); err != ErrBadCursor {
			t.Errorf("cursor %q: err = %v, want ErrBadCursor", c, err)
		}
	}
	if _, _, err := a.Query(Filter{Address: "build.[x"}); err == nil {
		t.Error("bad glob accepted")
	}
	if err := a.Put(Event{ID: 1, Address: "x"}); err == nil {
		t.Error("event without sequence accepted")
	}
}

// Paging with a cursor visits every matching event exactly once, in order,
// also while new events are appended between pages.
func TestQueryPagingStable(t *testing.T) {
	for _, order := range []Order{Asc, Desc} {
		for _, f := range []Filter{{}, {Address: "build.>"}, {Props: map[string]string{"tag": "f30"}}} {
			t.Run(fmt.Sprintf("order%d-%s-%v", order, f.Address, f.Props), func(t *testing.T) {
				a, _ := openTemp(t)
				defer a.Close()
				base := fixture()
				if err := a.PutBatch(base); err != nil {
					t.Fatal(err)
				}
				f.Order = order
				want, _, err := a.Query(f)
				if err != nil {
					t.Fatal(err)
				}
				var got []uint64
				f.Limit = 2
				var appended []uint64
				for page := 0; page < 50; page++ {
					evs, cursor, err := a.Query(f)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, seqs(evs)...)
					if cursor == "" {
						break
					}
					if page < 3 {
						// A matching event archived between pages: ascending
						// paging reaches it at the end, descending never sees it.
						extra := base[7] // build.tag, tag=f30
						extra.Seq = uint64(100 + page)
						extra.ID, extra.Time = extra.Seq, t0.Add(time.Hour+time.Duration(page))
						if err := a.Put(extra); err != nil {
							t.Fatal(err)
						}
						appended = append(appended, extra.Seq)
					}
					if len(evs) != 2 {
						t.Fatalf("short page %v with cursor %q", seqs(evs), cursor)
					}
					f.Cursor = cursor
				}
				wantSeqs := seqs(want)
				if order == Asc {
					wantSeqs = append(wantSeqs, appended...)
				}
				if !reflect.DeepEqual(got, wantSeqs) {
					t.Fatalf("pages = %v, want %v", got, wantSeqs)
				}
			})
		}
	}
}

func TestPutIdempotent(t *testing.T) {
	a, _ := openTemp(t)
	defer a.Close()
	evs := fixture()
	if err := a.PutBatch(evs); err != nil {
		t.Fatal(err)
	}
	// A redelivered event (same sequence) changes nothing, even with other
	// content; a batch with duplicates inside stores each sequence once.
	dup := evs[2]
	dup.Address, dup.Props = "changed", map[string]any{"tag": "other"}
	if err := a.Put(dup); err != nil {
		t.Fatal(err)
	}
	if err := a.PutBatch([]Event{evs[0], evs[0], evs[9]}); err != nil {
		t.Fatal(err)
	}
	all, _, err := a.Query(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(seqs(all), []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("after re-put: %v", seqs(all))
	}
	for _, f := range []Filter{{Address: "changed"}, {Props: map[string]string{"tag": "other"}}} {
		if got, _, _ := a.Query(f); len(got) != 0 {
			t.Fatalf("re-put indexed %v: %v", f, seqs(got))
		}
	}
	if got, _, _ := a.Query(Filter{Address: "build.tag"}); !reflect.DeepEqual(seqs(got), []uint64{3, 8}) {
		t.Fatalf("build.tag after re-put: %v", seqs(got))
	}
}

func TestReopenKeepsData(t *testing.T) {
	a, dir := openTemp(t)
	evs := fixture()
	if err := a.PutBatch(evs[:6]); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	last, ok, err := a.Last()
	if err != nil || !ok || last.Seq != 6 || last.ID != 23 {
		t.Fatalf("Last after reopen = %+v %v %v", last, ok, err)
	}
	if err := a.PutBatch(evs); err != nil { // resume with overlap
		t.Fatal(err)
	}
	got, _, err := a.Query(Filter{Props: map[string]string{"tag": "f30"}})
	if err != nil || !reflect.DeepEqual(seqs(got), []uint64{1, 3, 8, 10}) {
		t.Fatalf("after reopen: %v %v", seqs(got), err)
	}
}

func TestLastAndLookups(t *testing.T) {
	for _, bits := range epochSizes {
		t.Run(fmt.Sprintf("epoch-bits-%d", bits), func(t *testing.T) { testLastAndLookups(t, bits) })
	}
}

func testLastAndLookups(t *testing.T, bits uint) {
	a, _ := openTempBits(t, bits)
	defer a.Close()
	if _, ok, err := a.Last(); ok || err != nil {
		t.Fatalf("Last of empty archive: %v %v", ok, err)
	}
	if _, ok, err := a.FirstOfID(1); ok || err != nil {
		t.Fatalf("FirstOfID on empty archive: %v %v", ok, err)
	}
	evs := fixture()
	if err := a.PutBatch(evs); err != nil {
		t.Fatal(err)
	}
	last, ok, err := a.Last()
	if err != nil || !ok || last.Seq != 10 || last.ID != 40 {
		t.Fatalf("Last = %+v %v %v", last, ok, err)
	}
	tests := []struct {
		before time.Time
		seq    uint64
		ok     bool
	}{
		{t0, 0, false},
		{t0.Add(time.Nanosecond), 1, true},
		{t0.Add(3 * time.Second), 3, true},
		{t0.Add(3*time.Second + 1), 4, true},
		{t0.Add(time.Hour), 10, true},
	}
	for _, tt := range tests {
		ev, ok, err := a.LastBefore(tt.before)
		if err != nil || ok != tt.ok || (ok && ev.Seq != tt.seq) {
			t.Errorf("LastBefore(%v) = %d %v %v, want %d %v", tt.before.Sub(t0), ev.Seq, ok, err, tt.seq, tt.ok)
		}
	}
	for id, seq := range map[uint64]uint64{10: 1, 15: 3, 40: 10, 11: 0, 41: 0} {
		ev, ok, err := a.FirstOfID(id)
		if err != nil || ok != (seq != 0) || ev.Seq != seq {
			t.Errorf("FirstOfID(%d) = %d %v %v, want %d", id, ev.Seq, ok, err, seq)
		}
	}
}

// stageV1 writes an event in the first layout (no epochs), as kojibus
// before the layout with epochs stored it.
func stageV1(t *testing.T, b *pebble.Batch, ev Event) {
	t.Helper()
	if ev.Props == nil {
		ev.Props = map[string]any{}
	}
	val, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	set := func(k []byte) {
		if err := b.Set(k, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Set(appendU64([]byte{prefixEvent}, ev.Seq), val, nil); err != nil {
		t.Fatal(err)
	}
	set(appendU64(encBytes([]byte{prefixAddress}, ev.Address), ev.Seq))
	set(encBytes([]byte{prefixAddrListV1}, ev.Address))
	for name, v := range ev.Props {
		set(appendU64(encBytes(encBytes([]byte{prefixProp}, name), PropString(v)), ev.Seq))
	}
	set(appendU64(appendU64([]byte{prefixID}, ev.ID), ev.Seq))
	set(appendU64(appendU64([]byte{prefixTime}, timeKey(ev.Time)), ev.Seq))
}

// TestOpenConvertsTheFirstLayout: an archive written before epochs is
// converted when opened: every query answers as a new archive of the same
// events does, no key of the old layout is left, and it stays converted.
func TestOpenConvertsTheFirstLayout(t *testing.T) {
	dir := t.TempDir()
	db, err := pebble.Open(dir, &pebble.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	for _, ev := range fixture() {
		stageV1(t, b, ev)
	}
	if err := b.Commit(pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	fresh, _ := openTemp(t)
	defer fresh.Close()
	if err := fresh.PutBatch(fixture()); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		a, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []Filter{{}, {Order: Desc}, {Address: "build.*"}, {Props: map[string]string{"tag": "f30"}}, {AfterID: 15, Until: t0.Add(8 * time.Second)}} {
			got, _, err := a.Query(f)
			want, _, _ := fresh.Query(f)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("round %d, %+v: got %v (%v), want %v", round, f, seqs(got), err, seqs(want))
			}
		}
		if ev, ok, err := a.FirstOfID(15); err != nil || !ok || ev.Seq != 3 {
			t.Errorf("round %d: FirstOfID(15) = %d %v %v", round, ev.Seq, ok, err)
		}
		it, err := a.db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		for ok := it.First(); ok; ok = it.Next() {
			if k := it.Key(); k[0] != prefixEpoch && k[0] != prefixAddrName && k[0] != keyFormat {
				t.Errorf("round %d: key of the first layout left: %q", round, k)
			}
		}
		_ = it.Close()
		if err := a.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestAnAddressIsListedOnceWritten: the 'N' key of an address is written
// with its first event only, and an address of a batch that failed to
// commit is written with the next.
func TestAnAddressIsListedOnceWritten(t *testing.T) {
	a, _ := openTemp(t)
	defer a.Close()
	evs := fixture()
	if err := a.PutBatch(evs[:3]); err != nil {
		t.Fatal(err)
	}
	if len(a.staged) != 0 || !a.addrs["tag.create"] || !a.addrs["build.tag"] || a.addrs["user.create"] {
		t.Fatalf("after the first batch: staged %v, addresses %v", a.staged, a.addrs)
	}
	if err := a.PutBatch([]Event{evs[3], {Address: "bad"}}); err == nil { // no sequence: refused
		t.Fatal("an event without a sequence was stored")
	}
	if a.addrs["build.untag"] {
		t.Fatal("the address of a refused batch was noted as written")
	}
	if err := a.PutBatch(evs); err != nil {
		t.Fatal(err)
	}
	got, _, err := a.Query(Filter{Address: "build.*"})
	if err != nil || !reflect.DeepEqual(seqs(got), []uint64{3, 4, 8}) {
		t.Fatalf("build.* = %v %v", seqs(got), err)
	}
}
