package bus_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/bustest"
)

// A user, host or bridge connection must not write state, publish events,
// answer API requests in place of the hub, or manage streams.
func TestRoleConnectionsCannotTouchHubSubjects(t *testing.T) {
	srv := bustest.StartServer(t, bustest.Options{Auth: true})
	forbidden := []struct {
		what    string
		publish string
		sub     string
	}{
		{what: "write the state bucket", publish: "$KV." + bus.StateBucket + ".user.1"},
		{what: "publish an event", publish: bus.EventSubject("build.tag")},
		{what: "publish a task", publish: bus.TaskPrefix + "default.x86_64"},
		{what: "create a stream", publish: "$JS.API.STREAM.CREATE.EVIL"},
		{what: "delete the events stream", publish: "$JS.API.STREAM.DELETE." + bus.EventsStream},
		{what: "purge the work queue", publish: "$JS.API.STREAM.PURGE." + bus.TasksStream},
		{what: "answer API requests (impersonate the hub)", sub: bus.APIPrefix + ">"},
		{what: "read the state bucket", sub: "$KV." + bus.StateBucket + ".>"},
	}
	for _, role := range []string{bus.RoleClient, bus.RoleHost, bus.RoleBridge} {
		for _, tc := range forbidden {
			t.Run(role+"/"+tc.what, func(t *testing.T) {
				errs := make(chan error, 4)
				nc, err := nats.Connect(srv.URL(), nats.UserInfo(role, srv.Secrets[role]),
					nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err }))
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				if tc.publish != "" {
					if err := nc.Publish(tc.publish, []byte("{}")); err != nil {
						t.Fatal(err)
					}
				} else if _, err := nc.SubscribeSync(tc.sub); err != nil {
					t.Fatal(err)
				}
				_ = nc.Flush()
				select {
				case err := <-errs:
					if !strings.Contains(err.Error(), "Permissions Violation") {
						t.Fatalf("got %v, want a permissions violation", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatalf("%s was allowed for role %s", tc.what, role)
				}
			})
		}
	}
}

// The roles can do what they exist for: send API requests and follow events.
func TestRoleConnectionsCanCallAPIAndFollowEvents(t *testing.T) {
	srv := bustest.StartServer(t, bustest.Options{Auth: true})
	for _, role := range []string{bus.RoleClient, bus.RoleHost, bus.RoleBridge} {
		nc, err := bus.Connect(context.Background(), bus.ConnectConfig{URLs: []string{srv.URL()}, User: role, Password: srv.Secrets[role]})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := nc.SubscribeSync(bus.EventPrefix + ">"); err != nil {
			t.Fatal(err)
		}
		// No hub runs here: a permitted request gets "no responders", a forbidden one a violation.
		_, err = nc.Request(bus.APISubject("hello"), []byte("{}"), 2*time.Second)
		if err != nats.ErrNoResponders {
			t.Fatalf("%s: request to the API: %v, want no responders", role, err)
		}
		nc.Close()
	}
	_, err := nats.Connect(srv.URL(), nats.UserInfo(bus.RoleClient, "wrong"))
	if err == nil || !strings.Contains(err.Error(), "Authorization Violation") {
		t.Fatalf("wrong password: %v", err)
	}
}
