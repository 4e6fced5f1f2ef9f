// Package state is the hub's view of the kojibus state bucket and the only
// way the hub writes to it.
//
// Every hubd keeps an in-memory copy of the bucket, fed in stream order by an
// ordered consumer, so reads are map lookups on a consistent snapshot.
//
// A write is an optimistic transaction: the handler reads the snapshot and
// stages puts, deletes and events; Commit publishes ALL of it as ONE message,
// $KV.koji.outbox.<id>, carrying for every written key the revision it was
// read at. That single message is the commit point (one JetStream write, one
// fsync in sync mode). Every view applies transactions in stream order and
// validates them the same way: a transaction whose expected revisions no
// longer hold is void, for everyone. The writer learns the verdict when its
// own view has applied the message, and retries a void one. A key's revision
// is the stream sequence of the transaction that last wrote it, so revisions
// and Koji event ids are one monotonic sequence across the hub cluster.
//
// The relay (relay.go) then publishes the transaction's events to KOJI_EVENTS
// exactly once, writes its keys as ordinary KV entries stamped with the
// transaction's sequence (Kojibus-Rev), and deletes the transaction message.
// A restarted view loads those entries and re-validates only the transactions
// the relay has not finished, so state and events agree after a kill -9 at
// any moment: the commit message holds both.
package state

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/btree"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/kojibus/kojibus/bus"
)

const (
	kvSubjectPrefix = "$KV." + bus.StateBucket + "."
	kvStream        = "KV_" + bus.StateBucket
	// outboxPrefix keys are committed transactions the relay has not finished.
	outboxPrefix = "outbox."
	// requestPrefix keys remember the result of an idempotent write for requestTTL.
	requestPrefix = "req."
	requestTTL    = time.Hour
	hdrKVOp       = "KV-Operation"
	// hdrRev stamps a materialized key with the transaction that wrote it.
	hdrRev      = "Kojibus-Rev"
	maxAttempts = 20
	// statusKeep is how long a transaction's verdict stays queryable after
	// the relay finished it (writers read it right after applying).
	statusKeep = time.Minute
)

type entry struct {
	val []byte
	rev uint64
}

// txnMsg is a committed transaction as stored in the outbox message.
type txnMsg struct {
	Writes  []txnWrite      `json:"w,omitempty"`
	Events  []OutEvent      `json:"e,omitempty"`
	Request string          `json:"r,omitempty"`
	Result  json.RawMessage `json:"res,omitempty"`
}

type txnWrite struct {
	Key    string          `json:"k"`
	Val    json.RawMessage `json:"v,omitempty"`
	Del    bool            `json:"d,omitempty"`
	Expect uint64          `json:"x"` // revision read; 0 = the key was absent
	// Seq marks an id sequence bump: valid when the value grows, whatever
	// the revision read, so concurrent creations in one hub do not void
	// each other (ids may have gaps, as Koji's database sequences do).
	Seq bool `json:"s,omitempty"`
}

// maxMissed bounds the transactions a view remembers as missed.
const maxMissed = 100000

// Verdicts of a transaction.
type verdict uint8

const (
	verdictUnknown   verdict = iota
	verdictValid             // applied
	verdictConflict          // an expected revision no longer held: void
	verdictDuplicate         // its request id had committed already: void
	verdictDone              // found applied and materialized while loading
)

type status struct {
	seq     uint64
	verdict verdict
	at      time.Time
	txn     *txnMsg // a valid transaction, decoded once for the relay
}

type requestEntry struct {
	rev    uint64
	result json.RawMessage
	at     time.Time
}

// Store is the in-memory view of the state bucket plus the write path.
type Store struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.RWMutex
	writeMu sync.RWMutex     // see Update
	voided  atomic.Uint64    // transactions voided by a concurrent write
	seqMu   sync.Mutex       // guards issued
	issued  map[string]int64 // highest id this hub handed out per sequence
	// seqSend is held by a transaction from taking an id until it is sent
	// (one lock for all sequences: no lock order to get wrong).
	seqSend sync.Mutex
	kinds   map[string]map[string]*entry // first key segment -> key -> entry
	// sorted holds the keys of each kind in order, so that the keys under a
	// prefix (a tag's builds, a task's children) are found without reading
	// every key of the kind, and come out sorted.
	sorted map[string]*btree.BTreeG[string]
	// indexers file the keys of their kind under groups (see Index):
	// groups is kind -> group -> keys, groupOf each filed key's groups.
	indexers map[string]Indexer
	groups   map[string]map[string]map[string]struct{}
	groupOf  map[string][]string
	reqs     map[string]*requestEntry // committed request ids (idempotency)
	kindRev  map[string]uint64        // newest revision written per kind
	missed   map[uint64]bool          // transactions deleted before this view read them (see applyMsg)
	// tombstones, while loading, holds the revision of each deleted key
	// (see completeDone).
	tombstones map[string]uint64
	applied    uint64 // stream sequence of the last applied message
	// stateRev is the revision of the state: the sequence of the last
	// transaction that changed it (relay bookkeeping and void transactions
	// advance applied, not stateRev).
	stateRev uint64
	changed  chan struct{} // closed and replaced whenever applied advances
	// statuses are the verdicts of recent transactions, by ascending sequence.
	statuses []status
	// materialized is the highest transaction sequence the relay has written out.
	materialized uint64
	// while loading: transactions not yet finished by the relay, applied at the end
	loading   bool
	loadTxns  []loadedTxn
	loaded    chan struct{}
	loadAt    uint64
	reqPruned time.Time

	// sent holds this hub's transactions from their publish until its view
	// applies them (by outbox key), so that the view takes them as built
	// instead of decoding them: the same content, as every part of a
	// transaction is encoded when it is staged.
	sent sync.Map
	// acked holds this hub's transactions whose commit is acknowledged but
	// which the view has not reached yet, by sequence (see applyAcked).
	acked map[uint64]*txnMsg

	// gate, when set, refuses commits while the disk is too full (space.go).
	gate WriteGate

	// stream is the state bucket's stream; lastSeq the highest sequence
	// it was seen to hold (see Holds).
	stream  jetstream.Stream
	lastSeq atomic.Uint64

	cancel context.CancelFunc
	cc     jetstream.ConsumeContext
	done   chan struct{}
}

