// Package storage holds kojibus' Pebble-backed stores: the event archive
// (history that does not belong in the KV state bucket).
//
// # Archive key layout
//
// Every event of KOJI_EVENTS is stored once under its stream sequence, and
// indexed by secondary keys that all end in the sequence, so that each index
// entry list ("postings") is sorted by sequence within its prefix:
//
//	'e' seq                              -> JSON record (the event)
//	'a' enc(address) seq                 -> ""   events by address
//	'A' enc(address)                     -> ""   distinct addresses (glob/prefix expansion)
//	'p' enc(name) enc(value) seq         -> ""   events by property value
//	'i' id seq                           -> ""   events by Koji event id
//	't' time seq                         -> ""   events by time
//
// seq, id and time are 8-byte big-endian (time: Unix nanoseconds with the
// sign bit flipped), enc() is an order-preserving, prefix-free byte string
// encoding (0x00 escaped as 0x00 0xFF, terminated by 0x00 0x01).
//
// A query intersects the postings of its address (the union over every
// address matching a glob or prefix) and of each property filter with a
// leapfrog join, within sequence bounds derived from the cursor and from the
// id and time indexes; only matching events are read. Ids and times grow
// with the stream sequence (the relay publishes in commit order), which is
// what lets id and time ranges become sequence bounds; the records are
// checked against them again, so a clock step can only lose events at the
// edge of a time range, never return wrong ones.
package storage

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

const (
	prefixEvent    = 'e'
	prefixAddress  = 'a'
	prefixAddrList = 'A'
	prefixProp     = 'p'
	prefixID       = 'i'
	prefixTime     = 't'

	// MaxLimit bounds one page of a query.
	MaxLimit = 1000
	// DefaultLimit is the page size when a filter gives none.
	DefaultLimit = 100
)

// Event is one archived event.
type Event struct {
	Seq     uint64          `json:"seq"` // KOJI_EVENTS stream sequence: the primary key
	ID      uint64          `json:"id"`  // Koji event id (the commit sequence; shared by the events of one commit)
	Address string          `json:"address"`
	Props   map[string]any  `json:"props"`
	Body    json.RawMessage `json:"body"`
	Time    time.Time       `json:"time"`
}

// Order of query results.
type Order int

const (
	// Asc returns the oldest events first.
	Asc Order = iota
	// Desc returns the newest events first.
	Desc
)

// Filter selects events. Zero fields do not filter.
type Filter struct {
	// Address is an exact protonmsg address ("build.tag"), an fnmatch glob
	// ("build.*", "*.tag", "task.[oc]*") or a NATS-style prefix ending in ">" ("repo.>").
	Address string
	// AfterID and BeforeID bound the Koji event id, exclusive (0 = no bound).
	AfterID, BeforeID uint64
	// Since (inclusive) and Until (exclusive) bound the event time.
	Since, Until time.Time
	// Props: every named property must render as the value (PropString).
	Props map[string]string
	// Limit is the page size (default DefaultLimit, at most MaxLimit).
	Limit int
	Order Order
	// Cursor continues a previous query with the same filter.
	Cursor string
}

// ErrBadCursor is returned for a cursor that Query did not produce.
var ErrBadCursor = errors.New("storage: malformed cursor")

// ErrBadAddress is returned for a malformed address glob.
var ErrBadAddress = errors.New("storage: bad address pattern")

// Archive is the Pebble-backed event archive. It is safe for concurrent use.
type Archive struct {
	db *pebble.DB
	mu sync.Mutex // serialises Put (existence check + batch)
	// top is the highest sequence stored: an event above it cannot be
	// there yet, so only a replay costs an existence check.
	top uint64
}

// Open opens (creating if needed) the archive in dir. log may be nil.
func Open(dir string, log *slog.Logger) (*Archive, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{log.With("component", "archive")}})
	if err != nil {
		return nil, fmt.Errorf("storage: open archive %s: %w", dir, err)
	}
	a := &Archive{db: db}
	last, ok, err := a.Last()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open archive %s: %w", dir, err)
	}
	if ok {
		a.top = last.Seq
	}
	return a, nil
}

