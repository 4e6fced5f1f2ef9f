// Package storage holds kojibus' Pebble-backed stores: the event archive
// (history that does not belong in the KV state bucket).
//
// # Archive key layout
//
// Every event of KOJI_EVENTS is stored once under its stream sequence, and
// indexed by secondary keys that all end in the sequence, so that each index
// entry list ("postings") is sorted by sequence within its prefix. Every key
// of an event starts with the epoch of its sequence (epochs.go says why):
//
//	'E' epoch 'e' seq                      -> JSON record (the event)
//	'E' epoch 'a' enc(address) seq         -> ""   events by address
//	'E' epoch 'p' enc(name) enc(value) seq -> ""   events by property value
//	'E' epoch 'i' id seq                   -> ""   events by Koji event id
//	'E' epoch 't' time seq                 -> ""   events by time
//	'N' enc(address)                       -> ""   distinct addresses (glob/prefix expansion)
//	'V'                                    -> the layout's version and epoch size
//
// epoch is 4 bytes big-endian (seq >> epoch bits), seq, id and time 8
// (time: Unix nanoseconds with the sign bit flipped), enc() is an
// order-preserving, prefix-free byte string encoding (0x00 escaped as
// 0x00 0xFF, terminated by 0x00 0x01). An archive of the first layout (the
// same keys without 'E' epoch, and 'A' for 'N') is converted when opened.
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
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

const (
	// Within an epoch (and, in the first layout, at the top).
	prefixEvent   = 'e'
	prefixAddress = 'a'
	prefixProp    = 'p'
	prefixID      = 'i'
	prefixTime    = 't'
	// The first layout's distinct addresses.
	prefixAddrListV1 = 'A'

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

// ErrUndecodable marks a stored record that cannot be read back (nested
// deeper than the JSON decoder goes, say, as an earlier version could store
// one). Queries and lookups skip such a record and report it once.
var ErrUndecodable = errors.New("storage: undecodable event")

// MaxRecordSize bounds a record that is read back: a larger one cannot be
// answered in any reply (NATS' payload limit is 8 MiB), so it is skipped as
// an undecodable one is. The hub never publishes an event that large.
const MaxRecordSize = 8 << 20

// ErrFailed is returned by PutBatch once the store failed a write (its
// disk was full): Pebble takes no more writes, and the archive is to be
// closed and opened again once the disk has room.
var ErrFailed = errors.New("storage: the archive failed a write; open it again")

// Archive is the Pebble-backed event archive. It is safe for concurrent use.
type Archive struct {
	db *pebble.DB
	mu sync.Mutex // serialises Put (existence check + batch)
	// failed is the write error after which Pebble takes no more writes.
	failed error
	// top is the highest sequence stored: an event above it cannot be
	// there yet, so only a replay costs an existence check.
	top uint64
	// bits is the epoch size (seq >> bits), fixed when the archive is made.
	bits uint
	// addrs are the addresses with an 'N' key, written once each; staged
	// those of the batch being staged, noted once it is committed.
	addrs  map[string]bool
	staged map[string]bool
	log    *slog.Logger
	// reported holds the sequences of undecodable records already logged.
	reported sync.Map
}

// Open opens (creating if needed) the archive in dir. log may be nil.
func Open(dir string, log *slog.Logger) (*Archive, error) {
	return open(dir, log, defaultEpochBits)
}

// open makes a new archive with epochs of 2^bits events; an existing one
// keeps its own.
func open(dir string, log *slog.Logger, bits uint) (*Archive, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	plog := log.With("component", "archive")
	db, err := pebble.Open(dir, &pebble.Options{Logger: pebbleLogger{plog}, EventListener: quietBackgroundErrors(plog)})
	if err != nil {
		return nil, fmt.Errorf("storage: open archive %s: %w", dir, err)
	}
	a := &Archive{db: db, bits: bits, addrs: map[string]bool{}, staged: map[string]bool{}, log: log}
	fail := func(err error) (*Archive, error) {
		_ = db.Close()
		return nil, fmt.Errorf("storage: open archive %s: %w", dir, err)
	}
	if err := a.loadFormat(log); err != nil {
		return fail(err)
	}
	if err := a.loadAddresses(); err != nil {
		return fail(err)
	}
	// The position only: the newest record need not decode for the
	// archive to open (and take the events after it).
	if a.top, err = a.LastSeq(); err != nil {
		return fail(err)
	}
	return a, nil
}

// loadFormat reads the layout's version and epoch size, writing them into a
// new archive, and converts an archive of the first layout.
func (a *Archive) loadFormat(log *slog.Logger) error {
	v, closer, err := a.db.Get([]byte{keyFormat})
	if err == nil {
		defer closer.Close()
		var f archiveFormat
		if err := json.Unmarshal(v, &f); err != nil || f.Format != formatVersion || f.EpochBits == 0 || f.EpochBits > 40 {
			return fmt.Errorf("unknown archive format %q", v)
		}
		a.bits = f.EpochBits
		return nil
	}
	if !errors.Is(err, pebble.ErrNotFound) {
		return err
	}
	return a.convertV1(log)
}

func (a *Archive) loadAddresses() error {
	it, err := a.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixAddrName}, UpperBound: []byte{prefixAddrName + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		ad, err := decBytes(it.Key()[1:])
		if err != nil {
			return err
		}
		a.addrs[ad] = true
	}
	return it.Error()
}

