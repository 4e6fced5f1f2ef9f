package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// RelayConsumer is the durable consumer, shared by every hubd, that feeds
// outbox entries to the relay. Its priority group pins it to one hub's relay
// at a time, so events leave in commit order; that relay finishes up to
// relayBatch entries in one pass.
const RelayConsumer = "outbox-relay"

const (
	// relayGroup is the relay consumer's priority group (pinned client).
	relayGroup = "relay"
	// relayBatch bounds the entries delivered and not yet acked, which is
	// also the most one pass finishes.
	relayBatch = 256
	// relayAckWait: an entry left by a relay killed mid-pass is delivered
	// again after this long, and another hub's relay takes the pin when the
	// pinned one has not pulled for as long.
	relayAckWait = 5 * time.Second
	// writeOutEvery and writeOutBatch bound how long and how many finished
	// entries wait for their keys to be written out (and to be acked): a
	// key several of them write is written once, so a burst of tasks writes
	// each task record once instead of once per state.
	writeOutEvery = 200 * time.Millisecond
	writeOutBatch = relayBatch / 2
	// writeOutWindow bounds the keys a write-out has on their way at once.
	// They share the bucket's stream with new commits, which the server
	// stores behind every key already sent: under load a commit waited
	// behind a whole transaction's keys (seven for a sidetag) when they went
	// out a transaction at a time. Two at a time, each sent as soon as an
	// earlier one is stored, gave 22% more createSideTag calls per second
	// with 16 in flight, sustained over 40,000 calls (paired runs).
	writeOutWindow = 2
)

// Relay finishes committed transactions in commit order: it publishes their
// events to KOJI_EVENTS (and dispatch messages to their streams) exactly once,
// writes their keys out as KV entries, and purges the transaction messages.
// Void transactions are only deleted.
//
// Passes: the relay takes every entry delivered so far (up to relayBatch),
// sends the events and dispatches of all of them in commit order and waits
// for them once. Their keys are written out later, for the entries of
// several passes at once (writeOutEvery, writeOutBatch): each key once, with
// its last value, awaited once; then the last entry is acked (AckAll,
// confirmed) and they are deleted. So a burst of commits costs a few round
// trips, not a few per commit, and a record several of them change is
// written once.
//
// Order across hubs: the consumer is pinned to one relay; a relay that takes
// the pin over may find entries of the previous one still unacked (they come
// back after relayAckWait). An entry is relayed only when every entry before
// it is acked or in the same pass: the relay knows this when the transaction
// just before it (in its view) is the last one it finished itself, and asks
// the consumer's ack floor otherwise.
//
// Exactly once: an entry delivered for the first time to a relay that has
// not just started cannot have been published. Otherwise the last message
// of KOJI_EVENTS, whose Nats-Msg-Id is ev-<entry seq>-<index>, tells how far
// the relay that died got: entries before it are out, it is out up to
// index, later ones are not; the Nats-Msg-Id dedupe window is a second guard.
type Relay struct {
	store *Store
	nc    *nats.Conn
	js    jetstream.JetStream
	log   *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	consumers map[string]bool // consumers known to exist
	purgeTo   chan uint64     // the last entry of each finished pass: all up to it may be purged
	// finished is the last transaction whose events this relay published,
	// relayed the last entry so (a transaction or not), acked the last entry
	// it acked (0: none yet). The entries after acked wait for their keys
	// to be written out: in writing, the one write-out under way (its
	// outcome comes on done), then in unwritten. Only the relay's loop
	// touches these.
	finished, relayed, acked uint64
	unwritten, writing       toWriteOut
	done                     chan error
	// deleted, when set (tests), is told the last entry of each purge, so a
	// test waits on the relay instead of polling the stream.
	deleted chan<- uint64
	// keepFinished, when set (tests), makes no purges: the bucket then
	// looks as when a relay died between a write-out and its purge.
	keepFinished bool
	// pulling is the relay's pull from its consumer (see PullAgain).
	pulling jetstream.MessagesContext
	// passStall and writeStall log passes and write-outs that keep failing
	// (a full disk) once, not per attempt, and space the attempts.
	passStall, writeStall Stall
}

