package builder

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// A builder takes one task message at a time from a queue's consumer (one
// per free slot, never a batch). puller sends each pull request with a reply
// subject of its own under a long-lived subscription per consumer.
// jetstream's Fetch subscribes a new inbox for every pull, unsubscribes it
// after, and starts a goroutine to read it: that made each pull (one per
// task taken, one per empty queue looked at) take 1.3–1.8× a pull's round
// trip.
//
// A task message comes with its stream subject, not the pull's reply
// subject (only the subscription tells where it was sent), while a status
// answer (no messages, expired, consumer deleted) comes on the reply
// subject. So each consumer has its own subscription, and a status answer
// counts only for the pull it names.
type puller struct {
	nc     *nats.Conn
	prefix string

	mu      sync.Mutex
	n       uint64
	subs    map[string]*nats.Subscription // by consumer
	waiting map[string]*pending           // by consumer: its pull in flight
}

// pending is a pull in flight.
type pending struct {
	reply  string
	answer chan *nats.Msg // buffered: one answer
}

// pullGrace is how long after its expiry a pull's answer may take before the
// builder stops waiting (the server answers an expired pull at once).
const pullGrace = 2 * time.Second

// errConsumerGone says a queue's consumer no longer exists.
var errConsumerGone = errors.New("task queue consumer gone")

func newPuller(nc *nats.Conn) *puller {
	return &puller{nc: nc, prefix: nc.NewInbox(), subs: map[string]*nats.Subscription{}, waiting: map[string]*pending{}}
}

// Stop ends the subscriptions.
func (p *puller) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, sub := range p.subs {
		_ = sub.Unsubscribe()
	}
	clear(p.subs)
}

// subscribe makes sure consumer's answers have a subscription (p.mu held).
func (p *puller) subscribe(consumer string) error {
	if p.subs[consumer] != nil {
		return nil
	}
	sub, err := p.nc.Subscribe(p.prefix+"."+consumer+".*", func(m *nats.Msg) { p.deliver(consumer, m) })
	if err != nil {
		return fmt.Errorf("builder: subscribe pull answers: %w", err)
	}
	p.subs[consumer] = sub
	return nil
}

// deliver hands an answer to consumer's pull in flight. A task message
// nobody waits for (its pull was given up) is given back at once instead of
// after the ack wait; a status answer of a pull given up is dropped.
func (p *puller) deliver(consumer string, m *nats.Msg) {
	queued := isQueueMsg(m)
	p.mu.Lock()
	w := p.waiting[consumer]
	if w != nil && (queued || m.Subject == w.reply) {
		delete(p.waiting, consumer)
	} else {
		w = nil
	}
	p.mu.Unlock()
	switch {
	case w != nil:
		w.answer <- m
	case queued:
		_ = m.Respond([]byte("-NAK"))
	}
}

// isQueueMsg tells a stream message (acked on its reply subject) from a
// status answer.
func isQueueMsg(m *nats.Msg) bool {
	return strings.HasPrefix(m.Reply, "$JS.ACK.")
}

// pull asks consumer of stream for one message and returns it, or nil when
// there is none: at once with wait 0, else within wait. One pull per
// consumer at a time.
func (p *puller) pull(ctx context.Context, stream, consumer string, wait time.Duration) (*taskMsg, error) {
	p.mu.Lock()
	if err := p.subscribe(consumer); err != nil {
		p.mu.Unlock()
		return nil, err
	}
	p.n++
	w := &pending{reply: p.prefix + "." + consumer + "." + strconv.FormatUint(p.n, 10), answer: make(chan *nats.Msg, 1)}
	p.waiting[consumer] = w
	p.mu.Unlock()
	req := `{"batch":1,"no_wait":true}`
	if wait > 0 {
		req = `{"batch":1,"expires":` + strconv.FormatInt(wait.Nanoseconds(), 10) + `}`
	}
	err := p.nc.PublishRequest("$JS.API.CONSUMER.MSG.NEXT."+stream+"."+consumer, w.reply, []byte(req))
	if err == nil {
		timer := time.NewTimer(wait + pullGrace)
		defer timer.Stop()
		select {
		case m := <-w.answer:
			return pullAnswer(p.nc, m)
		case <-timer.C:
			err = fmt.Errorf("pull from %s: no answer within %s", consumer, wait+pullGrace)
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	p.mu.Lock()
	if p.waiting[consumer] == w {
		delete(p.waiting, consumer)
	}
	p.mu.Unlock()
	select {
	case m := <-w.answer: // answered meanwhile
		return pullAnswer(p.nc, m)
	default:
	}
	return nil, err
}

// pullAnswer reads a pull's answer: a task message, none, or an error.
func pullAnswer(nc *nats.Conn, m *nats.Msg) (*taskMsg, error) {
	if isQueueMsg(m) {
		return &taskMsg{m: m, nc: nc}, nil
	}
	switch status, desc := m.Header.Get("Status"), m.Header.Get("Description"); status {
	case "404", "408": // no messages; expired with none
		return nil, nil
	case "503": // no responders: nothing serves the consumer's pulls
		return nil, errConsumerGone
	default:
		if strings.Contains(strings.ToLower(desc), "consumer deleted") {
			return nil, errConsumerGone
		}
		return nil, fmt.Errorf("pull: status %q %s", status, desc)
	}
}

// taskMsg is a task queue message a builder took. Its acknowledgements are
// JetStream's, sent on its reply subject.
type taskMsg struct {
	m  *nats.Msg
	nc *nats.Conn
}

func (t *taskMsg) Subject() string      { return t.m.Subject }
func (t *taskMsg) Data() []byte         { return t.m.Data }
func (t *taskMsg) Headers() nats.Header { return t.m.Header }

// InProgress resets the message's ack wait.
func (t *taskMsg) InProgress() error { return t.m.Respond([]byte("+WPI")) }

// Nak gives the message back for redelivery now.
func (t *taskMsg) Nak() error { return t.m.Respond([]byte("-NAK")) }

// NakWithDelay gives the message back for redelivery after delay.
func (t *taskMsg) NakWithDelay(delay time.Duration) error {
	return t.m.Respond([]byte(`-NAK {"delay":` + strconv.FormatInt(delay.Nanoseconds(), 10) + `}`))
}

// Term tells the server never to deliver the message again.
func (t *taskMsg) Term() error { return t.m.Respond([]byte("+TERM")) }

// DoubleAck acks the message and waits until the server confirms it.
func (t *taskMsg) DoubleAck(ctx context.Context) error {
	if _, err := t.nc.RequestWithContext(ctx, t.m.Reply, []byte("+ACK")); err != nil {
		return fmt.Errorf("ack task message: %w", err)
	}
	return nil
}