// Close flushes and closes the archive.
func (a *Archive) Close() error {
	if err := a.db.Close(); err != nil {
		return fmt.Errorf("storage: close archive: %w", err)
	}
	return nil
}

// Put stores an event, fsynced. It is idempotent by stream sequence: an
// event whose sequence is already stored is left as it is.
func (a *Archive) Put(ev Event) error { return a.PutBatch([]Event{ev}) }

// PutBatch stores events with one fsync; already stored sequences are skipped.
func (a *Archive) PutBatch(events []Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	b := a.db.NewBatch()
	defer b.Close()
	seen := map[uint64]bool{}
	top := a.top
	for i := range events {
		ev := &events[i]
		if ev.Seq == 0 {
			return errors.New("storage: event without stream sequence")
		}
		if seen[ev.Seq] {
			continue
		}
		seen[ev.Seq] = true
		if ev.Seq <= a.top {
			exists, err := a.has(eventKey(ev.Seq))
			if err != nil {
				return err
			}
			if exists {
				continue
			}
		}
		if err := stage(b, ev); err != nil {
			return err
		}
		top = max(top, ev.Seq)
	}
	if b.Empty() {
		return nil
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	a.top = top
	return nil
}

func (a *Archive) has(key []byte) (bool, error) {
	_, closer, err := a.db.Get(key)
	if errors.Is(err, pebble.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: %w", err)
	}
	closer.Close()
	return true, nil
}

func stage(b *pebble.Batch, ev *Event) error {
	rec := *ev
	if len(rec.Body) == 0 {
		rec.Body = json.RawMessage("null")
	}
	if rec.Props == nil {
		rec.Props = map[string]any{}
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("storage: encode event %d: %w", ev.Seq, err)
	}
	set := func(k []byte, v []byte) error {
		if err := b.Set(k, v, nil); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		return nil
	}
	if err := set(eventKey(ev.Seq), val); err != nil {
		return err
	}
	addr := encBytes([]byte{prefixAddress}, ev.Address)
	if err := set(appendU64(addr, ev.Seq), nil); err != nil {
		return err
	}
	if err := set(encBytes([]byte{prefixAddrList}, ev.Address), nil); err != nil {
		return err
	}
	for name, v := range ev.Props {
		k := encBytes(encBytes([]byte{prefixProp}, name), PropString(v))
		if err := set(appendU64(k, ev.Seq), nil); err != nil {
			return err
		}
	}
	if err := set(appendU64(appendU64([]byte{prefixID}, ev.ID), ev.Seq), nil); err != nil {
		return err
	}
	return set(appendU64(appendU64([]byte{prefixTime}, timeKey(ev.Time)), ev.Seq), nil)
}

// Last returns the event with the highest stream sequence.
func (a *Archive) Last() (Event, bool, error) {
	it, err := a.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixEvent}, UpperBound: []byte{prefixEvent + 1}})
	if err != nil {
		return Event{}, false, fmt.Errorf("storage: %w", err)
	}
	defer it.Close()
	if !it.Last() {
		return Event{}, false, it.Error()
	}
	ev, err := decodeEvent(it.Value())
	return ev, err == nil, err
}

// LastBefore returns the newest event (by time) strictly before t.
func (a *Archive) LastBefore(t time.Time) (Event, bool, error) {
	snap := a.db.NewSnapshot()
	defer snap.Close()
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixTime}, UpperBound: appendU64([]byte{prefixTime}, timeKey(t))})
	if err != nil {
		return Event{}, false, fmt.Errorf("storage: %w", err)
	}
	defer it.Close()
	if !it.Last() {
		return Event{}, false, it.Error()
	}
	return getEvent(snap, lastU64(it.Key()))
}

