package hub

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Certificate login, Koji's sslLogin: the client proves it holds the key of
// a certificate signed by the hub's client CA; the certificate's CN is the
// user name.
//
//	hubsecret.challenge   HMAC key for challenges, shared by every hubd
//	sslnonce.<hash>       a used challenge (single use), removed by the janitor once expired
const (
	challengeSecretKey = "hubsecret.challenge"
	challengeLifetime  = 5 * time.Minute
)

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerSSLLogin) }

func (s *Server) registerSSLLogin() {
	s.reg.Register(
		registry.Method{
			Name: "getSSLChallenge", Doc: "Return a challenge to sign for sslLogin (kojibus)",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				secret, err := s.challengeSecret()
				if err != nil {
					return nil, err
				}
				return bus.SSLChallenge{Nonce: makeNonce(secret, time.Now())}, nil
			},
		},
		registry.Method{
			Name: "sslLogin", Doc: "Log in with a TLS client certificate (CN = user name)",
			Params: []registry.Param{registry.P("cert"), registry.P("nonce"), registry.P("signature")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				certPEM, err := c.String("cert")
				if err != nil {
					return nil, err
				}
				nonce, err := c.String("nonce")
				if err != nil {
					return nil, err
				}
				sigText, err := c.String("signature")
				if err != nil {
					return nil, err
				}
				return s.sslLogin(ctx, certPEM, nonce, sigText)
			},
		},
	)
}

func (s *Server) challengeSecret() ([]byte, error) {
	var secret string
	_ = s.store.Read(func(v state.View) error {
		_, err := v.GetJSON(challengeSecretKey, &secret)
		return err
	})
	if secret == "" {
		return nil, bus.GenericError("hub has no challenge secret yet")
	}
	return []byte(secret), nil
}

func makeNonce(secret []byte, now time.Time) string {
	buf := make([]byte, 8+16, 8+16+16)
	binary.BigEndian.PutUint64(buf, uint64(now.Unix()))
	if _, err := rand.Read(buf[8:]); err != nil {
		panic(err)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(buf)
	buf = append(buf, mac.Sum(nil)[:16]...)
	return base64.RawURLEncoding.EncodeToString(buf)
}

func checkNonce(secret []byte, nonce string, now time.Time) error {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != 40 {
		return bus.AuthError("malformed challenge")
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write(raw[:24])
	if !hmac.Equal(mac.Sum(nil)[:16], raw[24:]) {
		return bus.AuthError("challenge was not issued by this hub")
	}
	issued := time.Unix(int64(binary.BigEndian.Uint64(raw[:8])), 0)
	if now.Sub(issued) > challengeLifetime || issued.After(now.Add(time.Minute)) {
		return bus.AuthError("challenge expired")
	}
	return nil
}

func (s *Server) clientRoots() (*x509.CertPool, error) {
	if s.cfg.ClientCAFile == "" {
		return nil, bus.AuthError("sslLogin is not enabled on this hub (no client CA configured)")
	}
	data, err := os.ReadFile(s.cfg.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, bus.NewFault(bus.CodeConfigurationError, "client CA file %s holds no certificate", s.cfg.ClientCAFile)
	}
	return pool, nil
}

func (s *Server) sslLogin(ctx context.Context, certPEM, nonce, sigText string) (*bus.Session, error) {
	roots, err := s.clientRoots()
	if err != nil {
		return nil, err
	}
	secret, err := s.challengeSecret()
	if err != nil {
		return nil, err
	}
	if err := checkNonce(secret, nonce, time.Now()); err != nil {
		return nil, err
	}
	leaf, name, err := certificateUser(roots, certPEM)
	if err != nil {
		return nil, err
	}
	sig, err := base64.StdEncoding.DecodeString(sigText)
	if err != nil {
		return nil, bus.AuthError("malformed signature")
	}
	if !verifySignature(leaf.PublicKey, nonce, sig) {
		return nil, bus.AuthError("signature does not match the certificate")
	}
	nonceHash := sha256.Sum256([]byte(nonce))
	nonceKey := "sslnonce." + hex.EncodeToString(nonceHash[:16])
	key := bus.RandomSecret(24)
	res, err := s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		tx.UseReserve() // a login, as passwordLogin's
		if _, _, used := tx.Get(nonceKey); used {
			return nil, bus.AuthError("challenge already used")
		}
		u, ok := lookupUser(tx.View, registry.Ref{Name: name})
		if !ok {
			// Koji's LoginCreatesUser (default on): the CA vouches for the name.
			var err error
			if u, err = createUserTx(tx, name, bus.UserTypeNormal, "", nil); err != nil {
				return nil, err
			}
			tx.Emit("user.create", map[string]any{"type": "UserCreate", "user": name}, map[string]any{"user": u.User, "creator": "sslLogin"})
		}
		if u.Status == bus.UserStatusBlocked {
			return nil, bus.AuthError("logins by %s are not allowed", u.Name)
		}
		if err := tx.Put(nonceKey, nowTS()+challengeLifetime.Seconds()); err != nil {
			return nil, err
		}
		now := nowTS()
		rec := sessionRecord{
			ID: tx.NextID("session"), UserID: u.ID, HostID: u.HostID, KeyHash: hashSessionKey(key),
			AuthType: bus.AuthTypeSSL, Start: now, Expires: now + s.cfg.SessionLifetime.Seconds(),
			Bind: connIdentity(ctx),
		}
		return rec.ID, tx.Put(sessionKey(rec.ID), rec)
	})
	if err != nil {
		return nil, err
	}
	return &bus.Session{ID: res.Value.(int64), Key: key}, nil
}

