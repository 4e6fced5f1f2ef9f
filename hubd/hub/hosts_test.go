package hub

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
)

// eventWatch collects events on koji.event.> from the moment it is made.
type eventWatch struct {
	ch  chan *nats.Msg
	sub *nats.Subscription
}

func watchEvents(t *testing.T, h *TestHub) *eventWatch {
	t.Helper()
	w := &eventWatch{ch: make(chan *nats.Msg, 512)}
	sub, err := h.Admin.Conn().ChanSubscribe(bus.EventPrefix+">", w.ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Admin.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	w.sub = sub
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return w
}

// next waits (with a deadline) for the next event with that address, skipping others.
func (w *eventWatch) next(t *testing.T, address string) *bus.Event {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m := <-w.ch:
			ev, err := bus.EventFromMsg(m)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Address == address {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event within the deadline", address)
		}
	}
}

func call(t *testing.T, c *bus.Client, method string, args []any, kwargs map[string]any, out any) {
	t.Helper()
	if err := c.Call(ctxT(t), method, args, kwargs, out); err != nil {
		t.Fatalf("%s%v: %v", method, args, err)
	}
}

type badCall struct {
	name   string
	client *bus.Client
	method string
	args   []any
	kwargs map[string]any
	code   int
	msg    string
}

// assertRefused runs calls that must fail with a fault and change nothing.
func assertRefused(t *testing.T, h *TestHub, cases []badCall) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.Store().Applied()
			c := tc.client
			if c == nil {
				c = h.Admin
			}
			err := c.Call(ctxT(t), tc.method, tc.args, tc.kwargs, nil)
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != tc.code || (tc.msg != "" && f.Message != tc.msg) {
				t.Fatalf("err = %v, want %s: %s", err, bus.FaultName(tc.code), tc.msg)
			}
			if h.Store().Applied() != before {
				t.Fatal("a refused call changed state")
			}
		})
	}
}

func TestHostAndChannelSetup(t *testing.T) {
	h := StartTestHub(t, nil)
	w := watchEvents(t, h)
	var id int64
	call(t, h.Admin, "addHost", []any{"builder1", []string{"x86_64", "i686"}}, nil, &id)
	ev := w.next(t, "host.add")
	if ev.Props["host"] != "builder1" || ev.Props["type"] != "HostAdd" {
		t.Fatalf("host.add props %v", ev.Props)
	}
	var host *bus.Host
	call(t, h.Admin, "getHost", []any{"builder1"}, nil, &host)
	if host == nil || host.ID != id || host.Arches != "x86_64 i686" || host.Capacity != 2.0 || !host.Enabled || host.Ready || host.UpdateTS != nil {
		t.Fatalf("getHost = %+v", host)
	}
	var u *bus.User
	call(t, h.Admin, "getUser", []any{"builder1"}, nil, &u)
	if u == nil || u.UserType != bus.UserTypeHost || u.ID != host.UserID {
		t.Fatalf("host user %+v", u)
	}
	var chans []bus.Channel
	call(t, h.Admin, "listChannels", nil, map[string]any{"hostID": "builder1"}, &chans)
	if len(chans) != 1 || chans[0].Name != "default" {
		t.Fatalf("host channels %+v", chans)
	}

	var chID int64
	call(t, h.Admin, "addChannel", []any{"runroot"}, map[string]any{"description": "runroot tasks"}, &chID)
	w.next(t, "channel.add")
	call(t, h.Admin, "addHostToChannel", []any{"builder1", "runroot"}, nil, nil)
	w.next(t, "host.channel.add")
	call(t, h.Admin, "addHostToChannel", []any{"builder1", "brand-new"}, map[string]any{"create": true}, nil)
	var hosts []bus.Host
	call(t, h.Admin, "listHosts", nil, map[string]any{"channelID": "runroot"}, &hosts)
	if len(hosts) != 1 || hosts[0].Name != "builder1" {
		t.Fatalf("hosts in runroot: %+v", hosts)
	}
	var ch *bus.Channel
	call(t, h.Admin, "getChannel", []any{chID}, nil, &ch)
	if ch == nil || ch.Name != "runroot" || ch.Description == nil || *ch.Description != "runroot tasks" || !ch.Enabled {
		t.Fatalf("getChannel = %+v", ch)
	}

	// arch match is on whole words: i686 matches, i6 and x86 do not
	for arch, want := range map[string]int{"i686": 1, "i6": 0, "x86": 0, "x86_64": 1} {
		call(t, h.Admin, "listHosts", nil, map[string]any{"arches": []string{arch}}, &hosts)
		if len(hosts) != want {
			t.Fatalf("listHosts(arches=[%s]) = %d hosts, want %d", arch, len(hosts), want)
		}
	}
	call(t, h.Admin, "disableHost", []any{"builder1"}, nil, nil)
	w.next(t, "host.disable")
	call(t, h.Admin, "listHosts", nil, map[string]any{"enabled": true}, &hosts)
	if len(hosts) != 0 {
		t.Fatalf("enabled hosts after disable: %+v", hosts)
	}
	call(t, h.Admin, "enableHost", []any{"builder1"}, nil, nil)
	var changed bool
	call(t, h.Admin, "editHost", []any{"builder1"}, map[string]any{"capacity": 4.5, "comment": "fast"}, &changed)
	if !changed {
		t.Fatal("editHost reported no change")
	}
	call(t, h.Admin, "editHost", []any{"builder1"}, map[string]any{"capacity": 4.5}, &changed)
	if changed {
		t.Fatal("editHost with the same value reported a change")
	}
	call(t, h.Admin, "removeHostFromChannel", []any{"builder1", "runroot"}, nil, nil)
	w.next(t, "host.channel.remove")
	call(t, h.Admin, "disableChannel", []any{"runroot"}, map[string]any{"comment": "maintenance"}, nil)

	alice := h.UserClient(t, "alice")
	assertRefused(t, h, []badCall{
		{name: "duplicate host", method: "addHost", args: []any{"builder1", []string{"x86_64"}}, code: bus.CodeGenericError, msg: "host already exists: builder1"},
		{name: "user not a host", method: "addHost", args: []any{"alice", []string{"x86_64"}}, code: bus.CodeGenericError, msg: "user alice already exists and it is not a host"},
		{name: "bad arch", method: "addHost", args: []any{"b2", []string{"x86;64"}}, code: bus.CodeGenericError, msg: "Architecture can be only [a-zA-Z0-9_-]"},
		{name: "no perm", client: alice, method: "addHost", args: []any{"b3", []string{"x86_64"}}, code: bus.CodeActionNotAllowed, msg: "host permission required (logged in as alice)"},
		{name: "addChannel needs admin", client: alice, method: "addChannel", args: []any{"x"}, code: bus.CodeActionNotAllowed},
		{name: "duplicate channel", method: "addChannel", args: []any{"runroot"}, code: bus.CodeGenericError, msg: "channel runroot already exists (id=" + itoa(chID) + ")"},
		{name: "no such channel", method: "addHostToChannel", args: []any{"builder1", "nope"}, code: bus.CodeGenericError, msg: "channel does not exist: nope"},
		{name: "no such host", method: "addHostToChannel", args: []any{"nohost", "default"}, code: bus.CodeGenericError, msg: "host does not exist: nohost"},
		{name: "disabled channel", method: "addHostToChannel", args: []any{"builder1", "runroot"}, code: bus.CodeGenericError, msg: "channel runroot is disabled"},
		{name: "already subscribed", method: "addHostToChannel", args: []any{"builder1", "default"}, code: bus.CodeGenericError, msg: "host builder1 is already subscribed to the default channel"},
		{name: "not subscribed", method: "removeHostFromChannel", args: []any{"builder1", "runroot"}, code: bus.CodeGenericError, msg: "host builder1 is not subscribed to the runroot channel"},
		{name: "empty arches", method: "listHosts", kwargs: map[string]any{"arches": []string{}}, code: bus.CodeGenericError, msg: "arches option cannot be empty"},
		{name: "strict getHost", method: "getHost", args: []any{"nohost"}, kwargs: map[string]any{"strict": true}, code: bus.CodeGenericError, msg: "Invalid hostInfo: nohost"},
		{name: "enable unknown", method: "enableHost", args: []any{"nohost"}, code: bus.CodeGenericError, msg: "host does not exist: nohost"},
		{name: "enable unknown channel", method: "enableChannel", args: []any{"nochan"}, code: bus.CodeGenericError, msg: "No such channel: nochan"},
		{name: "edit bad capacity", method: "editHost", args: []any{"builder1"}, kwargs: map[string]any{"capacity": "lots"}, code: bus.CodeParameterError},
		{name: "host-only call", method: "host.getID", code: bus.CodeActionNotAllowed, msg: "host session required"},
		{name: "rename to existing", method: "renameChannel", args: []any{"runroot", "default"}, code: bus.CodeGenericError},
	})
}

