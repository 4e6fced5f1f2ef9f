package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/kojibus/kojibus/bridge/bridge"
	"github.com/kojibus/kojibus/bridge/rabbittest"
	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
	"github.com/kojibus/kojibus/hubd/hub"
)

// asKojibridge in the environment makes the test binary kojibridge, so a
// benchmark can run the bridge as its own process (see bridgeProcess).
const asKojibridge = "KOJIBRIDGE_TEST_AS_KOJIBRIDGE"

func TestMain(m *testing.M) {
	if os.Getenv(asKojibridge) == "1" {
		os.Exit(bridge.Run(os.Args[1:], os.Stderr))
	}
	goleak.VerifyTestMain(m, bustest.LeakOptions()...)
}

type stack struct {
	hub    *hub.TestHub
	broker *rabbittest.Broker
	got    <-chan *amqp.Message
	dir    string
}

// setup starts a hub, a RabbitMQ and a receiver on /topic/koji.#.
func setup(t *testing.T) *stack {
	t.Helper()
	s := &stack{broker: rabbittest.Start(t), hub: hub.StartTestHub(t, nil), dir: t.TempDir()}
	s.got = s.broker.Receive(t, "/topic/koji.#")
	return s
}

// conf writes a protonmsg.conf for the stack's broker; extra lines are
// appended to their sections as "section.option = value".
func (s *stack) conf(t *testing.T, urls string, extra ...string) *bridge.Config {
	t.Helper()
	sections := map[string][]string{
		"broker":  {"urls = " + urls, "cert = " + s.broker.HubPEM, "cacert = " + s.broker.CA, "topic_prefix = /topic/koji", "connect_timeout = 5", "send_timeout = 10"},
		"message": {},
		"queue":   {"enabled = true", "batch_size = 7"},
	}
	for _, e := range extra {
		sec, opt, _ := strings.Cut(e, ".")
		sections[sec] = append(sections[sec], opt)
	}
	var b strings.Builder
	for _, sec := range []string{"broker", "message", "queue"} {
		fmt.Fprintf(&b, "[%s]\n%s\n\n", sec, strings.Join(sections[sec], "\n"))
	}
	path := filepath.Join(s.dir, "protonmsg.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := bridge.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// start starts a bridge connected as its own NATS identity.
func (s *stack) start(t *testing.T, cfg *bridge.Config, now func() time.Time) *bridge.Bridge {
	t.Helper()
	ctx := context.Background()
	nc := s.hub.ConnectBridge(t, "kojibridge")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	b, err := bridge.New(nc, js, bridge.Options{Config: cfg, QueueDir: filepath.Join(s.dir, "queue"), Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}

func call(t *testing.T, method string, c *bus.Client, args []any, kw map[string]any, out any) {
	t.Helper()
	if err := c.Call(context.Background(), method, args, kw, out); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
}

// next returns the next message whose properties match want.
func next(t *testing.T, got <-chan *amqp.Message, want map[string]any) *amqp.Message {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-got:
			match := true
			for k, v := range want {
				if fmt.Sprint(m.ApplicationProperties[k]) != fmt.Sprint(v) {
					match = false
				}
			}
			if match {
				return m
			}
		case <-deadline:
			t.Fatalf("no message with %v", want)
		}
	}
}

func body(t *testing.T, m *amqp.Message) map[string]any {
	t.Helper()
	s, ok := m.Value.(string)
	if !ok {
		t.Fatalf("body is %T, want an AMQP string as protonmsg sends", m.Value)
	}
	var out map[string]any
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("body %q: %v", s, err)
	}
	return out
}

// Task, package, build, tag and repo events reach a receiver subscribed to
// /topic/koji.# with protonmsg's properties and body; extra_limit and ttl apply.
func TestBridgeDeliversProtonmsgMessages(t *testing.T) {
	s := setup(t)
	b := s.start(t, s.conf(t, s.broker.URL(), "message.extra_limit = 40", "message.ttl = 3600"), nil)
	admin := s.hub.Admin

	var taskID int64
	call(t, "makeTask", admin, []any{"sleep", []any{1}}, nil, &taskID)
	m := next(t, s.got, map[string]any{"type": "TaskStateChange", "id": taskID})
	want := map[string]any{"method": "sleep", "attribute": "state", "old": nil, "new": "FREE", "parent": nil}
	for k, v := range want {
		if m.ApplicationProperties[k] != v {
			t.Errorf("task.free %s = %#v, want %#v", k, m.ApplicationProperties[k], v)
		}
	}
	if id, ok := m.ApplicationProperties["id"].(int64); !ok || id != taskID {
		t.Errorf("id = %#v, want int64 %d (proton sends a Python int)", m.ApplicationProperties["id"], taskID)
	}
	if m.Header == nil || m.Header.TTL != time.Hour {
		t.Errorf("header %+v, want TTL 1h", m.Header)
	}
	if m.Properties == nil || !strings.HasPrefix(fmt.Sprint(m.Properties.MessageID), "kojibus-") {
		t.Errorf("message-id %v, want kojibus-<seq>", m.Properties)
	}
	if bd := body(t, m); bd["new"] != "FREE" || bd["info"] == nil {
		t.Errorf("task.free body %v", bd)
	}
	if raw := m.Value.(string); !strings.Contains(raw, `": `) || strings.Contains(raw, `":"`) {
		t.Errorf("body not written as Python's json.dumps: %.80s", raw)
	}

	call(t, "createTag", admin, []any{"f40"}, map[string]any{"arches": "x86_64"}, nil)
	call(t, "packageListAdd", admin, []any{"f40", "bash"}, map[string]any{"owner": "kojiadmin"}, nil)
	m = next(t, s.got, map[string]any{"type": "PackageListChange"})
	for k, v := range map[string]any{"tag": "f40", "package": "bash", "action": "add", "user": "kojiadmin"} {
		if m.ApplicationProperties[k] != v {
			t.Errorf("package.add %s = %#v, want %#v", k, m.ApplicationProperties[k], v)
		}
	}

	big := strings.Repeat("x", 100)
	var built, small bus.Build
	call(t, "importBuild", admin, []any{map[string]any{"name": "bash", "version": "5.2", "release": "1", "epoch": nil, "extra": map[string]any{"big": big}}}, nil, &built)
	call(t, "importBuild", admin, []any{map[string]any{"name": "bash", "version": "5.2", "release": "2", "epoch": nil, "extra": map[string]any{"s": 1}}}, nil, &small)
	for _, c := range []struct {
		release   string
		wantExtra bool
	}{{"1", false}, {"2", true}} {
		m = next(t, s.got, map[string]any{"type": "BuildStateChange", "release": c.release})
		info, _ := body(t, m)["info"].(map[string]any)
		if _, has := info["extra"]; has != c.wantExtra {
			t.Errorf("build %s: extra in body = %v, want %v (extra_limit 40)", c.release, has, c.wantExtra)
		}
	}

	call(t, "tagBuild", admin, []any{"f40", built.ID}, nil, nil)
	m = next(t, s.got, map[string]any{"type": "Tag"})
	for k, v := range map[string]any{"tag": "f40", "name": "bash", "version": "5.2", "release": "1", "user": "kojiadmin"} {
		if m.ApplicationProperties[k] != v {
			t.Errorf("build.tag %s = %#v, want %#v", k, m.ApplicationProperties[k], v)
		}
	}

	call(t, "newRepo", admin, []any{"f40"}, nil, nil)
	init := next(t, s.got, map[string]any{"type": "RepoInit", "tag": "f40"})
	done := next(t, s.got, map[string]any{"type": "RepoDone", "tag": "f40"})
	if init.ApplicationProperties["repo_id"] != done.ApplicationProperties["repo_id"] {
		t.Errorf("repo.init %v and repo.done %v name different repos", init.ApplicationProperties, done.ApplicationProperties)
	}

	// The receiver can get the last message before the bridge has counted it.
	waitStatus(t, b, func(st bridge.Status) bool {
		return st.Broker == s.broker.URL() && st.Sent >= 7 && st.QueueDepth == 0 && st.Skipped > 0
	})
}

// The broker stops while events keep coming: they are queued, and when it
// is back the queue drains first; every event arrives once, in order. A
// queued entry older than max_age is dropped and counted.
func TestBridgeOutageQueuesInOrder(t *testing.T) {
	s := setup(t)
	var clockMu sync.Mutex
	offset := time.Duration(0)
	now := func() time.Time {
		clockMu.Lock()
		defer clockMu.Unlock()
		return time.Now().Add(offset)
	}
	b := s.start(t, s.conf(t, s.broker.URL(), "queue.max_age = 1"), now)
	admin := s.hub.Admin
	create := func(from, to int) {
		for i := from; i < to; i++ {
			call(t, "makeTask", admin, []any{"sleep", []any{i}}, nil, nil)
		}
	}
	create(0, 5)
	var ids []string
	collect := func(n int) {
		t.Helper()
		for len(ids) < n {
			select {
			case m := <-s.got:
				ids = append(ids, fmt.Sprint(m.Properties.MessageID))
			case <-time.After(60 * time.Second):
				t.Fatalf("%d messages, want %d: %v; bridge %+v", len(ids), n, ids, b.Status())
			}
		}
	}
	collect(5)

	s.broker.Stop(t)
	create(5, 10) // these go to the queue, and expire (the clock jumps past max_age)
	waitStatus(t, b, func(st bridge.Status) bool { return st.QueueDepth == 5 })
	clockMu.Lock()
	offset = 2 * time.Hour
	clockMu.Unlock()
	create(10, 20) // queued after the expiry pass
	waitStatus(t, b, func(st bridge.Status) bool { return st.Expired == 5 && st.QueueDepth == 10 })
	if st := b.Status(); st.OldestQueued <= 0 || st.Broker != "" || st.LastError == "" {
		t.Errorf("status during the outage: %+v", st)
	}

	s.broker.Start(t)
	// The durable queue holds what the bridge sends before this attaches.
	s.got = s.broker.Receive(t, "/amq/queue/"+rabbittest.AllQueue)
	create(20, 25) // sent only after the queue has drained
	collect(5 + 10 + 5)
	seqs := make([]uint64, len(ids))
	seen := map[string]bool{}
	for i, id := range ids {
		if seen[id] {
			t.Fatalf("%s delivered twice: %v", id, ids)
		}
		seen[id] = true
		fmt.Sscanf(id, "kojibus-%d", &seqs[i])
		if i > 0 && seqs[i] <= seqs[i-1] {
			t.Fatalf("out of order: %v", ids)
		}
	}
	select {
	case m := <-s.got:
		t.Fatalf("unexpected extra message %v", m.Properties.MessageID)
	default:
	}
	// The receiver can get the last message before the bridge has counted it.
	waitStatus(t, b, func(st bridge.Status) bool { return st.QueueDepth == 0 && st.Expired == 5 && st.Sent == 20 })
}

// A dead first URL: the bridge fails over to the second.
func TestBridgeFailsOverToTheNextURL(t *testing.T) {
	s := setup(t)
	dead := fmt.Sprintf("amqps://localhost:%d", rabbittest.FreePort(t))
	b := s.start(t, s.conf(t, dead+" "+s.broker.URL()), nil)
	var id int64
	call(t, "makeTask", s.hub.Admin, []any{"sleep", []any{0}}, nil, &id)
	next(t, s.got, map[string]any{"id": id})
	if st := b.Status(); st.Broker != s.broker.URL() {
		t.Fatalf("connected to %q, want the second URL", st.Broker)
	}
}

func waitStatus(t *testing.T, b *bridge.Bridge, ok func(bridge.Status) bool) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		changed := b.Changed() // before reading, so no change is missed
		if ok(b.Status()) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("status %+v", b.Status())
		}
	}
}

// A bridge started where an earlier one acked each event (explicit acks)
// replaces its consumer and resumes after what it had acked: the event it
// had not sent arrives, and the new consumer acks whole batches.
func TestBridgeReplacesAnEarlierConsumer(t *testing.T) {
	s := setup(t)
	ctx := context.Background()
	js, err := jetstream.New(s.hub.Conn())
	if err != nil {
		t.Fatal(err)
	}
	name := bridge.ConsumerPrefix + "kojibridge"
	if _, err := js.CreateConsumer(ctx, bus.EventsStream, jetstream.ConsumerConfig{
		Durable: name, AckPolicy: jetstream.AckExplicitPolicy, DeliverPolicy: jetstream.DeliverNewPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	var id int64
	call(t, "makeTask", s.hub.Admin, []any{"sleep", []any{0}}, nil, &id)
	s.start(t, s.conf(t, s.broker.URL()), nil)
	next(t, s.got, map[string]any{"id": id})
	c, err := js.Consumer(ctx, bus.EventsStream, name)
	if err != nil {
		t.Fatal(err)
	}
	if p := c.CachedInfo().Config.AckPolicy; p != jetstream.AckAllPolicy {
		t.Fatalf("consumer ack policy %v, want all", p)
	}
}
