package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"golang.org/x/crypto/bcrypt"

	"github.com/kojibus/kojibus/bridge/bridge"
	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// The hub answers NATS' auth callout: the server sends every connection's
// CONNECT (but the hub user's) to $SYS.REQ.USER.AUTH, and the hub answers
// with a user JWT, signed by the callout's account key, that grants that
// identity's subjects only (bus.UserGrants, HostGrants, BridgeGrants), or
// with an error that refuses the connection. docs/security.md.

const calloutSubject = "$SYS.REQ.USER.AUTH"

// calloutAccount is the account the callout's users are placed in: the
// global account of a server configured without accounts, where the hub's
// streams live.
const calloutAccount = "$G"

// calloutService signs the callout's answers.
type calloutService struct {
	key          nkeys.KeyPair
	xkey         nkeys.KeyPair // nil: requests and answers in the clear
	bridgeSecret string
	sub          *nats.Subscription
}

// startCallout subscribes the hub's own connection to the callout subject,
// in the API's queue group: of several hubs on a cluster, one answers.
// Each request is answered in a goroutine of its own: a password check is
// a bcrypt comparison, and connections should not wait behind each other.
func (s *Server) startCallout() error {
	sub, err := s.nc.QueueSubscribe(calloutSubject, apiQueue, func(m *nats.Msg) { go s.answerCallout(m) })
	if err != nil {
		return fmt.Errorf("hub: auth callout: %w", err)
	}
	s.callout.sub = sub
	return s.nc.Flush()
}

func (s *Server) answerCallout(m *nats.Msg) {
	req, serverXKey, err := s.callout.open(m)
	if err != nil {
		s.log.Warn("auth callout: bad request", "err", err)
		return
	}
	rc, err := jwt.DecodeAuthorizationRequestClaims(req)
	if err != nil {
		s.log.Warn("auth callout: bad request", "err", err)
		return
	}
	resp := jwt.NewAuthorizationResponseClaims(rc.UserNkey)
	resp.Audience = rc.Server.ID
	name, grants, err := s.calloutIdentity(rc.ConnectOptions, rc.TLS)
	if err == nil {
		uc := jwt.NewUserClaims(rc.UserNkey)
		uc.Name = name
		uc.Audience = calloutAccount
		uc.Pub.Allow.Add(grants.PubAllow...)
		uc.Pub.Deny.Add(grants.PubDeny...)
		uc.Sub.Allow.Add(grants.SubAllow...)
		if grants.Respond {
			uc.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
		}
		resp.Jwt, err = uc.Encode(s.callout.key)
	}
	if err != nil {
		s.log.Info("auth callout: connection refused", "user", rc.ConnectOptions.Username, "client", rc.ClientInformation.Host, "err", err)
		resp.Error = err.Error()
	}
	out, err := resp.Encode(s.callout.key)
	if err != nil {
		s.log.Error("auth callout: sign answer", "err", err)
		return
	}
	answer, err := s.callout.seal(out, serverXKey)
	if err != nil {
		s.log.Error("auth callout: encrypt answer", "err", err)
		return
	}
	if err := m.Respond(answer); err != nil {
		s.log.Warn("auth callout: respond", "err", err)
	}
}

// errBadCredentials is the one answer to a wrong user name or password, so
// that it does not tell which names exist.
var errBadCredentials = errors.New("invalid username or password")

// calloutIdentity authenticates a CONNECT (and the client certificate of
// its TLS handshake, if any) and returns the identity's name and grants.
func (s *Server) calloutIdentity(opts jwt.ConnectOptions, clientTLS *jwt.ClientTLS) (string, bus.Grants, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	durables, err := s.existingConsumers(ctx)
	if err != nil {
		return "", bus.Grants{}, err
	}
	user, password := opts.Username, opts.Password
	switch {
	case strings.HasPrefix(user, bus.AnonymousUserPrefix) && password == "":
		id := strings.TrimPrefix(user, bus.AnonymousUserPrefix)
		return user, bus.UserGrants(bus.AnonymousIdentityToken(id), durables), nil
	case strings.HasPrefix(user, bus.BridgeUserPrefix) && s.callout.bridgeSecret != "" &&
		subtle.ConstantTimeCompare([]byte(password), []byte(s.callout.bridgeSecret)) == 1:
		name := strings.TrimPrefix(user, bus.BridgeUserPrefix)
		if name == "" || bus.EscapeToken(name) != name {
			// its consumer's name goes into subjects as one plain token
			return "", bus.Grants{}, fmt.Errorf("invalid bridge name %q", name)
		}
		return user, bus.BridgeGrants(bus.BridgeIdentityToken(name), bridge.ConsumerPrefix+name), nil
	}
	var u *userRecord
	var h *hostRecord
	var mine, notMine []string
	_ = s.store.Read(func(v state.View) error {
		u, _ = lookupUser(v, registry.Ref{Name: user})
		if u != nil && u.HostID != 0 {
			if h, _ = lookupHost(v, registry.Ref{ID: u.HostID}); h != nil {
				mine, notMine = hostQueueNames(v, h), otherHostsQueues(v, h)
			}
		}
		return nil
	})
	if err := s.checkCredentials(u, user, password, clientTLS); err != nil {
		return "", bus.Grants{}, err
	}
	token := bus.IdentityToken(u.Name)
	if u.HostID == 0 {
		return u.Name, bus.UserGrants(token, durables), nil
	}
	if h == nil || !h.Enabled {
		return "", bus.Grants{}, fmt.Errorf("host %s is disabled", u.Name)
	}
	s.hostGrants.record(u.Name, h.ID, mine, notMine)
	return u.Name, bus.HostGrants(token, h.ID, durables, notMine), nil
}

