package hub

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
)

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string
}

func newTestCA(t testing.TB, dir, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(dir, name+".pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, file: file}
}

// issue writes a client certificate and key for cn and returns their paths.
func (ca *testCA) issue(t testing.TB, dir, cn string) (string, string) {
	t.Helper()
	return ca.issueCert(t, dir, &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

// issueServer writes a server certificate and key for 127.0.0.1.
func (ca *testCA) issueServer(t testing.TB, dir string) (string, string) {
	t.Helper()
	return ca.issueCert(t, dir, &x509.Certificate{
		Subject: pkix.Name{CommonName: "server-" + ca.cert.Subject.CommonName}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	})
}

// issueCert signs tmpl (subject and usages set) with the CA's key.
func (ca *testCA) issueCert(t testing.TB, dir string, tmpl *x509.Certificate) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	cn := tmpl.Subject.CommonName
	certFile := filepath.Join(dir, cn+".crt")
	keyFile := filepath.Join(dir, cn+".key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func TestSSLLoginByCertificateCN(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "kojica")
	h := StartTestHub(t, func(c *Config) { c.ClientCAFile = ca.file })
	certFile, keyFile := ca.issue(t, dir, "dave")

	c := h.Anonymous()
	if err := c.SSLLogin(ctxT(t), certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	var me bus.LoggedInUser
	if err := c.Call(ctxT(t), "getLoggedInUser", nil, nil, &me); err != nil {
		t.Fatal(err)
	}
	if me.Name != "dave" || me.AuthType != bus.AuthTypeSSL {
		t.Fatalf("logged in as %+v", me)
	}

	// A certificate from another CA is refused and creates no user.
	other := newTestCA(t, dir, "otherca")
	badCert, badKey := other.issue(t, dir, "eve")
	err := h.Anonymous().SSLLogin(ctxT(t), badCert, badKey)
	if !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("foreign certificate: %v, want AuthError", err)
	}
	var eve *bus.User
	if err := h.Admin.Call(ctxT(t), "getUser", []any{"eve"}, nil, &eve); err != nil || eve != nil {
		t.Fatalf("eve created by a refused login: %v %v", eve, err)
	}
}

func TestSSLChallengeIsSingleUseAndSigned(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir, "kojica")
	h := StartTestHub(t, func(c *Config) { c.ClientCAFile = ca.file })
	secret, err := h.challengeSecret()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cases := []struct {
		name  string
		nonce string
		ok    bool
	}{
		{"fresh", makeNonce(secret, now), true},
		{"expired", makeNonce(secret, now.Add(-10*time.Minute)), false},
		{"forged", makeNonce([]byte("not the secret"), now), false},
		{"garbage", "!!", false},
	}
	for _, tc := range cases {
		err := checkNonce(secret, tc.nonce, now)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

func TestJanitorRemovesExpiredSessions(t *testing.T) {
	h := StartTestHub(t, nil)
	frank := h.UserClient(t, "frank")
	j := &janitor{s: h.Server}
	n, err := j.sweep(ctxT(t), time.Now().Add(25*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 {
		t.Fatalf("swept %d sessions, want the admin's and frank's", n)
	}
	if err := frank.Call(ctxT(t), "getLoggedInUser", nil, nil, nil); !errors.Is(err, bus.ErrAuthExpired) {
		t.Fatalf("after sweep: %v, want AuthExpired", err)
	}
}

// FuzzCertificateUser: whatever PEM a client sends (sslLogin's cert, a
// connection's certificates in a callout request), nothing is accepted
// without a CA to vouch for it, and nothing panics.
func FuzzCertificateUser(f *testing.F) {
	f.Add("")
	f.Add("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
	f.Add("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
	f.Fuzz(func(t *testing.T, chain string) {
		if _, name, err := certificateUser(x509.NewCertPool(), chain); err == nil {
			t.Fatalf("accepted %q as %q without a CA", chain, name)
		}
	})
}