// FirstOfID returns the first event (lowest sequence) carrying Koji event id.
func (a *Archive) FirstOfID(id uint64) (Event, bool, error) {
	snap := a.db.NewSnapshot()
	defer snap.Close()
	lo := appendU64([]byte{prefixID}, id)
	it, err := snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return Event{}, false, fmt.Errorf("storage: %w", err)
	}
	defer it.Close()
	if !it.First() {
		return Event{}, false, it.Error()
	}
	return getEvent(snap, lastU64(it.Key()))
}

func getEvent(snap *pebble.Snapshot, seq uint64) (Event, bool, error) {
	v, closer, err := snap.Get(eventKey(seq))
	if errors.Is(err, pebble.ErrNotFound) {
		return Event{}, false, fmt.Errorf("storage: index points at missing event %d", seq)
	}
	if err != nil {
		return Event{}, false, fmt.Errorf("storage: %w", err)
	}
	defer closer.Close()
	ev, err := decodeEvent(v)
	return ev, err == nil, err
}

func decodeEvent(v []byte) (Event, error) {
	var ev Event
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(&ev); err != nil {
		return Event{}, fmt.Errorf("storage: decode event: %w", err)
	}
	return ev, nil
}

// Query returns one page of events matching f, and the cursor of the next
// page ("" when there is none). Paging is stable: events archived while a
// client pages do not shift or repeat pages (they are appended at the end).
func (a *Archive) Query(f Filter) ([]Event, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	if limit > MaxLimit {
		limit = MaxLimit
	}
	desc := f.Order == Desc
	var glob string
	var prefix string
	exact := ""
	isPrefix := false
	switch {
	case f.Address == "":
	case strings.HasSuffix(f.Address, ">"):
		prefix, isPrefix = strings.TrimSuffix(f.Address, ">"), true
	case strings.ContainsAny(f.Address, "*?["):
		if _, err := path.Match(f.Address, ""); err != nil {
			return nil, "", fmt.Errorf("%w %q: %v", ErrBadAddress, f.Address, err)
		}
		glob = f.Address
		prefix = f.Address[:strings.IndexAny(f.Address, "*?[")]
		isPrefix = true
	default:
		exact = f.Address
	}

	snap := a.db.NewSnapshot()
	defer snap.Close()
	q := &query{snap: snap, desc: desc}
	defer q.closeAll()

	// Sequence bounds [lo, hi].
	lo, hi := uint64(1), uint64(math.MaxUint64)
	if f.Cursor != "" {
		c, err := strconv.ParseUint(f.Cursor, 10, 64)
		if err != nil || c == 0 {
			return nil, "", ErrBadCursor
		}
		if desc {
			hi = c - 1
		} else {
			lo = c + 1
		}
	}
	if f.AfterID > 0 {
		s, ok, err := q.boundSeq(appendU64([]byte{prefixID}, f.AfterID+1), []byte{prefixID + 1}, false)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			return nil, "", nil
		}
		lo = max(lo, s)
	}
	if f.BeforeID > 0 {
		s, ok, err := q.boundSeq([]byte{prefixID}, appendU64([]byte{prefixID}, f.BeforeID), true)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			return nil, "", nil
		}
		hi = min(hi, s)
	}
	if !f.Since.IsZero() {
		s, ok, err := q.boundSeq(appendU64([]byte{prefixTime}, timeKey(f.Since)), []byte{prefixTime + 1}, false)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			return nil, "", nil
		}
		lo = max(lo, s)
	}
	if !f.Until.IsZero() {
		s, ok, err := q.boundSeq([]byte{prefixTime}, appendU64([]byte{prefixTime}, timeKey(f.Until)), true)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			return nil, "", nil
		}
		hi = min(hi, s)
	}
	if lo > hi {
		return nil, "", nil
	}

	// Postings to intersect.
	var parts []postings
	if exact != "" {
		p, err := q.list(encBytes([]byte{prefixAddress}, exact))
		if err != nil {
			return nil, "", err
		}
		parts = append(parts, p)
	} else if isPrefix {
		addrs, err := q.addresses(prefix, glob)
		if err != nil {
			return nil, "", err
		}
		if len(addrs) == 0 {
			return nil, "", nil
		}
		var u union
		for _, ad := range addrs {
			p, err := q.list(encBytes([]byte{prefixAddress}, ad))
			if err != nil {
				return nil, "", err
			}
			u.parts = append(u.parts, p)
		}
		u.desc = desc
		parts = append(parts, &u)
	}
	names := make([]string, 0, len(f.Props))
	for n := range f.Props {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p, err := q.list(encBytes(encBytes([]byte{prefixProp}, n), f.Props[n]))
		if err != nil {
			return nil, "", err
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		p, err := q.list([]byte{prefixEvent})
		if err != nil {
			return nil, "", err
		}
		parts = append(parts, p)
	}
	var root postings = parts[0]
	if len(parts) > 1 {
		root = &intersection{parts: parts, desc: desc}
	}

	var out []Event
	target := lo
	if desc {
		target = hi
	}
	for {
		seq, ok, err := root.seek(target)
		if err != nil {
			return nil, "", err
		}
		if !ok || seq < lo || seq > hi {
			return out, "", nil
		}
		if len(out) == limit {
			// There is at least one more: hand out a cursor.
			return out, strconv.FormatUint(out[len(out)-1].Seq, 10), nil
		}
		ev, _, err := getEvent(snap, seq)
		if err != nil {
			return nil, "", err
		}
		if matches(&ev, &f) {
			out = append(out, ev)
		}
		if desc {
			if seq == 0 || seq-1 < lo {
				return out, "", nil
			}
			target = seq - 1
		} else {
			if seq == math.MaxUint64 {
				return out, "", nil
			}
			target = seq + 1
		}
	}
}