func (r *Relay) told(seq uint64) {
	if r.deleted != nil {
		r.deleted <- seq
	}
}

// NewRelay returns a relay publishing through js.
func NewRelay(nc *nats.Conn, js jetstream.JetStream, store *Store, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{store: store, nc: nc, js: js, log: log, consumers: map[string]bool{}, purgeTo: make(chan uint64, 4096),
		passStall: Stall{Log: log, What: "relay: publish events"}, writeStall: Stall{Log: log, What: "relay: write out keys"}}
}

// relayConsumerConfig is the relay consumer, starting after start-1.
func relayConsumerConfig(start uint64) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:        RelayConsumer,
		FilterSubject:  kvSubjectPrefix + outboxPrefix + ">",
		AckPolicy:      jetstream.AckAllPolicy,
		AckWait:        relayAckWait,
		MaxAckPending:  relayBatch,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		PriorityPolicy: jetstream.PriorityPolicyPinned,
		PriorityGroups: []string{relayGroup},
		PinnedTTL:      relayAckWait,
	}
	if start > 1 {
		c.DeliverPolicy, c.OptStartSeq = jetstream.DeliverByStartSequencePolicy, start
	}
	return c
}

// relayConsumer creates the relay consumer, or updates it. One made by an
// earlier kojibus (explicit acks, one entry at a time, no pin) cannot be
// updated: it is replaced by one starting after its ack floor, where its
// unfinished entries begin.
func (r *Relay) relayConsumer(ctx context.Context) (jetstream.Consumer, error) {
	old, err := r.js.Consumer(ctx, kvStream, RelayConsumer)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return r.js.CreateOrUpdateConsumer(ctx, kvStream, relayConsumerConfig(0))
	case err != nil:
		return nil, err
	}
	info := old.CachedInfo()
	if info.Config.AckPolicy == jetstream.AckAllPolicy && info.Config.PriorityPolicy == jetstream.PriorityPolicyPinned {
		return old, nil
	}
	r.log.Info("relay: replacing the relay consumer of an earlier version", "ack_floor", info.AckFloor.Stream)
	if err := r.js.DeleteConsumer(ctx, kvStream, RelayConsumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	return r.js.CreateOrUpdateConsumer(ctx, kvStream, relayConsumerConfig(info.AckFloor.Stream+1))
}

// Start creates the relay consumer if needed and starts relaying.
func (r *Relay) Start(ctx context.Context) error {
	cons, err := r.relayConsumer(ctx)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		r.run(runCtx, cons)
	}()
	go func() {
		defer r.wg.Done()
		r.purger(runCtx)
	}()
	return nil
}

// PullAgain makes the relay pull from its consumer again: after JetStream
// restarted (bus.Embedded.RestartJetStream) the server forgot its pull
// requests, which would otherwise be renewed only when heartbeats are missed.
func (r *Relay) PullAgain() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pulling != nil {
		r.pulling.Stop() // its loop ends and the relay pulls anew
	}
}

// Stop stops relaying; entries in flight are finished or left for
// redelivery, and the pin is given up so another hub's relay takes over at once.
func (r *Relay) Stop() {
	if r.cancel != nil {
		r.cancel()
		r.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		stream, err := r.js.Stream(ctx, kvStream)
		if err == nil {
			err = stream.UnpinConsumer(ctx, RelayConsumer, relayGroup)
		}
		if err != nil {
			r.log.Debug("relay: unpin", "err", err)
		}
	}
}

// isTxn tells a transaction from a KV delete of an outbox key (which has
// nothing to relay and is acked with the entries around it).
func isTxn(m jetstream.Msg) bool { return m.Headers().Get(hdrKVOp) == "" }

// outboxEntry is an outbox message delivered to this relay.
type outboxEntry struct {
	seq uint64
	msg jetstream.Msg
}

