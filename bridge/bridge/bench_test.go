package bridge_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bridge/bridge"
	"github.com/kojibus/kojibus/bridge/rabbittest"
	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
	"github.com/kojibus/kojibus/hubd/hub"
)

// Benchmarks of the bridge against a real RabbitMQ over amqps, each beside
// its raw counterpart in the same run. Run with: go tool task bench.

// orderedReceiver counts messages on /topic/koji.# and checks that their
// sequence property grows; it returns a wait function.
func orderedReceiver(b *testing.B, r *rabbittest.Broker, n int, seqOf func(*amqp.Message) uint64) func() {
	got := r.Receive(b, "/topic/koji.#")
	done := make(chan error, 1)
	go func() {
		var last uint64
		for i := 0; i < n; i++ {
			m := <-got
			s := seqOf(m)
			if s <= last {
				done <- fmt.Errorf("message %d after %d: out of order", s, last)
				return
			}
			last = s
		}
		done <- nil
	}()
	return func() {
		select {
		case err := <-done:
			if err != nil {
				b.Fatal(err)
			}
		case <-time.After(5 * time.Minute):
			b.Fatal("receiver timed out")
		}
	}
}

// benchConfText is the protonmsg.conf of the benchmarks.
func benchConfText(r *rabbittest.Broker) string {
	return fmt.Sprintf("[broker]\nurls = %s\ncert = %s\ncacert = %s\ntopic_prefix = /topic/koji\nconnect_timeout = 5\nsend_timeout = 60\n[queue]\nenabled = true\n",
		r.URL(), r.HubPEM, r.CA)
}

func benchConf(b *testing.B, r *rabbittest.Broker) *bridge.Config {
	cfg, err := bridge.ParseConfig("protonmsg.conf", []byte(benchConfText(r)))
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}