// convertV1 stores the events of the first layout (no epochs) in this one,
// then, in the batch that records the format, deletes the old keys; a
// conversion cut short starts again at the next open.
func (a *Archive) convertV1(log *slog.Logger) error {
	it, err := a.db.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixEvent}, UpperBound: []byte{prefixEvent + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	b := a.db.NewBatch()
	defer func() { b.Close() }()
	n := 0
	for ok := it.First(); ok; ok = it.Next() {
		ev, err := decodeEvent(it.Value())
		if err != nil {
			// Kept as it is, without its indexes: queries skip it.
			seq := lastU64(it.Key())
			a.report(seq, err)
			if err := b.Set(a.eventKey(seq), bytes.Clone(it.Value()), nil); err != nil {
				return err
			}
			continue
		}
		if err := a.stage(b, &ev); err != nil {
			return err
		}
		if n++; n%4096 == 0 {
			if err := b.Commit(pebble.NoSync); err != nil {
				return err
			}
			a.noteStaged()
			b.Close()
			b = a.db.NewBatch()
		}
	}
	if err := it.Error(); err != nil {
		return err
	}
	for _, p := range []byte{prefixAddrListV1, prefixAddress, prefixEvent, prefixID, prefixProp, prefixTime} {
		if err := b.DeleteRange([]byte{p}, []byte{p + 1}, nil); err != nil {
			return err
		}
	}
	f, _ := json.Marshal(archiveFormat{Format: formatVersion, EpochBits: a.bits})
	if err := b.Set([]byte{keyFormat}, f, nil); err != nil {
		return err
	}
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	a.noteStaged()
	if n > 0 {
		log.Info("archive: converted to the layout with epochs", "events", n, "epoch_bits", a.bits)
	}
	return nil
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
	defer a.clearStaged()
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
			exists, err := a.has(a.eventKey(ev.Seq))
			if err != nil {
				return err
			}
			if exists {
				continue
			}
		}
		if err := a.stage(b, ev); err != nil {
			return err
		}
		top = max(top, ev.Seq)
	}
	if b.Empty() {
		return nil
	}
	if err := a.commit(b); err != nil {
		return err
	}
	a.top = top
	a.noteStaged()
	return nil
}

// commit writes b, fsynced. A write Pebble's log cannot take (ENOSPC) is
// fatal to Pebble, which reports it through its logger's Fatalf, a panic:
// it becomes ErrFailed here, so a full disk stops the archive, not the hub.
func (a *Archive) commit(b *pebble.Batch) (err error) {
	if a.failed != nil {
		return a.failed
	}
	defer func() {
		if r := recover(); r != nil {
			a.failed = fmt.Errorf("%w: %v", ErrFailed, r)
			err = a.failed
		}
	}()
	if err := b.Commit(pebble.Sync); err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	return nil
}