func (r *Relay) run(ctx context.Context, cons jetstream.Consumer) {
	held := map[uint64]jetstream.Msg{}
	resume := true // a relay that just started resumes after a dead one
	for ctx.Err() == nil {
		it, err := cons.Messages(jetstream.PullMaxMessages(relayBatch), jetstream.PullPriorityGroup(relayGroup))
		if err != nil {
			r.log.Error("relay: fetch", "err", err)
			bus.Sleep(ctx, time.Second)
			continue
		}
		r.mu.Lock()
		r.pulling = it
		r.mu.Unlock()
		stop := context.AfterFunc(ctx, it.Stop)
		for ctx.Err() == nil {
			resume = r.collectWriteOut(ctx, false) || resume
			if r.done == nil && r.unwritten.due() {
				resume = r.startWriteOut(ctx) || resume
			}
			// Block for one entry (or, while entries wait for an earlier
			// one held elsewhere or for their keys, a while), then take
			// what else is there.
			var m jetstream.Msg
			if wait := r.wait(len(held) > 0); wait == 0 {
				m, err = it.Next()
			} else {
				m, err = it.Next(jetstream.NextMaxWait(wait))
			}
			if err != nil && !errors.Is(err, nats.ErrTimeout) {
				break
			}
			for m != nil {
				r.hold(held, m)
				if len(held) >= relayBatch {
					break
				}
				if m, err = it.Next(jetstream.NextMaxWait(time.Microsecond)); err != nil {
					m = nil
				}
			}
			for ctx.Err() == nil && len(held) > 0 {
				n, err := r.pass(ctx, cons, held, resume)
				if err != nil {
					resume = true // some of it may be out
					bus.Sleep(ctx, r.passStall.Failed(err))
					continue
				}
				r.passStall.OK()
				if n == 0 {
					break // waiting for an earlier entry
				}
				resume = false
			}
		}
		stop()
		it.Stop()
	}
	r.flush()
}

// flush, on stop, writes out what is finished, so the next relay need not
// find out how far this one got; entries held too long are left, as while
// running.
func (r *Relay) flush() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r.collectWriteOut(ctx, true)
	if r.unwritten.last == nil || r.unwritten.stale() {
		return
	}
	w := r.unwritten
	if err := r.writeOut(ctx, &w); err != nil {
		r.log.Warn("relay: write out on stop", "err", err)
	}
}

// wait is how long the relay's loop may block for the next entry (0: until
// one comes): while entries wait for an earlier one held elsewhere, it looks
// again now and then; it collects a write-out under way in time, and starts
// the next when it is due.
func (r *Relay) wait(holding bool) time.Duration {
	var d time.Duration
	sooner := func(next time.Duration) {
		next = max(next, time.Millisecond)
		if d == 0 || next < d {
			d = next
		}
	}
	if holding {
		sooner(relayAckWait / 10)
	}
	if r.done != nil {
		sooner(writeOutEvery)
	}
	if r.unwritten.last != nil {
		sooner(time.Until(r.unwritten.since.Add(writeOutEvery)))
	}
	return d
}

// toWriteOut is what the entries finished since the last ack leave to do:
// write out the keys of their transactions and ack the last of them.
type toWriteOut struct {
	txns []txnToWrite // valid transactions, in commit order
	// voids are the void entries among them, deleted before any key is
	// written out (see deleteVoids).
	voids []uint64
	last  *outboxEntry // the last entry finished: its ack covers them all
	// since is when the first of them was finished; prevFinished is the
	// relay's finished before it.
	since        time.Time
	prevFinished uint64
	entries      int
}

type txnToWrite struct {
	seq uint64
	t   *txnMsg
}

// stale tells whether the entries were finished so long ago that the
// consumer may have delivered them again to another relay (this one
// stalled), which may write newer values of the same keys: writing these
// out could bring older values back (see leave).
func (w *toWriteOut) stale() bool {
	return time.Since(w.since) > relayAckWait/2
}

// due tells whether the unwritten entries are to be written out now.
func (w *toWriteOut) due() bool {
	return w.last != nil && (w.entries >= writeOutBatch || time.Since(w.since) >= writeOutEvery)
}