// BenchmarkDelivery: task events published to KOJI_EVENTS and delivered by
// the bridge in order, beside a bare go-amqp sender keeping order with a
// window of 64 in-flight sends.
func BenchmarkDelivery(b *testing.B) {
	r := rabbittest.Start(b)
	h := hub.StartTestHub(b, nil)
	body := `{"attribute": "state", "old": "FREE", "new": "OPEN", "info": {"id": 1, "method": "runroot", "arch": "noarch", "request": "` + strings.Repeat("x", 700) + `"}}`
	var bareRate float64
	b.Run("bare-go-amqp", func(b *testing.B) {
		ctx := context.Background()
		wait := orderedReceiver(b, r, b.N, func(m *amqp.Message) uint64 { v, _ := m.ApplicationProperties["seq"].(int64); return uint64(v) })
		conn, err := r.Dial(ctx, r.HubPEM)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		sess, _ := conn.NewSession(ctx, nil)
		snd, err := sess.NewSender(ctx, "/topic/koji.task.open", nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		var receipts []amqp.SendReceipt
		for i := 1; i <= b.N; i++ {
			// the same message the bridge sends
			rc, err := snd.SendWithReceipt(ctx, &amqp.Message{Properties: &amqp.MessageProperties{MessageID: fmt.Sprintf("kojibus-%d", i)},
				ApplicationProperties: map[string]any{"type": "TaskStateChange", "id": int64(i), "parent": nil, "method": "runroot",
					"attribute": "state", "old": "FREE", "new": "OPEN", "seq": int64(i)}, Value: body}, nil)
			if err != nil {
				b.Fatal(err)
			}
			receipts = append(receipts, rc)
			if len(receipts) >= 64 {
				if _, err := receipts[0].Wait(ctx); err != nil {
					b.Fatal(err)
				}
				receipts = receipts[1:]
			}
		}
		for _, rc := range receipts {
			if _, err := rc.Wait(ctx); err != nil {
				b.Fatal(err)
			}
		}
		wait()
		b.StopTimer()
		bareRate = float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(bareRate, "msgs/s")
	})
	b.Run("bridge", func(b *testing.B) {
		nc := h.ConnectBridge(b, fmt.Sprintf("bench%d", b.N))
		bjs, _ := jetstream.New(nc)
		opts := bridge.Options{Config: benchConf(b, r), QueueDir: b.TempDir(), Name: fmt.Sprintf("bench%d", b.N)}
		// The first start creates the bridge's consumer; the events are
		// then published while it is stopped, and the hub has archived
		// them, so that the timed part is the bridge delivering a backlog
		// (as after an outage) and nothing else competes for the CPU.
		br, err := bridge.New(nc, bjs, opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := br.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		br.Stop()
		js, _ := jetstream.New(h.Conn())
		archived := archiveAcks(b, h.Conn())
		var last jetstream.PubAckFuture
		for i := 1; i <= b.N; i++ {
			m, _ := bus.EventToMsg(&bus.Event{ID: uint64(i), Address: "task.open",
				Props: map[string]any{"type": "TaskStateChange", "id": i, "parent": nil, "method": "runroot", "attribute": "state", "old": "FREE", "new": "OPEN"},
				Body:  []byte(body)})
			if last, err = js.PublishMsgAsync(m); err != nil {
				b.Fatal(err)
			}
		}
		var lastSeq uint64
		select {
		case ack := <-last.Ok():
			lastSeq = ack.Sequence
		case err := <-last.Err():
			b.Fatal(err)
		}
		archived(lastSeq)
		wait := orderedReceiver(b, r, b.N, func(m *amqp.Message) uint64 {
			var seq uint64
			fmt.Sscanf(fmt.Sprint(m.Properties.MessageID), "kojibus-%d", &seq)
			return seq
		})
		br, err = bridge.New(nc, bjs, opts)
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		start := time.Now()
		if err := br.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer br.Stop()
		wait()
		b.StopTimer()
		rate := float64(b.N) / time.Since(start).Seconds()
		b.ReportMetric(rate, "msgs/s")
		if bareRate > 0 {
			b.ReportMetric(bareRate/rate, "x-slower-than-bare")
		}
	})
}

// archiveAcks watches the hub archive's acks on KOJI_EVENTS (it acks an
// event once it is stored) and returns a function that waits until the
// event at a stream sequence has been acked.
func archiveAcks(b *testing.B, nc *nats.Conn) func(seq uint64) {
	acks := make(chan uint64, 1<<16)
	// $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
	sub, err := nc.Subscribe("$JS.ACK."+bus.EventsStream+".>", func(m *nats.Msg) {
		tok := strings.Split(m.Subject, ".")
		if len(tok) < 7 || !strings.HasPrefix(tok[3], "archive-") {
			return
		}
		if seq, err := strconv.ParseUint(tok[5], 10, 64); err == nil {
			select {
			case acks <- seq:
			default:
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	return func(seq uint64) {
		// The bridge's own acks must not reach this subscription later.
		defer func() { _ = sub.Unsubscribe() }()
		deadline := time.After(2 * time.Minute)
		for {
			select {
			case got := <-acks:
				if got >= seq {
					return
				}
			case <-deadline:
				b.Fatalf("the archive did not store event %d", seq)
			}
		}
	}
}

// BenchmarkHubWithBridge: runroot tasks created per second (8 clients
// calling runroot as koji's CLI does) with the bridge off, then on in the
// hub's process, then as its own process with the broker, both at nice 19,
// in the same run.
func BenchmarkHubWithBridge(b *testing.B) {
	r := rabbittest.Start(b)
	conf := filepath.Join(b.TempDir(), "hub.conf")
	if err := os.WriteFile(conf, []byte("[hub]\nPlugins = runroot_hub\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	h := hub.StartTestHub(b, func(c *hub.Config) { c.HubConf = conf })
	ctx := context.Background()
	for _, c := range []struct {
		method string
		args   []any
		kw     map[string]any
	}{
		{"createTag", []any{"bench-build"}, map[string]any{"arches": "x86_64"}},
		{"addHost", []any{"rr1", []string{"x86_64"}}, nil},
		{"addHostToChannel", []any{"rr1", "runroot"}, map[string]any{"create": true}},
	} {
		if err := h.Admin.Call(ctx, c.method, c.args, c.kw, nil); err != nil {
			b.Fatal(err)
		}
	}
	runrootKw := map[string]any{"channel": nil, "packages": []string{}, "mounts": []string{}, "repo_id": nil, "skip_setarch": false, "weight": nil}
	// The broker runs on the same machine in this benchmark (not where a
	// deployment puts it): its processor share is reported beside ours, so
	// the two can be told apart.
	create := func(b *testing.B) float64 {
		var wg sync.WaitGroup
		var next atomic.Int64
		b.ResetTimer()
		start := time.Now()
		brokerStart, selfStart := r.CPUTime(), bustest.ProcessCPU()
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(b.N) {
					if err := h.Admin.Call(ctx, "runroot", []any{"bench-build", "x86_64", []string{"true"}}, runrootKw, nil); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		b.StopTimer()
		elapsed := time.Since(start)
		rate := float64(b.N) / elapsed.Seconds()
		b.ReportMetric(rate, "runroot/s")
		b.ReportMetric(100*float64(bustest.ProcessCPU()-selfStart)/float64(elapsed), "hub-cpu-%")
		b.ReportMetric(100*float64(r.CPUTime()-brokerStart)/float64(elapsed), "broker-cpu-%")
		return rate
	}
	var off float64
	b.Run("bridge-off", func(b *testing.B) { off = create(b) })
	b.Run("bridge-on", func(b *testing.B) {
		nc := h.ConnectBridge(b, fmt.Sprintf("hubbench%d", b.N))
		bjs, _ := jetstream.New(nc)
		br, err := bridge.New(nc, bjs, bridge.Options{Config: benchConf(b, r), QueueDir: b.TempDir(), Name: fmt.Sprintf("hubbench%d", b.N)})
		if err != nil {
			b.Fatal(err)
		}
		if err := br.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		defer br.Stop()
		on := create(b)
		if off > 0 {
			b.ReportMetric(on/off, "x-of-bridge-off")
		}
	})
	// As a deployment that shares the hub's machine would run them: the
	// bridge as its own process and the broker, both below the hub's
	// processor priority (nice 19). The hub never waits for the bridge, so
	// under a load that takes every core the events wait in the stream
	// and the bridge catches up when the load ends; catch-up-ms is how long
	// after the last call it had delivered every event.
	b.Run("bridge-process-nice19", func(b *testing.B) {
		name := fmt.Sprintf("hubbenchproc%d", b.N)
		acked := bridgeProcess(b, h, r, name)
		if err := r.Renice(19); err != nil {
			b.Fatal(err)
		}
		defer func() { _ = r.Renice(0) }()
		on := create(b)
		if off > 0 {
			b.ReportMetric(on/off, "x-of-bridge-off")
		}
		start := time.Now()
		js, err := jetstream.New(h.Conn())
		if err != nil {
			b.Fatal(err)
		}
		stream, err := js.Stream(ctx, bus.EventsStream)
		if err != nil {
			b.Fatal(err)
		}
		info, err := stream.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		acked(info.State.LastSeq)
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "catch-up-ms")
	})
}

// bridgeProcess starts kojibridge (this test binary, see TestMain) at nice
// 19 on the hub's event stream, returns once its consumer is created, and
// stops it with SIGTERM when the benchmark ends. The function it returns
// waits until the bridge has acked the event at a stream sequence (and so,
// with AckAll, every one before it): it watches the bridge's acks go by.
func bridgeProcess(b *testing.B, h *hub.TestHub, r *rabbittest.Broker, name string) (waitAcked func(seq uint64)) {
	dir := b.TempDir()
	conf := filepath.Join(dir, "protonmsg.conf")
	if err := os.WriteFile(conf, []byte(benchConfText(r)), 0o600); err != nil {
		b.Fatal(err)
	}
	consumer := bridge.ConsumerPrefix + name
	created, err := h.Conn().SubscribeSync(fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.CREATED.%s.%s", bus.EventsStream, consumer))
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = created.Unsubscribe() }()
	var highest atomic.Uint64
	progress := make(chan struct{}, 1)
	acks, err := h.Conn().Subscribe("$JS.ACK.>", func(m *nats.Msg) {
		if seq, ok := ackedSeq(m.Subject, consumer); ok && seq > highest.Load() {
			highest.Store(seq)
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = acks.Unsubscribe() })
	cmd := exec.Command("nice", "-n", "19", os.Args[0], "--config", conf, "--data-dir", dir, "--name", name,
		"--nats", h.URL(), "--log-level", "warn")
	cmd.Env = append(os.Environ(), asKojibridge+"=1", "KOJIBRIDGE_NATS_PASSWORD="+h.Embedded().Secrets[bus.SecretBridge])
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	if _, err := created.NextMsg(30 * time.Second); err != nil {
		b.Fatalf("kojibridge did not create its consumer: %v", err)
	}
	return func(seq uint64) {
		deadline := time.After(2 * time.Minute)
		for highest.Load() < seq {
			select {
			case <-progress:
			case <-deadline:
				b.Fatalf("the bridge acked up to %d of %d within 2 minutes", highest.Load(), seq)
			}
		}
	}
}

// ackedSeq reads the stream sequence from the ack subject of a message
// delivered to consumer: $JS.ACK.<stream>.<consumer>.<delivered>.<seq>...,
// or with a domain and account hash before the stream.
func ackedSeq(subject, consumer string) (uint64, bool) {
	t := strings.Split(strings.TrimPrefix(subject, "$JS.ACK."), ".")
	if len(t) >= 9 {
		t = t[2:]
	}
	if len(t) < 4 || t[0] != bus.EventsStream || t[1] != consumer {
		return 0, false
	}
	seq, err := strconv.ParseUint(t[3], 10, 64)
	return seq, err == nil
}
