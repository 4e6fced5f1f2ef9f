package hub

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// probe is a raw connection as one identity, with the server's
// asynchronous errors (permission violations) collected.
type probe struct {
	nc   *nats.Conn
	errs chan error
}

func dialProbe(t *testing.T, cc bus.ConnectConfig, more ...nats.Option) *probe {
	t.Helper()
	p := &probe{errs: make(chan error, 64)}
	opts := append([]nats.Option{
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { p.errs <- err }),
		nats.UserInfo(cc.User, cc.Password), nats.CustomInboxPrefix(cc.InboxPrefix),
	}, more...)
	nc, err := nats.Connect(cc.URLs[0], opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p.nc = nc
	return p
}

// refused waits for the server's permission violation naming subject.
func (p *probe) refused(t *testing.T, subject string) bool {
	t.Helper()
	_ = p.nc.Flush()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-p.errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				return true
			}
		case <-deadline:
			return false
		}
	}
}

type identitySetup struct {
	h                   *TestHub
	alice, host, bridge *probe
	archive             string
	// otherArch is the queue of an arch b1 does not build, otherHost b2's pinned queue.
	otherArch, otherHost string
	otherHostID          int64
}

func setupIdentities(t *testing.T) *identitySetup {
	t.Helper()
	h := StartTestHub(t, nil)
	h.UserClient(t, "alice")
	h.UserClient(t, "bob")
	th := h.AddHost(t, "b1", "x86_64")
	b2 := h.AddHost(t, "b2", "aarch64")
	var task int64
	call(t, h.Admin, "makeTask", []any{"sleep", []any{0}}, map[string]any{"arch": "aarch64"}, &task)
	url := []string{h.URL()}
	s := &identitySetup{h: h,
		alice:  dialProbe(t, bus.ConnectConfig{URLs: url, User: "alice", Password: "pw-alice-secret", InboxPrefix: bus.InboxPrefix("alice")}),
		host:   dialProbe(t, bus.ConnectConfig{URLs: url, User: th.Creds.User, Password: th.Creds.Password, InboxPrefix: bus.InboxPrefix("b1")}),
		bridge: dialProbe(t, bus.BridgeConnectConfig("kojibridge", h.Embedded().Secrets[bus.SecretBridge], url)),
	}
	names, err := h.existingConsumers(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names[bus.EventsStream] {
		if strings.HasPrefix(n, "archive-") {
			s.archive = n
		}
	}
	if s.archive == "" {
		t.Fatalf("no archive consumer among %v", names)
	}
	s.otherHost, s.otherHostID = pinnedQueue(b2.ID).Consumer, b2.ID
	_ = h.store.Read(func(v state.View) error {
		for _, k := range v.Keys("taskqueue", "taskqueue.q-") {
			var q queueRecord
			if ok, _ := v.GetJSON(k, &q); ok && q.Arch == "aarch64" {
				s.otherArch = q.Consumer
			}
		}
		return nil
	})
	if s.otherArch == "" {
		t.Fatal("no aarch64 queue recorded")
	}
	return s
}

// TestIdentitiesCannotReachBeyondTheirGrants tries, with real connections,
// what an attacker holding a user's, a host's or a bridge's credentials
// would: every attempt must be refused by the server, and nothing change.
func TestIdentitiesCannotReachBeyondTheirGrants(t *testing.T) {
	s := setupIdentities(t)
	var before, after bus.Event
	call(t, s.h.Admin, "getLastEvent", nil, nil, &before)
	sub := func(p *probe, subject string) func() error {
		return func() error { _, err := p.nc.Subscribe(subject, func(*nats.Msg) {}); return err }
	}
	queueSub := func(p *probe, subject string) func() error {
		return func() error {
			_, err := p.nc.QueueSubscribe(subject, apiQueue, func(m *nats.Msg) { _ = m.Respond([]byte("{}")) })
			return err
		}
	}
	pub := func(p *probe, subject string) func() error {
		return func() error { return p.nc.Publish(subject, []byte(`{"result":null}`)) }
	}
	tests := []struct {
		name    string
		p       *probe
		subject string
		try     func() error
	}{
		{"user reads another user's replies", s.alice, "_INBOX_bob.>", nil},
		{"user reads every reply", s.alice, "_INBOX.>", nil},
		{"user reads the JetStream API", s.alice, "$JS.API.>", nil},
		{"user reads the state bucket", s.alice, "$KV.>", nil},
		{"user answers the API in the hub's place", s.alice, "koji.api.>", nil},
		{"user publishes an event", s.alice, "koji.event.tag.create", nil},
		{"user queues a task", s.alice, "koji.tasks.1.noarch.p1000", nil},
		{"user uploads task output", s.alice, bus.UploadSubject(1, 1, 1, "x.log"), nil},
		{"user calls as another identity", s.alice, bus.IdentityAPISubject("kojiadmin", "createTag"), nil},
		{"user writes the state bucket", s.alice, "$KV.koji.user.1", nil},
		{"user lists streams", s.alice, "$JS.API.STREAM.LIST", nil},
		{"user deletes the archive's consumer", s.alice, "$JS.API.CONSUMER.DELETE." + bus.EventsStream + "." + s.archive, nil},
		{"user pulls from the archive's consumer", s.alice, "$JS.API.CONSUMER.MSG.NEXT." + bus.EventsStream + "." + s.archive, nil},
		{"user pulls a task queue", s.alice, "$JS.API.CONSUMER.MSG.NEXT." + bus.TasksStream + ".q-1-x86_64-1020", nil},
		{"host reads every reply", s.host, "_INBOX.>", nil},
		{"host reads the state bucket", s.host, "$KV.koji.>", nil},
		{"host publishes an event", s.host, "koji.event.task.open", nil},
		{"host queues a task", s.host, "koji.tasks.1.x86_64.p1000", nil},
		{"host deletes the task stream", s.host, "$JS.API.STREAM.DELETE." + bus.TasksStream, nil},
		{"host pulls another arch's queue", s.host, "$JS.API.CONSUMER.MSG.NEXT." + bus.TasksStream + "." + s.otherArch, nil},
		{"host acks another arch's queue", s.host, "$JS.ACK." + bus.TasksStream + "." + s.otherArch + ".1.1.1.1.0", nil},
		{"host pulls another host's queue", s.host, "$JS.API.CONSUMER.MSG.NEXT." + bus.TasksStream + "." + s.otherHost, nil},
		{"host uploads as another host", s.host, bus.UploadSubject(s.otherHostID, 1, 1, "x.log"), nil},
		{"host calls as another identity", s.host, bus.IdentityAPISubject("kojiadmin", "hello"), nil},
		{"bridge calls the API", s.bridge, bus.IdentityAPISubject("kojiadmin", "createTag"), nil},
		{"bridge publishes an event", s.bridge, "koji.event.tag.create", nil},
		{"bridge writes the state bucket", s.bridge, "$KV.koji.user.1", nil},
		{"bridge deletes the archive's consumer", s.bridge, "$JS.API.CONSUMER.DELETE." + bus.EventsStream + "." + s.archive, nil},
		{"bridge reads every reply", s.bridge, "_INBOX.>", nil},
		{"bridge queues a task", s.bridge, "koji.tasks.1.x86_64.p1000", nil},
	}
	refused := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			try := tt.try
			switch {
			case try != nil:
			case tt.subject == "koji.api.>":
				try = queueSub(tt.p, tt.subject)
			case strings.Contains(tt.subject, ">") || strings.HasPrefix(tt.subject, "_INBOX"):
				try = sub(tt.p, tt.subject)
			default:
				try = pub(tt.p, tt.subject)
			}
			if err := try(); err != nil {
				t.Fatal(err)
			}
			if !tt.p.refused(t, tt.subject) {
				t.Fatalf("%s: the server did not refuse %q", tt.name, tt.subject)
			}
			refused++
		})
	}
	t.Logf("%d of %d attempts refused by the server", refused, len(tests))
	call(t, s.h.Admin, "getLastEvent", nil, nil, &after)
	if after.ID != before.ID {
		t.Errorf("last event %d, was %d: an attempt changed state", after.ID, before.ID)
	}
	if _, err := s.h.js.Consumer(ctxT(t), bus.EventsStream, s.archive); err != nil {
		t.Errorf("archive consumer: %v", err)
	}
}