// then is w followed by the later entries of next.
func (w toWriteOut) then(next toWriteOut) toWriteOut {
	if next.last == nil {
		return w
	}
	w.txns = append(w.txns, next.txns...)
	w.voids = append(w.voids, next.voids...)
	w.last = next.last
	w.entries += next.entries
	return w
}

// startWriteOut starts writing out the unwritten entries beside the relay's
// passes, unless they are stale: then it leaves them, as collectWriteOut
// does, and returns true (the relay resumes).
func (r *Relay) startWriteOut(ctx context.Context) (resume bool) {
	if r.unwritten.stale() {
		r.leave(r.unwritten)
		return true
	}
	r.writing, r.unwritten = r.unwritten, toWriteOut{}
	done := make(chan error, 1)
	r.done = done
	w := r.writing
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		done <- r.writeOut(ctx, &w)
	}()
	return false
}

// collectWriteOut takes the outcome of the write-out under way, if it has
// one (or waits for it, with wait). A failed one is tried again with the
// next, unless it is too old (see startWriteOut). It returns true when the
// relay is to resume.
func (r *Relay) collectWriteOut(ctx context.Context, wait bool) (resume bool) {
	if r.done == nil {
		return false
	}
	var err error
	if wait {
		select {
		case err = <-r.done:
		case <-ctx.Done():
			return false
		}
	} else {
		select {
		case err = <-r.done:
		default:
			return false
		}
	}
	w := r.writing
	r.writing, r.done = toWriteOut{}, nil
	switch {
	case err == nil:
		r.acked = w.last.seq
		r.writeStall.OK()
		return false
	case w.stale():
		r.leave(w)
		return true
	}
	if !errors.Is(err, context.Canceled) {
		bus.Sleep(ctx, r.writeStall.Failed(fmt.Errorf("write out keys through %d: %w", w.last.seq, err)))
	}
	r.unwritten = w.then(r.unwritten)
	r.unwritten.entries = writeOutBatch // due at once
	return false
}

// leave gives up writing out w and every entry finished after it: the
// consumer delivers them again after the ack wait, perhaps to another relay
// that writes newer values of the same keys in the meantime, so writing them
// now could bring older values back. Whoever gets them finishes them as
// after a crash.
func (r *Relay) leave(w toWriteOut) {
	r.log.Warn("relay: finished entries waited too long to be written out; leaving them for redelivery",
		"after", r.acked, "through", r.relayed)
	r.finished, r.relayed = w.prevFinished, r.acked
	r.unwritten = toWriteOut{}
}

// writeOut writes out the keys of the entries of w and acks the last.
//
// A key several entries write is written out once, with the last value:
// the keys still come out in commit order, so a crash part of the way
// leaves every key up to some transaction, which is what a restarted view
// completes from the entries (completeDone); and a view that missed an entry
// missed all later ones of the same write-out too (a purge takes whole
// write-outs), so it reads their keys, not the entries.
func (r *Relay) writeOut(ctx context.Context, w *toWriteOut) error {
	if err := r.deleteVoids(ctx, w.voids); err != nil {
		return err
	}
	lastWriter := map[string]uint64{}
	for _, tw := range w.txns {
		for _, kw := range tw.t.Writes {
			lastWriter[kw.Key] = tw.seq
		}
	}
	// The keys go out writeOutWindow at a time: they share the bucket's
	// stream with new commits, which would otherwise wait behind them.
	keys := &sent{seq: w.last.seq}
	for _, tw := range w.txns {
		if err := r.materialize(ctx, keys, tw.seq, tw.t, lastWriter); err != nil {
			return err
		}
	}
	if err := r.await(ctx, keys); err != nil {
		return err
	}
	// One confirmed ack finishes them all (AckAll). Confirmed, because an
	// entry whose ack was lost would come back after later entries wrote
	// out the same keys.
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := w.last.msg.DoubleAck(actx)
	cancel()
	if err != nil {
		return fmt.Errorf("ack through %d: %w", w.last.seq, err)
	}
	select {
	case r.purgeTo <- w.last.seq:
	default: // the purger is behind: a later target covers this one
	}
	return nil
}

