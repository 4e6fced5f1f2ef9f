package builder

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/hub"
)

// pullQueue makes a work-queue stream with a task queue consumer "q" (as
// the hub makes them) and returns the stream's name and a puller.
func pullQueue(t *testing.T, h *hub.TestHub, js jetstream.JetStream, name string) (string, *puller) {
	t.Helper()
	ctx := context.Background()
	subject := "pulltest." + name
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, name, bus.TaskQueueConsumer("q", subject)); err != nil {
		t.Fatal(err)
	}
	p := newPuller(h.Conn())
	t.Cleanup(p.Stop)
	return name, p
}

func TestPullerTakesOneTaskOrNone(t *testing.T) {
	ctx := context.Background()
	h := hub.StartTestHub(t, nil)
	js, err := jetstream.New(h.Conn())
	if err != nil {
		t.Fatal(err)
	}
	var stream string // the subtest's
	publish := func(t *testing.T, js jetstream.JetStream, data string) {
		t.Helper()
		if _, err := js.Publish(ctx, "pulltest."+stream, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		run  func(t *testing.T, p *puller, js jetstream.JetStream)
	}{
		{"an empty queue answers none at once", func(t *testing.T, p *puller, _ jetstream.JetStream) {
			if m, err := p.pull(ctx, stream, "q", 0); m != nil || err != nil {
				t.Fatalf("got %v, %v; want none", m, err)
			}
		}},
		{"an empty queue answers none when the pull expires", func(t *testing.T, p *puller, _ jetstream.JetStream) {
			if m, err := p.pull(ctx, stream, "q", 50*time.Millisecond); m != nil || err != nil {
				t.Fatalf("got %v, %v; want none", m, err)
			}
		}},
		{"a waiting pull gets a task published after it", func(t *testing.T, p *puller, js jetstream.JetStream) {
			got := make(chan *taskMsg, 1)
			go func() {
				m, err := p.pull(ctx, stream, "q", 10*time.Second)
				if err != nil {
					t.Error(err)
				}
				got <- m
			}()
			// The pull is waiting once the consumer counts it.
			waitUntil(t, 10*time.Second, "the pull waiting", func() bool {
				info, err := js.Consumer(ctx, stream, "q")
				return err == nil && info.CachedInfo().NumWaiting == 1
			})
			publish(t, js, "late")
			if m := <-got; m == nil || string(m.Data()) != "late" || m.Subject() != "pulltest."+stream {
				t.Fatalf("got %v", m)
			}
		}},
		{"an acked task is gone", func(t *testing.T, p *puller, js jetstream.JetStream) {
			publish(t, js, "one")
			m, err := p.pull(ctx, stream, "q", 0)
			if err != nil || m == nil || string(m.Data()) != "one" {
				t.Fatalf("got %v, %v", m, err)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			if m, err := p.pull(ctx, stream, "q", 50*time.Millisecond); m != nil || err != nil {
				t.Fatalf("after ack: %v, %v", m, err)
			}
		}},
		{"a nak'ed task comes again", func(t *testing.T, p *puller, js jetstream.JetStream) {
			publish(t, js, "two")
			m, err := p.pull(ctx, stream, "q", 0)
			if err != nil || m == nil {
				t.Fatalf("got %v, %v", m, err)
			}
			if err := m.Nak(); err != nil {
				t.Fatal(err)
			}
			if again, err := p.pull(ctx, stream, "q", 5*time.Second); err != nil || again == nil || string(again.Data()) != "two" {
				t.Fatalf("after nak: %v, %v", again, err)
			}
		}},
		{"a terminated task never comes again", func(t *testing.T, p *puller, js jetstream.JetStream) {
			publish(t, js, "three")
			m, err := p.pull(ctx, stream, "q", 0)
			if err != nil || m == nil {
				t.Fatalf("got %v, %v", m, err)
			}
			if err := m.Term(); err != nil {
				t.Fatal(err)
			}
			if m, err := p.pull(ctx, stream, "q", 50*time.Millisecond); m != nil || err != nil {
				t.Fatalf("after term: %v, %v", m, err)
			}
		}},
		{"a task answering a pull given up on is given back at once", func(t *testing.T, p *puller, js jetstream.JetStream) {
			gone, cancel := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() {
				defer close(done)
				if m, err := p.pull(gone, stream, "q", 10*time.Second); m != nil || !errors.Is(err, context.Canceled) {
					t.Errorf("given up pull: %v, %v", m, err)
				}
			}()
			waitUntil(t, 10*time.Second, "the pull waiting", func() bool {
				info, err := js.Consumer(ctx, stream, "q")
				return err == nil && info.CachedInfo().NumWaiting == 1
			})
			cancel()
			<-done
			// The server still holds the pull and delivers to it; the
			// builder gives the task back instead of letting it wait out
			// its ack wait (minutes for task queues).
			publish(t, js, "orphan")
			m, err := p.pull(ctx, stream, "q", 10*time.Second)
			if err != nil || m == nil || string(m.Data()) != "orphan" {
				t.Fatalf("got %v, %v; want the task back", m, err)
			}
		}},
		{"a missing consumer is reported", func(t *testing.T, p *puller, _ jetstream.JetStream) {
			if m, err := p.pull(ctx, stream, "nosuch", 0); m != nil || !errors.Is(err, errConsumerGone) {
				t.Fatalf("got %v, %v; want errConsumerGone", m, err)
			}
		}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p *puller
			stream, p = pullQueue(t, h, js, fmt.Sprintf("PULLTEST%d", i))
			tc.run(t, p, js)
		})
	}
}
