package storage

// Queries: one page of events matching a filter, read from a snapshot by
// intersecting the postings of its address and properties.

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/cockroachdb/pebble/v2"
)

// Query returns one page of events matching f, and the cursor of the next
// page ("" when there is none). Paging is stable: events archived while a
// client pages do not shift or repeat pages (they are appended at the end).
func (a *Archive) Query(f Filter) ([]Event, string, error) {
	if strings.ContainsAny(f.Address, "*?[") && !strings.HasSuffix(f.Address, ">") {
		if _, err := path.Match(f.Address, ""); err != nil {
			return nil, "", fmt.Errorf("%w %q: %v", ErrBadAddress, f.Address, err)
		}
	}
	snap := a.db.NewSnapshot()
	defer snap.Close()
	first, last, nonEmpty, err := epochRange(snap)
	if err != nil {
		return nil, "", err
	}
	if !nonEmpty {
		if f.Cursor != "" {
			if c, err := strconv.ParseUint(f.Cursor, 10, 64); err != nil || c == 0 {
				return nil, "", ErrBadCursor
			}
		}
		return nil, "", nil
	}
	return a.query(snap, first, last, f)
}

// query is Query on a snapshot whose epochs [first, last] hold events.
func (a *Archive) query(snap *pebble.Snapshot, first, last uint32, f Filter) ([]Event, string, error) {
	limit := min(cmp.Or(max(f.Limit, 0), DefaultLimit), MaxLimit)
	desc := f.Order == Desc
	glob, prefix, exact, isPrefix := "", "", "", false
	switch {
	case f.Address == "":
	case strings.HasSuffix(f.Address, ">"):
		prefix, isPrefix = strings.TrimSuffix(f.Address, ">"), true
	case strings.ContainsAny(f.Address, "*?["):
		glob = f.Address
		prefix = f.Address[:strings.IndexAny(f.Address, "*?[")]
		isPrefix = true
	default:
		exact = f.Address
	}
	q := &query{a: a, snap: snap, desc: desc, first: first, last: last}
	defer q.closeAll()
	bounds, err := q.epochIter()
	if err != nil {
		return nil, "", err
	}

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
	// Ids and times grow with the sequence: their bounds become sequence bounds.
	for _, b := range []struct {
		set   bool
		index byte
		value uint64
		upper bool
	}{
		{f.AfterID > 0, prefixID, f.AfterID + 1, false},
		{f.BeforeID > 0, prefixID, f.BeforeID, true},
		{!f.Since.IsZero(), prefixTime, timeKey(f.Since), false},
		{!f.Until.IsZero(), prefixTime, timeKey(f.Until), true},
	} {
		if !b.set {
			continue
		}
		var seq uint64
		var ok bool
		if b.upper {
			_, seq, ok = bounds.lastBelow(b.index, b.value)
		} else {
			_, seq, ok = bounds.firstAtLeast(b.index, b.value)
		}
		if err := bounds.it.Error(); err != nil {
			return nil, "", fmt.Errorf("storage: %w", err)
		}
		if !ok {
			return nil, "", nil
		}
		if b.upper {
			hi = min(hi, seq)
		} else {
			lo = max(lo, seq)
		}
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
		ev, err := a.getEvent(snap, seq)
		if errors.Is(err, ErrUndecodable) {
			// Reported by getEvent; the others still answer.
		} else if err != nil {
			return nil, "", err
		} else if matches(&ev, &f) {
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
	a           *Archive
	snap        *pebble.Snapshot
	desc        bool
	first, last uint32 // the epochs holding anything
	iters       []*pebble.Iterator
}

func (q *query) epochIter() (*epochIter, error) {
	x, err := newEpochIter(q.snap, q.first, q.last)
	if err != nil {
		return nil, err
	}
	q.iters = append(q.iters, x.it)
	return x, nil
}

func (q *query) closeAll() {
	for _, it := range q.iters {
		_ = it.Close()
	}
}

// addresses lists the distinct archived addresses with a prefix (matching glob, if any).
func (q *query) addresses(prefix, glob string) ([]string, error) {
	lo := append([]byte{prefixAddrName}, escape(prefix)...)
	it, err := q.snap.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	q.iters = append(q.iters, it)
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

// list returns the postings of sub (prefixEvent, or an address or property
// prefix) across the epochs.
func (q *query) list(sub []byte) (postings, error) {
	x, err := q.epochIter()
	if err != nil {
		return nil, err
	}
	return &epochList{x: x, a: q.a, sub: sub, desc: q.desc}, nil
}

// postings is a sequence-ordered list of event sequences. seek returns the
// first sequence >= target (ascending) or the last <= target (descending).
type postings interface {
	seek(target uint64) (uint64, bool, error)
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
