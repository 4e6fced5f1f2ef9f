package bus_test

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
)

// A client that saw a revision the hubs no longer have (their state made
// again) is refused once, then goes on from the hub's revision instead of
// failing every call.
func TestClientForgetsARevisionTheHubDoesNotHave(t *testing.T) {
	srv := bustest.StartServer(t, bustest.Options{})
	hubConn, _ := srv.Connect(t)
	var mu sync.Mutex
	var sent []string // the min-rev header of each request
	const hubRev = 5
	sub, err := hubConn.Subscribe(bus.IdentityAPISubject("*", "echo"), func(m *nats.Msg) {
		minRev := m.Header.Get(bus.HeaderMinRev)
		mu.Lock()
		sent = append(sent, minRev)
		first := len(sent) == 1
		mu.Unlock()
		reply := nats.NewMsg(m.Reply)
		reply.Data = bus.EncodeResult([]byte("true"))
		rev := hubRev
		switch {
		case first:
			rev = 1000 // a revision of the state as it was
		case minRev != "" && minRev != strconv.Itoa(hubRev):
			reply.Data, _ = json.Marshal(bus.Response{Error: bus.ParameterError("%s %s is ahead of every revision the hub has (%d)", bus.HeaderMinRev, minRev, hubRev)})
		}
		reply.Header.Set(bus.HeaderRev, strconv.Itoa(rev))
		_ = m.RespondMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	nc, _ := srv.Connect(t)
	c := bus.NewClient(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 3 {
		if err := c.Call(ctx, "echo", nil, nil, nil); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	// First call: none seen; second: 1000, refused, then again without;
	// third: the hub's own revision.
	want := []string{"", "1000", "", "5"}
	if len(sent) != len(want) {
		t.Fatalf("min-rev headers sent %q, want %q", sent, want)
	}
	for i := range want {
		if sent[i] != want[i] {
			t.Fatalf("min-rev headers sent %q, want %q", sent, want)
		}
	}
}

// A call whose connection is closed and reconnects while it waits (the hub
// closes a host's connections when its channels change) is sent again on
// the new connection, with the same request id, instead of waiting out its
// timeout: its reply went to the old connection.
func TestClientSendsAgainACallWhoseConnectionReconnected(t *testing.T) {
	srv := bustest.StartServer(t, bustest.Options{})
	hubConn, _ := srv.Connect(t)
	nc, _ := srv.Connect(t)
	cid, err := nc.GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ids []string // the request id of each request received
	sub, err := hubConn.Subscribe(bus.IdentityAPISubject("*", "echo"), func(m *nats.Msg) {
		mu.Lock()
		ids = append(ids, m.Header.Get(bus.HeaderRequestID))
		first := len(ids) == 1
		mu.Unlock()
		if first {
			// Lost: the caller's connection is closed before the answer.
			if err := srv.Server.DisconnectClientByID(cid); err != nil {
				t.Error(err)
			}
			return
		}
		_ = m.Respond(bus.EncodeResult([]byte("true")))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	c := bus.NewClient(nc)
	c.Timeout = time.Hour // only the reconnect can make it send again in time
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Call(ctx, "echo", nil, nil, nil); err != nil {
		t.Fatalf("call across a reconnect: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ids) != 2 || ids[0] == "" || ids[0] != ids[1] {
		t.Errorf("request ids received %q, want the same one twice", ids)
	}
}
