package hub

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

type tlsSetup struct {
	h   *TestHub
	dir string
	ca  *testCA
}

// setupTLS starts a hub whose NATS port speaks TLS only, with client
// certificates of a test CA: carol exists, mallory is blocked.
func setupTLS(t testing.TB) *tlsSetup {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, dir, "kojica")
	srvCert, srvKey := ca.issueServer(t, dir)
	h := StartTestHub(t, func(c *Config) {
		c.ClientCAFile = ca.file
		c.TLSCertFile, c.TLSKeyFile, c.TLSCAFile = srvCert, srvKey, ca.file
	})
	if !strings.HasPrefix(h.URL(), "tls://") || h.Profile.ServerCA != ca.file {
		t.Fatalf("hub URL %s, profile serverca %q: want tls:// and the CA", h.URL(), h.Profile.ServerCA)
	}
	for name, status := range map[string]int{"carol": bus.UserStatusNormal, "mallory": bus.UserStatusBlocked} {
		if err := h.Admin.Call(ctxT(t), "createUser", []any{name}, map[string]any{"status": status}, nil); err != nil {
			t.Fatal(err)
		}
	}
	return &tlsSetup{h: h, dir: dir, ca: ca}
}

// kojiCert writes a certificate of ca for cn with its key in one file, as
// koji's cert profile option holds them.
func (s *tlsSetup) kojiCert(t testing.TB, ca *testCA, cn string) string {
	t.Helper()
	certFile, keyFile := ca.issue(t, s.dir, cn)
	var both []byte
	for _, f := range []string{certFile, keyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		both = append(both, b...)
	}
	path := filepath.Join(s.dir, ca.cert.Subject.CommonName+"-"+cn+".pem")
	if err := os.WriteFile(path, both, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (s *tlsSetup) certProfile(cert string) *bus.Profile {
	return &bus.Profile{Name: "koji", Server: s.h.URL(), ServerCA: s.ca.file, AuthType: "ssl", Cert: cert}
}

func TestTLSCertificateIsTheConnectionsIdentity(t *testing.T) {
	s := setupTLS(t)
	p := s.certProfile(s.kojiCert(t, s.ca, "carol"))
	c, err := p.Dial(ctxT(t), "test-carol")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Conn().TLSConnectionState(); err != nil {
		t.Fatalf("not a TLS connection: %v", err)
	}
	if got := bus.ConnIdentity(c.Conn()); got != bus.IdentityToken("carol") {
		t.Fatalf("connection identity %q, want carol's", got)
	}
	if err := p.Login(ctxT(t), c); err != nil {
		t.Fatalf("sslLogin on carol's own connection: %v", err)
	}
	var me bus.LoggedInUser
	call(t, c, "getLoggedInUser", nil, nil, &me)
	if me.Name != "carol" || me.AuthType != bus.AuthTypeSSL {
		t.Fatalf("logged in as %+v", me)
	}

	// The server holds carol to her own inbox.
	errs := make(chan error, 8)
	c.Conn().SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { errs <- err })
	pr := &probe{nc: c.Conn(), errs: errs}
	for _, subject := range []string{"_INBOX_kojiadmin.>", "_INBOX.>"} {
		if _, err := pr.nc.Subscribe(subject, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if !pr.refused(t, subject) {
			t.Errorf("carol subscribed to %s", subject)
		}
	}

	// A session carol opened is hers only: the admin's connection cannot use it.
	if err := s.h.Admin.WithSession(c.Session()).Call(ctxT(t), "getLoggedInUser", nil, nil, nil); !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("carol's session on the admin's connection: %v, want AuthError", err)
	}
}

func TestTLSConnectionRefused(t *testing.T) {
	s := setupTLS(t)
	other := newTestCA(t, s.dir, "otherca")
	carol := s.kojiCert(t, s.ca, "carol")
	tests := []struct {
		name string
		cc   bus.ConnectConfig
	}{
		{"certificate of another CA", s.certConnect(t, s.kojiCert(t, other, "carol"), "carol")},
		{"certificate of an unknown user", s.certConnect(t, s.kojiCert(t, s.ca, "nobody"), "nobody")},
		{"certificate of a blocked user", s.certConnect(t, s.kojiCert(t, s.ca, "mallory"), "mallory")},
		{"certificate claiming another user", s.certConnect(t, carol, "kojiadmin")},
		{"certificate with an empty user", s.certConnect(t, carol, "")},
		{"a client not trusting the server's CA", bus.ConnectConfig{URLs: []string{strings.Replace(s.h.URL(), "tls://", "nats://", 1)},
			User: "carol", InboxPrefix: bus.InboxPrefix("carol")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := bus.Connect(ctxT(t), tc.cc)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			t.Logf("refused: %v", err)
		})
	}
	// Through a profile, a refusal reads as Koji's login failure.
	_, err := s.certProfile(s.kojiCert(t, s.ca, "nobody")).Dial(ctxT(t), "test-nobody")
	if !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("unknown certificate user through a profile: %v, want AuthError", err)
	}
	var nobody *bus.User
	call(t, s.h.Admin, "getUser", []any{"nobody"}, nil, &nobody)
	if nobody != nil {
		t.Fatalf("a refused connection created user %+v", nobody)
	}
}