// TestCapturedSessionIsWorthNothingElsewhere: bob holds alice's session
// header (as a reply snooper would have) and uses it from his own
// connection, and from an anonymous one; both are refused, alice's works.
func TestCapturedSessionIsWorthNothingElsewhere(t *testing.T) {
	h := StartTestHub(t, nil)
	alice := h.UserClient(t, "alice", "tag")
	bob := h.UserClient(t, "bob")
	stolen := alice.Session()
	for name, c := range map[string]*bus.Client{"bob's connection": bob.WithSession(stolen), "an anonymous connection": h.Anonymous().WithSession(stolen)} {
		err := c.Call(ctxT(t), "createTag", []any{"stolen-" + strings.ReplaceAll(name, " ", "-")}, nil, nil)
		var f *bus.Fault
		if !errors.As(err, &f) || f.Code != bus.CodeAuthError {
			t.Errorf("createTag from %s with alice's session: err = %v, want AuthError", name, err)
		}
	}
	call(t, alice, "createTag", []any{"alices-own"}, nil, nil)
	var tags []bus.Tag
	call(t, h.Admin, "listTags", nil, nil, &tags)
	if len(tags) != 1 || tags[0].Name != "alices-own" {
		t.Errorf("tags = %+v, want only alices-own", tags)
	}
}