func itoa(n int64) string { return fmtInt(n) }

func TestHostCredentialsGiveAHostSession(t *testing.T) {
	h := StartTestHub(t, nil)
	var id int64
	call(t, h.Admin, "addHost", []any{"builder2", []string{"aarch64"}}, nil, &id)
	var creds bus.HostCredentials
	call(t, h.Admin, "createHostCredentials", []any{"builder2"}, nil, &creds)
	if creds.User != "builder2" || creds.Password == "" || creds.Server == "" {
		t.Fatalf("creds %+v", creds)
	}
	hc := h.Anonymous()
	if err := hc.Login(ctxT(t), creds.User, creds.Password); err != nil {
		t.Fatal(err)
	}
	var got int64
	call(t, hc, "host.getID", nil, nil, &got)
	if got != id {
		t.Fatalf("host.getID = %d, want %d", got, id)
	}
	w := watchEvents(t, h)
	call(t, hc, "host.updateHost", []any{0.5, true}, map[string]any{"data": map[string]any{"maxjobs": 4}}, nil)
	if ev := w.next(t, "host.ready"); ev.Props["host"] != "builder2" {
		t.Fatalf("host.ready props %v", ev.Props)
	}
	var host bus.Host
	call(t, hc, "host.getHost", nil, nil, &host)
	if !host.Ready || host.TaskLoad != 0.5 || host.UpdateTS == nil {
		t.Fatalf("after updateHost: %+v", host)
	}
	// a host session is not an admin session
	assertRefused(t, h, []badCall{
		{name: "host cannot add hosts", client: hc, method: "addHost", args: []any{"evil", []string{"x86_64"}}, code: bus.CodeActionNotAllowed},
		{name: "bad load", client: hc, method: "host.updateHost", args: []any{"x", true}, code: bus.CodeParameterError},
	})
	_ = context.Background
}

func fmtInt(n int64) string { return strconv.FormatInt(n, 10) }
