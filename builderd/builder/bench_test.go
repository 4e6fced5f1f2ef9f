package builder

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
	"github.com/kojibus/kojibus/hubd/hub"
)

// Benchmarks of the task engine, each beside the raw JetStream or NATS
// operation it is built on, measured on the same embedded server in the same
// run. Run with: go tool task bench (or go test -run '^$' -bench . ./builderd/builder/).

func durabilities() []bus.Durability {
	return []bus.Durability{bus.DurabilityInterval, bus.DurabilitySync}
}

// rawRoundTrip is a JetStream publish -> pull consumer -> ack round trip.
func rawRoundTrip(b *testing.B, h *hub.TestHub, n int) []time.Duration {
	ctx := context.Background()
	js, err := jetstream.New(h.Conn())
	if err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("RAWBENCH%d", time.Now().UnixNano())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"rawbench." + name}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(ctx, name) }()
	cons, err := js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := js.Publish(ctx, "rawbench."+name, []byte("x")); err != nil {
			b.Fatal(err)
		}
		batch, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		for m := range batch.Messages() {
			lat = append(lat, time.Since(start))
			_ = m.Ack()
		}
	}
	return lat
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

// BenchmarkCreateToOpen: latency from makeTask to task.open of sleep(0)
// tasks with one idle builder, beside a raw publish -> pull round trip.
func BenchmarkCreateToOpen(b *testing.B) {
	for _, d := range durabilities() {
		b.Run(string(d), func(b *testing.B) {
			h := hub.StartTestHub(b, func(c *hub.Config) { c.Durability = d })
			creds := addHostB(b, h, "bench1")
			startBuilderB(b, creds, 1)
			opens, closes := make(chan int64, 1024), make(chan int64, 1024)
			sub, err := h.Admin.Conn().Subscribe(bus.EventPrefix+"task.*", func(m *nats.Msg) {
				id, _ := strconv.ParseInt(m.Header.Get(bus.HeaderPropPrefix+"id"), 10, 64)
				switch m.Subject {
				case bus.EventPrefix + "task.open":
					opens <- id
				case bus.EventPrefix + "task.closed":
					closes <- id
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			wait := func(ch chan int64, id int64, what string) {
				for got := int64(0); got != id; {
					select {
					case got = <-ch:
					case <-time.After(10 * time.Second):
						b.Fatalf("task %d not %s", id, what)
					}
				}
			}
			ctx := context.Background()
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				start := time.Now()
				var id int64
				if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, nil, &id); err != nil {
					b.Fatal(err)
				}
				wait(opens, id, "opened")
				lat = append(lat, time.Since(start))
				// The next task finds the builder idle again.
				wait(closes, id, "closed")
			}
			b.StopTimer()
			raw := rawRoundTrip(b, h, 500)
			floor := floorCreateToOpen(b, h, 500)
			p50, p99, r50, f50 := percentile(lat, .5), percentile(lat, .99), percentile(raw, .5), percentile(floor, .5)
			b.ReportMetric(float64(p50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(p99.Microseconds()), "p99-µs")
			b.ReportMetric(float64(r50.Microseconds()), "raw-p50-µs")
			b.ReportMetric(float64(p50)/float64(r50), "x-raw")
			b.ReportMetric(float64(f50.Microseconds()), "floor-p50-µs")
			b.ReportMetric(float64(f50)/float64(r50), "floor-x-raw")
		})
	}
}

// BenchmarkTaskThroughput: no-op (sleep 0) tasks completed per second with 4
// builders of capacity 25.
func BenchmarkTaskThroughput(b *testing.B) {
	for _, d := range durabilities() {
		b.Run(string(d), func(b *testing.B) {
			h := hub.StartTestHub(b, func(c *hub.Config) { c.Durability = d })
			for i := 0; i < 4; i++ {
				creds := addHostB(b, h, fmt.Sprintf("tp%d", i))
				if err := h.Admin.Call(context.Background(), "editHost", []any{fmt.Sprintf("tp%d", i)}, map[string]any{"capacity": 25.0}, nil); err != nil {
					b.Fatal(err)
				}
				startBuilderB(b, creds, 25)
			}
			var closed atomic.Int64
			done := make(chan struct{})
			target := int64(b.N)
			sub, err := h.Admin.Conn().Subscribe(bus.EventPrefix+"task.closed", func(m *nats.Msg) {
				if closed.Add(1) == target {
					close(done)
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = sub.Unsubscribe() }()
			ctx := context.Background()
			b.ResetTimer()
			start := time.Now()
			fromWorkers(b, 8, b.N, func() error {
				return h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, nil, nil)
			})
			select {
			case <-done:
			case <-time.After(5 * time.Minute):
				b.Fatalf("%d of %d tasks closed", closed.Load(), b.N)
			}
			b.StopTimer()
			perSec := float64(b.N) / time.Since(start).Seconds()
			raw := rawWorkQueueRate(b, h, b.N)
			floor := floorTaskRate(b, h, max(b.N, 2000))
			b.ReportMetric(perSec, "tasks/s")
			b.ReportMetric(raw, "raw-msgs/s")
			b.ReportMetric(perSec/raw, "x-raw")
			b.ReportMetric(floor, "floor-tasks/s")
			b.ReportMetric(perSec/floor, "x-floor")
		})
	}
}

// rawWorkQueueRate is the raw counterpart of a task: a message published
// (8 publishers, each waiting for its ack) to a work-queue stream, taken by
// 4 pullers with 25 in flight each and acked. It returns messages per second.
func rawWorkQueueRate(b *testing.B, h *hub.TestHub, n int) float64 {
	ctx := context.Background()
	js, err := jetstream.New(h.Conn())
	if err != nil {
		b.Fatal(err)
	}
	name := fmt.Sprintf("RAWWQ%d", time.Now().UnixNano())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"rawwq." + name}, Retention: jetstream.WorkQueuePolicy}); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = js.DeleteStream(ctx, name) }()
	cons, err := js.CreateOrUpdateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		b.Fatal(err)
	}
	var acked atomic.Int64
	done := make(chan struct{})
	for w := 0; w < 4; w++ {
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			if acked.Add(1) == int64(n) {
				close(done)
			}
		}, jetstream.PullMaxMessages(25))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Stop()
	}
	start := time.Now()
	fromWorkers(b, 8, n, func() error {
		_, err := js.Publish(ctx, "rawwq."+name, []byte("x"))
		return err
	})
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("raw: %d of %d acked", acked.Load(), n)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkGetTaskInfo: getTaskInfo with 1 and 16 requests in flight,
// beside raw NATS request/reply.
func BenchmarkGetTaskInfo(b *testing.B) {
	h := hub.StartTestHub(b, nil)
	var id int64
	if err := h.Admin.Call(context.Background(), "makeTask", []any{"sleep", []any{0}}, nil, &id); err != nil {
		b.Fatal(err)
	}
	// The raw pair: a responder on the hub's connection, a requester on a
	// second connection of the hub role (user connections may not use other subjects).
	sub, err := h.Conn().Subscribe("rawbench.echo", func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = h.Conn().Flush()
	rawConn := h.Connect(b, "raw-client")
	var ids []int64 // made once, for the uncached runs
	for _, par := range []int{1, 16} {
		var rawPerSec float64
		b.Run(fmt.Sprintf("raw-request/inflight=%d", par), func(b *testing.B) {
			rawPerSec = inflight(b, par, func() error {
				_, err := rawConn.Request("rawbench.echo", []byte(`{"args":[1]}`), 5*time.Second)
				return err
			})
		})
		b.Run(fmt.Sprintf("getTaskInfo/inflight=%d", par), func(b *testing.B) {
			perSec := inflight(b, par, func() error {
				var t bus.Task
				return h.Admin.Call(context.Background(), "getTaskInfo", []any{id}, nil, &t)
			})
			if rawPerSec > 0 {
				b.ReportMetric(perSec/rawPerSec, "x-raw")
			}
			b.ReportMetric(perSec/184, "x-koji")
		})
		// Each call for another task than the last few thousand: the hub's
		// cache of answers by task revision never has it.
		b.Run(fmt.Sprintf("getTaskInfo-uncached/inflight=%d", par), func(b *testing.B) {
			if ids == nil {
				ids = manyTasks(b, h)
			}
			var next atomic.Int64
			perSec := inflight(b, par, func() error {
				var t bus.Task
				return h.Admin.Call(context.Background(), "getTaskInfo", []any{ids[next.Add(1)%int64(len(ids))]}, nil, &t)
			})
			if rawPerSec > 0 {
				b.ReportMetric(perSec/rawPerSec, "x-raw")
			}
			b.ReportMetric(perSec/184, "x-koji")
		})
	}
	// The same from a client process of its own, as kojictl calls and as
	// Koji's 184/s and 366/s were measured.
	c := bustest.StartClientProcess(b, h.ProfilePath(), h.URL(), h.Embedded().Secrets[bus.RoleHub], map[string]bustest.ClientOp{
		"raw-request": {Kind: "request", Subject: "rawbench.echo"},
		"getTaskInfo": {Kind: "call", Method: "getTaskInfo", Args: []any{id}},
	})
	for _, par := range []int{1, 16} {
		var rawPerSec float64
		b.Run(fmt.Sprintf("client-process/raw-request/inflight=%d", par), func(b *testing.B) {
			rawPerSec = inflightIn(b, c, "raw-request", par)
		})
		b.Run(fmt.Sprintf("client-process/getTaskInfo/inflight=%d", par), func(b *testing.B) {
			perSec := inflightIn(b, c, "getTaskInfo", par)
			if rawPerSec > 0 {
				b.ReportMetric(perSec/rawPerSec, "x-raw")
			}
			b.ReportMetric(perSec/184, "x-koji")
		})
	}
}

// manyTasks makes more tasks than the hub keeps getTaskInfo answers for.
func manyTasks(b *testing.B, h *hub.TestHub) []int64 {
	const n = 9000
	ids := make([]int64, n)
	var next atomic.Int64
	fromWorkers(b, 16, n, func() error {
		return h.Admin.Call(context.Background(), "makeTask", []any{"sleep", []any{0}}, nil, &ids[next.Add(1)-1])
	})
	return ids
}

func inflight(b *testing.B, par int, op func() error) float64 {
	return opsPerSec(b, func() { fromWorkers(b, par, b.N, op) })
}

// inflightIn is inflight with the calls made by client process c (the op
// of that name).
func inflightIn(b *testing.B, c *bustest.ClientProcess, op string, par int) float64 {
	return opsPerSec(b, func() {
		conflicts, _, err := c.Run(op, b.N, par)
		if err != nil {
			b.Fatal(err)
		}
		if conflicts > 0 {
			b.Errorf("%d calls gave up with a conflict", conflicts)
		}
	})
}

// opsPerSec times run (b.N ops) and reports their rate.
func opsPerSec(b *testing.B, run func()) float64 {
	b.ResetTimer()
	start := time.Now()
	run()
	b.StopTimer()
	perSec := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(perSec, "ops/s")
	return perSec
}

func addHostB(b *testing.B, h *hub.TestHub, name string) string {
	return addHost(b, h, name, "x86_64")
}

func startBuilderB(b *testing.B, creds string, maxjobs int) *Builder {
	return startBuilder(b, creds, func(c *Config) {
		c.Logger = nil
		if maxjobs > c.MaxJobs {
			c.MaxJobs = maxjobs
		}
	})
}

// fromWorkers runs op n times from workers goroutines at once and returns
// when all are done; an error (a conflict too) is reported and ends its
// worker.
func fromWorkers(b *testing.B, workers, n int, op func() error) {
	conflicts, err := bustest.RunInFlight(n, workers, op)
	if err != nil {
		b.Error(err)
	}
	if conflicts > 0 {
		b.Errorf("%d calls gave up with a conflict", conflicts)
	}
}
