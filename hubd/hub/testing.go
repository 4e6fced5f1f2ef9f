package hub

import (
	"encoding/json"
	"errors"

	"context"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// TestHub is an in-process hub for tests, with an admin client logged in.
type TestHub struct {
	*Server
	Dir     string
	Profile *bus.Profile
	Admin   *bus.Client
	anon    *bus.Client
}

// StartTestHub starts a hub with an embedded NATS server on a free port in
// t.TempDir() (durability interval unless cfg says otherwise) and logs in as
// the bootstrap admin. Everything stops when the test ends.
func StartTestHub(t testing.TB, mutate func(*Config)) *TestHub {
	t.Helper()
	bus.TuneGC() // as the daemons' Run does, so benchmarks measure what they run
	dir := t.TempDir()
	cfg := Config{DataDir: dir, ListenPort: -1, Durability: bus.DurabilityInterval, Logger: slog.New(slog.DiscardHandler)}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	p, err := bus.LoadProfile(srv.ProfilePath(), "")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := p.Dial(ctx, "test-admin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	if err := p.Login(ctx, admin); err != nil {
		t.Fatal(err)
	}
	anon, err := (&bus.Profile{Name: "anonymous", Server: srv.URL(), ServerCA: p.ServerCA, AuthType: "noauth"}).Dial(ctx, "test-anonymous")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(anon.Close)
	return &TestHub{Server: srv, Dir: dir, Profile: p, Admin: admin, anon: anon}
}

// UserClient creates a user with a password (and permissions) and returns a
// client logged in as that user, on a connection of the user's own.
func (h *TestHub) UserClient(t testing.TB, name string, perms ...string) *bus.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	password := "pw-" + name + "-secret"
	if err := h.Admin.Call(ctx, "createUser", []any{name}, map[string]any{"password": password}, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range perms {
		if err := h.Admin.Call(ctx, "grantPermission", []any{name, p}, map[string]any{"create": true}, nil); err != nil {
			t.Fatal(err)
		}
	}
	p := &bus.Profile{Name: "koji", Server: h.URL(), ServerCA: h.Profile.ServerCA, AuthType: "password", User: name, Password: password}
	c, err := p.Dial(ctx, "test-user-"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := p.Login(ctx, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// Anonymous returns a client without a session on an anonymous connection
// (a session it opens is good on that connection only).
func (h *TestHub) Anonymous() *bus.Client { return h.anon.WithSession("") }

// TestHost is a build host's connection as builderd would have it.
type TestHost struct {
	Name   string
	ID     int64
	Client *bus.Client
	JS     jetstream.JetStream
	Creds  *bus.HostCredentials
	// wake receives the queue wake-ups (koji.notify.tasks.>) a builder waits on.
	wake chan *nats.Msg
	// uploads are the output files Upload started, by run.
	uploads map[[2]int64]*bus.Uploads
	hub     *TestHub
}

// stored reports whether the queue message of task id's current attempt is
// in its queue's subject (the last one there): what a wake-up lost while
// the host reconnected would have said.
func (h *TestHost) stored(id int64) bool {
	var subject, msgID string
	_ = h.hub.store.Read(func(v state.View) error {
		if t, ok := lookupTask(v, id); ok {
			subject = taskQueue(v, t).Subject
			msgID = "task-" + strconv.FormatInt(id, 10) + "-" + strconv.FormatInt(t.Attempt, 10)
		}
		return nil
	})
	if subject == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := h.hub.js.Stream(ctx, bus.TasksStream)
	if err != nil {
		return false
	}
	m, err := st.GetLastMsgForSubject(ctx, subject)
	return err == nil && m.Header.Get(jetstream.MsgIDHeader) == msgID
}

func (h *TestHost) runUploads(task, attempt int64) *bus.Uploads {
	if h.uploads == nil {
		h.uploads = map[[2]int64]*bus.Uploads{}
	}
	run := [2]int64{task, attempt}
	if h.uploads[run] == nil {
		h.uploads[run] = bus.NewUploads(h.JS, h.ID, task, attempt)
	}
	return h.uploads[run]
}

// Upload publishes data as the next chunk of an output file of a run, as
// builderd does; Finish completes the run's files.
func (h *TestHost) Upload(t testing.TB, task, attempt int64, name, data string) {
	t.Helper()
	if err := h.runUploads(task, attempt).Get(name).Publish(context.Background(), []byte(data), false); err != nil {
		t.Fatal(err)
	}
}

// Finish publishes the end of each file Upload started for a run and
// returns the run's output list, as builderd reports it with the result.
func (h *TestHost) Finish(t testing.TB, task, attempt int64) map[string]any {
	t.Helper()
	uploads := h.runUploads(task, attempt)
	for _, u := range uploads.All() {
		if err := u.Publish(context.Background(), nil, true); err != nil {
			t.Fatal(err)
		}
	}
	return map[string]any{"outputs": uploads.Files()}
}

// WaitQueued waits for the wake-up that says task id is stored in its queue
// (the relay sends it only then); other wake-ups are put back.
func (h *TestHost) WaitQueued(t testing.TB, id int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var others []*nats.Msg
	defer func() {
		for _, m := range others {
			h.wake <- m
		}
	}()
	var poll <-chan time.Time
	for {
		select {
		case m := <-h.wake:
			var d bus.TaskDispatch
			if json.Unmarshal(m.Data, &d) == nil && d.TaskID == id {
				return
			}
			if m.Subject == reconnected {
				// The wake-up may have been lost: look, until it comes.
				poll = time.After(0)
			}
			others = append(others, m)
		case <-poll:
			if h.stored(id) {
				return
			}
			poll = time.After(50 * time.Millisecond)
		case <-deadline:
			t.Fatalf("task %d was not queued", id)
		}
	}
}

// reconnected is the subject of the wake-up a TestHost gets on reconnect.
const reconnected = "reconnected"

// Pull takes the next queued task message for the host the way builderd
// does: its queues in priority order, one message, no prefetch, and when
// they are empty it waits for a wake-up rather than polling.
func (h *TestHost) Pull(t testing.TB) jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	deadline := time.After(10 * time.Second)
	for {
		// Wake-ups already here belong to messages this pass will see.
		for len(h.wake) > 0 {
			<-h.wake
		}
		var qs []bus.TaskQueue
		if err := h.Client.Call(ctx, "host.getTaskQueues", nil, nil, &qs); err != nil {
			t.Fatal(err)
		}
		// A no-wait pass, then a short blocking one: the server counts a
		// stored message as pending a moment after acking its publish.
		for _, wait := range []time.Duration{0, 100 * time.Millisecond} {
			for _, q := range qs {
				cons, err := h.JS.Consumer(ctx, bus.TasksStream, q.Consumer)
				if errors.Is(err, jetstream.ErrConsumerNotFound) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				var batch jetstream.MessageBatch
				if wait == 0 {
					batch, err = cons.FetchNoWait(1)
				} else {
					batch, err = cons.Fetch(1, jetstream.FetchMaxWait(wait))
				}
				if err != nil {
					t.Fatal(err)
				}
				for m := range batch.Messages() {
					return m
				}
			}
		}
		select {
		case <-h.wake:
		case <-deadline:
			t.Fatal("no task message for host " + h.Name)
		}
	}
}

// AddHost adds a host (addHost + createHostCredentials as kojictl add-host
// --creds-out does) and connects as it with its own credentials, logged in.
func (h *TestHub) AddHost(t testing.TB, name string, arches ...string) *TestHost {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var id int64
	if err := h.Admin.Call(ctx, "addHost", []any{name, arches}, nil, &id); err != nil {
		t.Fatal(err)
	}
	var creds bus.HostCredentials
	if err := h.Admin.Call(ctx, "createHostCredentials", []any{name}, nil, &creds); err != nil {
		t.Fatal(err)
	}
	p := &bus.Profile{Name: "koji", Server: creds.Server, AuthType: "password", User: creds.User, Password: creds.Password, Host: creds.Host}
	c, err := p.Dial(ctx, "test-host-"+name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := p.Login(ctx, c); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(c.Conn())
	if err != nil {
		t.Fatal(err)
	}
	th := &TestHost{Name: name, ID: id, Client: c, JS: js, Creds: &creds, wake: make(chan *nats.Msg, 4096), hub: h}
	sub, err := c.Conn().ChanSubscribe(bus.NotifyPrefix+"tasks.>", th.wake)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	// The hub closes a host's connection when its channels or arches
	// change: as builderd, look at the queues again on reconnect.
	c.Conn().SetReconnectHandler(func(*nats.Conn) {
		select {
		case th.wake <- &nats.Msg{Subject: reconnected}:
		default:
		}
	})
	if err := c.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	return th
}

// TakeEvery starts a durable consumer that takes every message of stream
// and acks it, as the archive takes every event: the history part of the
// benchmarks' floors (raw-call versions of an operation). It stops when the
// test ends.
func TakeEvery(t testing.TB, js jetstream.JetStream, stream string) {
	t.Helper()
	cons, err := js.CreateOrUpdateConsumer(context.Background(), stream, jetstream.ConsumerConfig{Durable: "history", AckPolicy: jetstream.AckAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { _ = m.Ack() })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cc.Stop)
}

// Connect opens a NATS connection of its own to the hub's embedded server,
// over TCP as a client process connects, as the hub's service identity; it
// closes when the test ends.
func (h *TestHub) Connect(t testing.TB, name string) *nats.Conn {
	t.Helper()
	return h.connect(t, bus.ConnectConfig{Name: name, URLs: []string{h.URL()}, User: bus.RoleHub, Password: h.Embedded().Secrets[bus.RoleHub]})
}

// ConnectBridge connects as the protonmsg bridge named name.
func (h *TestHub) ConnectBridge(t testing.TB, name string) *nats.Conn {
	t.Helper()
	return h.connect(t, bus.BridgeConnectConfig(name, h.Embedded().Secrets[bus.SecretBridge], []string{h.URL()}))
}

func (h *TestHub) connect(t testing.TB, cc bus.ConnectConfig) *nats.Conn {
	t.Helper()
	nc, err := bus.Connect(context.Background(), cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}
