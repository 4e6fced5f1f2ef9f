// Package bustest starts what tests need: an embedded NATS server with
// JetStream in t.TempDir(), provisioned like a hub's, and connections to it.
package bustest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// Server is an embedded JetStream server for one test.
type Server struct {
	*bus.Embedded
	Dir string
}

// Options tune StartServer.
type Options struct {
	Durability bus.Durability
	Auth       bool // start with the role users (default: no auth)
	Dir        string
}

// StartServer starts an embedded server, provisions it and stops it when the test ends.
func StartServer(t testing.TB, opts Options) *Server {
	t.Helper()
	dir := opts.Dir
	if dir == "" {
		dir = t.TempDir()
	}
	durability := opts.Durability
	if durability == "" {
		durability = bus.DurabilityInterval
	}
	e, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: dir, Port: -1, Durability: durability, NoAuth: !opts.Auth})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Stop)
	s := &Server{Embedded: e, Dir: dir}
	nc, js := s.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := bus.Provision(ctx, js, 1); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	return s
}

// Connect opens a connection (as the hub role when auth is on) closed at test end.
func (s *Server) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	cfg := bus.ConnectConfig{Name: t.Name(), URLs: []string{s.URL()}}
	if s.Secrets != nil {
		cfg.User, cfg.Password = bus.RoleHub, s.Secrets[bus.RoleHub]
	}
	nc, err := bus.Connect(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}