// deleteVoids deletes void entries from the bucket before the keys of
// their write-out go out. A view that loads takes every entry at or below
// the newest written-out key for a finished valid transaction and fills in
// its keys (completeDone); a void entry left there until the purge would be
// taken for one, and its writes (a task a conflicting makeTask never made)
// would appear after a restart. Void entries are few (conflicts, repeated
// requests), so one delete each costs little.
func (r *Relay) deleteVoids(ctx context.Context, voids []uint64) error {
	for _, seq := range voids {
		code, err := r.streamRequest(ctx, "MSG.DELETE", fmt.Appendf(nil, `{"seq":%d,"no_erase":true}`, seq))
		if err != nil && code != errCodeSequenceNotFound { // gone already: a write-out tried again
			return fmt.Errorf("delete void entry %d: %w", seq, err)
		}
	}
	return nil
}

// errCodeSequenceNotFound is JetStream's error code for a message
// sequence that is not in the stream.
const errCodeSequenceNotFound = 10043

// streamRequest sends a JetStream API request about the bucket's stream
// ($JS.API.STREAM.<op>.KV_koji) and returns the error of a failed one with
// JetStream's error code (0 when there is none).
func (r *Relay) streamRequest(ctx context.Context, op string, body []byte) (int, error) {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := r.nc.RequestWithContext(rctx, "$JS.API.STREAM."+op+"."+kvStream, body)
	if err != nil {
		return 0, err
	}
	var answer struct {
		Success bool `json:"success"`
		Error   *struct {
			ErrCode int `json:"err_code"`
		} `json:"error"`
	}
	switch {
	case json.Unmarshal(resp.Data, &answer) != nil:
		return 0, fmt.Errorf("%s: %s", op, resp.Data)
	case answer.Error != nil:
		return answer.Error.ErrCode, fmt.Errorf("%s: %s", op, resp.Data)
	case !answer.Success:
		return 0, fmt.Errorf("%s: %s", op, resp.Data)
	}
	return 0, nil
}

// hold adds a delivered entry to those held; a redelivery of one held
// replaces it.
func (r *Relay) hold(held map[uint64]jetstream.Msg, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		r.log.Error("relay: message without metadata", "subject", m.Subject(), "err", err)
		return
	}
	if md.Sequence.Stream <= r.relayed { // relayed is never below acked
		return // finished by this relay already: its ack is covered by a later one
	}
	held[md.Sequence.Stream] = m
}

// sent is a group of messages on their way.
type sent struct {
	seq     uint64
	futures []jetstream.PubAckFuture
	notes   []*nats.Msg // wake-ups to send once the dispatches are stored
}

// await waits until every message sent for a transaction is stored.
func (r *Relay) await(ctx context.Context, e *sent) error {
	return r.awaitOldest(ctx, e, 0)
}

// awaitOldest waits until the oldest messages of e are stored and drops
// them, until at most left remain.
func (r *Relay) awaitOldest(ctx context.Context, e *sent, left int) error {
	for len(e.futures) > left {
		select {
		case <-e.futures[0].Ok():
		case err := <-e.futures[0].Err():
			return fmt.Errorf("transaction %d: %w", e.seq, err)
		case <-ctx.Done():
			return ctx.Err()
		}
		e.futures[0] = nil
		e.futures = e.futures[1:]
	}
	return nil
}

