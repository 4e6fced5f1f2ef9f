package bus

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/kojibus/kojibus/bus/config"
)

// Profile is a kojictl profile (a section of a koji-style INI file); the
// credentials file of a build host has the same shape.
type Profile struct {
	Name      string
	Server    string // NATS URL(s), comma-separated
	NATSCreds string
	ServerCA  string // CA to verify the NATS server (tls://)
	AuthType  string // password or ssl
	User      string
	Password  string
	Cert      string // client certificate (+key) for authtype ssl and NATS TLS
	Key       string
	Host      string // the host name, in a builder credentials file
}

// LoadProfile reads profile name (default "koji") from an INI file.
func LoadProfile(path, name string) (*Profile, error) {
	if name == "" {
		name = "koji"
	}
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	s := f.Section(name)
	if s == nil {
		return nil, fmt.Errorf("%s: no profile [%s] (have: %s)", path, name, strings.Join(f.Sections(), ", "))
	}
	p := &Profile{
		Name:      name,
		Server:    s.String("server", ""),
		NATSCreds: s.String("nats_creds", ""),
		ServerCA:  s.String("serverca", ""),
		AuthType:  s.String("authtype", "password"),
		User:      s.String("user", ""),
		Password:  s.String("password", ""),
		Cert:      s.String("cert", ""),
		Key:       s.String("key", ""),
		Host:      s.String("host", ""),
	}
	if p.Server == "" {
		return nil, fmt.Errorf("%s: profile [%s] has no server", path, name)
	}
	switch p.AuthType {
	case "password", "ssl", "noauth":
	default:
		return nil, fmt.Errorf("%s: profile [%s]: unknown authtype %q (want password, ssl or noauth)", path, name, p.AuthType)
	}
	return p, nil
}

// Dial connects to the profile's server as the profile's user (a password
// profile, or an ssl profile whose server is tls://: the certificate's CN)
// or anonymously, without logging in. The NATS connection itself is the
// user's: the hub's auth callout checks the password or certificate and
// grants the user's subjects only (bus/identity.go).
func (p *Profile) Dial(ctx context.Context, clientName string) (*Client, error) {
	cc := ConnectConfig{
		Name: clientName, URLs: strings.Split(p.Server, ","), CredsFile: p.NATSCreds, CAFile: p.ServerCA,
	}
	anon := nuid.Next()
	cc.User, cc.InboxPrefix = AnonymousUserPrefix+anon, InboxPrefix(AnonymousIdentityToken(anon))
	switch {
	case p.AuthType == "password" && p.User != "":
		cc.User, cc.Password, cc.InboxPrefix = p.User, p.Password, InboxPrefix(IdentityToken(p.User))
	case p.AuthType == "ssl" && p.Cert != "" && strings.HasPrefix(p.Server, "tls://"):
		// Over plain NATS an ssl profile connects anonymously and logs in
		// with sslLogin; over TLS its certificate is the connection's identity.
		user, err := CertificateCN(p.Cert)
		if err != nil {
			return nil, err
		}
		cc.User, cc.InboxPrefix, cc.CertFile, cc.KeyFile = user, InboxPrefix(IdentityToken(user)), p.Cert, p.Key
	}
	nc, err := Connect(ctx, cc)
	if errors.Is(err, nats.ErrAuthorization) {
		// The server does not pass the callout's reason on (blocked user,
		// disabled host, wrong password, unknown certificate user): say
		// what Koji's login says.
		return nil, AuthError("invalid username or password (NATS: %v)", err)
	}
	if err != nil {
		return nil, err
	}
	c := NewClient(nc)
	c.closeNC = true
	return c, nil
}

// Login logs the client in as the profile says.
func (p *Profile) Login(ctx context.Context, c *Client) error {
	switch p.AuthType {
	case "noauth":
		return nil
	case "password":
		if p.User == "" {
			return fmt.Errorf("profile [%s]: authtype password needs user", p.Name)
		}
		return c.Login(ctx, p.User, p.Password)
	case "ssl":
		return c.SSLLogin(ctx, p.Cert, p.Key)
	}
	return fmt.Errorf("profile [%s]: unknown authtype %q", p.Name, p.AuthType)
}
