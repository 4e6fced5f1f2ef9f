package state

import (
	"context"
	"encoding/json"
	"errors"
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

// Relay publishes committed outbox entries to KOJI_EVENTS exactly once and in
// commit order, then deletes them.
//
// Exactly once: each entry is delivered to one relay at a time. An entry
// delivered for the first time cannot have been published yet. A redelivered
// one (its relay died or stalled) is checked against the last message of
// KOJI_EVENTS, which carries the entry's sequence as its Koji-Event-Id; the
// Nats-Msg-Id of every event is a second guard within the dedupe window.
type Relay struct {
	nc  *nats.Conn
	js  jetstream.JetStream
	log *slog.Logger

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewRelay returns a relay publishing through js.
func NewRelay(nc *nats.Conn, js jetstream.JetStream, log *slog.Logger) *Relay {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Relay{nc: nc, js: js, log: log}
}

// Start creates the relay consumer if needed and starts relaying.
func (r *Relay) Start(ctx context.Context) error {
	cons, err := r.js.CreateOrUpdateConsumer(ctx, kvStream, jetstream.ConsumerConfig{
		Durable:       RelayConsumer,
		FilterSubject: kvSubjectPrefix + outboxPrefix + ">",
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: 1,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		r.run(runCtx, cons)
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
		it, err := cons.Messages(jetstream.PullMaxMessages(1))
		if err != nil {
			r.log.Error("relay: fetch", "err", err)
			sleepCtx(ctx, time.Second)
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
					sleepCtx(ctx, 200*time.Millisecond)
					continue
				}
				break
			}
		}
		stop()
		it.Stop()
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
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
	var events []OutEvent
	if err := json.Unmarshal(m.Data(), &events); err != nil {
		// An entry that does not decode was not written by a hub; drop it loudly.
		r.log.Error("relay: undecodable outbox entry dropped", "seq", seq, "err", err)
		return r.finish(ctx, m, seq)
	}
	published := false
	if md.NumDelivered > 1 {
		published, err = r.alreadyPublished(ctx, seq)
		if err != nil {
			return err
		}
	}
	if !published {
		if err := r.publish(ctx, seq, events); err != nil {
			return err
		}
	}
	return r.finish(ctx, m, seq)
}

func (r *Relay) finish(ctx context.Context, m jetstream.Msg, seq uint64) error {
	stream, err := r.js.Stream(ctx, kvStream)
	if err != nil {
		return err
	}
	if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("delete outbox entry %d: %w", seq, err)
	}
	return m.DoubleAck(ctx)
}

func (r *Relay) alreadyPublished(ctx context.Context, seq uint64) (bool, error) {
	stream, err := r.js.Stream(ctx, bus.EventsStream)
	if err != nil {
		return false, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return false, err
	}
	if info.State.LastSeq == 0 {
		return false, nil
	}
	last, err := stream.GetMsg(ctx, info.State.LastSeq)
	if err != nil {
		return false, err
	}
	return last.Header.Get(bus.HeaderEventID) == strconv.FormatUint(seq, 10), nil
}

func (r *Relay) publish(ctx context.Context, seq uint64, events []OutEvent) error {
	batchID := fmt.Sprintf("ev-%d", seq)
	for i, oe := range events {
		body, err := json.Marshal(oe.Body)
		if err != nil {
			return err
		}
		msg, err := bus.EventToMsg(&bus.Event{ID: seq, Address: oe.Address, Props: oe.Props, Body: body})
		if err != nil {
			return err
		}
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("ev-%d-%d", seq, i))
		if len(events) == 1 {
			_, err := publishAck(ctx, r.nc, msg)
			return err
		}
		msg.Header.Set("Nats-Batch-Id", batchID)
		msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < len(events)-1 {
			if err := r.nc.PublishMsg(msg); err != nil {
				return err
			}
			continue
		}
		msg.Header.Set("Nats-Batch-Commit", "1")
		_, err = publishAck(ctx, r.nc, msg)
		return err
	}
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
