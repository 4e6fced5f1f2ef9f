package storage

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/cockroachdb/pebble/v2"
)

// Epochs. Every key written for an event starts with the epoch of its
// stream sequence (seq >> epoch bits, 2^14 = 16,384 events by default), so
// the keys of recent events form one contiguous range at the end of the
// key space, and Pebble's compactions rewrite only that range. Without
// epochs, each event added entries all over the key space (the postings of
// its address and of each property value), so every flushed table overlapped
// the whole store and each compaction rewrote all of it: the last level wrote
// 7.6 times its input for 150,000 events and 11.3 times for 300,000; with
// epochs, 2.8 and 3.0 times. A list crosses epochs by seeking
// into each; a bound on an event id or time scans epochs from the newest
// down, so a recent bound (the usual query) costs a few seeks.

const (
	prefixEpoch    = 'E' // 'E' epoch(4) sub ...: everything stored per event
	prefixAddrName = 'N' // 'N' enc(address): the distinct addresses
	keyFormat      = 'V' // the layout's version and epoch size (archiveFormat)

	defaultEpochBits = 14
	formatVersion    = 2
)

// archiveFormat is the value of keyFormat.
type archiveFormat struct {
	Format    int  `json:"format"`
	EpochBits uint `json:"epoch_bits"`
}

func (a *Archive) epochOf(seq uint64) uint32 { return uint32(seq >> a.bits) }

// epochPrefix is the start of the keys of sub (prefixEvent, prefixAddress,
// ...) in epoch e.
func epochPrefix(e uint32, sub ...byte) []byte {
	return append(binary.BigEndian.AppendUint32([]byte{prefixEpoch}, e), sub...)
}

func keyEpoch(k []byte) uint32 { return binary.BigEndian.Uint32(k[1:5]) }

func (a *Archive) eventKey(seq uint64) []byte {
	return appendU64(epochPrefix(a.epochOf(seq), prefixEvent), seq)
}

// epochRange returns the first and last epoch holding anything.
func epochRange(r pebble.Reader) (first, last uint32, ok bool, err error) {
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: []byte{prefixEpoch}, UpperBound: []byte{prefixEpoch + 1}})
	if err != nil {
		return 0, 0, false, fmt.Errorf("storage: %w", err)
	}
	defer it.Close()
	if !it.First() {
		return 0, 0, false, it.Error()
	}
	first = keyEpoch(it.Key())
	it.Last()
	return first, keyEpoch(it.Key()), true, it.Error()
}

// epochIter iterates the epochs [first, last] of one archive snapshot.
type epochIter struct {
	it          *pebble.Iterator
	first, last uint32
}

func newEpochIter(r pebble.Reader, first, last uint32) (*epochIter, error) {
	hi := epochPrefix(last + 1)
	if last == math.MaxUint32 {
		hi = []byte{prefixEpoch + 1}
	}
	it, err := r.NewIter(&pebble.IterOptions{LowerBound: epochPrefix(first), UpperBound: hi})
	if err != nil {
		return nil, fmt.Errorf("storage: %w", err)
	}
	return &epochIter{it: it, first: first, last: last}, nil
}

// entry returns the value and sequence of the current key when it is an
// entry of prefix p (p + value(8) + seq(8) for an 'i' or 't' index).
func (x *epochIter) entry(ok bool, p []byte) (val, seq uint64, found bool) {
	if !ok {
		return 0, 0, false
	}
	k := x.it.Key()
	if !bytes.HasPrefix(k, p) || len(k) != len(p)+16 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[len(p):]), lastU64(k), true
}

// firstAtLeast returns the first entry of an 'i' or 't' index whose value
// is at least v: it walks epochs down from the newest while they still
// hold such entries (values grow with the sequence).
func (x *epochIter) firstAtLeast(sub byte, v uint64) (val, seq uint64, ok bool) {
	for e := x.last; ; e-- {
		p := epochPrefix(e, sub)
		if ev, es, found := x.entry(x.it.SeekGE(appendU64(bytes.Clone(p), v)), p); found {
			val, seq, ok = ev, es, true
		} else if _, _, below := x.entry(x.it.SeekLT(appendU64(bytes.Clone(p), v)), p); below {
			return // this epoch's entries are all below v, so are the older ones'
		}
		if e == x.first {
			return
		}
	}
}

// lastBelow returns the last entry of an 'i' or 't' index whose value is
// below v, walking epochs down from the newest.
func (x *epochIter) lastBelow(sub byte, v uint64) (val, seq uint64, ok bool) {
	for e := x.last; ; e-- {
		p := epochPrefix(e, sub)
		if ev, es, found := x.entry(x.it.SeekLT(appendU64(bytes.Clone(p), v)), p); found {
			return ev, es, true
		}
		if e == x.first {
			return 0, 0, false
		}
	}
}

// epochList is the postings of one list (sub: prefixEvent, or an address
// or property prefix) across epochs: each key is epoch prefix + sub + seq.
type epochList struct {
	x    *epochIter
	a    *Archive
	sub  []byte
	desc bool
}

func (l *epochList) seek(target uint64) (uint64, bool, error) {
	it, x := l.x.it, l.x
	if l.desc {
		e := x.last
		if target != math.MaxUint64 {
			e = min(e, l.a.epochOf(target))
		}
		for {
			p := epochPrefix(e, l.sub...)
			var ok bool
			if target != math.MaxUint64 && e == l.a.epochOf(target) {
				ok = it.SeekLT(appendU64(bytes.Clone(p), target+1))
			} else {
				ok = it.SeekLT(prefixEnd(p))
			}
			if !ok {
				return 0, false, it.Error()
			}
			if k := it.Key(); bytes.HasPrefix(k, p) {
				return l.seqOf(k, p)
			} else if ke := keyEpoch(k); ke < e {
				e = ke + 1 // nothing of the list between: go on in the key's epoch
			}
			if e <= x.first {
				return 0, false, nil
			}
			e--
		}
	}
	e := max(x.first, l.a.epochOf(target))
	if e > l.a.epochOf(target) {
		target = 0
	}
	for e <= x.last {
		p := epochPrefix(e, l.sub...)
		if !it.SeekGE(appendU64(bytes.Clone(p), target)) {
			return 0, false, it.Error()
		}
		if k := it.Key(); bytes.HasPrefix(k, p) {
			return l.seqOf(k, p)
		} else if ke := keyEpoch(k); ke > e {
			e = ke // nothing of the list between
		} else {
			e++
		}
		target = 0
	}
	return 0, false, nil
}

func (l *epochList) seqOf(k, p []byte) (uint64, bool, error) {
	if len(k) != len(p)+8 {
		return 0, false, fmt.Errorf("storage: malformed index key %q", k)
	}
	return lastU64(k), true, nil
}
