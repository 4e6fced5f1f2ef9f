package state

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
	"go.uber.org/goleak"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
)

type bundle struct {
	srv   *bustest.Server
	store *Store
	js    jetstream.JetStream
	nc    *nats.Conn
}

func setup(t *testing.T) *bundle {
	t.Helper()
	srv := bustest.StartServer(t, bustest.Options{})
	return setupOn(t, srv)
}

func setupOn(t *testing.T, srv *bustest.Server) *bundle {
	t.Helper()
	return setupWith(t, srv, nil)
}

// setupWith is setupOn with prepare run on the store before it starts.
func setupWith(t *testing.T, srv *bustest.Server, prepare func(*Store)) *bundle {
	t.Helper()
	nc, js := srv.Connect(t)
	st := New(nc, js, nil)
	if prepare != nil {
		prepare(st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := st.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	return &bundle{srv: srv, store: st, js: js, nc: nc}
}

// bucketLastSeq is the sequence of the last message stored in the state
// bucket's stream.
func bucketLastSeq(ctx context.Context, t *testing.T, b *bundle) uint64 {
	t.Helper()
	kvs, err := b.js.Stream(ctx, kvStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := kvs.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUpdateCommitsStateAndReadsItBack(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	res, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) {
		id := tx.NextID("tag")
		if err := tx.Put(fmt.Sprintf("tag.%d", id), map[string]any{"name": "f30"}); err != nil {
			return nil, err
		}
		return id, tx.Put("tagname."+EscapeKey("f30"), id)
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Value.(int64) != 1 {
		t.Fatalf("first id = %v, want 1", res.Value)
	}
	var got map[string]any
	err = b.store.Read(func(v View) error {
		ok, err := v.GetJSON("tag.1", &got)
		if !ok {
			return errors.New("tag.1 missing right after commit")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got["name"] != "f30" {
		t.Fatalf("tag.1 = %v", got)
	}
}

func TestFailedUpdateChangesNothing(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	before := b.store.Applied()
	_, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) {
		_ = tx.Put("tag.9", "x")
		tx.Emit("tag.create", nil, nil)
		return nil, bus.GenericError("no")
	})
	if !errors.Is(err, bus.ErrGeneric) {
		t.Fatalf("err = %v", err)
	}
	if b.store.Applied() != before {
		t.Fatal("a failed update wrote to the bucket")
	}
}

// Two stores (two hubd) racing on one counter never lose an increment.
func TestConcurrentUpdatesFromTwoHubsSerialize(t *testing.T) {
	b1 := setup(t)
	b2 := setupOn(t, b1.srv)
	ctx := ctxT(t)
	const perHub = 40
	var wg sync.WaitGroup
	errs := make(chan error, 2*perHub)
	ids := make(chan int64, 2*perHub)
	for _, st := range []*Store{b1.store, b2.store} {
		wg.Add(1)
		go func(st *Store) {
			defer wg.Done()
			for i := 0; i < perHub; i++ {
				res, err := st.Update(ctx, "", func(tx *Txn) (any, error) { return tx.NextID("x"), nil })
				if err != nil {
					errs <- err
					return
				}
				ids <- res.Value.(int64)
			}
		}(st)
	}
	wg.Wait()
	close(errs)
	close(ids)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("id %d handed out twice", id)
		}
		seen[id] = true
	}
	if len(seen) != 2*perHub {
		t.Fatalf("%d ids, want %d", len(seen), 2*perHub)
	}
}

// Transactions of one hub that each take an id from the same sequence at
// the same time all commit at the first attempt, with distinct ids.
func TestConcurrentIDsInOneHubDoNotVoidEachOther(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	const workers, each = 16, 10
	var wg sync.WaitGroup
	ids := make(chan int64, workers*each)
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				res, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) {
					id := tx.NextID("widget")
					return id, tx.Put(fmt.Sprintf("widget.%d", id), w)
				})
				if err != nil {
					errs <- err
					return
				}
				ids <- res.Value.(int64)
			}
		}(w)
	}
	wg.Wait()
	close(ids)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for id := range ids {
		if seen[id] {
			t.Fatalf("id %d handed out twice", id)
		}
		seen[id] = true
	}
	if len(seen) != workers*each {
		t.Fatalf("%d ids, want %d", len(seen), workers*each)
	}
	if v := b.store.Voided(); v != 0 {
		t.Fatalf("%d transactions voided, want none", v)
	}
	var last int64
	_ = b.store.Read(func(v View) error { _, err := v.GetJSON("seq.widget", &last); return err })
	if last != workers*each {
		t.Fatalf("sequence at %d, want %d", last, workers*each)
	}
}

func TestIdempotentRequestActsOnce(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	calls := 0
	fn := func(tx *Txn) (any, error) {
		calls++
		return tx.NextID("tag"), nil
	}
	r1, err := b.store.Update(ctx, "req-abc", fn)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.store.Update(ctx, "req-abc", fn)
	if err != nil {
		t.Fatal(err)
	}
	if !r2.Replayed || string(r2.Raw) != "1" || r1.Value.(int64) != 1 {
		t.Fatalf("second call: replayed=%v raw=%s", r2.Replayed, r2.Raw)
	}
	if calls != 1 {
		t.Fatalf("update ran %d times", calls)
	}
}

func TestRelayPublishesEventsOnceInOrder(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	relay, deleted := testRelay(b)
	events := make(chan *nats.Msg, 256)
	esub, err := b.nc.ChanSubscribe(bus.EventPrefix+">", events)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = esub.Unsubscribe() }()
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(relay.Stop)
	const n = 30
	for i := 0; i < n; i++ {
		_, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) {
			_ = tx.Put(fmt.Sprintf("thing.%d", i), i)
			tx.Emit("thing.add", map[string]any{"n": i}, map[string]any{"n": i})
			if i%3 == 0 {
				tx.Emit("thing.extra", map[string]any{"n": i}, nil)
			}
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	want := n + (n+2)/3
	for i := 0; i < want; i++ {
		select {
		case <-events:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d events, want %d", i, want)
		}
	}
	// A core subscriber can see an event before the stream has stored it;
	// the relay deletes a transaction only after the stream acknowledged
	// its events, so once all are deleted the stream holds all of them.
	waitDrained(t, b, deleted, b.store.Applied())
	stream, err := b.js.Stream(ctx, bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := stream.Info(ctx); err != nil || int(info.State.Msgs) != want {
		t.Fatalf("stream holds %v events, want %d (%v)", info.State.Msgs, want, err)
	}
	var lastID uint64
	next := 0
	for seq := uint64(1); seq <= uint64(want); seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := bus.EventFromMsg(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
		if err != nil {
			t.Fatal(err)
		}
		if ev.ID < lastID {
			t.Fatalf("event ids out of order: %d after %d", ev.ID, lastID)
		}
		lastID = ev.ID
		if ev.Address == "thing.add" {
			if fmt.Sprint(ev.Props["n"]) != fmt.Sprint(next) {
				t.Fatalf("event %d carries n=%v, want %d", seq, ev.Props["n"], next)
			}
			next++
		}
	}
}

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, bustest.LeakOptions()...)
}

