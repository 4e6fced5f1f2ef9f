// Package state is the hub's view of the kojibus state bucket and the only
// way the hub writes to it.
//
// Every hubd keeps an in-memory copy of the bucket, fed in stream order by an
// ordered consumer, so reads are map lookups on a consistent snapshot. A write
// is an optimistic transaction: the handler reads the snapshot, stages puts and
// events, and Commit publishes all of it as one JetStream atomic batch in which
// every written key carries the revision it was read at
// (Nats-Expected-Last-Subject-Sequence). The events go into an outbox entry in
// the same batch, so a state change and its events are one commit: after a
// kill -9 at any moment either both exist or neither does. The relay (relay.go)
// moves outbox entries to KOJI_EVENTS exactly once.
package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/kojibus/kojibus/bus"
)

const (
	kvSubjectPrefix = "$KV." + bus.StateBucket + "."
	kvStream        = "KV_" + bus.StateBucket
	// outboxPrefix keys hold the events of a committed change until the relay has published them.
	outboxPrefix = "outbox."
	// requestPrefix keys remember the result of an idempotent write for requestTTL.
	requestPrefix = "req."
	requestTTL    = 24 * time.Hour
	hdrTxn        = "Kojibus-Txn"
	hdrKVOp       = "KV-Operation"
	maxAttempts   = 20
)

type entry struct {
	val []byte
	rev uint64
}

// Store is the in-memory view of the state bucket plus the write path.
type Store struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.RWMutex
	writeMu sync.RWMutex                 // see Update
	kinds   map[string]map[string]*entry // first key segment -> key -> entry
	applied uint64                       // stream sequence of the last applied message
	changed chan struct{}                // closed and replaced whenever applied advances
	pending []jetstream.Msg              // messages of a transaction not yet complete
	loaded  chan struct{}
	loadAt  uint64

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
		kinds:   map[string]map[string]*entry{},
		changed: make(chan struct{}),
		loaded:  make(chan struct{}),
		done:    make(chan struct{}),
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
	s.loadAt = info.State.LastSeq
	if s.loadAt == 0 || info.State.Msgs == 0 {
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = append(s.pending, m)
	// Apply a transaction's messages together so no reader sees half of it.
	// While catching up, earlier messages of a batch may have been superseded
	// (last-per-subject delivery), so everything is applied as it comes.
	if i, n, ok := txnPos(m.Headers()); ok && i < n && md.Sequence.Stream < s.loadAt {
		// catching up: fall through and apply
	} else if ok && i < n {
		return
	}
	for _, pm := range s.pending {
		s.applyOne(pm)
	}
	s.pending = s.pending[:0]
	s.applied = md.Sequence.Stream
	close(s.changed)
	s.changed = make(chan struct{})
	// NumPending 0: caught up even when the stream's last message was deleted
	// (a relayed outbox entry, an expired request record), so loadAt never comes.
	if s.loadAt > 0 && (s.applied >= s.loadAt || md.NumPending == 0) {
		select {
		case <-s.loaded:
		default:
			close(s.loaded)
		}
	}
}

func (s *Store) applyOne(m jetstream.Msg) {
	key := strings.TrimPrefix(m.Subject(), kvSubjectPrefix)
	if strings.HasPrefix(key, outboxPrefix) || strings.HasPrefix(key, requestPrefix) {
		return // not part of the view
	}
	md, _ := m.Metadata()
	kind, _, _ := strings.Cut(key, ".")
	op := m.Headers().Get(hdrKVOp)
	if op == "DEL" || op == "PURGE" {
		if km := s.kinds[kind]; km != nil {
			delete(km, key)
		}
		return
	}
	km := s.kinds[kind]
	if km == nil {
		km = map[string]*entry{}
		s.kinds[kind] = km
	}
	km[key] = &entry{val: m.Data(), rev: md.Sequence.Stream}
}

func txnPos(h nats.Header) (i, n int, ok bool) {
	v := h.Get(hdrTxn)
	if v == "" {
		return 0, 0, false
	}
	a, b, found := strings.Cut(v, "/")
	if !found {
		return 0, 0, false
	}
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return i, n, true
}

// Applied is the stream sequence the view reflects.
func (s *Store) Applied() uint64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.applied
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