// New returns a store reading and writing the state bucket through js.
func New(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) *Store {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{
		nc: nc, js: js, log: log,
		kinds:    map[string]map[string]*entry{},
		sorted:   map[string]*btree.BTreeG[string]{},
		indexers: map[string]Indexer{},
		groups:   map[string]map[string]map[string]struct{}{},
		groupOf:  map[string][]string{},
		reqs:     map[string]*requestEntry{},
		kindRev:  map[string]uint64{},
		missed:   map[uint64]bool{},
		acked:    map[uint64]*txnMsg{},
		changed:  make(chan struct{}),
		loaded:   make(chan struct{}),
		done:     make(chan struct{}),
		loading:  true,
	}
}

// Start loads the bucket and follows it; it returns once the view has caught
// up with the stream as it was when Start was called.
func (s *Store) Start(ctx context.Context) error {
	stream, err := s.js.Stream(ctx, kvStream)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	s.stream = stream
	s.loadAt = info.State.LastSeq
	s.lastSeq.Store(info.State.LastSeq)
	if s.loadAt == 0 || info.State.Msgs == 0 {
		s.loading = false
		s.applied = s.loadAt // nothing before it to read
		close(s.loaded)
	}
	cons, err := s.js.OrderedConsumer(ctx, kvStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{kvSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("state: follow bucket: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	cc, err := cons.Consume(s.applyMsg)
	if err != nil {
		cancel()
		return fmt.Errorf("state: follow bucket: %w", err)
	}
	s.cc = cc
	go func() {
		<-runCtx.Done()
		close(s.done)
	}()
	select {
	case <-s.loaded:
		return nil
	case <-ctx.Done():
		s.Stop()
		return fmt.Errorf("state: loading bucket: %w", ctx.Err())
	}
}

// Stop stops following the bucket.
func (s *Store) Stop() {
	if s.cc != nil {
		s.cc.Stop()
		<-s.cc.Closed()
	}
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
}

func (s *Store) applyMsg(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		s.log.Error("state: message without metadata", "subject", m.Subject(), "err", err)
		return
	}
	seq := md.Sequence.Stream
	key := strings.TrimPrefix(m.Subject(), kvSubjectPrefix)
	isTxn := strings.HasPrefix(key, outboxPrefix)
	s.mu.RLock()
	ahead := s.reachedLocked(seq)
	s.mu.RUnlock()
	if ahead {
		return
	}
	var txn *txnMsg
	var txnErr error
	if isTxn {
		if own, ok := s.sent.LoadAndDelete(key); ok {
			txn = own.(*txnMsg)
		} else {
			// Decoded before taking the lock: readers need not wait for it.
			txn, txnErr = decodeTxn(m.Data())
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reachedLocked(seq) {
		return
	}
	if own, ok := s.acked[seq]; ok {
		txn, txnErr = own, nil
		delete(s.acked, seq)
	}
	if !s.loading && seq > s.applied+1 {
		// Sequences skipped live were deleted before this view read them:
		// transactions another hub's relay finished first. Their keys,
		// materialized later, stand in for them (applyKey).
		for q := s.applied + 1; q < seq && len(s.missed) < maxMissed; q++ {
			s.missed[q] = true
		}
	}
	switch {
	case s.loading && isTxn:
		// Applied after every materialized key is in: see finishLoad.
		s.loadTxns = append(s.loadTxns, loadedTxn{seq: seq, ts: md.Timestamp, txn: txn, err: txnErr})
	case isTxn:
		s.applyTxn(seq, txn, txnErr, md.Timestamp)
	default:
		s.applyKey(key, m, seq, md.Timestamp)
	}
	s.applied = seq
	if s.loading && (seq >= s.loadAt || md.NumPending == 0) {
		// NumPending 0 also ends loading when the stream's last message was
		// deleted (a finished transaction), so loadAt itself never arrives.
		s.finishLoad()
	}
	s.applyAckedLocked()
	for q := range s.acked {
		if q <= s.applied {
			// The view passed it by a gap: another hub's relay finished
			// and removed it before this view read it (missed, see
			// above), perhaps after others this view never read either,
			// so the verdict is not this view's to give: the writer
			// waits for its keys instead.
			delete(s.acked, q)
		}
	}
	s.announceLocked()
}

// announceLocked wakes whoever waits for the view to change (Changed,
// WaitApplied) and gives later waiters a new channel.
func (s *Store) announceLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// reachedLocked reports whether the view, live, is at or past seq: a
// message of its own transaction applied when its commit was acknowledged
// (applyAcked), delivered afterwards, is skipped.
func (s *Store) reachedLocked(seq uint64) bool {
	return !s.loading && seq <= s.applied
}

// applyAcked applies this hub's own transaction at seq, which the server
// has acknowledged, without waiting for the view's consumer to deliver it,
// once the view has applied every message before it. The view reads the
// stream in order, and once it is at seq-1 the transaction is the next
// message: applying it now gives the verdict every view will reach, a
// round trip (the delivery after the ack) sooner. A transaction whose
// predecessors have not arrived yet waits in acked, applied by whichever
// comes first: the delivery of the message before it or its own. It stays
// there if its writer stops waiting (its message has the same content), and
// goes once the view is past it (applyMsg).
func (s *Store) applyAcked(key string, seq uint64) {
	own, ok := s.sent.LoadAndDelete(key)
	if !ok {
		return // the view took it already
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.loading || seq <= s.applied {
		return
	}
	s.acked[seq] = own.(*txnMsg)
	before := s.applied
	s.applyAckedLocked()
	if s.applied != before {
		s.announceLocked()
	}
}

// applyAckedLocked applies the acknowledged own transactions that follow
// the view's last message. The time of each is this hub's clock, where a
// delivered message has the server's: it only ages the verdict and the
// request record for pruning, by far longer spans than any skew.
func (s *Store) applyAckedLocked() {
	for !s.loading {
		t, ok := s.acked[s.applied+1]
		if !ok {
			return
		}
		delete(s.acked, s.applied+1)
		s.applied++
		s.applyTxn(s.applied, t, nil, time.Now())
	}
}

func (s *Store) finishLoad() {
	for _, l := range s.loadTxns {
		if l.seq <= s.materialized {
			// The relay published its events and wrote out its keys, but
			// died before deleting it, perhaps before every key was
			// stored: fill in what is missing from the transaction.
			s.completeDone(l.seq, l.txn, l.err, l.ts)
			continue
		}
		s.applyTxn(l.seq, l.txn, l.err, l.ts)
	}
	s.loadTxns = nil
	s.tombstones = nil
	s.loading = false
	close(s.loaded)
}

// completeDone applies the writes of a written-out transaction whose keys
// did not all reach the bucket: each key the bucket holds at an older
// revision (or not at all) takes the transaction's value.
func (s *Store) completeDone(seq uint64, t *txnMsg, decodeErr error, ts time.Time) {
	if decodeErr != nil {
		s.setStatus(seq, verdictDone, ts)
		return
	}
	if r, ok := s.reqs[t.Request]; t.Request != "" && ok && r.rev != seq {
		// Its request committed in another transaction: this one was void
		// (a relay deletes void entries before writing out later keys;
		// this catches one an earlier version left).
		s.setStatus(seq, verdictDuplicate, ts)
		return
	}
	for _, w := range t.Writes {
		if max(s.rev(w.Key), s.tombstones[w.Key]) < seq {
			kind, _, _ := strings.Cut(w.Key, ".")
			s.put(kind, w.Key, w.Val, seq, w.Del)
		}
	}
	if _, ok := s.reqs[t.Request]; t.Request != "" && !ok {
		s.reqs[t.Request] = &requestEntry{rev: seq, result: t.Result, at: ts}
	}
	s.setStatus(seq, verdictDone, ts)
	s.statuses[len(s.statuses)-1].txn = t // the relay writes its keys out again
}

// applyKey applies a materialized key (or a plain KV write).
func (s *Store) applyKey(key string, m jetstream.Msg, seq uint64, ts time.Time) {
	rev := seq
	if r, err := strconv.ParseUint(m.Headers().Get(hdrRev), 10, 64); err == nil {
		rev = r
	}
	if rev > s.materialized {
		s.materialized = rev
		s.pruneStatuses(ts)
	}
	if s.loading && rev > s.stateRev {
		s.stateRev = rev
	}
	deleted := m.Headers().Get(hdrKVOp) == "DEL" || m.Headers().Get(hdrKVOp) == "PURGE"
	missed := !s.loading && s.missed[rev]
	if missed && rev > s.stateRev {
		s.stateRev = rev
	}
	if strings.HasPrefix(key, requestPrefix) {
		if !s.loading && !missed || deleted {
			return // live, the view has it from the transaction already
		}
		var sr storedRequest
		if json.Unmarshal(m.Data(), &sr) == nil {
			s.reqs[strings.TrimPrefix(key, requestPrefix)] = &requestEntry{rev: rev, result: sr.Result, at: ts}
		}
		return
	}
	kind, _, _ := strings.Cut(key, ".")
	cur, exists := s.kinds[kind][key]
	if exists && cur.rev >= rev {
		return // the view applied this transaction (or a later one) already
	}
	if !s.loading && !exists && deleted {
		return
	}
	if !s.loading && !missed {
		// Live, keys arrive after their transaction: only an older
		// materialization of a key deleted since can get here; ignore it.
		return
	}
	s.put(kind, key, m.Data(), rev, deleted)
}

// An Indexer files a key of its kind under groups, from the key's value
// (none: under no group), so that View.Group lists the keys of one group
// without scanning the kind. It is a view's own index, kept in step with
// every value the view takes and never stored: so it costs no writes and
// cannot disagree with the values. It runs while the view is locked, so it
// must be cheap.
type Indexer func(key string, val []byte) (groups []string)

// Index files the keys of kind with fn; call it before Start.
func (s *Store) Index(kind string, fn Indexer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.indexers[kind] = fn
}

// refile moves key to the groups its new value files it under (deleted:
// under none).
func (s *Store) refile(kind string, ix Indexer, key string, val []byte, deleted bool) {
	var groups []string
	if !deleted {
		groups = ix(key, val)
	}
	old := s.groupOf[key]
	if slices.Equal(old, groups) {
		return
	}
	for _, group := range old {
		if slices.Contains(groups, group) {
			continue
		}
		g := s.groups[kind][group]
		delete(g, key)
		if len(g) == 0 {
			delete(s.groups[kind], group)
		}
	}
	if len(groups) == 0 {
		delete(s.groupOf, key)
		return
	}
	if s.groups[kind] == nil {
		s.groups[kind] = map[string]map[string]struct{}{}
	}
	for _, group := range groups {
		g := s.groups[kind][group]
		if g == nil {
			g = map[string]struct{}{}
			s.groups[kind][group] = g
		}
		g[key] = struct{}{}
	}
	s.groupOf[key] = groups
}

func (s *Store) put(kind, key string, val []byte, rev uint64, deleted bool) {
	if rev > s.kindRev[kind] {
		s.kindRev[kind] = rev
	}
	if ix := s.indexers[kind]; ix != nil {
		s.refile(kind, ix, key, val, deleted)
	}
	if deleted && s.loading {
		if s.tombstones == nil {
			s.tombstones = map[string]uint64{}
		}
		s.tombstones[key] = rev
	}
	if deleted {
		if km := s.kinds[kind]; km != nil {
			if _, ok := km[key]; ok {
				delete(km, key)
				s.sorted[kind].Delete(key)
			}
		}
		return
	}
	km := s.kinds[kind]
	if km == nil {
		km = map[string]*entry{}
		s.kinds[kind] = km
		s.sorted[kind] = btree.NewOrderedG[string](32)
	}
	if _, ok := km[key]; !ok {
		s.sorted[kind].ReplaceOrInsert(key)
	}
	km[key] = &entry{val: val, rev: rev}
}

func (s *Store) rev(key string) uint64 {
	kind, _, _ := strings.Cut(key, ".")
	if e, ok := s.kinds[kind][key]; ok {
		return e.rev
	}
	return 0
}

// applyTxn validates and applies a transaction: the same verdict in every view.
func (s *Store) applyTxn(seq uint64, t *txnMsg, decodeErr error, ts time.Time) {
	if decodeErr != nil {
		s.log.Error("state: undecodable transaction is void", "seq", seq, "err", decodeErr)
		s.setStatus(seq, verdictConflict, ts)
		return
	}
	if t.Request != "" {
		if _, dup := s.reqs[t.Request]; dup {
			s.setStatus(seq, verdictDuplicate, ts)
			return
		}
	}
	for _, w := range t.Writes {
		if w.Seq {
			if !s.seqGrows(w.Key, w.Val) {
				s.setStatus(seq, verdictConflict, ts)
				return
			}
			continue
		}
		if s.rev(w.Key) != w.Expect {
			s.setStatus(seq, verdictConflict, ts)
			return
		}
	}
	for _, w := range t.Writes {
		kind, _, _ := strings.Cut(w.Key, ".")
		s.put(kind, w.Key, w.Val, seq, w.Del)
	}
	s.stateRev = seq
	if t.Request != "" {
		s.reqs[t.Request] = &requestEntry{rev: seq, result: t.Result, at: ts}
		s.pruneRequests(ts)
	}
	s.setStatus(seq, verdictValid, ts)
	s.statuses[len(s.statuses)-1].txn = t
}

// decodeTxn decodes a transaction message (one nested too deep for the
// decoder by decodeTxnDeep).
func decodeTxn(data []byte) (*txnMsg, error) {
	t := &txnMsg{}
	if err := json.Unmarshal(data, t); err != nil {
		if deep, derr := decodeTxnDeep(data); derr == nil {
			return deep, nil
		}
		return nil, err
	}
	return t, nil
}

// loadedTxn is a transaction read while loading, applied when loading ends.
type loadedTxn struct {
	seq uint64
	ts  time.Time
	txn *txnMsg
	err error
}

// seqGrows reports whether a sequence bump to val is above the sequence's
// current value.
func (s *Store) seqGrows(key string, val []byte) bool {
	var next, cur int64
	if json.Unmarshal(val, &next) != nil {
		return false
	}
	kind, _, _ := strings.Cut(key, ".")
	if e, ok := s.kinds[kind][key]; ok {
		if json.Unmarshal(e.val, &cur) != nil {
			return false
		}
	}
	return next > cur
}

func (s *Store) setStatus(seq uint64, v verdict, ts time.Time) {
	if v == verdictConflict {
		s.voided.Add(1)
	}
	s.statuses = append(s.statuses, status{seq: seq, verdict: v, at: ts})
}

// pruneStatuses drops verdicts of transactions the relay has finished, once
// they are old enough that no writer is still waiting to read them.
func (s *Store) pruneStatuses(now time.Time) {
	// Keys come out in commit order: once a later transaction's keys are
	// in, a missed one has all of its keys applied.
	for q := range s.missed {
		if q < s.materialized {
			delete(s.missed, q)
		}
	}
	i := 0
	for i < len(s.statuses) && s.statuses[i].seq <= s.materialized && now.Sub(s.statuses[i].at) > statusKeep {
		i++
	}
	if i > 0 {
		s.statuses = append(s.statuses[:0], s.statuses[i:]...)
	}
}

func (s *Store) pruneRequests(now time.Time) {
	if now.Sub(s.reqPruned) < time.Minute {
		return
	}
	s.reqPruned = now
	for id, r := range s.reqs {
		if now.Sub(r.at) > requestTTL {
			delete(s.reqs, id)
		}
	}
}

// verdictOf returns the verdict of the transaction at seq.
func (s *Store) verdictOf(seq uint64) verdict {
	v, _ := s.verdictAndTxn(seq)
	return v
}

// verdictAndTxn returns the verdict of the transaction at seq and, when it
// is valid, the transaction as the view decoded it.
func (s *Store) verdictAndTxn(seq uint64) (verdict, *txnMsg) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := sort.Search(len(s.statuses), func(i int) bool { return s.statuses[i].seq >= seq })
	if i < len(s.statuses) && s.statuses[i].seq == seq {
		return s.statuses[i].verdict, s.statuses[i].txn
	}
	return verdictUnknown, nil
}

// txnBefore returns the sequence of the transaction this view applied just
// before the one at seq (0 when it knows none), and whether it knows seq at
// all. The relay uses it to tell that no entry lies between two it holds.
func (s *Store) txnBefore(seq uint64) (prev uint64, known bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	i := sort.Search(len(s.statuses), func(i int) bool { return s.statuses[i].seq >= seq })
	if i == len(s.statuses) || s.statuses[i].seq != seq {
		return 0, false
	}
	if i > 0 {
		prev = s.statuses[i-1].seq
	}
	return prev, true
}

// Applied is the revision of the state the view reflects: the sequence of
// the last transaction that changed it.
func (s *Store) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.stateRev
}

// WaitApplied blocks until the view reflects stream sequence rev.
func (s *Store) WaitApplied(ctx context.Context, rev uint64) error {
	for {
		s.mu.RLock()
		applied, ch := s.applied, s.changed
		s.mu.RUnlock()
		if applied >= rev {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("state: waiting for revision %d (at %d): %w", rev, applied, ctx.Err())
		}
	}
}

// Holds reports whether revision rev exists: the view has applied it, or the
// state stream's last sequence is at or past it (one stream info request
// when the view is behind rev). It also returns the last sequence known. A
// revision beyond the stream was never handed out by any hub, so a client's
// minimum revision beyond it is refused rather than waited for.
func (s *Store) Holds(ctx context.Context, rev uint64) (bool, uint64, error) {
	s.mu.RLock()
	applied := s.applied
	s.mu.RUnlock()
	last := max(s.lastSeq.Load(), applied)
	if rev <= last {
		return true, last, nil
	}
	info, err := s.stream.Info(ctx)
	if err != nil {
		return false, last, fmt.Errorf("state: stream info: %w", err)
	}
	for cur := s.lastSeq.Load(); info.State.LastSeq > cur && !s.lastSeq.CompareAndSwap(cur, info.State.LastSeq); cur = s.lastSeq.Load() {
	}
	last = max(last, info.State.LastSeq)
	return rev <= last, last, nil
}

// Voided counts the transactions this view found void because a concurrent
// write changed what they had read (each one cost its writer a retry).
func (s *Store) Voided() uint64 { return s.voided.Load() }

// waitMaterialized waits until the keys of transaction rev are in the view
// (a later transaction's keys arrived), or a while has passed.
func (s *Store) waitMaterialized(ctx context.Context, rev uint64) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		s.mu.RLock()
		done, ch := s.materialized >= rev, s.changed
		s.mu.RUnlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return nil // a void transaction leaves no keys: build again
			}
			return ctx.Err()
		}
	}
}