// matches re-checks the bounds that were turned into sequence bounds.
func matches(ev *Event, f *Filter) bool {
	if f.AfterID > 0 && ev.ID <= f.AfterID {
		return false
	}
	if f.BeforeID > 0 && ev.ID >= f.BeforeID {
		return false
	}
	if !f.Since.IsZero() && ev.Time.Before(f.Since) {
		return false
	}
	if !f.Until.IsZero() && !ev.Time.Before(f.Until) {
		return false
	}
	return true
}

type query struct {
	snap  *pebble.Snapshot
	desc  bool
	iters []*pebble.Iterator
}

func (q *query) iter(lo, hi []byte) (*pebble.Iterator, error) {
	it, err := q.snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	q.iters = append(q.iters, it)
	return it, nil
}

func (q *query) closeAll() {
	for _, it := range q.iters {
		_ = it.Close()
	}
}

// boundSeq returns the sequence of the first (or, last, the last) index
// entry in [lo, hi).
func (q *query) boundSeq(lo, hi []byte, last bool) (uint64, bool, error) {
	it, err := q.iter(lo, hi)
	if err != nil {
		return 0, false, err
	}
	var ok bool
	if last {
		ok = it.Last()
	} else {
		ok = it.First()
	}
	if !ok {
		return 0, false, it.Error()
	}
	return lastU64(it.Key()), true, nil
}

// addresses lists the distinct archived addresses with a prefix (matching glob, if any).
func (q *query) addresses(prefix, glob string) ([]string, error) {
	lo := append([]byte{prefixAddrList}, escape(prefix)...)
	it, err := q.iter(lo, prefixEnd(lo))
	if err != nil {
		return nil, err
	}
	var out []string
	for ok := it.First(); ok; ok = it.Next() {
		ad, err := decBytes(it.Key()[1:])
		if err != nil {
			return nil, err
		}
		if glob != "" {
			if m, _ := path.Match(glob, ad); !m {
				continue
			}
		}
		out = append(out, ad)
	}
	return out, it.Error()
}

// list returns the postings under a key prefix (each key = prefix + seq).
func (q *query) list(prefix []byte) (*list, error) {
	it, err := q.iter(prefix, prefixEnd(prefix))
	if err != nil {
		return nil, err
	}
	return &list{it: it, prefix: prefix, desc: q.desc}, nil
}

