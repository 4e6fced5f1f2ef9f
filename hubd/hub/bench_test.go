package hub

// Benchmarks of the API path against raw NATS on the same embedded server.
//
//	go tool task bench     (or: go test -run '^$' -bench . -benchtime 2s ./hubd/hub/)
//
// For each durability mode (sync: fsync before every ack; interval) a hub is
// started and measured beside baselines on the same server in the same run:
//
//	raw-req     NATS request/reply to a trivial responder (in-process
//	            connection, as the hub's), requested over loopback TCP as
//	            kojictl does
//	raw-kvget   JetStream KV get of a small value (direct get)
//	raw-kvput   JetStream KV put of a small value (acked after storage)
//	getTag      koji.api.getTag of an existing tag (a read: served from the
//	            hub's in-memory view)
//	createTag   koji.api.createTag of a new tag (a write: one atomic batch of
//	            tag, name index, sequence and outbox entry, then the relay's
//	            event publish and outbox delete)
//	hello       what `kojictl hello` calls: getLoggedInUser + getKojiVersion
//
// Each runs serially (one request in flight) and with 16 in flight
// ("-par16", 16 goroutines). The kojibus benchmarks report x-raw-req /
// x-raw-kv: their ns/op divided by the baseline's ns/op of the same
// concurrency (x-raw-kv: getTag against raw-kvget, createTag against
// raw-kvput; hello against two raw round trips). A write that gives up with
// ConflictError (too many lost compare-and-set rounds) is counted in
// conflicts/op rather than failing the run.

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
)

const benchInFlight = 16

func BenchmarkAPI(b *testing.B) {
	for _, mode := range []bus.Durability{bus.DurabilitySync, bus.DurabilityInterval} {
		b.Run(string(mode), func(b *testing.B) { benchMode(b, mode) })
	}
}

// nsPerOp of a finished (sub-)benchmark run.
func nsPerOp(b *testing.B) float64 {
	if b.N == 0 {
		return 0
	}
	return float64(b.Elapsed().Nanoseconds()) / float64(b.N)
}

// benchSet runs ops serially and with benchInFlight requests in flight,
// keeping each one's ns/op (keyed name and name+"-par16") so that later ones
// can report their ratio to a baseline of the same concurrency.
type benchSet struct {
	base map[string]float64
}

// ratio is a metric reported as ns/op ÷ (factor × the ns/op of baseline).
type ratio struct {
	baseline string
	factor   float64
	metric   string
}

func (bs *benchSet) run(b *testing.B, name string, ratios []ratio, op func(ctx context.Context, i int64) error) {
	var counter atomic.Int64
	ctx := context.Background()
	bs.measure(b, name, ratios, func(b *testing.B, inFlight int) int64 {
		conflicts, err := bustest.RunInFlight(b.N, inFlight, func() error { return op(ctx, counter.Add(1)) })
		if err != nil {
			b.Fatal(err)
		}
		return conflicts
	})
}

// runIn is run with the ops made by a client process of their own (the
// op's name in c's ops). Its B/op and allocs/op are the hub process's; it
// reports the client process's processor time per op too.
func (bs *benchSet) runIn(b *testing.B, c *bustest.ClientProcess, name string, ratios []ratio) {
	bs.measure(b, name, ratios, func(b *testing.B, inFlight int) int64 {
		conflicts, cpu, err := c.Run(name, b.N, inFlight)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "client-proc-cpu-µs/op")
		return conflicts
	})
}