// parseCertChain reads the certificates of PEM text, the client's first;
// other blocks (a key) are skipped.
func parseCertChain(text string) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for rest := []byte(text); ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return certs, nil
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, bus.AuthError("bad certificate: %v", err)
		}
		certs = append(certs, cert)
	}
}

// certificateUser checks a client certificate chain (PEM, leaf first)
// against the client CA and returns the leaf and the user name its CN
// gives. The holder's key is checked by the caller: sslLogin's signature,
// or the TLS handshake of a NATS connection.
func certificateUser(roots *x509.CertPool, chainPEM string) (*x509.Certificate, string, error) {
	certs, err := parseCertChain(chainPEM)
	if err != nil {
		return nil, "", err
	}
	if len(certs) == 0 {
		return nil, "", bus.AuthError("no certificate given")
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, "", bus.AuthError("certificate not accepted: %v", err)
	}
	name := leaf.Subject.CommonName
	if err := validateName(name, "user"); err != nil {
		return nil, "", bus.AuthError("certificate has no usable CN")
	}
	return leaf, name, nil
}

// checkConnCertificate authenticates a NATS connection by the client
// certificate of its TLS handshake (auth callout): the certificate must
// pass certificateUser, its CN must be the user name the client connected
// with, and that user must exist and not be blocked. Unlike sslLogin, a
// connection does not create the user (docs/security.md).
func (s *Server) checkConnCertificate(u *userRecord, user string, clientTLS *jwt.ClientTLS) error {
	roots, err := s.clientRoots()
	if err != nil {
		return err
	}
	chain := clientTLS.Certs
	if len(clientTLS.VerifiedChains) > 0 {
		chain = clientTLS.VerifiedChains[0]
	}
	_, name, err := certificateUser(roots, strings.Join(chain, ""))
	if err != nil {
		return err
	}
	if name != user || u == nil {
		return bus.AuthError("certificate of %q: no user %q", name, user)
	}
	if u.Status == bus.UserStatusBlocked {
		return bus.AuthError("logins by %s are not allowed", u.Name)
	}
	return nil
}

func verifySignature(pub crypto.PublicKey, nonce string, sig []byte) bool {
	digest := sha256.Sum256([]byte(nonce))
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], sig) == nil
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, digest[:], sig)
	case ed25519.PublicKey:
		return ed25519.Verify(k, []byte(nonce), sig)
	}
	return false
}
