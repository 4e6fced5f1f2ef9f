package hub

// What per-identity NATS auth costs, beside a connection as a static NATS
// user with a password in the server's configuration (as every connection
// was with the shared role passwords), in the same run:
//
//	connect/static    connect as the hub user + login + getLoggedInUser + close
//	connect/callout   connect as the user itself (auth callout: the hub checks
//	                  the bcrypt hash and signs a user JWT) + login + the same call
//
// each -warm (the password was checked in the last minute: login, and the
// callout, skip bcrypt) and -cold (every password check is a bcrypt
// comparison: one per static connect, for login; one per callout connect,
// for the callout, which login then reuses).
//	call/static       getLoggedInUser with a session, over the static user's connection
//	call/callout      the same over the user's own connection (permissions with
//	                  deny entries, session bound to the connection's identity)
//
// connect/callout reports x-static (its ns/op over connect/static's), and so
// does call/callout.

import (
	"context"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

func BenchmarkIdentity(b *testing.B) {
	h := StartTestHub(b, nil)
	h.UserClient(b, "alice")
	password := "pw-alice-secret"
	static := bus.ConnectConfig{Name: "bench-static", URLs: []string{h.URL()}, User: bus.RoleHub, Password: h.Embedded().Secrets[bus.RoleHub]}
	own := &bus.Profile{Name: "koji", Server: h.URL(), AuthType: "password", User: "alice", Password: password}
	ctx := context.Background()
	dialStatic := func(b *testing.B) *bus.Client {
		nc, err := bus.Connect(ctx, static)
		if err != nil {
			b.Fatal(err)
		}
		return bus.NewClient(nc)
	}
	dialOwn := func(b *testing.B) *bus.Client {
		c, err := own.Dial(ctx, "bench-callout")
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	firstCall := func(b *testing.B, c *bus.Client) {
		if err := c.Login(ctx, "alice", password); err != nil {
			b.Fatal(err)
		}
		var me bus.LoggedInUser
		if err := c.Call(ctx, "getLoggedInUser", nil, nil, &me); err != nil || me.Name != "alice" {
			b.Fatalf("getLoggedInUser = %+v, %v", me, err)
		}
	}
	var base float64
	for _, cold := range []bool{false, true} {
		name := "warm"
		if cold {
			name = "cold"
		}
		forget := func() {
			if cold {
				passwordsSeen.forget()
			}
		}
		b.Run("connect/static-"+name, func(b *testing.B) {
			for b.Loop() {
				forget()
				c := dialStatic(b)
				firstCall(b, c)
				c.Conn().Close()
			}
			base = nsPerOp(b)
		})
		b.Run("connect/callout-"+name, func(b *testing.B) {
			for b.Loop() {
				forget()
				c := dialOwn(b)
				firstCall(b, c)
				c.Close()
			}
			if base > 0 {
				b.ReportMetric(nsPerOp(b)/base, "x-static")
			}
		})
	}
	call := func(b *testing.B, c *bus.Client) {
		firstCall(b, c)
		for b.Loop() {
			if err := c.Call(ctx, "getLoggedInUser", nil, nil, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("call/static", func(b *testing.B) {
		c := dialStatic(b)
		defer c.Conn().Close()
		call(b, c)
		base = nsPerOp(b)
	})
	b.Run("call/callout", func(b *testing.B) {
		c := dialOwn(b)
		defer c.Close()
		call(b, c)
		if base > 0 {
			b.ReportMetric(nsPerOp(b)/base, "x-static")
		}
	})
}
