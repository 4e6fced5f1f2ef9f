package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/storage"
)

// Options configure a bridge.
type Options struct {
	Config *Config
	// Name names the bridge: its durable consumer is bridge-<Name>, its
	// status answers on koji.bridge.status.
	Name string
	// QueueDir holds the fallback queue (Pebble).
	QueueDir string
	Logger   *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Status is what `kojictl bridge-status` shows and /metrics exports.
type Status struct {
	Name         string  `json:"name"`
	Broker       string  `json:"broker"` // connected broker URL, "" when none
	QueueEnabled bool    `json:"queue_enabled"`
	QueueDepth   int     `json:"queue_depth"`
	OldestQueued float64 `json:"oldest_queued_age"` // seconds; 0 when empty
	Sent         int64   `json:"sent"`
	Failed       int64   `json:"failed"`  // send attempts that failed (messages then queued or retried)
	Expired      int64   `json:"expired"` // queued messages dropped after max_age
	Skipped      int64   `json:"skipped"` // kojibus events protonmsg has no message for
	LastError    string  `json:"last_error"`
	LastSeq      uint64  `json:"last_seq"` // last event sequence handled
}

// Bridge sends events to the brokers.
type Bridge struct {
	opts    Options
	cfg     *Config
	log     *slog.Logger
	js      jetstream.JetStream
	nc      *nats.Conn
	queue   *storage.Queue
	brokers *brokers

	mu     sync.Mutex
	status Status
	// changed is closed at the next change of status (then replaced).
	changed chan struct{}
	// retryAt: while no broker accepts, new events go straight to the queue
	// until then (backing off), instead of waiting on dead brokers each time.
	retryAt time.Time
	backoff time.Duration

	cancel context.CancelFunc
	wg     sync.WaitGroup
	sub    *nats.Subscription
}

// ConsumerPrefix prefixes the bridges' durable consumers on KOJI_EVENTS.
const ConsumerPrefix = "bridge-"

// New returns a bridge reading events through js.
func New(nc *nats.Conn, js jetstream.JetStream, opts Options) (*Bridge, error) {
	if opts.Config == nil {
		return nil, errors.New("bridge: no configuration")
	}
	if opts.Name == "" {
		opts.Name = "kojibridge"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	b := &Bridge{opts: opts, cfg: opts.Config, log: opts.Logger, js: js, nc: nc}
	b.status = Status{Name: opts.Name, QueueEnabled: opts.Config.QueueEnabled}
	b.changed = make(chan struct{})
	br, err := newBrokers(opts.Config, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	b.brokers = br
	return b, nil
}

// Start opens the queue, creates the consumer and starts sending.
func (b *Bridge) Start(ctx context.Context) error {
	if b.opts.QueueDir == "" {
		return errors.New("bridge: no queue directory")
	}
	q, err := storage.OpenQueue(b.opts.QueueDir, b.log)
	if err != nil {
		return fmt.Errorf("bridge: %w", err)
	}
	b.queue = q
	cons, err := b.consumer(ctx)
	if err != nil {
		_ = q.Close()
		return fmt.Errorf("bridge: consumer: %w", err)
	}
	b.refreshQueueStats()
	sub, err := b.nc.Subscribe(StatusSubject, func(m *nats.Msg) {
		data, _ := json.Marshal(b.Status())
		_ = m.Respond(data)
	})
	if err != nil {
		_ = q.Close()
		return fmt.Errorf("bridge: status: %w", err)
	}
	b.sub = sub
	runCtx, cancel := context.WithCancel(context.Background())
	b.cancel = cancel
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.run(runCtx, cons)
	}()
	return nil
}

// consumer creates the bridge's durable consumer. A new bridge sends what
// happens from now on, as protonmsg does. An existing one resumes after the
// last event it acked: its consumer is recreated from there, because events
// a stopped or killed bridge had taken but not acked would otherwise come
// back only after AckWait, behind newer ones. Events acked past that point
// (acks are sent in order, so few) are sent again; their message-id tells.
func (b *Bridge) consumer(ctx context.Context) (jetstream.Consumer, error) {
	cfg := jetstream.ConsumerConfig{
		Durable:     ConsumerPrefix + b.opts.Name,
		Description: "protonmsg bridge " + b.opts.Name,
		// One ack per batch: events are sent and acked in stream order.
		AckPolicy: jetstream.AckAllPolicy,
		AckWait:   time.Minute, // extended with InProgress while retrying
		// Room for the next batch to arrive while one is being sent.
		MaxAckPending: 4 * maxBatch,
		DeliverPolicy: jetstream.DeliverNewPolicy,
	}
	old, err := b.js.Consumer(ctx, bus.EventsStream, cfg.Durable)
	switch {
	case err == nil:
		info, err := old.Info(ctx)
		if err != nil {
			return nil, err
		}
		// An ack policy cannot be changed (bridges before AckAll acked each
		// event): such a consumer is replaced like one with events pending.
		if info.NumAckPending > 0 || info.NumRedelivered > 0 || info.Config.AckPolicy != cfg.AckPolicy {
			if err := b.js.DeleteConsumer(ctx, bus.EventsStream, cfg.Durable); err != nil {
				return nil, err
			}
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = info.AckFloor.Stream + 1
			b.log.Info("bridge: resuming after the last acked event", "seq", info.AckFloor.Stream)
			return b.js.CreateConsumer(ctx, bus.EventsStream, cfg)
		}
		cfg.DeliverPolicy = info.Config.DeliverPolicy // cannot change; the rest may
		cfg.OptStartSeq = info.Config.OptStartSeq
		return b.js.CreateOrUpdateConsumer(ctx, bus.EventsStream, cfg)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return b.js.CreateConsumer(ctx, bus.EventsStream, cfg)
	default:
		return nil, err
	}
}

// StatusSubject is where bridges answer status requests.
const StatusSubject = bus.BridgeStatusSubject

// Stop stops sending; messages in flight are sent again by the next start.
func (b *Bridge) Stop() {
	if b.sub != nil {
		_ = b.sub.Unsubscribe()
	}
	if b.cancel != nil {
		b.cancel()
		b.wg.Wait()
	}
	b.brokers.close()
	if b.queue != nil {
		_ = b.queue.Close()
	}
}

// Changed returns a channel closed at the next change of the status, so
// that a watcher waits instead of polling.
func (b *Bridge) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// changedLocked wakes the watchers of Changed; b.mu is held.
func (b *Bridge) changedLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Status returns the bridge's current status.
func (b *Bridge) Status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.status
	s.Broker = b.brokers.connected()
	return s
}

func (b *Bridge) setErr(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.changedLocked() // the connected broker may have changed too
	if err == nil {
		b.status.LastError = ""
		b.backoff = 0
		b.retryAt = time.Time{}
		return
	}
	b.status.LastError = err.Error()
	b.status.Failed++
	b.backoff = min(max(2*b.backoff, 250*time.Millisecond), 30*time.Second)
	b.retryAt = b.opts.Now().Add(b.backoff)
}

func (b *Bridge) refreshQueueStats() {
	n, oldest, err := b.queue.Stats()
	if err != nil {
		b.log.Error("bridge: queue", "err", err)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.changedLocked()
	b.status.QueueDepth = n
	b.status.OldestQueued = 0
	if n > 0 {
		b.status.OldestQueued = b.opts.Now().Sub(oldest).Seconds()
	}
}

// pending is an event taken from the stream, not yet acked.
type pending struct {
	msg jetstream.Msg
	out *Outgoing // nil: nothing to send
}

// maxBatch bounds the events handled at once.
const maxBatch = 1024

// run takes events from the stream in the background (so that fetching
// and sending overlap) and handles whatever has arrived, in order.
func (b *Bridge) run(ctx context.Context, cons jetstream.Consumer) {
	it, err := cons.Messages(jetstream.PullMaxMessages(2 * maxBatch))
	if err != nil {
		b.log.Error("bridge: consume", "err", err)
		return
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	in := make(chan pending, maxBatch)
	fetched := make(chan struct{})
	go func() {
		defer close(fetched)
		for {
			m, err := it.Next()
			if err != nil {
				close(in)
				return
			}
			in <- b.decode(m)
		}
	}()
	defer func() {
		it.Stop()
		for range in { // let the fetcher finish
		}
		<-fetched
	}()
	idle := time.NewTicker(time.Second)
	defer idle.Stop()
	var held []pending
	for ctx.Err() == nil {
		items := held
		held = nil
		if len(items) == 0 {
			select {
			case p, ok := <-in:
				if !ok {
					return
				}
				items = append(items, p)
			case <-idle.C:
				// Idle with a backlog: drain it without waiting for new
				// events (protonmsg only drains when a new message comes).
				if b.queueDepth() > 0 {
					b.drainQueue(ctx)
				}
				continue
			case <-ctx.Done():
				return
			}
		}
		items = absorb(in, items)
		if len(items) >= sendWindow {
			// Under load, gather a bigger batch: each batch ends waiting for
			// its last window to settle, which costs about one window's time.
			items = linger(in, items, 5*time.Millisecond)
		}
		held = b.handle(ctx, items, in)
	}
}

// linger appends events arriving within d of each other, up to maxBatch.
func linger(in <-chan pending, items []pending, d time.Duration) []pending {
	t := time.NewTimer(d)
	defer t.Stop()
	for len(items) < maxBatch {
		select {
		case p, ok := <-in:
			if !ok {
				return items
			}
			items = append(items, p)
			if !t.Stop() {
				<-t.C
			}
			t.Reset(d)
		case <-t.C:
			return items
		}
	}
	return items
}

// absorb appends the events that have arrived, up to maxBatch.
func absorb(in <-chan pending, items []pending) []pending {
	for len(items) < maxBatch {
		select {
		case p, ok := <-in:
			if !ok {
				return items
			}
			items = append(items, p)
		default:
			return items
		}
	}
	return items
}

func (b *Bridge) queueDepth() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.status.QueueDepth
}

func (b *Bridge) decode(m jetstream.Msg) pending {
	md, err := m.Metadata()
	if err != nil {
		b.log.Error("bridge: event without metadata", "subject", m.Subject())
		return pending{msg: m}
	}
	ev, err := bus.EventFromMsg(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	if err != nil {
		b.log.Error("bridge: undecodable event, not sent", "seq", md.Sequence.Stream, "err", err)
		return pending{msg: m}
	}
	ev.Seq = md.Sequence.Stream
	if !Sendable(ev) {
		return pending{msg: m}
	}
	out, err := b.cfg.Convert(ev)
	if err != nil {
		b.log.Error("bridge: event not sent", "seq", ev.Seq, "err", err)
		return pending{msg: m}
	}
	return pending{msg: m, out: out}
}

// handle sends a batch of events in order, after any queued ones. Events
// no broker takes go to the queue when it is enabled, or are handed back to
// the stream to be tried again (in order) when it is not.
//
// It returns events that arrived while it kept retrying, to be handled next.
func (b *Bridge) handle(ctx context.Context, items []pending, in <-chan pending) (held []pending) {
	var outs []*Outgoing
	for _, it := range items {
		if it.out != nil {
			outs = append(outs, it.out)
		}
	}
	sent := 0
	if b.queueDepth() == 0 || b.drainQueue(ctx) {
		sent = b.sendNow(ctx, outs)
	}
	rest := outs[sent:]
	// Without a queue, keep trying in order, holding the events (the
	// stream would hand newer ones out before redelivering these).
	for len(rest) > 0 && !b.cfg.QueueEnabled && ctx.Err() == nil {
		bus.Sleep(ctx, b.retryDelay())
		// Newer events keep arriving (up to MaxAckPending): hold them,
		// and keep every held event from being redelivered meanwhile.
		held = absorb(in, held)
		for _, it := range items {
			_ = it.msg.InProgress()
		}
		for _, it := range held {
			_ = it.msg.InProgress()
		}
		if b.queueDepth() > 0 && !b.drainQueue(ctx) {
			continue // entries queued before the queue was turned off go first
		}
		rest = rest[b.sendNow(ctx, rest):]
	}
	if len(rest) > 0 && b.cfg.QueueEnabled {
		// Age counts from queueing, as proton_queue's created_ts does.
		queued := b.opts.Now()
		entries := make([]storage.QueueEntry, len(rest))
		for i, o := range rest {
			entries[i] = storage.QueueEntry{Seq: o.Seq, Address: o.Address, Props: o.Props, Body: o.Body, ID: o.ID, Created: queued}
		}
		for ctx.Err() == nil {
			err := b.queue.Append(entries)
			if err == nil {
				b.log.Warn("bridge: no broker accepted; queued", "messages", len(rest), "first", rest[0].Seq)
				b.refreshQueueStats()
				rest = nil
				break
			}
			b.log.Error("bridge: queue", "err", err)
			bus.Sleep(ctx, time.Second)
		}
	}
	// Ack, in order, what was sent or queued. Anything left (the bridge is
	// stopping) stays unacked: the next start resumes from the first of it.
	unsent := map[uint64]bool{}
	for _, o := range rest {
		unsent[o.Seq] = true
	}
	var skipped int64
	var last uint64
	var lastMsg jetstream.Msg
	for _, it := range items {
		if it.out != nil && unsent[it.out.Seq] {
			break
		}
		if it.out == nil {
			skipped++
		}
		if md, err := it.msg.Metadata(); err == nil {
			last = md.Sequence.Stream
		}
		lastMsg = it.msg
	}
	if lastMsg != nil {
		_ = lastMsg.Ack() // AckAll: every event before it too
	}
	if skipped > 0 || last > 0 {
		b.count(func(s *Status) {
			s.Skipped += skipped
			s.LastSeq = max(s.LastSeq, last)
		})
	}
	return held
}

func (b *Bridge) retryDelay() time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	return max(b.backoff, 250*time.Millisecond)
}

func (b *Bridge) count(f func(*Status)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(&b.status)
	b.changedLocked()
}

// sendNow sends messages unless the brokers failed a moment ago; it returns
// how many, from the first, were accepted.
func (b *Bridge) sendNow(ctx context.Context, outs []*Outgoing) int {
	if len(outs) == 0 {
		return 0
	}
	b.mu.Lock()
	wait := b.retryAt.After(b.opts.Now())
	b.mu.Unlock()
	if wait {
		return 0
	}
	var n int
	var err error
	if b.cfg.TestMode {
		n, err = b.testSend(outs)
	} else {
		n, err = b.brokers.send(ctx, outs)
	}
	b.count(func(s *Status) { s.Sent += int64(n) })
	if errors.Is(err, errStopping) {
		// Not a broker's failure: nothing to report or back off from.
		b.log.Info("bridge: stopped while sending; the next start sends the rest", "sent", n, "of", len(outs))
		return n
	}
	if err != nil {
		b.log.Warn("bridge: send", "sent", n, "of", len(outs), "err", err)
	}
	b.setErr(err)
	return n
}

// testSend is protonmsg's test_mode: nothing is sent; test_mode_fail
// percent of the messages fail (and, to keep the order, the ones after).
func (b *Bridge) testSend(outs []*Outgoing) (int, error) {
	for i := range outs {
		if b.cfg.TestModeFail > 0 && rand.IntN(100) < b.cfg.TestModeFail {
			return i, fmt.Errorf("test mode: simulated failure of %s", outs[i].ID)
		}
	}
	return len(outs), nil
}

// drainQueue drops entries past max_age, then sends the queue in order,
// batch_size at a time. It reports whether the queue is empty.
func (b *Bridge) drainQueue(ctx context.Context) bool {
	cutoff := b.opts.Now().Add(-b.cfg.QueueMaxAge)
	old, err := b.queue.DropOlderThan(cutoff)
	if err != nil {
		b.log.Error("bridge: queue", "err", err)
		return false
	}
	if len(old) > 0 {
		b.count(func(s *Status) { s.Expired += int64(len(old)) })
		b.log.Warn("bridge: queued messages older than max_age dropped", "count", len(old),
			"first", old[0].Seq, "last", old[len(old)-1].Seq, "max_age", b.cfg.QueueMaxAge)
	}
	defer b.refreshQueueStats()
	for ctx.Err() == nil {
		entries, err := b.queue.Peek(b.cfg.QueueBatchSize)
		if err != nil {
			b.log.Error("bridge: queue", "err", err)
			return false
		}
		if len(entries) == 0 {
			return true
		}
		outs := make([]*Outgoing, len(entries))
		for i, e := range entries {
			props := make(map[string]any, len(e.Props))
			for k, v := range e.Props {
				props[k] = amqpValue(v) // JSON numbers came back as float64
			}
			outs[i] = &Outgoing{Seq: e.Seq, Address: e.Address, Props: props, Body: e.Body, ID: e.ID}
		}
		n := b.sendNow(ctx, outs)
		if n > 0 {
			seqs := make([]uint64, n)
			for i := range seqs {
				seqs[i] = entries[i].Seq
			}
			if err := b.queue.Delete(seqs); err != nil {
				b.log.Error("bridge: queue", "err", err)
				return false
			}
			b.refreshQueueStats()
		}
		if n < len(entries) {
			return false
		}
	}
	return false
}