// postings is a sequence-ordered list of event sequences. seek returns the
// first sequence >= target (ascending) or the last <= target (descending).
type postings interface {
	seek(target uint64) (uint64, bool, error)
}

type list struct {
	it     *pebble.Iterator
	prefix []byte
	desc   bool
}

func (l *list) seek(target uint64) (uint64, bool, error) {
	var ok bool
	if l.desc {
		if target == math.MaxUint64 {
			ok = l.it.Last()
		} else {
			ok = l.it.SeekLT(appendU64(bytes.Clone(l.prefix), target+1))
		}
	} else {
		ok = l.it.SeekGE(appendU64(bytes.Clone(l.prefix), target))
	}
	if !ok {
		return 0, false, l.it.Error()
	}
	k := l.it.Key()
	if len(k) != len(l.prefix)+8 {
		return 0, false, fmt.Errorf("storage: malformed index key %q", k)
	}
	return lastU64(k), true, nil
}

type union struct {
	parts []postings
	desc  bool
}

func (u *union) seek(target uint64) (uint64, bool, error) {
	var best uint64
	found := false
	for _, p := range u.parts {
		s, ok, err := p.seek(target)
		if err != nil {
			return 0, false, err
		}
		if !ok {
			continue
		}
		if !found || (!u.desc && s < best) || (u.desc && s > best) {
			best, found = s, true
		}
	}
	return best, found, nil
}

type intersection struct {
	parts []postings
	desc  bool
}

// seek is a leapfrog join: move every list to the candidate until all agree.
func (x *intersection) seek(target uint64) (uint64, bool, error) {
	cand := target
	for {
		agreed := true
		for _, p := range x.parts {
			s, ok, err := p.seek(cand)
			if err != nil || !ok {
				return 0, false, err
			}
			if s != cand {
				cand = s
				agreed = false
				break
			}
		}
		if agreed {
			return cand, true, nil
		}
	}
}

// PropString renders a property value as index text (as protonmsg's Python
// would print it: True/False, integers without a decimal point).
func PropString(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case json.Number:
		// 7, 7.0 and 7e0 are one value: render like the float64 they decode to,
		// but keep integers exact beyond 2^53.
		if n, err := x.Int64(); err == nil {
			return strconv.FormatInt(n, 10)
		}
		if f, err := x.Float64(); err == nil {
			return strconv.FormatFloat(f, 'f', -1, 64)
		}
		return x.String()
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case bool:
		if x {
			return "True"
		}
		return "False"
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

func eventKey(seq uint64) []byte { return appendU64([]byte{prefixEvent}, seq) }

func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func lastU64(k []byte) uint64 { return binary.BigEndian.Uint64(k[len(k)-8:]) }

func timeKey(t time.Time) uint64 { return uint64(t.UnixNano()) ^ (1 << 63) }

// escape is enc() without its terminator: a prefix of the encoding of every
// string starting with s.
func escape(s string) []byte {
	out := make([]byte, 0, len(s)+2)
	for i := 0; i < len(s); i++ {
		out = append(out, s[i])
		if s[i] == 0 {
			out = append(out, 0xFF)
		}
	}
	return out
}

func encBytes(b []byte, s string) []byte {
	b = append(b, escape(s)...)
	return append(b, 0x00, 0x01)
}

func decBytes(b []byte) (string, error) {
	var out []byte
	for i := 0; i < len(b); i++ {
		if b[i] != 0 {
			out = append(out, b[i])
			continue
		}
		if i+1 >= len(b) {
			break
		}
		switch b[i+1] {
		case 0xFF:
			out = append(out, 0)
			i++
		case 0x01:
			return string(out), nil
		}
	}
	return "", fmt.Errorf("storage: malformed key %q", b)
}

// prefixEnd is the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

type pebbleLogger struct{ log *slog.Logger }

func (l pebbleLogger) Infof(format string, args ...any) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Errorf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
}

func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.Error(fmt.Sprintf(format, args...))
	panic(fmt.Sprintf("pebble: "+format, args...))
}
