package state

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
)

// relayBenchRates are the write rates of BenchmarkRelayLag: the aim is
// every event stored within a second of its write's acknowledgement at
// 1,000 writes a second; the lower rate shows the relay where the disk's
// fsyncs (durability sync) cannot take 1,000 raw publishes a second.
var relayBenchRates = []int{1000, 250}

// BenchmarkRelayLag writes b.N transactions, each one key and one event, at
// relayBenchRate a second, and reports how long after a write was
// acknowledged (Update returned) its event was stored in KOJI_EVENTS (the
// stream's own timestamp): lag-p50/p99/max-ms. Beside it, raw JetStream
// publishes at the same rate on the same server: raw-p50/p99/max-ms from
// publish to ack. Run it for some seconds: -benchtime 5000x.
func BenchmarkRelayLag(b *testing.B) {
	for _, d := range []bus.Durability{bus.DurabilityInterval, bus.DurabilitySync} {
		for _, rate := range relayBenchRates {
			b.Run(fmt.Sprintf("%s/%d-per-s", d, rate), func(b *testing.B) { benchRelayLag(b, d, rate) })
		}
	}
}

func benchRelayLag(b *testing.B, d bus.Durability, rate int) {
	srv := bustest.StartServer(b, bustest.Options{Durability: d})
	nc, js := srv.Connect(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st := New(nc, js, nil)
	if err := st.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer st.Stop()
	relay := NewRelay(nc, js, st, nil)
	if err := relay.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer relay.Stop()

	// Raw JetStream first, on a stream of its own, at the same rate.
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "RAWBENCH", Subjects: []string{"rawbench.>"}}); err != nil {
		b.Fatal(err)
	}
	raw := make([]time.Duration, b.N)
	paced(b.N, rate, func(i int) {
		start := time.Now()
		if _, err := js.Publish(ctx, fmt.Sprintf("rawbench.%d", i%64), []byte("x")); err != nil {
			b.Error(err)
		}
		raw[i] = time.Since(start)
	})

	// Every event stored, by the transaction (event id) that emitted it.
	stored := map[uint64]time.Time{}
	var mu sync.Mutex
	all := make(chan struct{})
	cons, err := js.OrderedConsumer(ctx, bus.EventsStream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		var seq uint64
		var idx int
		if _, err := fmt.Sscanf(m.Headers().Get(jetstream.MsgIDHeader), "ev-%d-%d", &seq, &idx); err != nil {
			return
		}
		md, err := m.Metadata()
		if err != nil {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		stored[seq] = md.Timestamp
		if len(stored) == b.N {
			close(all)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Stop()

	acked := make([]time.Time, b.N)
	seqs := make([]uint64, b.N)
	b.ResetTimer()
	paced(b.N, rate, func(i int) {
		res, err := st.Update(ctx, "", func(tx *Txn) (any, error) {
			tx.Emit("bench.put", nil, i)
			return nil, tx.Put(fmt.Sprintf("bench.%d", i%256), i)
		})
		if err != nil {
			b.Error(err)
			return
		}
		acked[i], seqs[i] = time.Now(), res.Rev
	})
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		b.Fatalf("events of %d writes not all stored", b.N)
	}
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	lag := make([]time.Duration, b.N)
	for i, seq := range seqs {
		lag[i] = max(0, stored[seq].Sub(acked[i]))
	}
	reportPercentiles(b, "lag", lag)
	reportPercentiles(b, "raw", raw)
}

// paced runs op(i) for i in [0,n) at rate starts a second, each in a
// goroutine of its own (as independent clients would), and waits for all.
func paced(n, rate int, op func(i int)) {
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		if wait := time.Until(start.Add(time.Duration(i) * interval)); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() { op(i) })
	}
	wg.Wait()
}

func reportPercentiles(b *testing.B, name string, d []time.Duration) {
	slices.Sort(d)
	ms := func(x time.Duration) float64 { return float64(x) / float64(time.Millisecond) }
	b.ReportMetric(ms(d[len(d)/2]), name+"-p50-ms")
	b.ReportMetric(ms(d[len(d)*99/100]), name+"-p99-ms")
	b.ReportMetric(ms(d[len(d)-1]), name+"-max-ms")
}