// noteStaged records the addresses of a committed batch as written.
func (a *Archive) noteStaged() {
	for ad := range a.staged {
		a.addrs[ad] = true
	}
	a.clearStaged()
}

func (a *Archive) clearStaged() { clear(a.staged) }

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

// stage adds an event's keys to b; a.mu is held (or the archive not yet
// shared).
func (a *Archive) stage(b *pebble.Batch, ev *Event) error {
	val, err := encodeEvent(ev)
	if err != nil {
		return err
	}
	set := func(k []byte, v []byte) error {
		if err := b.Set(k, v, nil); err != nil {
			return fmt.Errorf("storage: %w", err)
		}
		return nil
	}
	e := a.epochOf(ev.Seq)
	if err := set(a.eventKey(ev.Seq), val); err != nil {
		return err
	}
	if err := set(appendU64(encBytes(epochPrefix(e, prefixAddress), ev.Address), ev.Seq), nil); err != nil {
		return err
	}
	if !a.addrs[ev.Address] && !a.staged[ev.Address] {
		// Written once per address (a rewrite would only add work for
		// compactions); noted when the batch is staged, so a batch that
		// fails to commit leaves the address to be written again.
		if err := set(encBytes([]byte{prefixAddrName}, ev.Address), nil); err != nil {
			return err
		}
		a.staged[ev.Address] = true
	}
	for name, v := range ev.Props {
		k := encBytes(encBytes(epochPrefix(e, prefixProp), name), PropString(v))
		if err := set(appendU64(k, ev.Seq), nil); err != nil {
			return err
		}
	}
	if err := set(appendU64(appendU64(epochPrefix(e, prefixID), ev.ID), ev.Seq), nil); err != nil {
		return err
	}
	return set(appendU64(appendU64(epochPrefix(e, prefixTime), timeKey(ev.Time)), ev.Seq), nil)
}

// Last returns the event with the highest stream sequence (of those that
// decode).
func (a *Archive) Last() (Event, bool, error) {
	return a.lookup(func(x *epochIter) (uint64, bool, error) {
		return (&epochList{x: x, a: a, sub: []byte{prefixEvent}, desc: true}).seek(math.MaxUint64)
	}, Filter{Order: Desc})
}

// LastSeq returns the highest stream sequence stored (0: none), whether or
// not its record decodes: where the archive is, for whoever feeds it.
func (a *Archive) LastSeq() (uint64, error) {
	snap := a.db.NewSnapshot()
	defer snap.Close()
	first, last, ok, err := epochRange(snap)
	if !ok || err != nil {
		return 0, err
	}
	x, err := newEpochIter(snap, first, last)
	if err != nil {
		return 0, err
	}
	defer x.it.Close()
	seq, _, err := (&epochList{x: x, a: a, sub: []byte{prefixEvent}, desc: true}).seek(math.MaxUint64)
	if err != nil {
		return 0, fmt.Errorf("storage: %w", err)
	}
	return seq, nil
}

// LastBefore returns the newest event (by time) strictly before t.
func (a *Archive) LastBefore(t time.Time) (Event, bool, error) {
	return a.lookup(func(x *epochIter) (uint64, bool, error) {
		_, seq, ok := x.lastBelow(prefixTime, timeKey(t))
		return seq, ok, nil
	}, Filter{Until: t, Order: Desc})
}

// FirstOfID returns the first event (lowest sequence) carrying Koji event id.
func (a *Archive) FirstOfID(id uint64) (Event, bool, error) {
	return a.lookup(func(x *epochIter) (uint64, bool, error) {
		val, seq, ok := x.firstAtLeast(prefixID, id)
		return seq, ok && val == id, nil
	}, Filter{AfterID: id - 1, BeforeID: id + 1})
}