// Changed returns a channel closed at the next change of the view, and the
// revision the view is at now. Waiters (wait-repo) select on it instead of polling.
func (s *Store) Changed() (<-chan struct{}, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed, s.stateRev
}

// View is a consistent read-only snapshot, valid inside Read or Update.
type View struct {
	s *Store
}

// Get returns the raw value of key and its revision.
func (v View) Get(key string) ([]byte, uint64, bool) {
	kind, _, _ := strings.Cut(key, ".")
	e, ok := v.s.kinds[kind][key]
	if !ok {
		return nil, 0, false
	}
	return e.val, e.rev, true
}

// GetJSON decodes the value of key into out; false when absent.
func (v View) GetJSON(key string, out any) (bool, error) {
	val, _, ok := v.Get(key)
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(val, out); err != nil {
		return false, fmt.Errorf("state: decode %s: %w", key, err)
	}
	return true, nil
}

// Range calls fn for each key of kind, in no particular order, with its
// value (which fn must not keep or change).
func (v View) Range(kind string, fn func(key string, val []byte)) {
	for k, e := range v.s.kinds[kind] {
		fn(k, e.val)
	}
}

// Count returns how many keys of kind start with prefix (Keys without
// building the list).
func (v View) Count(kind, prefix string) int {
	if prefix == "" {
		return len(v.s.kinds[kind])
	}
	n := 0
	v.ascend(kind, prefix, func(string) { n++ })
	return n
}