// pass finishes the longest run of held entries, in commit order, that no
// unfinished entry precedes, and returns how many it finished (0: the first
// waits for an earlier entry that another relay left unacked).
func (r *Relay) pass(ctx context.Context, cons jetstream.Consumer, held map[uint64]jetstream.Msg, resume bool) (int, error) {
	seqs := make([]uint64, 0, len(held))
	for seq := range held {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	// The verdicts come from this hub's view, which applies transactions in
	// the same order and with the same rules as every other hub's.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := r.store.WaitApplied(wctx, seqs[len(seqs)-1])
	cancel()
	if err != nil {
		return 0, err
	}
	run, err := r.runnable(ctx, cons, seqs, held)
	if err != nil || len(run) == 0 {
		return 0, err
	}
	last := run[len(run)-1]
	// Where a relay that died got to, when one may have: this relay just
	// started or failed, or an entry comes again.
	var outSeq uint64
	outIdx := -1
	for _, e := range run {
		if md, _ := e.msg.Metadata(); resume || md != nil && md.NumDelivered > 1 {
			if outSeq, outIdx, err = r.lastEvent(ctx); err != nil {
				return 0, err
			}
			break
		}
	}
	// Events first, stored, then keys: the streams store independently, so
	// only waiting in between guarantees that written-out keys mean
	// published events (what a restarted view relies on).
	out := &sent{seq: last.seq}
	var toWrite []txnToWrite
	var voids []uint64
	for _, e := range run {
		if !isTxn(e.msg) {
			continue
		}
		v, t := r.store.verdictAndTxn(e.seq)
		switch v {
		case verdictValid:
			from := 0
			switch {
			case e.seq < outSeq:
				from = len(t.Events)
			case e.seq == outSeq:
				from = outIdx + 1
			}
			if err := r.publish(ctx, out, e.seq, t.Events, from); err != nil {
				return 0, err
			}
		case verdictDone:
			// Its keys were written out, perhaps not all of them, before a
			// crash: they are written out again with the others (no later
			// entry can have been written out, as this one was never acked).
		case verdictConflict, verdictDuplicate:
			voids = append(voids, e.seq) // nothing to publish or write out
			continue
		default:
			return 0, fmt.Errorf("no verdict for transaction %d", e.seq)
		}
		if t != nil {
			toWrite = append(toWrite, txnToWrite{e.seq, t})
		}
	}
	if err := r.await(ctx, out); err != nil {
		return 0, err
	}
	// Wake idle builders only now that their tasks are stored; a lost
	// wake-up is caught by the builder's safety timer.
	for _, note := range out.notes {
		_ = r.nc.PublishMsg(note)
	}
	// Their keys are written out with those of later passes (writeOut).
	w := &r.unwritten
	if w.last == nil {
		w.since, w.prevFinished = time.Now(), r.finished
	}
	w.txns = append(w.txns, toWrite...)
	w.voids = append(w.voids, voids...)
	w.last = &last
	w.entries += len(run)
	r.relayed = last.seq
	for i := len(run) - 1; i >= 0; i-- {
		if isTxn(run[i].msg) {
			r.finished = run[i].seq
			break
		}
	}
	for _, e := range run {
		delete(held, e.seq)
	}
	return len(run), nil
}

// runnable returns the held entries (sorted seqs) that may be relayed now:
// the first, if no unfinished entry precedes it, and each following one up
// to a transaction of the view that is not held. Those wait for the entries
// in between, which another relay left unacked and which come back here.
func (r *Relay) runnable(ctx context.Context, cons jetstream.Consumer, seqs []uint64, held map[uint64]jetstream.Msg) ([]outboxEntry, error) {
	// before is the transaction just before seq in the view.
	before := func(seq uint64) (uint64, error) {
		prev, known := r.store.txnBefore(seq)
		if !known && isTxn(held[seq]) {
			return 0, fmt.Errorf("no verdict for transaction %d", seq)
		}
		return prev, nil
	}
	want, err := before(seqs[0])
	if err != nil {
		return nil, err
	}
	if want != 0 && want != r.finished {
		// The consumer's ack floor is one below its lowest unacked entry.
		info, err := cons.Info(ctx)
		if err != nil {
			return nil, err
		}
		if info.AckFloor.Stream < want {
			return nil, nil
		}
	}
	var run []outboxEntry
	for _, seq := range seqs {
		prev, err := before(seq)
		if err != nil {
			return nil, err
		}
		if prev != want {
			break
		}
		run = append(run, outboxEntry{seq: seq, msg: held[seq]})
		if isTxn(held[seq]) {
			want = seq
		}
	}
	return run, nil
}

// materialize writes a transaction's keys as ordinary KV entries stamped
// with its sequence, so a restarted view can load them instead of the log.
// Each key waits until fewer than writeOutWindow sent before it (in e) are
// not stored yet; the rest are left in e.
func (r *Relay) materialize(ctx context.Context, e *sent, seq uint64, t *txnMsg, lastWriter map[string]uint64) error {
	rev := strconv.FormatUint(seq, 10)
	add := func(m *nats.Msg) error {
		if err := r.awaitOldest(ctx, e, writeOutWindow-1); err != nil {
			return err
		}
		m.Header.Set(hdrRev, rev)
		f, err := r.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("materialize transaction %d: %w", seq, err)
		}
		e.futures = append(e.futures, f)
		return nil
	}
	for _, w := range t.Writes {
		if lastWriter[w.Key] != seq {
			continue // a later entry of the pass writes it
		}
		m := nats.NewMsg(kvSubjectPrefix + w.Key)
		if w.Del {
			m.Header.Set(hdrKVOp, "DEL")
		} else {
			m.Data = w.Val
		}
		if err := add(m); err != nil {
			return err
		}
	}
	if t.Request != "" {
		m := nats.NewMsg(kvSubjectPrefix + requestPrefix + EscapeKey(t.Request))
		m.Data, _ = json.Marshal(storedRequest{Result: t.Result})
		m.Header.Set(jetstream.MsgTTLHeader, requestTTL.String())
		if err := add(m); err != nil {
			return err
		}
	}
	return nil
}