// otherHostsQueues names the task queues a host may not pull from: every
// recorded queue that is not among its own, and every other host's pinned
// queue.
func otherHostsQueues(v state.View, h *hostRecord) []string {
	mine := map[string]bool{}
	for _, q := range hostQueues(v, h) {
		mine[q.Consumer] = true
	}
	others := map[string]bool{}
	for _, k := range v.Keys("taskqueue", "taskqueue.") {
		var q queueRecord
		if ok, _ := v.GetJSON(k, &q); ok && !mine[q.Consumer] {
			others[q.Consumer] = true
		}
	}
	for _, k := range v.Keys("host", "host.") {
		var o hostRecord
		if ok, _ := v.GetJSON(k, &o); ok && o.ID != h.ID {
			others[pinnedQueue(o.ID).Consumer] = true
		}
	}
	return slices.Sorted(maps.Keys(others))
}

// checkCredentials authenticates user u by a client certificate whose CN
// names it, when the client offered one and no password, else by password.
func (s *Server) checkCredentials(u *userRecord, user, password string, clientTLS *jwt.ClientTLS) error {
	if password == "" && clientTLS != nil && len(clientTLS.Certs)+len(clientTLS.VerifiedChains) > 0 {
		return s.checkConnCertificate(u, user, clientTLS)
	}
	return checkPassword(u, password)
}

// checkPassword compares a password with a user's hash (with a dummy hash
// for an unknown user, so timing does not tell which names exist) and
// refuses blocked users.
func checkPassword(u *userRecord, password string) error {
	hash := "$2a$10$7EqJtq98hPqEX7fNZaFWoOhi5BWX4Z6Sx1N4oq.PYcJHJ3oYz0a7a"
	if u != nil && u.PasswordHash != "" {
		hash = u.PasswordHash
	}
	if !passwordsSeen.check(hash, password) || u == nil || u.PasswordHash == "" {
		return errBadCredentials
	}
	if u.Status == bus.UserStatusBlocked {
		return fmt.Errorf("logins by %s are not allowed", u.Name)
	}
	return nil
}

// existingConsumers names the consumers of the streams identities may
// replay, which a new identity must not touch: they are the hub's archive,
// the bridges' and other clients' (bus.UserGrants).
func (s *Server) existingConsumers(ctx context.Context) (map[string][]string, error) {
	out := map[string][]string{}
	for _, stream := range []string{bus.EventsStream, bus.UploadsStream} {
		st, err := s.js.Stream(ctx, stream)
		if err != nil {
			return nil, fmt.Errorf("auth callout: %w", err)
		}
		names := st.ConsumerNames(ctx)
		for n := range names.Name() {
			out[stream] = append(out[stream], n)
		}
		if err := names.Err(); err != nil {
			return nil, fmt.Errorf("auth callout: %w", err)
		}
	}
	return out, nil
}

// disconnectIdentity closes the embedded server's connections of an
// identity (a user or host just disabled, a host whose queues changed): they
// reconnect through the callout, which refuses them or grants them anew. It
// returns how many it closed. With an external cluster, see docs/security.md.
func (s *Server) disconnectIdentity(name string) int {
	if s.embedded == nil {
		return 0
	}
	srv := s.embedded.Server
	connz, err := srv.Connz(&server.ConnzOptions{User: name, Username: true})
	if err != nil {
		s.log.Warn("disconnect identity", "name", name, "err", err)
		return 0
	}
	closed := 0
	for _, c := range connz.Conns {
		if err := srv.DisconnectClientByID(c.Cid); err != nil {
			s.log.Warn("disconnect identity", "name", name, "cid", c.Cid, "err", err)
			continue
		}
		closed++
	}
	return closed
}

// loadOrCreateNKey reads an nkey seed, creating the file (mode 0600) with
// newSeed on first use.
func loadOrCreateNKey(path string, newSeed func() string) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed = []byte(newSeed())
		err = bus.WriteFileAtomic(path, seed, 0o600)
	}
	if err != nil {
		return nil, fmt.Errorf("callout key: %w", err)
	}
	kp, err := nkeys.FromSeed(bytes.TrimSpace(seed))
	if err != nil {
		return nil, fmt.Errorf("callout key %s: %w", path, err)
	}
	return kp, nil
}

// passwordsSeen remembers, for a minute, passwords that matched their
// bcrypt hash: a client connects (the callout checks its password) and then
// logs in with the same password, and one bcrypt comparison (~50 ms of CPU)
// is enough for both. The key is a digest of hash and password, so a
// changed password or hash is never found.
var passwordsSeen = &seenPasswords{m: map[[32]byte]time.Time{}}

type seenPasswords struct {
	mu sync.Mutex
	m  map[[32]byte]time.Time
}

const seenPasswordLifetime = time.Minute

// forget drops every remembered password (benchmarks of the cold path).
func (p *seenPasswords) forget() {
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.m)
}

func seenKey(hash, password string) [32]byte { return sha256.Sum256([]byte(hash + "\x00" + password)) }

func (p *seenPasswords) check(hash, password string) bool {
	key := seenKey(hash, password)
	p.mu.Lock()
	seen, ok := p.m[key]
	p.mu.Unlock()
	if ok && time.Since(seen) < seenPasswordLifetime {
		return true
	}
	if bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)) != nil {
		return false
	}
	p.remember(hash, password)
	return true
}

// remember records a password known to match hash.
func (p *seenPasswords) remember(hash, password string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.m) >= maxCheckedSessions {
		p.m = map[[32]byte]time.Time{}
	}
	p.m[seenKey(hash, password)] = time.Now()
}