// Keys returns the keys of a kind (the first key segment) with a prefix,
// sorted; it reads only those keys.
func (v View) Keys(kind, prefix string) []string {
	keys := []string{}
	v.ascend(kind, prefix, func(k string) { keys = append(keys, k) })
	return keys
}

// ascend calls fn with the keys of kind starting with prefix, in order.
func (v View) ascend(kind, prefix string, fn func(key string)) {
	t := v.s.sorted[kind]
	if t == nil {
		return
	}
	t.AscendGreaterOrEqual(prefix, func(k string) bool {
		if !strings.HasPrefix(k, prefix) {
			return false
		}
		fn(k)
		return true
	})
}

// Group returns the keys an Indexer of kind files under group, sorted.
func (v View) Group(kind, group string) []string {
	g := v.s.groups[kind][group]
	keys := make([]string, 0, len(g))
	for k := range g {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// KindsRev is the newest revision at which any key of the kinds was written
// (or deleted): services use it to skip work when nothing they read changed.
func (v View) KindsRev(kinds ...string) uint64 {
	var rev uint64
	for _, k := range kinds {
		if r := v.s.kindRev[k]; r > rev {
			rev = r
		}
	}
	return rev
}

// Applied is the revision of the snapshot (see Store.Applied).
func (v View) Applied() uint64 { return v.s.stateRev }

// Read runs fn on a consistent snapshot.
func (s *Store) Read(fn func(View) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return fn(View{s})
}

// Txn is a transaction being built by an Update function.
type Txn struct {
	View
	writes    []write
	index     map[string]int
	events    []OutEvent
	err       error // an event body that could not be encoded
	requestID string
	holdsSeq  bool // took an id: holds seqSend until it is sent
	reserve   bool // see UseReserve
}

type write struct {
	key    string
	val    []byte
	del    bool
	seq    bool
	expect uint64
}

// OutEvent is an event staged in a transaction, or (with Subject set) a
// message for another stream, such as a task for the builders' work queue.
type OutEvent struct {
	Address string `json:"address,omitempty"`
	// Props and Body are encoded once, when staged: views pass them through
	// undecoded, and the writer's own view takes the transaction as it was
	// sent, with no decoding at all (Store.sent).
	Props json.RawMessage `json:"props,omitempty"`
	Body  json.RawMessage `json:"body"`
	// Subject, MsgID and Headers describe a dispatch message; Notify is a core
	// NATS subject told after it is stored, so that idle builders wake up.
	Subject string            `json:"subject,omitempty"`
	MsgID   string            `json:"msg_id,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	Notify  string            `json:"notify,omitempty"`
	// Consumer is created (idempotently) on the message's stream before it is
	// published, so the message has a queue to wait in.
	Consumer *ConsumerSpec `json:"consumer,omitempty"`
}

// ConsumerSpec names a task queue's durable pull consumer
// (bus.TaskQueueConsumer gives its configuration).
type ConsumerSpec struct {
	Stream string `json:"stream"`
	Name   string `json:"name"`
	Filter string `json:"filter"`
}

// Dispatch stages a message for a work-queue stream: published by the relay,
// after the commit, exactly like events (and before them).
func (tx *Txn) Dispatch(msg OutEvent) {
	// Re-encoded as the transaction message encodes them (compact, HTML
	// escaped; no body is null), so the sent transaction is what views decode.
	body, err := json.Marshal(msg.Body)
	if err == nil && msg.Props != nil {
		msg.Props, err = json.Marshal(msg.Props)
	}
	if err != nil {
		tx.err = fmt.Errorf("state: encode dispatch to %s: %w", msg.Subject, err)
		return
	}
	msg.Body = body
	tx.events = append(tx.events, msg)
}

// Put stages key = JSON(val), expecting key to be unchanged since the snapshot.
func (tx *Txn) Put(key string, val any) error {
	b, err := json.Marshal(val)
	if err != nil {
		return fmt.Errorf("state: encode %s: %w", key, err)
	}
	tx.stage(write{key: key, val: b})
	return nil
}

// Deleted reports whether the transaction has staged the removal of key
// (its reads still see the state before the transaction).
func (tx *Txn) Deleted(key string) bool {
	i, ok := tx.index[key]
	return ok && tx.writes[i].del
}

// Delete stages the removal of key.
func (tx *Txn) Delete(key string) {
	tx.stage(write{key: key, del: true})
}

func (tx *Txn) stage(w write) {
	if !ValidKey(w.key) {
		panic(fmt.Sprintf("state: invalid key %q", w.key)) // keys are built by code, never by users
	}
	_, rev, _ := tx.Get(w.key)
	w.expect = rev
	if i, ok := tx.index[w.key]; ok {
		tx.writes[i] = w
		return
	}
	if tx.index == nil {
		tx.index = map[string]int{}
	}
	tx.index[w.key] = len(tx.writes)
	tx.writes = append(tx.writes, w)
}

// Emit stages an event; it is published only if the transaction commits.
func (tx *Txn) Emit(address string, props map[string]any, body any) {
	raw, err := json.Marshal(body)
	if err != nil {
		tx.err = fmt.Errorf("state: encode body of event %s: %w", address, err)
		return
	}
	var rawProps json.RawMessage
	if len(props) > 0 {
		if rawProps, err = json.Marshal(props); err != nil {
			tx.err = fmt.Errorf("state: encode properties of event %s: %w", address, err)
			return
		}
	}
	tx.events = append(tx.events, OutEvent{Address: address, Props: rawProps, Body: raw})
}

// NextID allocates the next id of a sequence (tags, hosts, users, ...), as
// part of the transaction so two hubs never hand out the same id.
func (tx *Txn) NextID(sequence string) int64 {
	key := "seq." + sequence
	var n int64
	if _, err := tx.GetJSON(key, &n); err != nil {
		n = 0
	}
	if i, ok := tx.index[key]; ok {
		_ = json.Unmarshal(tx.writes[i].val, &n)
	} else if !tx.holdsSeq {
		tx.s.seqSend.Lock()
		tx.holdsSeq = true
	}
	n = tx.s.issue(key, n)
	b, _ := json.Marshal(n)
	tx.stage(write{key: key, val: b, seq: true})
	return n
}

// release lets the next transaction take ids. It is called once the transaction is sent, so one hub's commits
// reach the log in the order their ids were issued, and each grows the
// sequence (the rule of a Seq write).
func (tx *Txn) release() {
	if tx.holdsSeq {
		tx.holdsSeq = false
		tx.s.seqSend.Unlock()
	}
}

// issue hands out the next id of a sequence above floor, never the same one
// twice in this hub, even when the view has not applied the last one yet.
func (s *Store) issue(key string, floor int64) int64 {
	s.seqMu.Lock()
	defer s.seqMu.Unlock()
	if s.issued == nil {
		s.issued = map[string]int64{}
	}
	n := max(floor, s.issued[key]) + 1
	s.issued[key] = n
	return n
}

// Result of a committed transaction.
type Result struct {
	Value any    // what the update function returned
	Rev   uint64 // stream sequence of the commit: the Koji event id of the change
	// Replayed is true when a request with the same id had already committed
	// and its stored result is returned instead.
	Replayed bool
	Raw      json.RawMessage // the stored result, when Replayed
}

// UpdateFunc builds a transaction; its return value becomes Result.Value.
type UpdateFunc func(tx *Txn) (any, error)

// Update runs fn on a snapshot and commits what it staged, retrying when a
// concurrent write voided it. A non-empty requestID makes the write
// idempotent: a second Update with the same id returns the first one's result.
func (s *Store) Update(ctx context.Context, requestID string, fn UpdateFunc) (*Result, error) {
	if requestID != "" && !ValidKey(requestPrefix+EscapeKey(requestID)) {
		return nil, bus.ParameterError("invalid request id")
	}
	// First attempts run concurrently (shared lock). A write that lost a race
	// retries holding the exclusive lock, which new first attempts wait
	// behind, so within one hub a contended write always gets through.
	s.writeMu.RLock()
	exclusive := false
	defer func() {
		if exclusive {
			s.writeMu.Unlock()
		} else {
			s.writeMu.RUnlock()
		}
	}()
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt == 1 {
			s.writeMu.RUnlock()
			s.writeMu.Lock()
			exclusive = true
		}
		if attempt > 1 {
			// Another hub keeps winning: back off a random, growing while.
			backoff := time.Duration(rand.Int64N(int64(attempt*attempt)*int64(200*time.Microsecond) + 1))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		s.mu.RLock()
		if requestID != "" {
			if r, ok := s.reqs[requestID]; ok {
				s.mu.RUnlock()
				return &Result{Rev: r.rev, Replayed: true, Raw: r.result}, nil
			}
		}
		tx := &Txn{View: View{s}, requestID: requestID}
		val, err := fn(tx)
		s.mu.RUnlock()
		if err == nil {
			err = tx.err
		}
		if err != nil {
			tx.release()
			return nil, err
		}
		if len(tx.writes) == 0 && len(tx.events) == 0 {
			tx.release()
			return &Result{Value: val, Rev: s.Applied()}, nil
		}
		if err := s.admit(tx); err != nil {
			tx.release()
			return nil, err
		}
		// The commit is sent before the id lock is released (so one hub's
		// commits reach the log in id order) but awaited after it, so
		// concurrent creates pipeline instead of taking a round trip each.
		key, ack, err := s.send(tx, val)
		tx.release()
		if err != nil {
			return nil, s.refused(err)
		}
		seq, err := awaitAck(ctx, ack)
		err = s.refused(err)
		if err == nil {
			s.applyAcked(key, seq)
			err = s.WaitApplied(ctx, seq)
		}
		s.sent.Delete(key) // applied, or never will be by this call's wait
		if err != nil {
			return nil, err
		}
		switch s.verdictOf(seq) {
		case verdictValid:
			return &Result{Value: val, Rev: seq}, nil
		case verdictConflict, verdictDuplicate:
			continue // the view has the winner now; build again
		default:
			// Another hub's relay finished and deleted the transaction
			// before this view read it. With a request id its outcome is
			// known once its keys are in: build again, and a transaction
			// that did commit is found by its request record.
			if requestID == "" {
				return nil, fmt.Errorf("state: transaction %d finished before this hub saw it; outcome unknown", seq)
			}
			if err := s.waitMaterialized(ctx, seq); err != nil {
				return nil, err
			}
			continue
		}
	}
	return nil, bus.NewFault(bus.CodeConflict, "too many concurrent writes, giving up")
}

type storedRequest struct {
	Result json.RawMessage `json:"result"`
}

// send publishes a transaction message without waiting for its ack and
// returns its outbox key.
func (s *Store) send(tx *Txn, val any) (string, jetstream.PubAckFuture, error) {
	t, data, err := encodeTxn(tx, val)
	if err != nil {
		return "", nil, err
	}
	if err := checkTxn(data, s.nc.MaxPayload()); err != nil {
		return "", nil, err
	}
	key := outboxPrefix + nuid.Next()
	m := nats.NewMsg(kvSubjectPrefix + key)
	m.Data = data
	s.sent.Store(key, t)
	ack, err := s.js.PublishMsgAsync(m)
	if err != nil {
		s.sent.Delete(key)
		return "", nil, fmt.Errorf("state: commit: %w", err)
	}
	return key, ack, nil
}

// encodeTxn builds the message of a transaction whose function returned
// val. Every part of it was encoded when staged, so decoding the message
// gives the returned txnMsg back (TestSentTransactionIsWhatViewsDecode).
func encodeTxn(tx *Txn, val any) (*txnMsg, []byte, error) {
	t := &txnMsg{Events: tx.events, Request: tx.requestID}
	for _, w := range tx.writes {
		t.Writes = append(t.Writes, txnWrite{Key: w.key, Val: w.val, Del: w.del, Seq: w.seq, Expect: w.expect})
	}
	if tx.requestID != "" {
		res, err := json.Marshal(val)
		if err != nil {
			return nil, nil, fmt.Errorf("state: encode result: %w", err)
		}
		t.Result = res
	}
	data, err := appendTxn(make([]byte, 0, txnSize(t)), t)
	if err != nil {
		return nil, nil, fmt.Errorf("state: encode transaction: %w", err)
	}
	return t, data, nil
}

// maxTxnDepth bounds how deeply a transaction message may nest. Every view
// decodes every transaction, and each must decode: a transaction a view
// cannot read is void there, even after its writer had it acknowledged.
// The archive and the replies wrap its values a few levels deeper again, and
// the JSON decoder stops at 10,000 levels (Python's clients near 1,000).
// The API takes arguments nested at most bus.MaxArgDepth (32) levels, which
// a transaction wraps in a few more, so only a value the hub itself built
// too deep comes near this; it is refused before the commit, not voided
// after it.
const maxTxnDepth = 128

// txnHeadroom is left below the payload limit for the headers of the
// transaction's message.
const txnHeadroom = 4 << 10

// checkTxn refuses a transaction message that views could not read back or
// that the server would not take (larger than maxPayload), with a
// ParameterError that names the limit: the caller is told at once and
// nothing is stored.
func checkTxn(data []byte, maxPayload int64) error {
	if limit := int(maxPayload) - txnHeadroom; len(data) > limit {
		return bus.ParameterError("the change is too large to store: %s bytes exceed the limit of %s", bus.Count(len(data)), bus.Count(limit))
	}
	if d := bus.ScanJSON(data).Depth; d > maxTxnDepth {
		return bus.ParameterError("the change is too deeply nested to store: %s levels exceed the limit of %d", bus.Count(d), maxTxnDepth)
	}
	return nil
}

// awaitAck waits for a transaction message to be stored and returns its
// sequence, the transaction's.
func awaitAck(ctx context.Context, ack jetstream.PubAckFuture) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	select {
	case pa := <-ack.Ok():
		return pa.Sequence, nil
	case err := <-ack.Err():
		return 0, fmt.Errorf("state: commit: %w", err)
	case <-ctx.Done():
		return 0, fmt.Errorf("state: commit: %w", ctx.Err())
	}
}

// ValidKey reports whether key is a valid KV key.
func ValidKey(key string) bool {
	if key == "" || strings.HasPrefix(key, ".") || strings.HasSuffix(key, ".") || strings.Contains(key, "..") {
		return false
	}
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case r == '-' || r == '_' || r == '=' || r == '.' || r == '/':
		default:
			return false
		}
	}
	return true
}

// EscapeKey turns any name into one key segment: letters, digits, '-' and
// '_' stay, every other byte becomes =XX.
func EscapeKey(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "=%02X", c)
		}
	}
	if b.Len() == 0 {
		return "="
	}
	return b.String()
}