func snapshot(st *Store) map[string]string {
	out := map[string]string{}
	_ = st.Read(func(v View) error {
		for kind := range st.kinds {
			for _, k := range v.Keys(kind, "") {
				val, rev, _ := v.Get(k)
				out[k] = fmt.Sprintf("%s@%d", val, rev)
			}
		}
		return nil
	})
	return out
}

// A view loaded from scratch agrees with the live one whether the relay has
// finished the transactions (materialized keys) or not (transaction log).
func TestRestartedViewAgreesWithLiveView(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	write := func(i int) {
		t.Helper()
		_, err := b.store.Update(ctx, fmt.Sprintf("req-%d", i), func(tx *Txn) (any, error) {
			_ = tx.Put(fmt.Sprintf("thing.%d", i%7), i)
			if i%5 == 0 {
				tx.Delete(fmt.Sprintf("thing.%d", (i+3)%7))
			}
			tx.Emit("thing.put", nil, i)
			return tx.NextID("thing"), nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	relay, deleted := testRelay(b)
	if err := relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		write(i)
	}
	// Let the relay finish those, then stop it and leave 15 more unfinished.
	waitDrained(t, b, deleted, b.store.Applied())
	relay.Stop()
	for i := 20; i < 35; i++ {
		write(i)
	}
	live := snapshot(b.store)
	fresh := setupOn(t, b.srv)
	if got := snapshot(fresh.store); fmt.Sprint(got) != fmt.Sprint(live) {
		t.Fatalf("fresh view differs:\n got %v\nwant %v", got, live)
	}
	// A retried request is recognised by the fresh view too.
	r, err := fresh.store.Update(ctx, "req-30", func(tx *Txn) (any, error) { return nil, tx.Put("thing.x", 1) })
	if err != nil || !r.Replayed {
		t.Fatalf("retry after restart: %+v %v", r, err)
	}
	relay2, deleted2 := testRelay(fresh)
	if err := relay2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer relay2.Stop()
	waitDrained(t, b, deleted2, fresh.store.Applied())
	again := setupOn(t, b.srv)
	if got := snapshot(again.store); fmt.Sprint(got) != fmt.Sprint(live) {
		t.Fatalf("view after relay differs:\n got %v\nwant %v", got, live)
	}
}

// testRelay starts a relay that reports each entry it deletes.
func testRelay(b *bundle) (*Relay, chan uint64) {
	deleted := make(chan uint64, 4096)
	r := NewRelay(b.nc, b.js, b.store, nil)
	r.deleted = deleted
	return r, deleted
}

// pauseView stops a view's consumer, as a reconnect does.
func pauseView(b *bundle) {
	b.store.cc.Stop()
	<-b.store.cc.Closed()
}

// resumeView has a paused view follow the bucket again from stream sequence from.
func resumeView(t *testing.T, b *bundle, from uint64) {
	t.Helper()
	cons, err := b.js.OrderedConsumer(ctxT(t), kvStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{kvSubjectPrefix + ">"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(b.store.applyMsg)
	if err != nil {
		t.Fatal(err)
	}
	b.store.cc = cc
}

// waitDrained waits on the relay until it has deleted the entry at through
// (and so every one before it), then checks no transaction message is left.
func waitDrained(t *testing.T, b *bundle, deleted <-chan uint64, through uint64) {
	t.Helper()
	for done := uint64(0); done < through; {
		select {
		case seq := <-deleted:
			done = max(done, seq)
		case <-time.After(10 * time.Second):
			t.Fatalf("relay deleted up to %d, want %d", done, through)
		}
	}
	ctx := ctxT(t)
	kvs, err := b.js.Stream(ctx, kvStream)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := kvs.GetLastMsgForSubject(ctx, kvSubjectPrefix+outboxPrefix+">"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("outbox not drained: %v %v", m, err)
	}
}

// A relay that died part-way through an entry's events is resumed after the
// last event it got out.
func TestRelayResumesAfterPublishedEvents(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	r := NewRelay(b.nc, b.js, b.store, nil)
	if seq, i, err := r.lastEvent(ctx); err != nil || seq != 0 || i != -1 {
		t.Fatalf("empty stream: %d %d %v", seq, i, err)
	}
	events := []OutEvent{{Address: "a.one", Body: json.RawMessage("1")}, {Address: "a.two", Body: json.RawMessage("2")}, {Address: "a.three", Body: json.RawMessage("3")}}
	publish := func(events []OutEvent, from int) {
		t.Helper()
		e := &sent{seq: 7}
		if err := r.publish(ctx, e, 7, events, from); err != nil {
			t.Fatal(err)
		}
		if err := r.await(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	publish(events[:2], 0)
	seq, i, err := r.lastEvent(ctx)
	if err != nil || seq != 7 || i != 1 {
		t.Fatalf("after two events: %d %d %v", seq, i, err)
	}
	publish(events, i+1)
	stream, _ := b.js.Stream(ctx, bus.EventsStream)
	info, _ := stream.Info(ctx)
	if info.State.Msgs != 3 {
		t.Fatalf("%d events stored, want 3 (no duplicates)", info.State.Msgs)
	}
	last, _ := stream.GetMsg(ctx, info.State.LastSeq)
	if last.Subject != bus.EventSubject("a.three") {
		t.Fatalf("last event %s", last.Subject)
	}
}

// Two hubs commit at once while the active relay stops half-way: the other
// hub's relay takes over once the pin lapses, and every event is in the
// stream exactly once, in commit order.
func TestRelayFailoverKeepsEventsOnceInOrder(t *testing.T) {
	b1 := setup(t)
	b2 := setupOn(t, b1.srv)
	ctx := ctxT(t)
	r1, _ := testRelay(b1)
	r2, _ := testRelay(b2)
	// Events as the stream stores them: a core subscription would also see
	// a republished duplicate (which the stream drops) and an event before
	// the stream has stored it.
	events := make(chan jetstream.Msg, 1024)
	econs, err := b1.js.OrderedConsumer(ctx, bus.EventsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	ecc, err := econs.Consume(func(m jetstream.Msg) { events <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer ecc.Stop()
	commit := func(st *Store, hub string, i int) {
		t.Helper()
		if _, err := st.Update(ctx, "", func(tx *Txn) (any, error) {
			id := tx.NextID("thing")
			tx.Emit("thing.add", map[string]any{"hub": hub, "n": i, "id": id}, nil)
			return nil, tx.Put(fmt.Sprintf("thing.%d", id), i)
		}); err != nil {
			t.Error(err)
		}
	}
	if err := r1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	commit(b1.store, "one", -1)
	<-events // r1 holds the pin
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r2.Stop)
	const perHub = 60
	var wg sync.WaitGroup
	for _, h := range []struct {
		st   *Store
		name string
	}{{b1.store, "one"}, {b2.store, "two"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perHub; i++ {
				commit(h.st, h.name, i)
			}
		}()
	}
	want := 1 + 2*perHub
	for got := 1; got < want; got++ {
		if got == want/2 {
			r1.Stop() // entries in flight are left for r2
		}
		select {
		case <-events:
		case <-time.After(15 * time.Second):
			c, _ := b1.js.Consumer(ctx, kvStream, RelayConsumer)
			ci, _ := c.Info(ctx)
			st, _ := b1.js.Stream(ctx, kvStream)
			m, merr := st.GetMsg(ctx, ci.AckFloor.Stream+1, jetstream.WithGetMsgSubject(kvSubjectPrefix+outboxPrefix+">"))
			var ms uint64
			if m != nil {
				ms = m.Sequence
			}
			t.Logf("consumer: floor %+v delivered %+v ackpending %d pending %d redelivered %d waiting %d; next outbox %d %v", ci.AckFloor, ci.Delivered, ci.NumAckPending, ci.NumPending, ci.NumRedelivered, ci.NumWaiting, ms, merr)
			t.Fatalf("%d events, want %d", got, want)
		}
	}
	wg.Wait()
	stream, err := b1.js.Stream(ctx, bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil || int(info.State.Msgs) != want {
		t.Fatalf("stream holds %v events, want %d (%v)", info.State.Msgs, want, err)
	}
	var lastID uint64
	seen := map[string]bool{}
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := bus.EventFromMsg(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
		if err != nil {
			t.Fatal(err)
		}
		if ev.ID <= lastID {
			t.Fatalf("event %d has id %d after %d: out of commit order or twice", seq, ev.ID, lastID)
		}
		lastID = ev.ID
		key := fmt.Sprint(ev.Props["hub"], "/", ev.Props["n"])
		if seen[key] {
			t.Fatalf("event %s twice", key)
		}
		seen[key] = true
	}
}

// A view that falls behind can miss a transaction altogether: another hub's
// relay finishes and deletes it before the view reads it (a reconnecting
// view restarts after the last message it saw). The view then takes the
// transaction's materialized keys instead, and its writer, waiting for the
// verdict, finds its request record and returns the committed result.
func TestViewThatMissedATransactionTakesItsKeys(t *testing.T) {
	b1 := setup(t)
	b2 := setupOn(t, b1.srv)
	ctx := ctxT(t)
	r2, deleted := testRelay(b2)
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r2.Stop)

	// b1's view stops following, as during a reconnect, and b2 writes
	// first: so b1's own transaction is not the next message for its view,
	// which could otherwise apply it when its commit is acknowledged.
	pauseView(b1)
	earlier, err := b2.store.Update(ctx, "", func(tx *Txn) (any, error) { return nil, tx.Put("thing.earlier", 1) })
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		res *Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := b1.store.Update(ctx, "req-missed", func(tx *Txn) (any, error) {
			tx.Emit("thing.add", nil, nil)
			return "made", tx.Put("thing.missed", "from b1")
		})
		done <- outcome{res, err}
	}()
	// b2's view sees the transaction; its relay finishes and deletes it.
	for through := uint64(0); through <= earlier.Rev; {
		select {
		case through = <-deleted:
		case <-time.After(10 * time.Second):
			t.Fatal("transaction not relayed")
		}
	}
	// Another write by b2, so the missed one is not the last in the stream.
	if _, err := b2.store.Update(ctx, "", func(tx *Txn) (any, error) { return nil, tx.Put("thing.later", 1) }); err != nil {
		t.Fatal(err)
	}

	// b1's view resumes after the last message it saw.
	resumeView(t, b1, b1.store.Applied()+1)

	var got outcome
	select {
	case got = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("writer still waiting")
	}
	if got.err != nil {
		t.Fatalf("writer: %v", got.err)
	}
	seq := got.res.Rev
	if seq <= earlier.Rev || !got.res.Replayed || string(got.res.Raw) != `"made"` {
		t.Fatalf("writer got %+v, want the stored result of the transaction after %d", got.res, earlier.Rev)
	}
	if err := b1.store.WaitApplied(ctx, seq); err != nil {
		t.Fatal(err)
	}
	var val string
	if err := b1.store.Read(func(v View) error { _, err := v.GetJSON("thing.missed", &val); return err }); err != nil || val != "from b1" {
		t.Fatalf("b1's view has thing.missed = %q (%v)", val, err)
	}
	if a := b1.store.Applied(); a < seq {
		t.Fatalf("b1's view at %d, before the missed transaction %d", a, seq)
	}
}

// A hub applies its own transaction when the server acknowledges its
// commit, if its view has every message before it, without waiting for the
// view's consumer to deliver it; the delivery that follows is skipped, not
// applied twice (which would find it void: its expected revision gone).
func TestOwnTransactionIsAppliedAtItsAck(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	increment := func(tx *Txn) (any, error) {
		var a int
		if _, err := tx.GetJSON("thing.a", &a); err != nil {
			return nil, err
		}
		return "own", tx.Put("thing.a", a+1)
	}
	if _, err := b.store.Update(ctx, "", increment); err != nil {
		t.Fatal(err)
	}
	// The view stops following: only the ack can now bring the verdict.
	pauseView(b)
	res, err := b.store.Update(ctx, "", increment)
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed || res.Value != "own" || res.Rev == 0 {
		t.Fatalf("writer got %+v, want its own valid result", res)
	}
	seq := res.Rev
	var a int
	if err := b.store.Read(func(v View) error { _, err := v.GetJSON("thing.a", &a); return err }); err != nil || a != 2 {
		t.Fatalf("thing.a = %d (%v), want 2 before the message is delivered", a, err)
	}

	// The view resumes at the transaction's own message.
	resumeView(t, b, seq)
	// A later write through the view shows the view went past it.
	later, err := b.store.Update(ctx, "", increment)
	if err != nil {
		t.Fatal(err)
	}
	if later.Rev <= seq {
		t.Fatalf("later write at %d, not after %d", later.Rev, seq)
	}
	if v := b.store.verdictOf(seq); v != verdictValid {
		t.Fatalf("verdict of the own transaction %d = %v after its delivery, want valid", seq, v)
	}
	if n := b.store.Voided(); n != 0 {
		t.Fatalf("%d transactions voided", n)
	}
	if err := b.store.Read(func(v View) error { _, err := v.GetJSON("thing.a", &a); return err }); err != nil || a != 3 {
		t.Fatalf("thing.a = %d (%v), want 3", a, err)
	}
}

// A relay killed while writing out a transaction's keys leaves some of them
// stored: a restarted view takes the rest from the transaction, the relay
// writes them out again, and nothing is lost once the entry is deleted.
func TestPartlyWrittenOutTransactionIsCompleted(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	res, err := b.store.Update(ctx, "req-partial", func(tx *Txn) (any, error) {
		if err := tx.Put("thing.a", "A"); err != nil {
			return nil, err
		}
		return "done", tx.Put("thing.b", "B")
	})
	if err != nil {
		t.Fatal(err)
	}
	// Only thing.a made it out before the crash.
	m := nats.NewMsg(kvSubjectPrefix + "thing.a")
	m.Data = []byte(`"A"`)
	m.Header.Set(hdrRev, fmt.Sprint(res.Rev))
	if _, err := b.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	check := func(st *Store, when string) {
		t.Helper()
		for key, want := range map[string]string{"thing.a": "A", "thing.b": "B"} {
			var got string
			if err := st.Read(func(v View) error { _, err := v.GetJSON(key, &got); return err }); err != nil || got != want {
				t.Fatalf("%s: %s = %q (%v), want %q", when, key, got, err, want)
			}
		}
		replay, err := st.Update(ctx, "req-partial", func(tx *Txn) (any, error) { return nil, tx.Put("thing.a", "again") })
		if err != nil || !replay.Replayed || string(replay.Raw) != `"done"` {
			t.Fatalf("%s: replay %+v %v, want the stored result", when, replay, err)
		}
	}
	restarted := setupOn(t, b.srv)
	check(restarted.store, "restarted view")

	r, deleted := testRelay(restarted)
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	waitDrained(t, restarted, deleted, res.Rev)
	check(setupOn(t, b.srv).store, "view loaded after the relay finished")
}

// eventAddresses lists the addresses in KOJI_EVENTS, oldest first.
func eventAddresses(t *testing.T, b *bundle) []string {
	t.Helper()
	ctx := ctxT(t)
	stream, err := b.js.Stream(ctx, bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m.Header.Get(bus.HeaderAddress))
	}
	return out
}

// relayThrough starts r, waits until it has finished the entry at through,
// and checks the addresses in KOJI_EVENTS.
func relayThrough(t *testing.T, b *bundle, r *Relay, deleted <-chan uint64, through uint64, want string) {
	t.Helper()
	if err := r.Start(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	waitDrained(t, b, deleted, through)
	if got := fmt.Sprint(eventAddresses(t, b)); got != want {
		t.Fatalf("events %s, want %s", got, want)
	}
}

func emit(t *testing.T, st *Store, address string) uint64 {
	t.Helper()
	res, err := st.Update(ctxT(t), "", func(tx *Txn) (any, error) {
		tx.Emit(address, nil, nil)
		return nil, tx.Put("thing."+address, address)
	})
	if err != nil {
		t.Fatal(err)
	}
	return res.Rev
}

// setupRelay is setup plus a relay (not started) and its consumer.
func setupRelay(t *testing.T) (*bundle, context.Context, *Relay, <-chan uint64, jetstream.Consumer) {
	t.Helper()
	b := setup(t)
	ctx := ctxT(t)
	r, deleted := testRelay(b)
	cons, err := r.relayConsumer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return b, ctx, r, deleted, cons
}

// deliver fetches n entries from the relay consumer, as the server delivers
// them to the pinned relay, and holds them as r's next pass takes them.
func deliver(t *testing.T, r *Relay, cons jetstream.Consumer, n int) map[uint64]jetstream.Msg {
	t.Helper()
	batch, err := cons.Fetch(n, jetstream.FetchPriorityGroup(relayGroup), jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	held := map[uint64]jetstream.Msg{}
	for m := range batch.Messages() {
		r.hold(held, m)
	}
	if len(held) != n {
		t.Fatalf("%d entries delivered, want %d (%v)", len(held), n, batch.Error())
	}
	return held
}

// A relay that takes the pin over while a dead relay still holds an earlier
// entry unacked does not relay later entries first: it waits until the
// earlier one comes back to it (after the ack wait), then relays both, in
// commit order, once each.
func TestRelayWaitsForAnEntryADeadRelayHeld(t *testing.T) {
	b, ctx, r, deleted, cons := setupRelay(t)
	emit(t, b.store, "first")
	// The dead relay: it was pinned, took the entry, never acked it.
	deliver(t, r, cons, 1)
	kv, err := b.js.Stream(ctx, kvStream)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.UnpinConsumer(ctx, RelayConsumer, relayGroup); err != nil {
		t.Fatal(err)
	}
	second := emit(t, b.store, "second")
	relayThrough(t, b, r, deleted, second, "[first second]")
}

// A relay that stalled after publishing entries' events, longer than the
// consumer may wait for their ack, does not write their keys out late (a
// relay that took them over may have written newer values since): it
// leaves them, and when they come back its next pass publishes none of
// their events again and writes out their keys.
func TestRelayLeavesEntriesItHeldTooLongForRedelivery(t *testing.T) {
	b, ctx, r, deleted, cons := setupRelay(t)
	emit(t, b.store, "first")
	second := emit(t, b.store, "second")
	if n, err := r.pass(ctx, cons, deliver(t, r, cons, 2), false); err != nil || n != 2 {
		t.Fatalf("pass: %d entries, %v", n, err)
	}
	r.unwritten.since = time.Now().Add(-relayAckWait) // the stall
	if !r.startWriteOut(ctx) {
		t.Fatal("entries held past half the ack wait were written out")
	}
	if r.finished != 0 || r.relayed != 0 || r.unwritten.last != nil || r.done != nil {
		t.Fatalf("after leaving them: finished %d, relayed %d, unwritten %+v", r.finished, r.relayed, r.unwritten)
	}
	kvs, err := b.js.Stream(ctx, kvStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvs.GetLastMsgForSubject(ctx, kvSubjectPrefix+"thing.second"); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Fatalf("key of a left entry written out: %v", err)
	}
	// The entries come back after the ack wait; the running relay finishes them.
	relayThrough(t, b, r, deleted, second, "[first second]")
	m, err := kvs.GetLastMsgForSubject(ctx, kvSubjectPrefix+"thing.second")
	if err != nil || string(m.Data) != `"second"` {
		t.Fatalf("thing.second after redelivery: %v %v", m, err)
	}
}

// A relay that stops writes out what it finished, but not entries it held
// too long: another relay may have them by now.
func TestRelayStoppingWritesOutOnlyWhatIsFresh(t *testing.T) {
	b, ctx, r, _, cons := setupRelay(t)
	kvs, err := b.js.Stream(ctx, kvStream)
	if err != nil {
		t.Fatal(err)
	}
	written := func(key string) bool {
		_, err := kvs.GetLastMsgForSubject(ctx, kvSubjectPrefix+key)
		return err == nil
	}
	emit(t, b.store, "stale")
	if n, err := r.pass(ctx, cons, deliver(t, r, cons, 1), false); err != nil || n != 1 {
		t.Fatalf("pass: %d entries, %v", n, err)
	}
	r.unwritten.since = time.Now().Add(-relayAckWait) // the stall
	r.flush()
	if written("thing.stale") || r.acked != 0 {
		t.Fatalf("a stopping relay wrote out entries it held too long (acked %d)", r.acked)
	}
	r.unwritten = toWriteOut{}
	fresh := emit(t, b.store, "fresh")
	if n, err := r.pass(ctx, cons, deliver(t, r, cons, 1), false); err != nil || n < 1 {
		t.Fatalf("pass: %d entries, %v", n, err)
	}
	r.flush()
	if !written("thing.fresh") {
		t.Fatalf("a stopping relay left its fresh entries through %d unwritten", fresh)
	}
}

// A write-out that failed is tried again at once, together with the entries
// finished since, in commit order, and its entries are acked only then.
func TestRelayTriesAFailedWriteOutAgain(t *testing.T) {
	b, ctx, r, _, cons := setupRelay(t)
	emit(t, b.store, "first")
	if n, err := r.pass(ctx, cons, deliver(t, r, cons, 1), false); err != nil || n != 1 {
		t.Fatalf("pass: %d entries, %v", n, err)
	}
	// The write-out of the first entry fails (as when the server is away).
	r.writing, r.unwritten = r.unwritten, toWriteOut{}
	r.done = make(chan error, 1)
	r.done <- errors.New("publish failed")
	second := emit(t, b.store, "second")
	if n, err := r.pass(ctx, cons, deliver(t, r, cons, 1), false); err != nil || n != 1 {
		t.Fatalf("pass: %d entries, %v", n, err)
	}
	if r.collectWriteOut(ctx, false) {
		t.Fatal("a fresh failed write-out was left for redelivery")
	}
	if r.done != nil || r.acked != 0 || !r.unwritten.due() || len(r.unwritten.txns) != 2 || r.unwritten.last.seq != second {
		t.Fatalf("after the failure: acked %d, unwritten %+v", r.acked, r.unwritten)
	}
	if r.startWriteOut(ctx) || r.collectWriteOut(ctx, true) || r.acked != second {
		t.Fatalf("retry: acked %d, want %d", r.acked, second)
	}
	kvs, err := b.js.Stream(ctx, kvStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"thing.first", "thing.second"} {
		if _, err := kvs.GetLastMsgForSubject(ctx, kvSubjectPrefix+key); err != nil {
			t.Fatalf("%s not written out: %v", key, err)
		}
	}
}

// An Indexer's groups follow every value a view takes: a key moves between
// groups when its value does, leaves them when it is deleted or filed under
// none, can stand in several at once, and a view that loads the written-out
// keys files them the same way.
func TestIndexFilesKeysByGroupInEveryView(t *testing.T) {
	byOwner := func(_ string, val []byte) []string {
		var v struct {
			Owner string `json:"owner"`
		}
		if json.Unmarshal(val, &v) != nil || v.Owner == "" {
			return nil
		}
		return strings.Split(v.Owner, ",") // "ann,bob": owned by both
	}
	index := func(s *Store) { s.Index("thing", byOwner) }
	b := setupWith(t, bustest.StartServer(t, bustest.Options{}), index)
	ctx := ctxT(t)
	groups := func(st *Store, want map[string]string) error {
		for group, w := range want {
			var got []string
			_ = st.Read(func(v View) error { got = v.Group("thing", group); return nil })
			if fmt.Sprint(got) != w {
				return fmt.Errorf("group %s = %v, want %s", group, got, w)
			}
		}
		return nil
	}
	owner := func(o string) map[string]string { return map[string]string{"owner": o} }
	steps := []struct {
		name string
		key  string
		val  any // nil: delete the key
		want map[string]string
	}{
		{"filed", "thing.1", owner("ann"), map[string]string{"ann": "[thing.1]", "bob": "[]"}},
		{"another", "thing.2", owner("ann"), map[string]string{"ann": "[thing.1 thing.2]"}},
		{"moved", "thing.1", owner("bob"), map[string]string{"ann": "[thing.2]", "bob": "[thing.1]"}},
		{"filed under none", "thing.2", owner(""), map[string]string{"ann": "[]", "bob": "[thing.1]"}},
		{"deleted", "thing.1", nil, map[string]string{"bob": "[]"}},
		{"another kind is not filed", "other.1", owner("ann"), map[string]string{"ann": "[]"}},
		{"filed again", "thing.3", owner("cid"), map[string]string{"cid": "[thing.3]"}},
		{"under two groups", "thing.4", owner("ann,cid"), map[string]string{"ann": "[thing.4]", "cid": "[thing.3 thing.4]"}},
		{"leaves one, joins another", "thing.4", owner("cid,dee"), map[string]string{"ann": "[]", "cid": "[thing.3 thing.4]", "dee": "[thing.4]"}},
	}
	var last uint64
	for _, st := range steps {
		res, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) {
			if st.val == nil {
				tx.Delete(st.key)
				return nil, nil
			}
			return nil, tx.Put(st.key, st.val)
		})
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		last = res.Rev
		if err := groups(b.store, st.want); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
	r, deleted := testRelay(b)
	relayThrough(t, b, r, deleted, last, "[]")
	loaded := setupWith(t, b.srv, index)
	if err := groups(loaded.store, map[string]string{"ann": "[]", "bob": "[]", "cid": "[thing.3 thing.4]", "dee": "[thing.4]"}); err != nil {
		t.Fatalf("loaded view: %v", err)
	}
}

// The relay consumer of an earlier kojibus (explicit acks, one entry at a
// time, no pin) is replaced by one that starts after its ack floor: what it
// finished is not relayed again, what it had not is.
func TestRelayReplacesTheConsumerOfAnEarlierVersion(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	old, err := b.js.CreateOrUpdateConsumer(ctx, kvStream, jetstream.ConsumerConfig{
		Durable: RelayConsumer, FilterSubject: kvSubjectPrefix + outboxPrefix + ">",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: 5 * time.Second, MaxAckPending: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	emit(t, b.store, "finished")
	m, err := old.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.DoubleAck(ctx); err != nil { // the old relay finished it (its events are not the point here)
		t.Fatal(err)
	}
	pending := emit(t, b.store, "pending")
	r, deleted := testRelay(b)
	relayThrough(t, b, r, deleted, pending, "[pending]")
	c, err := b.js.Consumer(ctx, kvStream, RelayConsumer)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := c.CachedInfo().Config; cfg.AckPolicy != jetstream.AckAllPolicy || cfg.PriorityPolicy != jetstream.PriorityPolicyPinned {
		t.Fatalf("relay consumer not replaced: %+v", cfg)
	}
}

// A hub's view takes its own transactions as they were sent, other views
// decode them: both must see the same transaction, or the events a relay
// publishes would depend on which hub wrote it.
func TestSentTransactionIsWhatViewsDecode(t *testing.T) {
	s := New(nil, nil, nil)
	tests := []struct {
		name    string
		request string
		val     any
		stage   func(tx *Txn)
	}{
		{name: "writes and a result", request: "req-1", val: map[string]any{"id": 7, "name": "<f30>"}, stage: func(tx *Txn) {
			_ = tx.Put("tag.1", map[string]any{"id": 1, "name": "a&b", "extra": map[string]any{"l": []any{1, "b", nil, 2.5}}})
			tx.Delete("tag.2")
			tx.NextID("tag")
		}},
		{name: "events", stage: func(tx *Txn) {
			tx.Emit("tag.create", map[string]any{"type": "TagCreate", "id": int64(7), "f": 1.5, "big": int64(1) << 60, "ok": true,
				"none": nil, "s": struct {
					B int `json:"b"`
					A int `json:"a"`
				}{2, 1}, "html": "<x>"}, map[string]any{"tag": "x"})
			tx.Emit("no.props", nil, nil)
			tx.Emit("empty.props", map[string]any{}, []int{})
		}},
		{name: "dispatch", stage: func(tx *Txn) {
			tx.Dispatch(OutEvent{Subject: "koji.tasks.1.x86_64.p1000", MsgID: "task-1-1", Headers: map[string]string{"Koji-Task-Id": "1"},
				Body: json.RawMessage(`{ "task_id": 1, "method": "<sleep>" }`), Notify: "koji.notify.tasks.1.x86_64",
				Consumer: &ConsumerSpec{Stream: "KOJI_TASKS", Name: "q", Filter: "koji.tasks.1.x86_64.p1000"}})
			tx.Dispatch(OutEvent{Subject: "koji.tasks.host.1"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tx := &Txn{View: View{s}, requestID: tt.request}
			tt.stage(tx)
			tx.release()
			if tx.err != nil {
				t.Fatal(tx.err)
			}
			sent, data, err := encodeTxn(tx, tt.val)
			if err != nil {
				t.Fatal(err)
			}
			if want, err := json.Marshal(sent); err != nil || !bytes.Equal(data, want) {
				t.Fatalf("sent transaction is not what json.Marshal gives (%v):\nsent %s\nwant %s", err, data, want)
			}
			decoded, err := decodeTxn(data)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(sent, decoded) {
				t.Fatalf("sent and decoded transactions differ:\nsent    %s\ndecoded %s", dump(sent), dump(decoded))
			}
			// The decoder for transactions nested too deep gives the same.
			if deep, err := decodeTxnDeep(data); err != nil || !reflect.DeepEqual(sent, deep) {
				t.Fatalf("decodeTxnDeep differs (%v):\nsent %s\ndeep %s", err, dump(sent), dump(deep))
			}
		})
	}
}

func dump(t *txnMsg) string {
	var b strings.Builder
	for _, w := range t.Writes {
		fmt.Fprintf(&b, "write %s %q del=%v seq=%v x=%d; ", w.Key, w.Val, w.Del, w.Seq, w.Expect)
	}
	for _, e := range t.Events {
		fmt.Fprintf(&b, "event %+v props=%q body=%q; ", e, e.Props, e.Body)
	}
	fmt.Fprintf(&b, "request %q result %q", t.Request, t.Result)
	return b.String()
}

// A key that several entries write is written out once, with the last
// value and that entry's revision, even when the entries were finished in
// different passes; nothing is written out before the write-out, and a view
// that loads the bucket afterwards has the same state as the one that
// applied the entries.
func TestRelayWritesAKeyOncePerWriteOut(t *testing.T) {
	b, ctx, r, _, cons := setupRelay(t)
	var last uint64
	for i := 1; i <= 3; i++ {
		res, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) {
			if err := tx.Put("thing.shared", i); err != nil {
				return nil, err
			}
			return nil, tx.Put(fmt.Sprintf("thing.own%d", i), i)
		})
		if err != nil {
			t.Fatal(err)
		}
		last = res.Rev
	}
	kvs, err := b.js.Stream(ctx, kvStream)
	if err != nil {
		t.Fatal(err)
	}
	written := func() uint64 {
		info, err := kvs.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.LastSeq
	}
	before := written()
	// Two passes, the first over one entry and the second over two, as the
	// relay makes when they are delivered so.
	for _, n := range []int{1, 2} {
		if got, err := r.pass(ctx, cons, deliver(t, r, cons, n), false); err != nil || got != n {
			t.Fatalf("pass: %d entries, %v", got, err)
		}
	}
	if n := written() - before; n != 0 {
		t.Fatalf("%d keys written out by the passes, want none before the write-out", n)
	}
	if err := r.writeOut(ctx, &r.unwritten); err != nil {
		t.Fatal(err)
	}
	if n := written() - before; n != 4 {
		t.Fatalf("%d keys written out, want 4 (thing.shared once, three own keys)", n)
	}
	if info, err := cons.Info(ctx); err != nil || info.AckFloor.Stream != last {
		t.Fatalf("ack floor after the write-out: %+v, %v; want %d", info, err, last)
	}
	m, err := kvs.GetLastMsgForSubject(ctx, kvSubjectPrefix+"thing.shared")
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "3" || m.Header.Get(hdrRev) != strconv.FormatUint(last, 10) {
		t.Fatalf("thing.shared = %s at %s, want 3 at %d", m.Data, m.Header.Get(hdrRev), last)
	}
	// A view that loads now: the same values and revisions.
	fresh := setupOn(t, b.srv)
	for _, key := range []string{"thing.shared", "thing.own1", "thing.own2", "thing.own3"} {
		var want, got []byte
		var wantRev, gotRev uint64
		_ = b.store.Read(func(v View) error { want, wantRev, _ = v.Get(key); return nil })
		_ = fresh.store.Read(func(v View) error { got, gotRev, _ = v.Get(key); return nil })
		if string(got) != string(want) || gotRev != wantRev || want == nil {
			t.Fatalf("%s: loaded %s@%d, applied %s@%d", key, got, gotRev, want, wantRev)
		}
	}
}

// TestPurgeSpacingGrowsWithThePurgesCost: a purge makes the server recount
// every consumer of the bucket, which walks every key, so a slow purge
// spaces the next one out (2% of the time at most), within bounds.
func TestPurgeSpacingGrowsWithThePurgesCost(t *testing.T) {
	for _, c := range []struct {
		took, want time.Duration
	}{
		{0, purgeEvery},
		{time.Millisecond, purgeEvery},            // a small state: the floor
		{20 * time.Millisecond, time.Second},      // 50× the purge
		{100 * time.Millisecond, 5 * time.Second}, // a large state
		{10 * time.Second, purgeMax},              // a purge that hung
	} {
		if got := purgeSpacing(c.took); got != c.want {
			t.Errorf("purgeSpacing(%v) = %v, want %v", c.took, got, c.want)
		}
	}
}

// TestKeysUnderAPrefixAreThoseAScanFinds: Keys and Count read only the keys
// under their prefix (a sorted set per kind); through puts, overwrites and
// deletes, and after a reload from the bucket, they answer what a scan of
// every key of the kind does.
func TestKeysUnderAPrefixAreThoseAScanFinds(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	rng := rand.New(rand.NewPCG(1, 2))
	prefixes := []string{"", "thing.", "thing.1", "thing.1.", "thing.12.", "thing.3.4.", "thing.9.x", "other."}
	check := func(st *Store, step string) {
		t.Helper()
		_ = st.Read(func(v View) error {
			for _, kind := range []string{"thing", "other", "none"} {
				var all []string
				v.Range(kind, func(key string, _ []byte) { all = append(all, key) })
				slices.Sort(all)
				for _, p := range prefixes {
					want := []string{}
					for _, k := range all {
						if strings.HasPrefix(k, p) {
							want = append(want, k)
						}
					}
					if got := v.Keys(kind, p); !slices.Equal(got, want) {
						t.Errorf("%s: Keys(%s, %q) = %v, want %v", step, kind, p, got, want)
					}
					if got := v.Count(kind, p); got != len(want) {
						t.Errorf("%s: Count(%s, %q) = %d, want %d", step, kind, p, got, len(want))
					}
				}
			}
			return nil
		})
	}
	key := func() string {
		switch rng.IntN(3) {
		case 0:
			return fmt.Sprintf("thing.%d", rng.IntN(15))
		case 1:
			return fmt.Sprintf("thing.%d.%d", rng.IntN(15), rng.IntN(6))
		default:
			return fmt.Sprintf("thing.%d.%d.%d", rng.IntN(5), rng.IntN(5), rng.IntN(3))
		}
	}
	for round := range 12 {
		if _, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) {
			for range 12 {
				if k := key(); rng.IntN(3) == 0 {
					tx.Delete(k)
				} else if err := tx.Put(k, round); err != nil {
					return nil, err
				}
			}
			return nil, tx.Put(fmt.Sprintf("other.%d", round), round)
		}); err != nil {
			t.Fatal(err)
		}
		check(b.store, fmt.Sprintf("round %d", round))
	}
	check(setupOn(t, b.srv).store, "reloaded")
}

// TestVoidEntryIsNotTakenForAFinishedOne: a void transaction (here one a
// conflicting writer sent) left in the bucket after later keys were written
// out must not be taken by a loading view for a finished one, whose writes
// it fills in: a restarted hub showed tasks that a makeTask voided by a
// conflict never made. The relay deletes void entries before it writes out
// later keys; this relay never purges, as one that died before its purge.
func TestVoidEntryIsNotTakenForAFinishedOne(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	if _, err := b.store.Update(ctx, "req-a", func(tx *Txn) (any, error) { return nil, tx.Put("thing.a", "A") }); err != nil {
		t.Fatal(err)
	}
	// Written as by a writer that read thing.a before it existed: void.
	void, err := json.Marshal(txnMsg{Writes: []txnWrite{
		{Key: "thing.a", Val: json.RawMessage(`"stale"`)},
		{Key: "thing.ghost", Val: json.RawMessage(`"G"`)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	ack, err := b.js.Publish(ctx, kvSubjectPrefix+outboxPrefix+nuid.Next(), void)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.store.Update(ctx, "req-b", func(tx *Txn) (any, error) { return nil, tx.Put("thing.b", "B") })
	if err != nil {
		t.Fatal(err)
	}
	// The written-out key is published on its subject: wait for that.
	writtenOut := make(chan *nats.Msg, 4)
	sub, err := b.nc.ChanSubscribe(kvSubjectPrefix+"thing.b", writtenOut)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	r := NewRelay(b.nc, b.js, b.store, nil)
	r.keepFinished = true
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	select {
	case m := <-writtenOut:
		if m.Header.Get(hdrRev) != fmt.Sprint(res.Rev) {
			t.Fatalf("thing.b written out at revision %q, want %d", m.Header.Get(hdrRev), res.Rev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("thing.b not written out")
	}
	kvs, err := b.js.Stream(ctx, kvStream)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kvs.GetMsg(ctx, ack.Sequence); !errors.Is(err, jetstream.ErrMsgNotFound) {
		t.Errorf("the void entry is still in the bucket after later keys were written out: %v", err)
	}
	// A write-out tried again deletes it again: an entry already gone is no error.
	if err := r.deleteVoids(ctx, []uint64{ack.Sequence}); err != nil {
		t.Errorf("deleting a void entry again: %v", err)
	}
	loaded := setupOn(t, b.srv)
	_ = loaded.store.Read(func(v View) error {
		if _, _, ok := v.Get("thing.ghost"); ok {
			t.Error("a view loaded after the write-out took the void transaction's write of thing.ghost")
		}
		var a string
		if _, err := v.GetJSON("thing.a", &a); err != nil || a != "A" {
			t.Errorf("thing.a = %q (%v), want A", a, err)
		}
		return nil
	})
}

// TestLoadingSkipsAnEntryWhoseRequestCommittedElsewhere: a loading view
// does not fill in the writes of a written-out entry whose request id
// committed in another transaction (void, left by an earlier version).
func TestLoadingSkipsAnEntryWhoseRequestCommittedElsewhere(t *testing.T) {
	s := New(nil, nil, nil)
	s.reqs["R"] = &requestEntry{rev: 9}
	txn := func(val string) *txnMsg {
		return &txnMsg{Writes: []txnWrite{{Key: "thing.x", Val: json.RawMessage(val)}}, Request: "R"}
	}
	s.completeDone(5, txn(`"void"`), nil, time.Now())
	if _, _, ok := (View{s}).Get("thing.x"); ok {
		t.Fatal("the writes of a void entry were filled in")
	}
	s.completeDone(9, txn(`"valid"`), nil, time.Now())
	if v, rev, ok := (View{s}).Get("thing.x"); !ok || rev != 9 || string(v) != `"valid"` {
		t.Fatalf("thing.x = %s at %d (%v), want the committed transaction's value", v, rev, ok)
	}
}

// The store refuses, before its commit, a transaction that views could not
// decode again or that the server would not take: the caller gets a
// ParameterError naming the limit, nothing is stored, and the next write
// goes through.
func TestCommitRefusesWhatCouldNotBeReadBack(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	deep := json.RawMessage(strings.Repeat("[", maxTxnDepth) + strings.Repeat("]", maxTxnDepth))
	large := strings.Repeat("x", int(b.nc.MaxPayload()))
	cases := []struct {
		name string
		fn   UpdateFunc
		want string
	}{
		{"a value nested too deep", func(tx *Txn) (any, error) { return nil, tx.Put("deep.1", deep) },
			"the change is too deeply nested to store: 131 levels exceed the limit of 128"},
		{"an event body nested too deep", func(tx *Txn) (any, error) { tx.Emit("deep.event", nil, deep); return nil, nil },
			"the change is too deeply nested to store: 131 levels exceed the limit of 128"},
		{"a value larger than a message", func(tx *Txn) (any, error) { return nil, tx.Put("large.1", large) },
			"the change is too large to store: "},
	}
	lastSeq := func() uint64 { return bucketLastSeq(ctx, t, b) }
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before, applied := lastSeq(), b.store.Applied()
			_, err := b.store.Update(ctx, "req-"+nuid.Next(), tc.fn)
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != bus.CodeParameterError || !strings.HasPrefix(f.Message, tc.want) {
				t.Fatalf("Update = %v, want ParameterError %q", err, tc.want)
			}
			if after := lastSeq(); after != before || b.store.Applied() != applied {
				t.Fatalf("a refused change was stored: stream %d -> %d, applied %d -> %d", before, after, applied, b.store.Applied())
			}
			if _, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) { return nil, tx.Put("ok.1", tc.name) }); err != nil {
				t.Fatalf("a normal write after the refusal: %v", err)
			}
		})
	}
	// At the limit, a change commits and every view reads it back.
	atLimit := json.RawMessage(strings.Repeat("[", maxTxnDepth-3) + strings.Repeat("]", maxTxnDepth-3))
	res, err := b.store.Update(ctx, "", func(tx *Txn) (any, error) { return nil, tx.Put("deep.2", atLimit) })
	if err != nil {
		t.Fatalf("a change at the depth limit: %v", err)
	}
	other := setupOn(t, b.srv)
	if err := other.store.WaitApplied(ctx, res.Rev); err != nil {
		t.Fatal(err)
	}
	if got, _, ok := (View{other.store}).Get("deep.2"); !ok || !bytes.Equal(got, atLimit) || other.store.verdictOf(res.Rev) != verdictValid {
		t.Fatalf("another view has deep.2 = %.20s (%v), verdict %v", got, ok, other.store.verdictOf(res.Rev))
	}
}

// A transaction nested deeper than the JSON decoder goes, as a hub before
// the commit check could have had acknowledged, is applied by a live view
// and by one that loads it after a restart: not voided.
func TestViewsApplyAnAcknowledgedTransactionNestedTooDeep(t *testing.T) {
	b := setup(t)
	ctx := ctxT(t)
	deep := json.RawMessage(`{"k":` + strings.Repeat("[", 9998) + strings.Repeat("]", 9998) + `}`)
	data, err := appendTxn(nil, &txnMsg{
		Writes:  []txnWrite{{Key: "tag.9", Val: deep}},
		Events:  []OutEvent{{Address: "tag.create", Props: json.RawMessage(`{"tag":"deep"}`), Body: deep}},
		Request: "req-deep", Result: json.RawMessage(`9`),
	})
	if err != nil {
		t.Fatal(err)
	}
	if checkTxn(data, b.nc.MaxPayload()) == nil {
		t.Fatal("the store would commit this transaction itself")
	}
	// Published as the earlier hub did, without the check.
	ack, err := b.js.Publish(ctx, kvSubjectPrefix+outboxPrefix+nuid.Next(), data)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*Store{b.store, setupOn(t, b.srv).store} {
		if err := st.WaitApplied(ctx, ack.Sequence); err != nil {
			t.Fatal(err)
		}
		v, tx := st.verdictAndTxn(ack.Sequence)
		got, _, ok := (View{st}).Get("tag.9")
		if v != verdictValid || !ok || !bytes.Equal(got, deep) || tx == nil || !bytes.Equal(tx.Events[0].Body, deep) || string(tx.Result) != "9" {
			t.Fatalf("verdict %v, tag.9 present %v (%d bytes)", v, ok, len(got))
		}
	}
}