// TestCalloutChecksCertificatesItself: an external cluster's servers may
// verify client certificates against another CA than the hub's, or not at
// all; the callout accepts only the hub's client CA.
func TestCalloutChecksCertificatesItself(t *testing.T) {
	s := setupTLS(t)
	other := newTestCA(t, s.dir, "otherca")
	var carol *userRecord
	_ = s.h.store.Read(func(v state.View) error { carol, _ = lookupUser(v, registry.Ref{Name: "carol"}); return nil })
	certPEM := func(ca *testCA) string {
		b, err := os.ReadFile(s.kojiCert(t, ca, "carol"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b) // the key's block is skipped
	}
	tests := []struct {
		name string
		tls  jwt.ClientTLS
		ok   bool
	}{
		{"verified by the server", jwt.ClientTLS{VerifiedChains: []jwt.StringList{{certPEM(s.ca)}}}, true},
		{"not verified by the server", jwt.ClientTLS{Certs: jwt.StringList{certPEM(s.ca)}}, true},
		{"verified by the server against another CA", jwt.ClientTLS{VerifiedChains: []jwt.StringList{{certPEM(other)}}}, false},
		{"another CA's, not verified", jwt.ClientTLS{Certs: jwt.StringList{certPEM(other)}}, false},
		{"garbage", jwt.ClientTLS{Certs: jwt.StringList{"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}, false},
	}
	for _, tc := range tests {
		err := s.h.checkCredentials(carol, "carol", "", &tc.tls)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// certConnect is a connection with certificate cert as user.
func (s *tlsSetup) certConnect(t *testing.T, cert, user string) bus.ConnectConfig {
	t.Helper()
	return bus.ConnectConfig{URLs: []string{s.h.URL()}, CAFile: s.ca.file, CertFile: cert, User: user,
		InboxPrefix: bus.InboxPrefix(bus.IdentityToken(user))}
}

func TestTLSPasswordAndAnonymousStillConnect(t *testing.T) {
	s := setupTLS(t)
	alice := s.h.UserClient(t, "alice")
	var me bus.LoggedInUser
	call(t, alice, "getLoggedInUser", nil, nil, &me)
	if me.Name != "alice" || me.AuthType != bus.AuthTypeNormal {
		t.Fatalf("alice logged in as %+v", me)
	}
	anon := s.h.Anonymous()
	var version string
	call(t, anon, "getKojiVersion", nil, nil, &version)
	for name, c := range map[string]*bus.Client{"password": alice, "anonymous": anon} {
		if _, err := c.Conn().TLSConnectionState(); err != nil {
			t.Errorf("%s connection is not TLS: %v", name, err)
		}
	}
	// A password client that offers no certificate and a wrong password is refused.
	bad := &bus.Profile{Name: "koji", Server: s.h.URL(), ServerCA: s.ca.file, AuthType: "password", User: "alice", Password: "wrong"}
	if _, err := bad.Dial(ctxT(t), "test-bad"); !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("wrong password over TLS: %v, want AuthError", err)
	}
}
