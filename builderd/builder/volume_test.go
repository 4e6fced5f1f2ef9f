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

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/hub"
)

// TestManyTasksAllClose runs more tasks than any consumer or ack limit of
// the defaults (1000) through 4 builders: every one must close. It caught
// the hub leaving a consumer per output file behind.
func TestManyTasksAllClose(t *testing.T) {
	const N = 1500
	h := hub.StartTestHub(t, nil)
	for i := 0; i < 4; i++ {
		creds := addHost(t, h, fmt.Sprintf("tp%d", i), "x86_64")
		_ = h.Admin.Call(context.Background(), "editHost", []any{fmt.Sprintf("tp%d", i)}, map[string]any{"capacity": 25.0}, nil)
		startBuilder(t, creds, func(c *Config) { c.MaxJobs = 25 })
	}
	var closed atomic.Int64
	allClosed := make(chan struct{})
	sub, err := h.Admin.Conn().Subscribe(bus.EventPrefix+"task.closed", func(m *nats.Msg) {
		if closed.Add(1) == N {
			close(allClosed)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	var wg sync.WaitGroup
	jobs := make(chan int, N)
	for i := 0; i < N; i++ {
		jobs <- i
	}
	close(jobs)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range jobs {
				if err := h.Admin.Call(context.Background(), "makeTask", []any{"sleep", []any{0}}, nil, nil); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-allClosed:
		return
	case <-time.After(2 * time.Minute):
	}
	ctx := context.Background()
	for st := 0; st <= 5; st++ {
		var n int
		_ = h.Admin.Call(ctx, "listTasks", []any{map[string]any{"state": []int{st}}, map[string]any{"countOnly": true}}, nil, &n)
		t.Logf("state %s: %d", bus.TaskStateName(st), n)
	}
	js, _ := jetstream.New(h.Conn())
	ts, _ := js.Stream(ctx, bus.TasksStream)
	lister := ts.ListConsumers(ctx)
	for ci := range lister.Info() {
		t.Logf("consumer %s pending=%d ackpending=%d redelivered=%d waiting=%d", ci.Name, ci.NumPending, ci.NumAckPending, ci.NumRedelivered, ci.NumWaiting)
	}
	kv, _ := js.Stream(ctx, "KV_koji")
	info, _ := kv.Info(ctx, jetstream.WithSubjectFilter("$KV.koji.outbox.>"))
	t.Logf("outbox pending: %d", len(info.State.Subjects))
	rc, _ := js.Consumer(ctx, "KV_koji", "outbox-relay")
	ri, _ := rc.Info(ctx)
	t.Logf("relay consumer pending=%d ackpending=%d redelivered=%d", ri.NumPending, ri.NumAckPending, ri.NumRedelivered)
	var hosts []bus.Host
	_ = h.Admin.Call(ctx, "listHosts", nil, nil, &hosts)
	for _, ho := range hosts {
		t.Logf("host %s ready=%v load=%v", ho.Name, ho.Ready, ho.TaskLoad)
	}
	t.Fatalf("closed %d of %d", closed.Load(), N)
}
