package state

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// RelayConsumer is the durable consumer, shared by every hubd, that feeds
// outbox entries to the relay. MaxAckPending 1 makes the hubs take turns, so
// events leave in commit order.
const RelayConsumer = "outbox-relay"

// Relay finishes committed transactions in commit order: it publishes their
// events to KOJI_EVENTS (and dispatch messages to their streams) exactly once,
// writes their keys out as KV entries, and deletes the transaction message.
// Void transactions are only deleted.
//
// Exactly once: each entry is delivered to one relay at a time. An entry
// delivered for the first time cannot have been published yet. For a
// redelivered one (its relay died or stalled), the last message of
// KOJI_EVENTS, whose Nats-Msg-Id is ev-<entry seq>-<index>, tells how many of
// its events are out, and the relay resumes after them; the Nats-Msg-Id
// dedupe window is a second guard.
type Relay struct {
	store *Store
	nc    *nats.Conn
	js    jetstream.JetStream
	log   *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	consumers map[string]bool // consumers known to exist
	deletes   chan uint64     // finished entries to delete
	// deleted, when set (tests), is told every entry deleted, so a test
	// waits on the relay instead of polling the stream.
	deleted chan<- uint64
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
	return &Relay{store: store, nc: nc, js: js, log: log, consumers: map[string]bool{}, deletes: make(chan uint64, 4096)}
}

// Start creates the relay consumer if needed and starts relaying.
func (r *Relay) Start(ctx context.Context) error {
	cons, err := r.js.CreateOrUpdateConsumer(ctx, kvStream, jetstream.ConsumerConfig{
		Durable:       RelayConsumer,
		FilterSubject: kvSubjectPrefix + outboxPrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       5 * time.Second, // a relay killed mid-entry delays events this long
		MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
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
		r.deleter(runCtx)
	}()
	return nil
}

// Stop stops relaying; an entry in flight is finished or left for redelivery.
func (r *Relay) Stop() {
	if r.cancel != nil {
		r.cancel()
		r.wg.Wait()
	}
}

func (r *Relay) run(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		// MaxAckPending 1 keeps delivery one at a time; a few pulls outstanding
		// let the next entry come the moment this one is acked.
		it, err := cons.Messages(jetstream.PullMaxMessages(8))
		if err != nil {
			r.log.Error("relay: fetch", "err", err)
			bus.Sleep(ctx, time.Second)
			continue
		}
		stop := context.AfterFunc(ctx, it.Stop)
		for {
			m, err := it.Next()
			if err != nil {
				break
			}
			for ctx.Err() == nil {
				if err := r.relay(ctx, m); err != nil {
					r.log.Error("relay: publish events", "subject", m.Subject(), "err", err)
					bus.Sleep(ctx, 200*time.Millisecond)
					continue
				}
				break
			}
		}
		stop()
		it.Stop()
	}
}

// sent is a transaction whose messages are on their way.
type sent struct {
	seq     uint64
	futures []jetstream.PubAckFuture
	notes   []*nats.Msg // wake-ups to send once the dispatches are stored
}

