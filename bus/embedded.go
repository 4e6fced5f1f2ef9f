package bus

import (
	"cmp"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"golang.org/x/sys/unix"
)

// Durability says when the embedded server fsyncs JetStream writes.
type Durability string

const (
	// DurabilitySync fsyncs every write before it is acknowledged: an
	// acknowledged API write survives power loss. The default.
	DurabilitySync Durability = "sync"
	// DurabilityInterval fsyncs every SyncInterval (NATS' own default, 2 min):
	// an acknowledged write survives kill -9 of the process (the OS has it)
	// but not power loss of the machine.
	DurabilityInterval Durability = "interval"
)

// DefaultSyncInterval is the fsync interval of DurabilityInterval without a
// DURATION: NATS' own default.
const DefaultSyncInterval = 2 * time.Minute

// ParseDurability reads "sync", "interval" or "interval:DURATION".
func ParseDurability(s string) (Durability, time.Duration, error) {
	switch {
	case s == "" || s == string(DurabilitySync):
		return DurabilitySync, 0, nil
	case s == string(DurabilityInterval):
		return DurabilityInterval, DefaultSyncInterval, nil
	case strings.HasPrefix(s, "interval:"):
		d, err := time.ParseDuration(strings.TrimPrefix(s, "interval:"))
		if err != nil || d <= 0 {
			return "", 0, fmt.Errorf("durability %q: want sync, interval or interval:DURATION", s)
		}
		return DurabilityInterval, d, nil
	}
	return "", 0, fmt.Errorf("durability %q: want sync, interval or interval:DURATION", s)
}

// The embedded server has one NATS user of its own, the hub's service
// identity; every other connection is authenticated by the hub through NATS'
// auth callout as a Koji user, host or bridge (bus/identity.go).
const (
	RoleHub = "hub"
	// SecretBridge is the password protonmsg bridges connect with.
	SecretBridge = "bridge"
	// SecretCalloutSeed is the account nkey seed the hub signs the callout's
	// user JWTs with; its public key is the callout's issuer.
	SecretCalloutSeed = "callout-seed"
)

// AuthTimeout bounds a connection's authentication, the auth callout
// included, on the server and in Connect.
const AuthTimeout = 10 * time.Second

// RoleSecrets are the secrets of an embedded server, generated on first start
// and kept in <data>/nats-roles.json (mode 0600).
type RoleSecrets map[string]string

// EmbeddedConfig configures the NATS server hubd embeds when it is given no NATS URL.
type EmbeddedConfig struct {
	DataDir      string
	Host         string // default 127.0.0.1
	Port         int    // default 4222; -1 picks a free port
	Durability   Durability
	SyncInterval time.Duration
	// NoAuth disables authentication; only for benchmarks of raw NATS.
	NoAuth bool
	// TLSCertFile and TLSKeyFile make the client port TLS-only (ServerTLSConfig);
	// with ClientCAFile, clients may authenticate with a certificate.
	TLSCertFile, TLSKeyFile, ClientCAFile string
	// CalloutXKey, the public curve key of the hub's callout service, has
	// the server encrypt callout requests to it.
	CalloutXKey string
}

// Embedded is a running embedded NATS server.
type Embedded struct {
	Server  *server.Server
	Secrets RoleSecrets

	storeDir    string      // as configured, without the "jetstream" the server adds
	storeFailed atomic.Bool // see StoreFailed
}

// URL is the client URL of the server.
func (e *Embedded) URL() string { return e.Server.ClientURL() }