// lookup returns the event find locates in a snapshot of the epochs. When
// that record does not decode, the next event the query rest gives after it
// is the answer (rest describes what find looks for, in its direction).
func (a *Archive) lookup(find func(*epochIter) (seq uint64, ok bool, err error), rest Filter) (Event, bool, error) {
	snap := a.db.NewSnapshot()
	defer snap.Close()
	first, last, ok, err := epochRange(snap)
	if !ok || err != nil {
		return Event{}, false, err
	}
	x, err := newEpochIter(snap, first, last)
	if err != nil {
		return Event{}, false, err
	}
	defer x.it.Close()
	seq, ok, err := find(x)
	if err == nil {
		err = x.it.Error()
	}
	if err != nil {
		return Event{}, false, fmt.Errorf("storage: %w", err)
	}
	if !ok {
		return Event{}, false, nil
	}
	ev, err := a.getEvent(snap, seq)
	if !errors.Is(err, ErrUndecodable) {
		return ev, err == nil, err
	}
	rest.Limit, rest.Cursor = 1, strconv.FormatUint(seq, 10)
	evs, _, err := a.query(snap, first, last, rest)
	if err != nil || len(evs) == 0 {
		return Event{}, false, err
	}
	return evs[0], true, nil
}

// getEvent reads the record of seq; one that does not decode is reported
// (once) and is an ErrUndecodable.
func (a *Archive) getEvent(snap *pebble.Snapshot, seq uint64) (Event, error) {
	v, closer, err := snap.Get(a.eventKey(seq))
	if errors.Is(err, pebble.ErrNotFound) {
		return Event{}, fmt.Errorf("storage: index points at missing event %d", seq)
	}
	if err != nil {
		return Event{}, fmt.Errorf("storage: %w", err)
	}
	defer closer.Close()
	ev, err := decodeEvent(v)
	if err != nil {
		a.report(seq, err)
		return Event{}, fmt.Errorf("%w %d: %w", ErrUndecodable, seq, err)
	}
	return ev, nil
}

// report logs an undecodable record once per sequence (per open).
func (a *Archive) report(seq uint64, err error) {
	if _, seen := a.reported.LoadOrStore(seq, true); !seen {
		a.log.Error("archive: an event that cannot be read back is skipped", "seq", seq, "err", err)
	}
}

// encodeEvent is the record of an event (decodeEvent reads it back).
func encodeEvent(ev *Event) ([]byte, error) {
	rec := *ev
	if len(rec.Body) == 0 {
		rec.Body = json.RawMessage("null")
	}
	if rec.Props == nil {
		rec.Props = map[string]any{}
	}
	val, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("storage: encode event %d: %w", ev.Seq, err)
	}
	return val, nil
}

// decodeEvent decodes a record; one larger than MaxRecordSize is refused
// without decoding it.
func decodeEvent(v []byte) (Event, error) {
	if len(v) > MaxRecordSize {
		return Event{}, fmt.Errorf("storage: event record of %d bytes exceeds the limit of %d", len(v), MaxRecordSize)
	}
	var ev Event
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(&ev); err != nil {
		return Event{}, fmt.Errorf("storage: decode event: %w", err)
	}
	return ev, nil
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

// quietBackgroundErrors logs Pebble's failing flushes and compactions once
// when they start failing and once when one succeeds again: Pebble retries
// them at once, and on a full disk logged each failure, hundreds a second.
func quietBackgroundErrors(log *slog.Logger) *pebble.EventListener {
	var failing atomic.Bool
	recovered := func(err error) {
		if err == nil && failing.Swap(false) {
			log.Info("archive: background writes succeed again")
		}
	}
	return &pebble.EventListener{
		BackgroundError: func(err error) {
			if !failing.Swap(true) {
				log.Error("archive: background writes fail; not logged again until one succeeds", "err", err)
			}
		},
		FlushEnd:      func(info pebble.FlushInfo) { recovered(info.Err) },
		CompactionEnd: func(info pebble.CompactionInfo) { recovered(info.Err) },
	}
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