// Changed returns a channel closed at the next change of the view, and the
// revision the view is at now. Waiters (wait-repo) select on it instead of polling.
func (s *Store) Changed() (<-chan struct{}, uint64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.changed, s.applied
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

// Keys returns the keys of a kind (the first key segment) with a prefix, sorted.
func (v View) Keys(kind, prefix string) []string {
	km := v.s.kinds[kind]
	keys := make([]string, 0, len(km))
	for k := range km {
		if strings.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// Applied is the revision of the snapshot.
func (v View) Applied() uint64 { return v.s.applied }

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
	requestID string
}

type write struct {
	key    string
	val    []byte
	del    bool
	expect uint64
	ttl    time.Duration
}

// OutEvent is an event staged in a transaction, or (with Subject set) a
// message for another stream, such as a task for the builders' work queue.
type OutEvent struct {
	Address string         `json:"address,omitempty"`
	Props   map[string]any `json:"props,omitempty"`
	Body    any            `json:"body"`
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

// ConsumerSpec names a durable pull consumer of the task work queue.
type ConsumerSpec struct {
	Stream  string `json:"stream"`
	Name    string `json:"name"`
	Filter  string `json:"filter"`
	AckWait string `json:"ack_wait"`
}

// Dispatch stages a message for a work-queue stream: published by the relay,
// after the commit, exactly like events (and before them).
func (tx *Txn) Dispatch(msg OutEvent) {
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
	tx.events = append(tx.events, OutEvent{Address: address, Props: props, Body: body})
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
	}
	n++
	_ = tx.Put(key, n)
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

// Update runs fn on a snapshot and commits what it staged, retrying on a
// concurrent write. A non-empty requestID makes the write idempotent: a second
// Update with the same id returns the first one's stored result.
func (s *Store) Update(ctx context.Context, requestID string, fn UpdateFunc) (*Result, error) {
	if requestID != "" && !ValidKey(requestPrefix+EscapeKey(requestID)) {
		return nil, bus.ParameterError("invalid request id")
	}
	var lastErr error
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
		if attempt > 0 {
			backoff := time.Duration(attempt*attempt) * 200 * time.Microsecond
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if requestID != "" {
			if res, err := s.storedResult(ctx, requestID); err != nil || res != nil {
				return res, err
			}
		}
		s.mu.RLock()
		tx := &Txn{View: View{s}, requestID: requestID}
		val, err := fn(tx)
		s.mu.RUnlock()
		if err != nil {
			return nil, err
		}
		if len(tx.writes) == 0 && len(tx.events) == 0 {
			return &Result{Value: val, Rev: s.Applied()}, nil
		}
		rev, err := s.commit(ctx, tx, val)
		if errors.Is(err, errConflict) {
			lastErr = err
			// Let the view catch up with whatever won before trying again.
			_ = s.catchUp(ctx)
			continue
		}
		if err != nil {
			return nil, err
		}
		if err := s.WaitApplied(ctx, rev); err != nil {
			return nil, err
		}
		return &Result{Value: val, Rev: rev}, nil
	}
	return nil, bus.NewFault(bus.CodeConflict, "too many concurrent writes, giving up: %v", lastErr)
}

// catchUp waits until the view reflects the stream's last sequence now.
func (s *Store) catchUp(ctx context.Context) error {
	stream, err := s.js.Stream(ctx, kvStream)
	if err != nil {
		return err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return s.WaitApplied(ctx, info.State.LastSeq)
}

type storedRequest struct {
	Result json.RawMessage `json:"result"`
	Rev    uint64          `json:"rev"`
}

func (s *Store) storedResult(ctx context.Context, requestID string) (*Result, error) {
	stream, err := s.js.Stream(ctx, kvStream)
	if err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	m, err := stream.GetLastMsgForSubject(ctx, kvSubjectPrefix+requestPrefix+EscapeKey(requestID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state: request %s: %w", requestID, err)
	}
	var sr storedRequest
	if err := json.Unmarshal(m.Data, &sr); err != nil {
		return nil, fmt.Errorf("state: request %s: %w", requestID, err)
	}
	return &Result{Rev: sr.Rev, Replayed: true, Raw: sr.Result}, nil
}

var errConflict = errors.New("state: concurrent write")

func (s *Store) commit(ctx context.Context, tx *Txn, val any) (uint64, error) {
	writes := tx.writes
	batchID := nuid.Next()
	if tx.requestID != "" {
		res, err := json.Marshal(val)
		if err != nil {
			return 0, fmt.Errorf("state: encode result: %w", err)
		}
		// rev is filled in by readers from the message sequence; keep the result only.
		b, _ := json.Marshal(storedRequest{Result: res})
		writes = append(writes, write{key: requestPrefix + EscapeKey(tx.requestID), val: b, ttl: requestTTL})
	}
	if len(tx.events) > 0 {
		b, err := json.Marshal(tx.events)
		if err != nil {
			return 0, fmt.Errorf("state: encode events: %w", err)
		}
		// The outbox entry is the batch's last message: its sequence is the commit's.
		writes = append(writes, write{key: outboxPrefix + batchID, val: b})
	}
	n := len(writes)
	for i, w := range writes {
		m := nats.NewMsg(kvSubjectPrefix + w.key)
		m.Data = w.val
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(w.expect, 10))
		m.Header.Set(hdrTxn, fmt.Sprintf("%d/%d", i+1, n))
		if w.del {
			m.Header.Set(hdrKVOp, "DEL")
		}
		if w.ttl > 0 {
			m.Header.Set(jetstream.MsgTTLHeader, w.ttl.String())
		}
		if n == 1 {
			// A single write needs no batch.
			return s.publish(ctx, m)
		}
		m.Header.Set("Nats-Batch-Id", batchID)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < n-1 {
			if err := s.nc.PublishMsg(m); err != nil {
				return 0, fmt.Errorf("state: commit: %w", err)
			}
			continue
		}
		m.Header.Set("Nats-Batch-Commit", "1")
		return s.publish(ctx, m)
	}
	return 0, nil
}

type pubAck struct {
	Seq   uint64 `json:"seq"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// JetStream error codes that mean "someone else wrote first, try again".
var conflictCodes = map[int]bool{
	10071: true, // wrong last sequence
	10164: true, // wrong last sequence (clustered)
	10210: true, // atomic publish: too many inflight batches
}

func (s *Store) publish(ctx context.Context, m *nats.Msg) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := s.nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return 0, fmt.Errorf("state: commit: %w", err)
	}
	var ack pubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("state: commit: bad ack %q: %w", resp.Data, err)
	}
	if ack.Error != nil {
		if conflictCodes[ack.Error.ErrCode] {
			return 0, fmt.Errorf("%w: %s", errConflict, ack.Error.Description)
		}
		return 0, fmt.Errorf("state: commit: %s (%d)", ack.Error.Description, ack.Error.ErrCode)
	}
	return ack.Seq, nil
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
