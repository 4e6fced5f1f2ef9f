package hub

// What connecting over TLS costs by way of authentication, all on one hub
// whose NATS port is TLS-only, in the same run:
//
//	static    connect as the hub user (password in the server's
//	          configuration) + login as alice + getLoggedInUser + close
//	password  connect as alice through the callout (password checked in
//	          the last minute) + login + the same call
//	cert      connect with carol's client certificate (the callout checks
//	          its chain) + sslLogin (a challenge signed with its key) + the same call
//
// password and cert report x-static, their ns/op over static's.

import (
	"context"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

func BenchmarkTLSConnect(b *testing.B) {
	s := setupTLS(b)
	s.h.UserClient(b, "alice")
	ctx := context.Background()
	url := []string{s.h.URL()}
	static := bus.ConnectConfig{Name: "bench-static", URLs: url, CAFile: s.ca.file, User: bus.RoleHub, Password: s.h.Embedded().Secrets[bus.RoleHub]}
	password := &bus.Profile{Name: "koji", Server: url[0], ServerCA: s.ca.file, AuthType: "password", User: "alice", Password: "pw-alice-secret"}
	cert := s.certProfile(s.kojiCert(b, s.ca, "carol"))
	check := func(b *testing.B, c *bus.Client, user string) {
		var me bus.LoggedInUser
		if err := c.Call(ctx, "getLoggedInUser", nil, nil, &me); err != nil || me.Name != user {
			b.Fatalf("getLoggedInUser = %+v, %v", me, err)
		}
		c.Close()
	}
	var base float64
	b.Run("static", func(b *testing.B) {
		for b.Loop() {
			nc, err := bus.Connect(ctx, static)
			if err != nil {
				b.Fatal(err)
			}
			c := bus.NewClient(nc)
			if err := password.Login(ctx, c); err != nil {
				b.Fatal(err)
			}
			check(b, c, "alice")
			nc.Close()
		}
		base = nsPerOp(b)
	})
	for _, tc := range []struct {
		name, user string
		p          *bus.Profile
	}{{"password", "alice", password}, {"cert", "carol", cert}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				c, err := tc.p.Dial(ctx, "bench-"+tc.name)
				if err != nil {
					b.Fatal(err)
				}
				if err := tc.p.Login(ctx, c); err != nil {
					b.Fatal(err)
				}
				check(b, c, tc.user)
			}
			if base > 0 {
				b.ReportMetric(nsPerOp(b)/base, "x-static")
			}
		})
	}
}
