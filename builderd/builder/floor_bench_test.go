package builder

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/hubd/hub"
)

// The floor of a task engine that keeps the design's invariants, built of
// raw NATS and JetStream calls only, measured on the benchmark's server in
// the same run. It is what any hub would have to do per task, however it were
// written, with none of kojibus' own work (no JSON, no state, no policy, no
// relay, no archive writes):
//
//   - a client's call reaches a hub by request/reply (makeTask, and the
//     builder's open and close): 3 requests;
//   - each of those is a durable state change, so a JetStream publish
//     acknowledged before the reply (invariant 6): 3 commits;
//   - the task is published to a work queue, here alongside its commit, not
//     after it; a builder that is waiting for work receives it and acks it;
//   - every change has its event (invariant 2), published after its commit is
//     stored (an event never describes a change that did not happen), and
//     the events' history is kept, so a consumer takes each one: 3 events.
//
// The hub, the client and each builder have connections of their own, as
// in kojibus' benchmarks. So a ratio to the floor says how much of the time
// is kojibus' own, and the floor's ratio to the raw round trip says what the
// invariants cost on this machine whatever the hub does.
type floorEngine struct {
	h      *hub.TestHub
	js     jetstream.JetStream // the "hub"'s
	name   string
	client *nats.Conn
	subs   []*nats.Subscription
}

func startFloor(b *testing.B, h *hub.TestHub) *floorEngine {
	b.Helper()
	ctx := context.Background()
	js, err := jetstream.New(h.Conn())
	if err != nil {
		b.Fatal(err)
	}
	f := &floorEngine{h: h, js: js, name: fmt.Sprintf("FLOOR%d", time.Now().UnixNano())}
	f.client = f.h.Connect(b, f.name)
	streams := []jetstream.StreamConfig{
		{Name: f.name + "_LOG", Subjects: []string{f.subject("log")}},
		{Name: f.name + "_WQ", Subjects: []string{f.subject("wq")}, Retention: jetstream.WorkQueuePolicy},
		{Name: f.name + "_EV", Subjects: []string{f.subject("ev.>")}},
	}
	for _, cfg := range streams {
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for _, s := range f.subs {
			_ = s.Unsubscribe()
		}
		for _, cfg := range streams {
			_ = js.DeleteStream(context.Background(), cfg.Name)
		}
	})
	// The hub's three calls; each handled in its own goroutine, as a hub
	// serves calls concurrently.
	serve := func(method string, dispatch bool, event string) {
		sub, err := h.Conn().Subscribe(f.subject("api."+method), func(m *nats.Msg) {
			go func() {
				if err := f.change(ctx, dispatch, event); err != nil {
					b.Error(err)
				}
				_ = m.Respond([]byte("1"))
			}()
		})
		if err != nil {
			b.Fatal(err)
		}
		f.subs = append(f.subs, sub)
	}
	serve("make", true, "free")
	serve("open", false, "open")
	serve("close", false, "closed")
	if err := h.Conn().Flush(); err != nil {
		b.Fatal(err)
	}
	return f
}

func (f *floorEngine) subject(s string) string { return "floor." + f.name + "." + s }

// change commits (and dispatches alongside), then publishes the event.
func (f *floorEngine) change(ctx context.Context, dispatch bool, event string) error {
	commit, err := f.js.PublishAsync(f.subject("log"), []byte(`{"writes":1}`))
	if err != nil {
		return err
	}
	var queued jetstream.PubAckFuture
	if dispatch {
		if queued, err = f.js.PublishAsync(f.subject("wq"), []byte("task")); err != nil {
			return err
		}
	}
	for _, fut := range []jetstream.PubAckFuture{commit, queued} {
		if fut == nil {
			continue
		}
		select {
		case <-fut.Ok():
		case err := <-fut.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	_, err = f.js.Publish(ctx, f.subject("ev."+event), []byte(`{"id":1}`))
	return err
}

// builders starts n builders, each on a connection of its own, taking up
// to slots tasks each; run is called for each task, with the builder's way
// to call the hub, before its queue message is acked.
func (f *floorEngine) builders(b *testing.B, n, slots int, run func(call func(method string) error)) {
	b.Helper()
	conns := make([]*nats.Conn, n)
	for i := range conns {
		conns[i] = f.h.Connect(b, f.name)
	}
	// Cleanups run last first: the runs end before their connections close.
	var running sync.WaitGroup
	var ccs []jetstream.ConsumeContext
	b.Cleanup(func() {
		for _, cc := range ccs {
			cc.Stop()
		}
		running.Wait()
	})
	for _, nc := range conns {
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}
		cons, err := js.CreateOrUpdateConsumer(context.Background(), f.name+"_WQ", jetstream.ConsumerConfig{Durable: "builders", AckPolicy: jetstream.AckExplicitPolicy})
		if err != nil {
			b.Fatal(err)
		}
		call := func(method string) error { return f.call(nc, method) }
		cc, err := cons.Consume(func(m jetstream.Msg) {
			running.Add(1)
			go func() {
				defer running.Done()
				run(call)
				_ = m.Ack()
			}()
		}, jetstream.PullMaxMessages(slots))
		if err != nil {
			b.Fatal(err)
		}
		ccs = append(ccs, cc)
	}
}

func (f *floorEngine) call(nc *nats.Conn, method string) error {
	_, err := nc.Request(f.subject("api."+method), nil, 5*time.Second)
	return err
}

// floorCreateToOpen is create -> open latency of the floor with one idle
// builder, as BenchmarkCreateToOpen measures kojibus': from the makeTask call
// to the open event reaching a subscriber.
func floorCreateToOpen(b *testing.B, h *hub.TestHub, n int) []time.Duration {
	f := startFloor(b, h)
	hub.TakeEvery(b, f.js, f.name+"_EV")
	f.builders(b, 1, 1, func(call func(string) error) {
		for _, method := range []string{"open", "close"} {
			if err := call(method); err != nil {
				b.Error(err)
			}
		}
	})
	opens := make(chan struct{}, 1)
	sub, err := f.client.Subscribe(f.subject("ev.open"), func(*nats.Msg) { opens <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	closes := make(chan struct{}, 1)
	csub, err := f.client.Subscribe(f.subject("ev.closed"), func(*nats.Msg) { closes <- struct{}{} })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = csub.Unsubscribe() }()
	lat := make([]time.Duration, 0, n)
	for range n {
		start := time.Now()
		if err := f.call(f.client, "make"); err != nil {
			b.Fatal(err)
		}
		for _, ch := range []chan struct{}{opens, closes} {
			select {
			case <-ch:
			case <-time.After(10 * time.Second):
				b.Fatal("floor: task not opened and closed")
			}
			if ch == opens {
				lat = append(lat, time.Since(start))
			}
		}
	}
	return lat
}

// floorTaskRate is tasks completed per second by the floor, with the load of
// BenchmarkTaskThroughput: 8 clients making tasks, 4 builders of 25 slots.
func floorTaskRate(b *testing.B, h *hub.TestHub, n int) float64 {
	f := startFloor(b, h)
	hub.TakeEvery(b, f.js, f.name+"_EV")
	var closed atomic.Int64
	done := make(chan struct{})
	f.builders(b, 4, 25, func(call func(string) error) {
		for _, method := range []string{"open", "close"} {
			if err := call(method); err != nil {
				b.Error(err)
				return
			}
		}
		if closed.Add(1) == int64(n) {
			close(done)
		}
	})
	start := time.Now()
	fromWorkers(b, 8, n, func() error { return f.call(f.client, "make") })
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("floor: %d of %d tasks closed", closed.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds()
}