// TestDisabledHostIsRefusedAndDisconnected: disabling a host closes its
// connection, and its credentials no longer connect; a wrong password
// never does.
func TestDisabledHostIsRefusedAndDisconnected(t *testing.T) {
	h := StartTestHub(t, nil)
	th := h.AddHost(t, "b1", "x86_64")
	cc := bus.ConnectConfig{URLs: []string{h.URL()}, User: th.Creds.User, Password: th.Creds.Password, InboxPrefix: bus.InboxPrefix("b1")}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	wrong := cc
	wrong.Password = "not-the-password"
	if _, err := bus.Connect(ctx, wrong); err == nil {
		t.Fatal("connected with a wrong password")
	}
	nc, err := nats.Connect(h.URL(), nats.UserInfo(cc.User, cc.Password), nats.CustomInboxPrefix(cc.InboxPrefix), nats.NoReconnect())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	call(t, h.Admin, "disableHost", []any{"b1"}, nil, nil)
	if !closedByServer(nc) {
		t.Error("the disabled host's connection is still open")
	}
	if _, err := nats.Connect(h.URL(), nats.UserInfo(cc.User, cc.Password)); err == nil {
		t.Error("a disabled host connected")
	}
}

// TestUpgradeFromRolePasswords starts a hub on a data directory of the
// role-password scheme: the hub password is kept, the shared client and host
// passwords are gone, and a profile of that scheme still works, as its
// user's own password is now its NATS identity.
func TestUpgradeFromRolePasswords(t *testing.T) {
	dir := t.TempDir()
	old := `{"hub": "old-hub-secret", "client": "old-client-secret", "host": "old-host-secret", "bridge": "old-bridge-secret"}`
	if err := os.WriteFile(filepath.Join(dir, "nats-roles.json"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	h := StartTestHub(t, func(c *Config) { c.DataDir = dir })
	secrets := h.Embedded().Secrets
	if secrets[bus.RoleHub] != "old-hub-secret" || secrets[bus.SecretBridge] != "old-bridge-secret" || secrets["client"] != "" || secrets["host"] != "" {
		t.Errorf("secrets after upgrade: %v", secrets)
	}
	if _, err := secrets.CalloutIssuer(); err != nil {
		t.Error(err)
	}
	profile, err := os.ReadFile(h.ProfilePath())
	if err != nil {
		t.Fatal(err)
	}
	oldStyle := strings.Replace(string(profile), "authtype", "nats_user = client\nnats_password = old-client-secret\nauthtype", 1)
	path := filepath.Join(t.TempDir(), "old.conf")
	if err := os.WriteFile(path, []byte(oldStyle), 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := bus.LoadProfile(path, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Dial(ctxT(t), "old-profile")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := p.Login(ctxT(t), c); err != nil {
		t.Fatal(err)
	}
	var me bus.LoggedInUser
	call(t, c, "getLoggedInUser", nil, nil, &me)
	if me.Name != "kojiadmin" {
		t.Errorf("logged in as %q", me.Name)
	}
	cc := bus.ConnectConfig{URLs: []string{h.URL()}, User: "client", Password: "old-client-secret"}
	if nc, err := bus.Connect(ctxT(t), cc); err == nil {
		nc.Close()
		t.Error("the old shared client password still connects")
	}
}

// TestOutputForATaskNotHeldIsIgnored: another host uploads files for a
// task it does not hold, first, under its own host id (the only subjects it
// may publish task output to): the task's live and final output lists only
// the files of the host that runs it, whose chunks are not taken for
// duplicates of the intruder's.
func TestOutputForATaskNotHeldIsIgnored(t *testing.T) {
	run := openSleepTask(t)
	h, b1, id, attempt, ctx := run.h, run.b, run.id, run.attempt, ctxT(t)
	intruder := h.AddHost(t, "intruder", "x86_64")
	intruder.Upload(t, id, attempt, "sleep.log", "forged\n")
	intruder.Upload(t, id, attempt, "extra.log", "forged\n")
	b1.Upload(t, id, attempt, "sleep.log", "real\n")
	list := func(when string) {
		var names []string
		if err := h.Admin.Call(ctx, "listTaskOutput", []any{id}, nil, &names); err != nil || len(names) != 1 || names[0] != "sleep.log" {
			t.Errorf("%s: listTaskOutput = %v, %v; want only the running host's sleep.log", when, names, err)
		}
	}
	list("running")
	b1.Finish(t, id, attempt)
	list("closed")
}

// TestBridgeIdentityNeedsItsSecretAndAPlainName: a bridge identity takes
// the bridge secret, and a name that is one plain subject token.
func TestBridgeIdentityNeedsItsSecretAndAPlainName(t *testing.T) {
	h := StartTestHub(t, nil)
	secret := h.Embedded().Secrets[bus.SecretBridge]
	url := []string{h.URL()}
	for _, tt := range []struct {
		name, user, password string
		ok                   bool
	}{
		{"plain name", "kojibridge", secret, true},
		{"no password", "kojibridge", "", false},
		{"wrong password", "kojibridge", "not-the-secret", false},
		{"wildcard name", "x.>", secret, false},
		{"dotted name", "a.b", secret, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cc := bus.BridgeConnectConfig(tt.user, tt.password, url)
			nc, err := nats.Connect(url[0], nats.UserInfo(cc.User, cc.Password), nats.NoReconnect())
			if err == nil {
				nc.Close()
			}
			if (err == nil) != tt.ok {
				t.Errorf("connect as %q: %v, want ok=%v", cc.User, err, tt.ok)
			}
		})
	}
}

// closedByServer waits, with a deadline, for the server to close a
// connection made with nats.NoReconnect.
func closedByServer(nc *nats.Conn) bool {
	closed := make(chan struct{})
	var once sync.Once
	nc.SetClosedHandler(func(*nats.Conn) { once.Do(func() { close(closed) }) })
	if nc.IsClosed() { // closed before the handler was set
		return true
	}
	select {
	case <-closed:
		return true
	case <-time.After(10 * time.Second):
		return nc.IsClosed()
	}
}

// TestDisabledUserIsDisconnectedAndRefused: disableUser closes the user's
// open connections, refuses its reconnect and its sessions (also on the
// hub's own, unbound connection, as the XML-RPC adapter uses them);
// enableUser lets it in again. Bad calls change nothing.
func TestDisabledUserIsDisconnectedAndRefused(t *testing.T) {
	h := StartTestHub(t, nil)
	alice := h.UserClient(t, "alice")
	bob := h.UserClient(t, "bob")
	w := watchEvents(t, h)
	connect := func() (*nats.Conn, error) {
		return nats.Connect(h.URL(), nats.UserInfo("alice", "pw-alice-secret"), nats.CustomInboxPrefix(bus.InboxPrefix("alice")), nats.NoReconnect())
	}
	nc, err := connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	unbound := bus.NewClient(h.Connect(t, "xmlrpc-like")).WithSession(alice.Session())
	var me *bus.LoggedInUser
	call(t, unbound, "getLoggedInUser", nil, nil, &me)
	if me == nil || me.Name != "alice" {
		t.Fatalf("alice's session on an unbound connection: %+v", me)
	}

	assertRefused(t, h, []badCall{
		{name: "not an admin", client: bob, method: "disableUser", args: []any{"alice"}, code: bus.CodeActionNotAllowed},
		{name: "no such user", method: "disableUser", args: []any{"nobody"}, code: bus.CodeGenericError, msg: "No such user: 'nobody'"},
		{name: "enable no such user", method: "enableUser", args: []any{"nobody"}, code: bus.CodeGenericError, msg: "No such user: 'nobody'"},
	})

	call(t, h.Admin, "disableUser", []any{"alice"}, nil, nil)
	if ev := w.next(t, "user.disable"); ev.Props["user"] != "alice" || ev.Props["type"] != "UserDisable" {
		t.Errorf("user.disable props %v", ev.Props)
	}
	var u *bus.User
	call(t, h.Admin, "getUser", []any{"alice"}, nil, &u)
	if u == nil || u.Status != bus.UserStatusBlocked {
		t.Fatalf("alice after disableUser: %+v", u)
	}
	refused := 0
	if closedByServer(nc) {
		refused++
	} else {
		t.Error("the disabled user's connection is still open")
	}
	if c, err := connect(); err == nil {
		c.Close()
		t.Error("a disabled user connected")
	} else {
		refused++
	}
	var f *bus.Fault
	if err := unbound.Call(ctxT(t), "getLoggedInUser", nil, nil, nil); errors.As(err, &f) && f.Code == bus.CodeAuthError {
		refused++
	} else {
		t.Errorf("a disabled user's session: err = %v, want AuthError", err)
	}
	t.Logf("%d of 3 attempts of a disabled user refused", refused)

	before := h.Store().Applied()
	call(t, h.Admin, "disableUser", []any{"alice"}, nil, nil) // already disabled: no change
	if h.Store().Applied() != before {
		t.Error("disabling a disabled user changed state")
	}
	call(t, h.Admin, "enableUser", []any{u.ID}, nil, nil)
	w.next(t, "user.enable")
	again, err := connect()
	if err != nil {
		t.Fatalf("an enabled user cannot connect: %v", err)
	}
	again.Close()
	call(t, unbound, "getLoggedInUser", nil, nil, &me)
	if me == nil || me.Name != "alice" {
		t.Errorf("alice's session after enableUser: %+v", me)
	}
}

// queueOf is the consumer of the queue task id waits in.
func queueOf(t *testing.T, h *TestHub, id int64) string {
	t.Helper()
	var name string
	_ = h.store.Read(func(v state.View) error {
		if task, ok := lookupTask(v, id); ok {
			name = taskQueue(v, task).Consumer
		}
		return nil
	})
	if name == "" {
		t.Fatalf("task %d has no queue", id)
	}
	return name
}

// TestHostQueuesFollowItsChannelsAndArches: a host may pull the queues of
// its channels and arches, also one first used after it connected, and not
// another channel's or arch's; when its channels or arches change the hub
// closes its connections, and the reconnect brings what it may pull now.
// Every other pull is refused by the server.
func TestHostQueuesFollowItsChannelsAndArches(t *testing.T) {
	h := StartTestHub(t, nil)
	b1 := h.AddHost(t, "b1", "x86_64")
	call(t, h.Admin, "addChannel", []any{"extra"}, nil, nil)
	cc := bus.ConnectConfig{URLs: []string{h.URL()}, User: b1.Creds.User, Password: b1.Creds.Password, InboxPrefix: bus.InboxPrefix("b1")}
	makeTask := func(kw map[string]any) string {
		var id int64
		call(t, h.Admin, "makeTask", []any{"sleep", []any{0}}, kw, &id)
		// The relay makes the queue's consumer after the commit, before
		// it stores the task's message there.
		waitFor(t, fmt.Sprintf("task %d in its queue", id), func() bool { return b1.stored(id) })
		return queueOf(t, h, id)
	}
	aarchQueue := makeTask(map[string]any{"arch": "aarch64"})
	extraQueue := makeTask(map[string]any{"arch": "x86_64", "channel": "extra"})
	same := func(q string) func() string { return func() string { return q } }
	tests := []struct {
		name   string
		change func() string // returns the queue it is about
		// closes: the change closes b1's connections (its queues changed);
		// mine: b1 may pull the queue after the change.
		closes, mine bool
	}{
		{name: "another arch's queue", change: same(aarchQueue)},
		{name: "a queue of a channel it is not in", change: same(extraQueue)},
		{name: "its own queue first used after connect", change: func() string { return makeTask(map[string]any{"arch": "x86_64", "priority": 5}) }, mine: true},
		{name: "the channel joined", change: func() string { call(t, h.Admin, "addHostToChannel", []any{"b1", "extra"}, nil, nil); return extraQueue }, closes: true, mine: true},
		{name: "the channel left", change: func() string {
			call(t, h.Admin, "removeHostFromChannel", []any{"b1", "extra"}, nil, nil)
			return extraQueue
		}, closes: true},
		{name: "an arch added", change: func() string {
			call(t, h.Admin, "editHost", []any{"b1"}, map[string]any{"arches": "x86_64 aarch64"}, nil)
			return aarchQueue
		}, closes: true, mine: true},
	}
	refused := 0
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := dialProbe(t, cc, nats.NoReconnect())
			queue := tt.change()
			p := before
			if tt.closes {
				if !closedByServer(before.nc) {
					t.Fatal("b1's connection from before the change is still open")
				}
				p = dialProbe(t, cc)
			}
			if !tt.mine {
				subject := "$JS.API.CONSUMER.MSG.NEXT." + bus.TasksStream + "." + queue
				if err := p.nc.Publish(subject, []byte(`{"batch":1,"no_wait":true}`)); err != nil {
					t.Fatal(err)
				}
				if !p.refused(t, subject) {
					t.Fatalf("the server did not refuse b1 pulling %s", queue)
				}
				refused++
				return
			}
			js, err := jetstream.New(p.nc)
			if err != nil {
				t.Fatal(err)
			}
			cons, err := js.Consumer(ctxT(t), bus.TasksStream, queue)
			if err != nil {
				t.Fatalf("b1 binds %s: %v", queue, err)
			}
			batch, err := cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for m := range batch.Messages() {
				got++
				_ = m.Nak()
			}
			if got != 1 {
				t.Errorf("b1 pulled %d messages from %s, want 1 (%v)", got, queue, batch.Error())
			}
		})
	}
	t.Logf("%d of %d pulls of queues not b1's refused by the server", refused, 3)
}