// Purges of finished entries are spaced at least purgeEvery apart, and
// further when they are slow: a purge of several messages makes the server
// recount the pending messages of every consumer of the bucket, and for a
// view's consumer (every key, one message per key) that walks every key. So
// a purge costs in proportion to the state, not to the entries it removes;
// spacing purges by purgeDuty times the last one's duration keeps them
// below 2% of the time at any size (a state of a million keys is purged
// every few seconds), while the entries left meanwhile cost only storage.
const (
	purgeEvery = 250 * time.Millisecond
	purgeDuty  = 50
	purgeMax   = 30 * time.Second
)

// purgeSpacing is the least time from the start of a purge that took took
// to the start of the next.
func purgeSpacing(took time.Duration) time.Duration {
	return min(max(purgeEvery, purgeDuty*took), purgeMax)
}

// purger removes finished entries from the bucket without holding the
// relay back: one purge of the outbox subjects below the last entry
// finished, so a burst of passes costs one request. Everything below it is
// finished: the relay acks a run only when no unfinished entry precedes it.
// A purge that fails is repeated with the next one; an entry left behind
// meanwhile is recognised as finished by a view that loads it.
func (r *Relay) purger(ctx context.Context) {
	var done uint64
	var next time.Time // the earliest start of the next purge
	if r.keepFinished {
		<-ctx.Done()
		return
	}
	for {
		var upTo uint64
		select {
		case <-ctx.Done():
			return
		case upTo = <-r.purgeTo:
		}
		if wait := time.Until(next); wait > 0 {
			bus.Sleep(ctx, wait)
		}
		start := time.Now()
		for more := true; more; { // take the newest target queued
			select {
			case seq := <-r.purgeTo:
				upTo = max(upTo, seq)
			default:
				more = false
			}
		}
		if upTo <= done {
			continue
		}
		_, err := r.streamRequest(ctx, "PURGE", fmt.Appendf(nil, `{"filter":%q,"seq":%d}`, kvSubjectPrefix+outboxPrefix+">", upTo+1))
		next = start.Add(purgeSpacing(time.Since(start)))
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("relay: purge finished entries", "through", upTo, "err", err)
			}
			continue
		}
		done = upTo
		r.told(upTo)
	}
}

