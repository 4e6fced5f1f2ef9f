package hub

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
)

// BenchmarkCreateSideTag: createSideTag with 1 and 16 in flight, beside a
// raw KV put on the same server and its floor (raw calls only), and as a
// multiple of Koji's hub on this machine kind (62/s and 132/s). The calls
// come from a client process of their own ("client-process"), as Koji's
// were measured and as kojictl makes them; then, for comparison, from a
// client inside the hub's process ("client-in-hub-process"), which costs
// the machine less: no other process to wake for every message.
func BenchmarkCreateSideTag(b *testing.B) {
	dir := b.TempDir()
	conf := filepath.Join(dir, "hub.conf")
	if err := os.WriteFile(conf, []byte("[hub]\nPlugins = sidetag_hub\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	h := StartTestHub(b, func(c *Config) { c.HubConf, c.PluginConfigDir = conf, dir })
	ctx := context.Background()
	if err := h.Admin.Call(ctx, "createTag", []any{"f30-build"}, map[string]any{"arches": "x86_64"}, nil); err != nil {
		b.Fatal(err)
	}
	js, _ := jetstream.New(h.Conn())
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "bench", Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	// The floor of a createSideTag that keeps the invariants, of raw calls
	// only: the call reaches the hub (request/reply), its change is one
	// acknowledged write (a KV put), and its three events (tag, target,
	// sidetag) are stored after it and taken by a history consumer, as
	// the archive takes them. No policy, no JSON, no state, no relay.
	floor := startFloorHub(b, h, "bench")
	// Koji: 62/s with 1 in flight (16.1 ms/op), 132/s with 16 (7.6 ms/op).
	koji := map[string]float64{"koji": 1e9 / 62, "koji-par16": 1e9 / 132}
	ratios := map[string][]ratio{
		"floor":         {{"raw-kvput", 1, "x-raw-kv"}},
		"createSideTag": {{"raw-kvput", 1, "x-raw-kv"}, {"floor", 1, "x-floor"}, {"koji", 1, "x-of-koji-time"}},
	}
	b.Run("client-process", func(b *testing.B) {
		c := bustest.StartClientProcess(b, h.ProfilePath(), h.URL(), h.Embedded().Secrets[bus.RoleHub], map[string]bustest.ClientOp{
			"raw-kvput":     {Kind: "kvput", Bucket: "bench", Value: benchValue},
			"floor":         {Kind: "request", Subject: floor},
			"createSideTag": {Kind: "call", Method: "createSideTag", Args: []any{"f30-build"}},
		})
		bs := &benchSet{base: maps.Clone(koji)}
		for _, op := range []string{"raw-kvput", "floor", "createSideTag"} {
			bs.runIn(b, c, op, ratios[op])
		}
	})
	b.Run("client-in-hub-process", func(b *testing.B) {
		tcp := h.Connect(b, "bench-client")
		tjs, _ := jetstream.New(tcp)
		tkv, err := tjs.KeyValue(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		bs := &benchSet{base: maps.Clone(koji)}
		bs.run(b, "raw-kvput", nil, func(ctx context.Context, i int64) error {
			_, err := tkv.Put(ctx, "inhub."+strconv.FormatInt(i, 10), benchValue)
			return err
		})
		bs.run(b, "floor", ratios["floor"], func(ctx context.Context, i int64) error {
			_, err := tcp.RequestWithContext(ctx, floor, []byte("inhub."+strconv.FormatInt(i, 10)))
			return err
		})
		bs.run(b, "createSideTag", ratios["createSideTag"], func(ctx context.Context, _ int64) error {
			_, err := h.Admin.CallRaw(ctx, "createSideTag", []any{"f30-build"}, nil)
			return err
		})
	})
}

// benchValue is the small value the raw KV puts and the floor write.
var benchValue = []byte(`{"id": 1, "name": "f30-build-side-1", "extra": {"sidetag": true}}`)

// startFloorHub serves the floor of createSideTag on a subject of its own,
// on the hub's connection (the client calls on another, as kojibus'
// client does), and returns the subject.
func startFloorHub(b *testing.B, h *TestHub, bucket string) string {
	b.Helper()
	ctx := context.Background()
	nc := h.Conn()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, bucket)
	if err != nil {
		b.Fatal(err)
	}
	const stream, subject = "FLOOREVENTS", "floorbench.createSideTag"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"floorbench.event.>"}}); err != nil {
		b.Fatal(err)
	}
	TakeEvery(b, js, stream)
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		go func() {
			if _, err := kv.Put(ctx, "floor."+string(m.Data), benchValue); err != nil {
				b.Error(err)
				return
			}
			var acks []jetstream.PubAckFuture
			for _, ev := range []string{"tag.create", "target.create", "sidetag.create"} {
				f, err := js.PublishAsync("floorbench.event."+ev, benchValue)
				if err != nil {
					b.Error(err)
					return
				}
				acks = append(acks, f)
			}
			for _, f := range acks {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					b.Error(err)
					return
				}
			}
			_ = m.Respond(benchValue)
		}()
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return subject
}