// await waits until every message sent for a transaction is stored.
func (r *Relay) await(ctx context.Context, e *sent) error {
	for _, f := range e.futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("transaction %d: %w", e.seq, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (r *Relay) relay(ctx context.Context, m jetstream.Msg) error {
	md, err := m.Metadata()
	if err != nil {
		return err
	}
	seq := md.Sequence.Stream
	if op := m.Headers().Get(hdrKVOp); op != "" {
		return m.Ack()
	}
	// The verdict comes from this hub's view, which applies transactions in
	// the same order and with the same rules as every other hub's.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = r.store.WaitApplied(wctx, seq)
	cancel()
	if err != nil {
		return err
	}
	v, t := r.store.verdictAndTxn(seq)
	switch v {
	case verdictValid:
	case verdictDone:
		// Its keys were written out, perhaps not all of them, before a
		// crash: write them again (no later entry can have been written
		// out, as this one was never acked), then finish it.
		if t != nil {
			if err := r.writeOut(ctx, seq, t); err != nil {
				return err
			}
		}
		return r.finish(ctx, m, seq)
	case verdictConflict, verdictDuplicate:
		return r.finish(ctx, m, seq) // void: nothing to publish
	default:
		return fmt.Errorf("no verdict for transaction %d", seq)
	}
	from := 0
	if md.NumDelivered > 1 {
		// A relay died on this entry: resume after the events it got out.
		if from, err = r.publishedUpTo(ctx, seq); err != nil {
			return err
		}
	}
	// Events first, stored, then keys: the streams store independently, so
	// only waiting in between guarantees that written-out keys mean
	// published events (what a restarted view relies on).
	out := &sent{seq: seq}
	if err := r.publish(ctx, out, t.Events, from); err != nil {
		return err
	}
	if err := r.await(ctx, out); err != nil {
		return err
	}
	// Wake idle builders only now that their tasks are stored; a lost
	// wake-up is caught by the builder's safety timer.
	for _, note := range out.notes {
		_ = r.nc.PublishMsg(note)
	}
	if err := r.writeOut(ctx, seq, t); err != nil {
		return err
	}
	return r.finish(ctx, m, seq)
}

// writeOut materializes a transaction's keys and waits until they are stored.
func (r *Relay) writeOut(ctx context.Context, seq uint64, t *txnMsg) error {
	keys := &sent{seq: seq}
	if err := r.materialize(keys, t); err != nil {
		return err
	}
	return r.await(ctx, keys)
}

// materialize writes a transaction's keys as ordinary KV entries stamped
// with its sequence, so a restarted view can load them instead of the log.
func (r *Relay) materialize(e *sent, t *txnMsg) error {
	rev := strconv.FormatUint(e.seq, 10)
	add := func(m *nats.Msg) error {
		m.Header.Set(hdrRev, rev)
		f, err := r.js.PublishMsgAsync(m)
		if err != nil {
			return fmt.Errorf("materialize transaction %d: %w", e.seq, err)
		}
		e.futures = append(e.futures, f)
		return nil
	}
	for _, w := range t.Writes {
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

// finish acks an entry, then has its message deleted in the background. The
// order is safe: an acked entry is never redelivered, and a view that loads
// an undeleted one recognises it as finished (its keys are materialized) or
// finds nothing to change (an entry without keys). A full queue of deletions
// holds the relay back rather than dropping one.
func (r *Relay) finish(ctx context.Context, m jetstream.Msg, seq uint64) error {
	if err := m.Ack(); err != nil {
		return err
	}
	select {
	case r.deletes <- seq:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// deleteWorkers bounds the deletions in flight.
const deleteWorkers = 32

// deleter deletes finished entries without holding the relay back: up to
// deleteWorkers requests are in flight, each with a timeout (a lost answer
// must not stall it). The test hook is told in sending order, so that it
// means "everything up to seq is deleted".
func (r *Relay) deleter(ctx context.Context) {
	var orderMu sync.Mutex
	var sentOrder []uint64
	answered := map[uint64]bool{}
	settle := func(seq uint64) {
		orderMu.Lock()
		defer orderMu.Unlock()
		answered[seq] = true
		for len(sentOrder) > 0 && answered[sentOrder[0]] {
			delete(answered, sentOrder[0])
			r.told(sentOrder[0])
			sentOrder = sentOrder[1:]
		}
	}
	subject := "$JS.API.STREAM.MSG.DELETE." + kvStream
	work := make(chan uint64)
	var wg sync.WaitGroup
	for range deleteWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := range work {
				rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				resp, err := r.nc.RequestWithContext(rctx, subject, fmt.Appendf(nil, `{"seq":%d,"no_erase":true}`, seq))
				cancel()
				var answer struct {
					Error *struct {
						ErrCode int `json:"err_code"`
					} `json:"error"`
				}
				switch {
				case err != nil:
					if ctx.Err() == nil {
						r.log.Warn("relay: delete finished entry", "seq", seq, "err", err)
					}
				// 10037: no message found (deleted already, e.g. by a relay that died after deleting it).
				case json.Unmarshal(resp.Data, &answer) != nil || answer.Error != nil && answer.Error.ErrCode != 10037:
					r.log.Warn("relay: delete finished entry", "seq", seq, "answer", string(resp.Data))
				}
				settle(seq)
			}
		}()
	}
	defer func() {
		close(work)
		wg.Wait()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case seq := <-r.deletes:
			orderMu.Lock()
			sentOrder = append(sentOrder, seq)
			orderMu.Unlock()
			select {
			case work <- seq:
			case <-ctx.Done():
				return
			}
		}
	}
}

// publishedUpTo returns how many events of transaction seq are already in
// KOJI_EVENTS. Events go out in order, each with Nats-Msg-Id ev-<seq>-<i>, and
// only this relay (one at a time) publishes there, so the stream's last
// message tells how far a relay that died got.
func (r *Relay) publishedUpTo(ctx context.Context, seq uint64) (int, error) {
	stream, err := r.js.Stream(ctx, bus.EventsStream)
	if err != nil {
		return 0, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.LastSeq == 0 {
		return 0, nil
	}
	last, err := stream.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		return 0, err
	}
	var lastSeq uint64
	var index int
	if _, err := fmt.Sscanf(last.Header.Get(jetstream.MsgIDHeader), "ev-%d-%d", &lastSeq, &index); err != nil || lastSeq != seq {
		return 0, nil
	}
	return index + 1, nil
}

// publish sends a transaction's dispatch messages and its events from index
// from on, in order, without waiting; the wake-ups for the dispatches go out
// once they are stored (see relay).
func (r *Relay) publish(ctx context.Context, e *sent, all []OutEvent, from int) error {
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
		body, err := json.Marshal(oe.Body)
		if err != nil {
			return err
		}
		msg, err := bus.EventToMsg(&bus.Event{ID: e.seq, Address: oe.Address, Props: oe.Props, Body: body})
		if err != nil {
			return err
		}
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("ev-%d-%d", e.seq, i))
		// Async publishes on one connection are stored in the order sent.
		f, err := r.js.PublishMsgAsync(msg)
		if err != nil {
			return fmt.Errorf("publish events of %d: %w", e.seq, err)
		}
		e.futures = append(e.futures, f)
	}
	return nil
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
	body, err := json.Marshal(oe.Body)
	if err != nil {
		return nil, nil, err
	}
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

func publishAck(ctx context.Context, nc *nats.Conn, m *nats.Msg) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return 0, err
	}
	var ack pubAck
	if err := json.Unmarshal(resp.Data, &ack); err != nil {
		return 0, fmt.Errorf("bad ack %q: %w", resp.Data, err)
	}
	if ack.Error != nil {
		// 10201: the batch holds a message id already stored, so it was published.
		if ack.Error.ErrCode == 10201 {
			return ack.Seq, nil
		}
		return 0, fmt.Errorf("%s (%d)", ack.Error.Description, ack.Error.ErrCode)
	}
	return ack.Seq, nil
}