// lastEvent returns the transaction and index of the last event in
// KOJI_EVENTS (index -1: the stream is empty). Events go out in commit
// order, each with Nats-Msg-Id ev-<seq>-<i>, and only the pinned relay
// publishes there, so it tells how far a relay that died got.
func (r *Relay) lastEvent(ctx context.Context) (seq uint64, index int, err error) {
	stream, err := r.js.Stream(ctx, bus.EventsStream)
	if err != nil {
		return 0, -1, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, -1, err
	}
	if info.State.LastSeq == 0 {
		return 0, -1, nil
	}
	last, err := stream.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		return 0, -1, err
	}
	if _, err := fmt.Sscanf(last.Header.Get(jetstream.MsgIDHeader), "ev-%d-%d", &seq, &index); err != nil {
		return 0, -1, nil // not the relay's (a test's, or an earlier format)
	}
	return seq, index, nil
}

// publish sends a transaction's dispatch messages and its events from index
// from on, in order, without waiting; the wake-ups for the dispatches go out
// once they are stored (see relay).
func (r *Relay) publish(ctx context.Context, e *sent, seq uint64, all []OutEvent, from int) error {
	var events []OutEvent
	for _, oe := range all {
		if oe.Subject == "" {
			events = append(events, oe)
			continue
		}
		f, note, err := r.dispatch(ctx, oe)
		if err != nil {
			return err
		}
		e.futures = append(e.futures, f)
		if note != nil {
			e.notes = append(e.notes, note)
		}
	}
	for i := from; i < len(events); i++ {
		oe := events[i]
		props, err := oe.props()
		if err != nil {
			return fmt.Errorf("event %d of %d: %w", i, seq, err)
		}
		msg, err := bus.EventToMsg(&bus.Event{ID: seq, Address: oe.Address, Props: props, Body: oe.Body})
		if err != nil {
			return err
		}
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("ev-%d-%d", seq, i))
		// Async publishes on one connection are stored in the order sent.
		f, err := r.js.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("publish events of %d: %w", seq, err)
		}
		e.futures = append(e.futures, f)
	}
	return nil
}

// props decodes an event's properties (numbers as json.Number, which keep
// their text in the message headers).
func (oe *OutEvent) props() (map[string]any, error) {
	if len(oe.Props) == 0 {
		return nil, nil
	}
	var props map[string]any
	dec := json.NewDecoder(bytes.NewReader(oe.Props))
	dec.UseNumber()
	if err := dec.Decode(&props); err != nil {
		return nil, fmt.Errorf("decode properties: %w", err)
	}
	return props, nil
}

// dispatch sends a work-queue message without waiting for its ack (publish
// waits for all of them) and returns the wake-up to send once it is stored.
// Its Nats-Msg-Id dedupes a republish after a relay crash; a duplicate beyond
// the window is harmless because builders claim tasks by attempt (fencing).
func (r *Relay) dispatch(ctx context.Context, oe OutEvent) (jetstream.PubAckFuture, *nats.Msg, error) {
	if oe.Consumer != nil {
		if err := r.ensureConsumer(ctx, oe.Consumer); err != nil {
			return nil, nil, err
		}
	}
	m := nats.NewMsg(oe.Subject)
	body := []byte(oe.Body)
	m.Data = body
	for k, v := range oe.Headers {
		m.Header.Set(k, v)
	}
	if oe.MsgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, oe.MsgID)
	}
	f, err := r.js.PublishMsgAsync(m)
	if err != nil {
		return nil, nil, fmt.Errorf("dispatch %s: %w", oe.Subject, err)
	}
	var note *nats.Msg
	if oe.Notify != "" {
		note = nats.NewMsg(oe.Notify)
		note.Data = body
		for k, v := range oe.Headers {
			note.Header.Set(k, v)
		}
	}
	return f, note, nil
}

func (r *Relay) ensureConsumer(ctx context.Context, spec *ConsumerSpec) error {
	r.mu.Lock()
	known := r.consumers[spec.Name]
	r.mu.Unlock()
	if known {
		return nil
	}
	_, err := r.js.CreateOrUpdateConsumer(ctx, spec.Stream, bus.TaskQueueConsumer(spec.Name, spec.Filter))
	if err != nil {
		return fmt.Errorf("create consumer %s: %w", spec.Name, err)
	}
	r.mu.Lock()
	r.consumers[spec.Name] = true
	r.mu.Unlock()
	return nil
}