// measure runs ops (b.N of them with inFlight at a time, returning how many
// gave up with a conflict) with 1 and benchInFlight in flight as
// sub-benchmarks name and name-par16, and reports the ratios and the
// processor time of this process (the hub, the server, and the client
// unless it has a process of its own) per op.
func (bs *benchSet) measure(b *testing.B, name string, ratios []ratio, ops func(b *testing.B, inFlight int) (conflicts int64)) {
	for _, inFlight := range []int{1, benchInFlight} {
		sub, suffix := name, ""
		if inFlight > 1 {
			suffix = "-par16"
			sub += suffix
		}
		b.Run(sub, func(b *testing.B) {
			b.ReportAllocs()
			cpu := bustest.ProcessCPU()
			conflicts := ops(b, inFlight)
			b.StopTimer()
			b.ReportMetric(float64((bustest.ProcessCPU()-cpu).Microseconds())/float64(b.N), "proc-cpu-µs/op")
			ns := nsPerOp(b)
			bs.base[sub] = ns
			if conflicts > 0 {
				b.ReportMetric(float64(conflicts)/float64(b.N), "conflicts/op")
			}
			for _, r := range ratios {
				if base := bs.base[r.baseline+suffix]; base > 0 {
					b.ReportMetric(ns/(base*r.factor), r.metric)
				}
			}
		})
	}
}

func benchMode(b *testing.B, mode bus.Durability) {
	h := StartTestHub(b, func(c *Config) { c.Durability = mode })
	ctx := context.Background()
	e := h.Embedded()

	// The trivial responder: in-process like the hub's own connection.
	inproc, err := bus.Connect(ctx, bus.ConnectConfig{Name: "bench-responder", InProcess: e.Server, User: bus.RoleHub, Password: e.Secrets[bus.RoleHub]})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(inproc.Close)
	reply := []byte(`{"result":"1.35.3"}`)
	if _, err := inproc.Subscribe("bench.raw", func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
		b.Fatal(err)
	}
	if err := inproc.Flush(); err != nil {
		b.Fatal(err)
	}
	// The requester: loopback TCP, like kojictl and h.Admin.
	tcp := h.Connect(b, "bench-client")
	js, err := jetstream.New(tcp)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench", Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	tagValue, _ := json.Marshal(map[string]any{"id": 1, "name": "bench-tag", "arches": "x86_64", "locked": false, "perm": nil, "perm_id": nil, "extra": map[string]any{}})
	if _, err := kv.Put(ctx, "tag.1", tagValue); err != nil {
		b.Fatal(err)
	}
	if err := h.Admin.Call(ctx, "createTag", []any{"bench-tag"}, map[string]any{"arches": "x86_64"}, nil); err != nil {
		b.Fatal(err)
	}

	bs := &benchSet{base: map[string]float64{}}
	bs.run(b, "raw-req", nil, func(ctx context.Context, _ int64) error {
		_, err := tcp.Request("bench.raw", []byte(`{"args":[]}`), h.Admin.Timeout)
		return err
	})
	bs.run(b, "raw-kvget", nil, func(ctx context.Context, _ int64) error {
		_, err := kv.Get(ctx, "tag.1")
		return err
	})
	bs.run(b, "raw-kvput", nil, func(ctx context.Context, i int64) error {
		_, err := kv.Put(ctx, "put."+strconv.FormatInt(i, 10), tagValue)
		return err
	})
	bs.run(b, "getTag", []ratio{{"raw-req", 1, "x-raw-req"}, {"raw-kvget", 1, "x-raw-kv"}}, func(ctx context.Context, _ int64) error {
		_, err := h.Admin.CallRaw(ctx, "getTag", []any{"bench-tag"}, nil)
		return err
	})
	bs.run(b, "createTag", []ratio{{"raw-req", 1, "x-raw-req"}, {"raw-kvput", 1, "x-raw-kv"}}, func(ctx context.Context, i int64) error {
		_, err := h.Admin.CallRaw(ctx, "createTag", []any{fmt.Sprintf("bench-%s-%d", mode, i)}, nil)
		return err
	})
	bs.run(b, "hello", []ratio{{"raw-req", 2, "x-raw-req"}}, func(ctx context.Context, _ int64) error {
		if _, err := h.Admin.CallRaw(ctx, "getLoggedInUser", nil, nil); err != nil {
			return err
		}
		_, err := h.Admin.CallRaw(ctx, "getKojiVersion", nil, nil)
		return err
	})
}