// Stop shuts the server down and waits for it.
func (e *Embedded) Stop() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// StartEmbedded starts a NATS server with JetStream storing under cfg.DataDir/jetstream.
func StartEmbedded(cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("embedded NATS: no data directory")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	opts := &server.Options{
		ServerName: "kojibus",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		NoSigs:     true,
		NoLog:      true,
		MaxPayload: MaxPayload,
	}
	if opts.Host == "" {
		opts.Host = "127.0.0.1"
	}
	if opts.Port == 0 {
		opts.Port = 4222
	}
	// JetStream's own storage limit, left unset, is 75% of the space free
	// when the server starts (plus 75% of what its streams hold): after a
	// restart on a fuller disk it is below what the streams already hold,
	// and every write is refused (10023, insufficient resources) until a
	// third of that is free again, though the disk has room. The filesystem's
	// size is a limit that does not move with how full the disk was at the
	// start; the hub's disk guard refuses writes before the disk is full.
	var fs unix.Statfs_t
	if err := unix.Statfs(cfg.DataDir, &fs); err == nil {
		opts.JetStreamMaxStore = int64(fs.Blocks) * fs.Bsize
	}
	switch cfg.Durability {
	case DurabilitySync, "":
		opts.SyncAlways = true
	case DurabilityInterval:
		opts.SyncInterval = cmp.Or(cfg.SyncInterval, DefaultSyncInterval)
	default:
		return nil, fmt.Errorf("embedded NATS: unknown durability %q", cfg.Durability)
	}
	if cfg.TLSCertFile != "" {
		tc, err := ServerTLSConfig(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS: %w", err)
		}
		opts.TLSConfig, opts.TLSTimeout = tc, AuthTimeout.Seconds()
	}
	var secrets RoleSecrets
	if !cfg.NoAuth {
		var err error
		secrets, err = loadOrCreateSecrets(filepath.Join(cfg.DataDir, "nats-roles.json"))
		if err != nil {
			return nil, err
		}
		issuer, err := secrets.CalloutIssuer()
		if err != nil {
			return nil, err
		}
		opts.Users = []*server.User{{Username: RoleHub, Password: secrets[RoleHub]}}
		opts.AuthCallout = &server.AuthCallout{Issuer: issuer, AuthUsers: []string{RoleHub}, XKey: cfg.CalloutXKey}
		// The callout's answer waits for a bcrypt comparison, which a
		// loaded machine (or the race detector) makes slow.
		opts.AuthTimeout = AuthTimeout.Seconds()
		// A client still waiting for its CONNECT's answer takes a PING
		// for a protocol error ("expected PONG"): no ping 2 s after connect.
		opts.DisableShortFirstPing = true
	}
	if err := checkListenFree(opts.Host, opts.Port); err != nil {
		return nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	e := &Embedded{Server: srv, Secrets: secrets, storeDir: opts.StoreDir}
	srv.SetLoggerV2(storeFailureLog{e}, false, false, false)
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded NATS: not ready after 10s")
	}
	return e, nil
}

// checkListenFree fails at once when host:port cannot be listened on (the
// server itself would only log it and leave ReadyForConnections to time out).
func checkListenFree(host string, port int) error {
	if port <= 0 {
		return nil // -1: the server picks a free port
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("embedded NATS: cannot listen on %s: %w (another server is there? choose another address with --listen)", addr, errors.Unwrap(err))
	}
	return l.Close()
}

// CalloutKey is the account key pair the hub signs callout answers with.
func (s RoleSecrets) CalloutKey() (nkeys.KeyPair, error) {
	kp, err := nkeys.FromSeed([]byte(s[SecretCalloutSeed]))
	if err != nil {
		return nil, fmt.Errorf("callout key: %w", err)
	}
	return kp, nil
}

// CalloutIssuer is the public account key of CalloutKey.
func (s RoleSecrets) CalloutIssuer() (string, error) {
	kp, err := s.CalloutKey()
	if err != nil {
		return "", err
	}
	return kp.PublicKey()
}

// NewCurveSeed returns a new curve (xkey) nkey seed.
func NewCurveSeed() string { return newSeed(nkeys.CreateCurveKeys) }

// NewCalloutSeed returns a new account nkey seed.
func NewCalloutSeed() string { return newSeed(nkeys.CreateAccount) }

func newSeed(create func() (nkeys.KeyPair, error)) string {
	kp, err := create()
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	seed, _ := kp.Seed()
	return string(seed)
}

// loadOrCreateSecrets reads the secrets file, adding what is missing. A file
// of the role-password scheme keeps its hub password; its client and host
// passwords are dropped, as nothing accepts them any more.
func loadOrCreateSecrets(path string) (RoleSecrets, error) {
	s := RoleSecrets{}
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	changed := false
	for _, old := range []string{"client", "host"} {
		if _, ok := s[old]; ok {
			delete(s, old)
			changed = true
		}
	}
	for name, gen := range map[string]func() string{
		RoleHub: func() string { return RandomSecret(24) }, SecretBridge: func() string { return RandomSecret(24) },
		SecretCalloutSeed: NewCalloutSeed,
	} {
		if s[name] == "" {
			s[name] = gen()
			changed = true
		}
	}
	if changed {
		data, _ = json.MarshalIndent(s, "", "  ")
		if err := WriteFileAtomic(path, data, 0o600); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// RandomSecret returns n random bytes, URL-safe base64 encoded.
func RandomSecret(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// WriteFileAtomic writes data to path through a temp file and rename, so a
// reader never sees half a file.
func WriteFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
