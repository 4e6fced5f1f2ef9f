package hub

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Keys of the identity part of the state bucket (all keys: keys.go).
//
//	user.<id>            userRecord
//	username.<name>      user id
//	perm.<id>            bus.Permission
//	permname.<name>      permission id
//	session.<id>         sessionRecord
const bootstrapAdmin = "kojiadmin"

// seededPerms are the permissions Koji's schema creates.
var seededPerms = []string{
	"admin", "appliance", "dist-repo", "host", "image", "image-import", "livecd", "livemedia",
	"maven-import", "regen-repo", "repo", "sign", "tag", "target", "win-admin", "win-import", "draft-promoter",
}

type userRecord struct {
	bus.User
	PasswordHash string   `json:"password_hash,omitempty"`
	Perms        []string `json:"perms"`
	HostID       int64    `json:"host_id,omitempty"`
}

type sessionRecord struct {
	ID       int64   `json:"id"`
	UserID   int64   `json:"user_id"`
	HostID   int64   `json:"host_id,omitempty"`
	KeyHash  string  `json:"key_hash"`
	AuthType int     `json:"authtype"`
	Start    float64 `json:"start_ts"`
	Expires  float64 `json:"expires_ts"`
	// Bind is the identity token of the connection that opened the session
	// (docs/security.md): the session is good on that identity's connections only.
	Bind string `json:"bind,omitempty"`
}

func userKey(id int64) string        { return "user." + strconv.FormatInt(id, 10) }
func userNameKey(name string) string { return "username." + state.EscapeKey(name) }
func permKey(id int64) string        { return "perm." + strconv.FormatInt(id, 10) }
func permNameKey(name string) string { return "permname." + state.EscapeKey(name) }
func sessionKey(id int64) string     { return "session." + strconv.FormatInt(id, 10) }

func nowTS() float64 { return float64(time.Now().UnixMicro()) / 1e6 }

func hashSessionKey(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:])
}

// lookupUser resolves a user by id or name inside a view.
func lookupUser(v state.View, ref registry.Ref) (*userRecord, bool) {
	id := ref.ID
	if !ref.IsID() {
		if _, err := v.GetJSON(userNameKey(ref.Name), &id); err != nil || id == 0 {
			return nil, false
		}
	}
	var u userRecord
	if ok, err := v.GetJSON(userKey(id), &u); !ok || err != nil {
		return nil, false
	}
	return &u, true
}

// authenticate resolves a session header to its caller. Over NATS (ctx
// carries the connection's identity, see withConnIdentity) a session is
// refused on a connection of another identity than the one it was opened on,
// and a user's connection may carry only that user's sessions: a captured
// session header is worth nothing on another connection.
func (s *Server) authenticate(ctx context.Context, header string) (*registry.Caller, error) {
	caller, bind, err := s.checkSession(header)
	if err != nil || caller == nil {
		return caller, err
	}
	if tok := connIdentity(ctx); tok != "" {
		userConn := !strings.HasPrefix(tok, "=")
		if (bind != "" && bind != tok) || (userConn && bus.IdentityToken(caller.UserName) != tok) {
			return nil, bus.AuthError("session %d was not opened on this connection's identity", caller.SessionID)
		}
	}
	return caller, nil
}

// connIdentityKey carries the identity token of the connection a request came from.
type connIdentityKey struct{}

// withConnIdentity records the identity a request's subject names (the
// server only lets each identity publish under its own token);
// bus.UnboundIdentity, the hub's own connections, binds nothing.
func withConnIdentity(ctx context.Context, token string) context.Context {
	if token == bus.UnboundIdentity {
		return ctx
	}
	return context.WithValue(ctx, connIdentityKey{}, token)
}

// connIdentity is the identity token of the request's connection, "" when
// there is none to check (the hub's own calls, the XML-RPC adapter).
func connIdentity(ctx context.Context) string {
	tok, _ := ctx.Value(connIdentityKey{}).(string)
	return tok
}

// checkSession resolves a session header to its caller and the identity
// the session is bound to.
func (s *Server) checkSession(header string) (*registry.Caller, string, error) {
	if header == "" {
		return nil, "", nil
	}
	idText, key, ok := strings.Cut(header, ":")
	id, err := strconv.ParseInt(idText, 10, 64)
	if !ok || err != nil || key == "" {
		return nil, "", bus.AuthError("malformed session header")
	}
	var caller *registry.Caller
	var bind string
	err = s.store.Read(func(v state.View) error {
		// A session checked before, whose record and user record are
		// unchanged since, needs no decoding and no hash again.
		_, sessRev, _ := v.Get(sessionKey(id))
		if c, ok := s.sessions.lookup(header, sessRev, v); ok {
			caller, bind = &c.caller, c.bind
			return nil
		}
		var sess sessionRecord
		if ok, _ := v.GetJSON(sessionKey(id), &sess); !ok {
			return bus.NewFault(bus.CodeAuthExpired, "session %d does not exist or has expired", id)
		}
		if subtle.ConstantTimeCompare([]byte(sess.KeyHash), []byte(hashSessionKey(key))) != 1 {
			return bus.AuthError("invalid session key for session %d", id)
		}
		if nowTS() > sess.Expires {
			return bus.NewFault(bus.CodeAuthExpired, "session %d has expired", id)
		}
		u, ok := lookupUser(v, registry.Ref{ID: sess.UserID})
		if !ok {
			return bus.AuthError("session %d: no such user %d", id, sess.UserID)
		}
		if u.Status == bus.UserStatusBlocked {
			return bus.AuthError("logins by %s are not allowed", u.Name)
		}
		caller = &registry.Caller{SessionID: id, UserID: u.ID, UserName: u.Name, HostID: sess.HostID}
		_, userRev, _ := v.Get(userKey(u.ID))
		bind = sess.Bind
		s.sessions.store(header, checkedSession{caller: *caller, bind: bind, sessRev: sessRev, userRev: userRev, expires: sess.Expires})
		return nil
	})
	return caller, bind, err
}

// checkedSession is a session header that authenticated, with the
// revisions of the records it was checked against.
type checkedSession struct {
	caller           registry.Caller
	bind             string
	sessRev, userRev uint64
	expires          float64
}

// sessionCache remembers checked session headers (the key in the header
// is part of the cache key, so a wrong key is never found here).
type sessionCache struct {
	mu sync.Mutex
	m  map[string]checkedSession
}

// maxCheckedSessions bounds the cache; when full it starts over.
const maxCheckedSessions = 4096

func (c *sessionCache) lookup(header string, sessRev uint64, v state.View) (checkedSession, bool) {
	c.mu.Lock()
	e, ok := c.m[header]
	c.mu.Unlock()
	if !ok || sessRev == 0 || e.sessRev != sessRev || nowTS() > e.expires {
		return checkedSession{}, false
	}
	if _, userRev, _ := v.Get(userKey(e.caller.UserID)); userRev != e.userRev {
		return checkedSession{}, false
	}
	return e, true
}

func (c *sessionCache) store(header string, e checkedSession) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxCheckedSessions {
		c.m = make(map[string]checkedSession)
	}
	c.m[header] = e
}

// hasPerm reports whether a user holds perm; with adminOK, admin satisfies
// any permission (Koji's assertPerm), without it only perm itself counts (hasPerm).
func (s *Server) hasPerm(userID int64, perm string, adminOK bool) bool {
	found := false
	_ = s.store.Read(func(v state.View) error {
		u, ok := lookupUser(v, registry.Ref{ID: userID})
		if !ok {
			return nil
		}
		for _, p := range u.Perms {
			if p == perm || (adminOK && p == "admin") {
				found = true
			}
		}
		return nil
	})
	return found
}

// assertPerm is Koji's context.session.assertPerm for checks inside handlers.
func (s *Server) assertPerm(c *registry.Call, perm string) error {
	if !c.LoggedIn() {
		return bus.ActionNotAllowed("%s permission required (user not logged in)", perm)
	}
	if !s.hasPerm(c.Caller.UserID, perm, true) {
		return bus.ActionNotAllowed("%s permission required (logged in as %s)", perm, c.Caller.UserName)
	}
	return nil
}

// hashPassword is bcrypt, done before a transaction: a transaction
// function holds the state view's read lock and must stay fast.
func hashPassword(password string) (string, error) {
	if password == "" {
		return "", nil
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	// Its owner usually connects right away: the callout needs no bcrypt then.
	passwordsSeen.remember(string(h), password)
	return string(h), nil
}

// createUserTx creates a user inside a transaction; passwordHash comes from
// hashPassword ("" = no password login).
func createUserTx(tx *state.Txn, name string, usertype int, passwordHash string, perms []string) (*userRecord, error) {
	if err := validateName(name, "user"); err != nil {
		return nil, err
	}
	if _, _, exists := tx.Get(userNameKey(name)); exists {
		return nil, bus.GenericError("user already exists: %s", name)
	}
	u := &userRecord{
		User:  bus.User{ID: tx.NextID("user"), Name: name, UserType: usertype, KrbPrincipals: []string{}},
		Perms: perms,
	}
	if u.Perms == nil {
		u.Perms = []string{}
	}
	u.PasswordHash = passwordHash
	if err := tx.Put(userKey(u.ID), u); err != nil {
		return nil, err
	}
	if err := tx.Put(userNameKey(name), u.ID); err != nil {
		return nil, err
	}
	return u, nil
}

// validateName applies Koji's name rules (no empty names, no control or
// whitespace characters, bounded length).
func validateName(name, what string) error {
	if name == "" {
		return bus.GenericError("%s name must not be empty", what)
	}
	if err := checkNameLength(name); err != nil {
		return err
	}
	for _, r := range name {
		if r <= ' ' || r == 0x7f {
			return bus.GenericError("invalid %s name: %q", what, name)
		}
	}
	return nil
}

func (s *Server) registerAuth() {
	s.reg.Register(
		registry.Method{
			Name: "login", Doc: "Log in with a user name and password; returns a session",
			Params: []registry.Param{registry.P("username"), registry.P("password")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				name, err := c.String("username")
				if err != nil {
					return nil, err
				}
				password, err := c.String("password")
				if err != nil {
					return nil, err
				}
				return s.passwordLogin(ctx, name, password)
			},
		},
		registry.Method{
			Name: "logout", Doc: "Close the current session", Access: registry.LoggedIn,
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				_, err := s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
					tx.UseReserve() // a logout frees a little
					tx.Delete(sessionKey(c.Caller.SessionID))
					return nil, nil
				})
				return nil, err
			},
		},
		registry.Method{
			Name: "getLoggedInUser", Doc: "Return the user of the current session, or None",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				if !c.LoggedIn() {
					return nil, nil
				}
				var out *bus.LoggedInUser
				err := s.store.Read(func(v state.View) error {
					u, ok := lookupUser(v, registry.Ref{ID: c.Caller.UserID})
					if ok {
						var sess sessionRecord
						_, _ = v.GetJSON(sessionKey(c.Caller.SessionID), &sess)
						out = &bus.LoggedInUser{User: u.User, AuthType: sess.AuthType}
					}
					return nil
				})
				return out, err
			},
		},
		registry.Method{
			Name: "getUser", Doc: "Return information about a user",
			Params: []registry.Param{registry.Opt("userInfo", nil), registry.Opt("strict", false), registry.Opt("krb_princs", true), registry.Opt("groups", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				ref := registry.Ref{}
				if c.IsNull("userInfo") {
					if !c.LoggedIn() {
						return nil, nil
					}
					ref.ID = c.Caller.UserID
				} else if ref, err = c.Ref("userInfo"); err != nil {
					return nil, err
				}
				var out *bus.User
				_ = s.store.Read(func(v state.View) error {
					if u, ok := lookupUser(v, ref); ok {
						out = &u.User
					}
					return nil
				})
				if out == nil && strict {
					return nil, bus.GenericError("No such user: %s", ref)
				}
				return out, nil
			},
		},
		registry.Method{
			Name: "createUser", Doc: "Add a user to the database", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("username"), registry.Opt("status", nil), registry.Opt("krb_principal", nil), registry.Opt("password", nil)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				name, err := c.String("username")
				if err != nil {
					return nil, err
				}
				status, err := c.OptInt("status")
				if err != nil {
					return nil, err
				}
				if status != nil && *status != bus.UserStatusNormal && *status != bus.UserStatusBlocked {
					return nil, bus.GenericError("Invalid status: %d", *status)
				}
				pw, err := c.OptString("password")
				if err != nil {
					return nil, err
				}
				hash := ""
				if pw != nil {
					if hash, err = hashPassword(*pw); err != nil {
						return nil, err
					}
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					u, err := createUserTx(tx, name, bus.UserTypeNormal, hash, nil)
					if err != nil {
						return nil, err
					}
					if status != nil {
						u.Status = int(*status)
						if err := tx.Put(userKey(u.ID), u); err != nil {
							return nil, err
						}
					}
					tx.Emit("user.create", map[string]any{"type": "UserCreate", "user": name}, map[string]any{"user": u.User, "creator": c.Caller.UserName})
					return u.ID, nil
				})
			},
		},
		registry.Method{
			Name: "setPassword", Doc: "Set a user's password (kojibus: Koji delegates passwords to Kerberos or TLS)", Write: true, Access: registry.LoggedIn,
			Params: []registry.Param{registry.P("userInfo"), registry.P("password")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref, err := c.Ref("userInfo")
				if err != nil {
					return nil, err
				}
				password, err := c.String("password")
				if err != nil {
					return nil, err
				}
				if len(password) < 8 {
					return nil, bus.ParameterError("password must have at least 8 characters")
				}
				h, err := hashPassword(password)
				if err != nil {
					return nil, err
				}
				return s.update(ctx, c, func(tx *state.Txn) (any, error) {
					u, ok := lookupUser(tx.View, ref)
					if !ok {
						return nil, bus.GenericError("No such user: %s", ref)
					}
					if u.ID != c.Caller.UserID && !s.hasPerm(c.Caller.UserID, "admin", true) {
						return nil, bus.ActionNotAllowed("admin permission required to set another user's password")
					}
					u.PasswordHash = string(h)
					return nil, tx.Put(userKey(u.ID), u)
				})
			},
		},
		registry.Method{
			Name: "disableUser", Doc: "Disable logins by the specified user (a user name or id); its open connections are closed", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("username")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.setUserStatus(ctx, c, bus.UserStatusBlocked)
			},
		},
		registry.Method{
			Name: "enableUser", Doc: "Enable logins by the specified user (a user name or id)", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("username")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.setUserStatus(ctx, c, bus.UserStatusNormal)
			},
		},
		registry.Method{
			Name: "grantPermission", Doc: "Grant a permission to a user", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("userinfo"), registry.P("permission"), registry.Opt("create", false), registry.Opt("description", nil)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.changePerm(ctx, c, true)
			},
		},
		registry.Method{
			Name: "revokePermission", Doc: "Revoke a permission from a user", Perm: "admin", Write: true,
			Params: []registry.Param{registry.P("userinfo"), registry.P("permission")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.changePerm(ctx, c, false)
			},
		},
		registry.Method{
			Name: "getAllPerms", Doc: "Get a list of all permissions",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.allPerms(), nil
			},
		},
		registry.Method{
			Name: "listPermissions", Doc: "List permissions, with their descriptions",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				return s.allPerms(), nil
			},
		},
		registry.Method{
			Name: "getUserPerms", Doc: "Get a list of the permissions of a user (default: the logged-in user)",
			Params: []registry.Param{registry.Opt("userID", nil), registry.Opt("with_groups", true)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				ref := registry.Ref{}
				if c.IsNull("userID") {
					if !c.LoggedIn() {
						return nil, bus.GenericError("No user provided and no logged-in user")
					}
					ref.ID = c.Caller.UserID
				} else {
					var err error
					if ref, err = c.Ref("userID"); err != nil {
						return nil, err
					}
				}
				var perms []string
				err := s.store.Read(func(v state.View) error {
					u, ok := lookupUser(v, ref)
					if !ok {
						return bus.GenericError("No such user: %s", ref)
					}
					perms = append([]string{}, u.Perms...)
					return nil
				})
				return perms, err
			},
		},
		registry.Method{
			Name: "getPerms", Doc: "Get the permissions of the logged-in user",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				if !c.LoggedIn() {
					return []string{}, nil
				}
				var perms []string
				_ = s.store.Read(func(v state.View) error {
					if u, ok := lookupUser(v, registry.Ref{ID: c.Caller.UserID}); ok {
						perms = append([]string{}, u.Perms...)
					}
					return nil
				})
				return perms, nil
			},
		},
		registry.Method{
			Name: "hasPerm", Doc: "Check whether the logged-in user has a permission",
			Params: []registry.Param{registry.P("perm"), registry.Opt("strict", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				perm, err := c.String("perm")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				if !c.LoggedIn() {
					return false, nil
				}
				return s.hasPerm(c.Caller.UserID, perm, !strict), nil
			},
		},
	)
}

// setUserStatus is Koji's set_user_status (disableUser, enableUser). A
// blocked user's sessions stop working at once (checkSession), and its open
// connections are closed: their reconnect is refused by the callout.
func (s *Server) setUserStatus(ctx context.Context, c *registry.Call, status int) (any, error) {
	ref, err := c.Ref("username")
	if err != nil {
		return nil, err
	}
	_, err = s.update(ctx, c, func(tx *state.Txn) (any, error) {
		u, ok := lookupUser(tx.View, ref)
		if !ok {
			return nil, bus.GenericError("No such user: %s", ref)
		}
		if u.Status == status {
			return nil, nil
		}
		u.Status = status
		if err := tx.Put(userKey(u.ID), u); err != nil {
			return nil, err
		}
		address, kind := "user.enable", "UserEnable"
		if status == bus.UserStatusBlocked {
			address, kind = "user.disable", "UserDisable"
		}
		tx.Emit(address, map[string]any{"type": kind, "user": u.Name}, map[string]any{"user": u.User, "by": c.Caller.UserName})
		return nil, nil
	})
	if err != nil || status != bus.UserStatusBlocked {
		return nil, err
	}
	var u *userRecord
	_ = s.store.Read(func(v state.View) error { u, _ = lookupUser(v, ref); return nil })
	if u != nil {
		s.disconnectIdentity(u.Name)
	}
	return nil, nil
}

func (s *Server) allPerms() []bus.Permission {
	var out []bus.Permission
	_ = s.store.Read(func(v state.View) error {
		for _, k := range v.Keys("perm", "perm.") {
			var p bus.Permission
			if ok, _ := v.GetJSON(k, &p); ok {
				out = append(out, p)
			}
		}
		return nil
	})
	sortByID(out, func(p bus.Permission) int64 { return p.ID })
	return out
}

func (s *Server) changePerm(ctx context.Context, c *registry.Call, grant bool) (any, error) {
	ref, err := c.Ref("userinfo")
	if err != nil {
		return nil, err
	}
	perm, err := c.String("permission")
	if err != nil {
		return nil, err
	}
	create := false
	var desc *string
	if grant {
		if create, err = c.Bool("create"); err != nil {
			return nil, err
		}
		if desc, err = c.OptString("description"); err != nil {
			return nil, err
		}
	}
	return s.update(ctx, c, func(tx *state.Txn) (any, error) {
		u, ok := lookupUser(tx.View, ref)
		if !ok {
			return nil, bus.GenericError("No such user: %s", ref)
		}
		if _, _, exists := tx.Get(permNameKey(perm)); !exists {
			if !grant || !create {
				return nil, bus.GenericError("No such permission: %s", perm)
			}
			if err := validateName(perm, "permission"); err != nil {
				return nil, err
			}
			if err := putPerm(tx, perm, desc); err != nil {
				return nil, err
			}
		}
		has := -1
		for i, p := range u.Perms {
			if p == perm {
				has = i
			}
		}
		address := "user.perm.grant"
		if grant {
			if has >= 0 {
				return nil, bus.GenericError("user %s already has permission: %s", u.Name, perm)
			}
			u.Perms = append(u.Perms, perm)
		} else {
			if has < 0 {
				return nil, bus.GenericError("user %s does not have permission: %s", u.Name, perm)
			}
			u.Perms = append(u.Perms[:has], u.Perms[has+1:]...)
			address = "user.perm.revoke"
		}
		if err := tx.Put(userKey(u.ID), u); err != nil {
			return nil, err
		}
		tx.Emit(address, map[string]any{"type": "PermissionChange", "user": u.Name, "perm": perm},
			map[string]any{"user": u.User, "perm": perm, "by": c.Caller.UserName})
		return nil, nil
	})
}

func putPerm(tx *state.Txn, name string, desc *string) error {
	p := bus.Permission{ID: tx.NextID("perm"), Name: name, Description: desc}
	if err := tx.Put(permKey(p.ID), p); err != nil {
		return err
	}
	return tx.Put(permNameKey(name), p.ID)
}

// passwordLogin checks a password and opens a session.
func (s *Server) passwordLogin(ctx context.Context, name, password string) (*bus.Session, error) {
	var u *userRecord
	_ = s.store.Read(func(v state.View) error {
		u, _ = lookupUser(v, registry.Ref{Name: name})
		return nil
	})
	if err := checkPassword(u, password); err != nil {
		return nil, bus.AuthError("%s", err)
	}
	return s.openSession(ctx, u, bus.AuthTypeNormal)
}

func (s *Server) openSession(ctx context.Context, u *userRecord, authType int) (*bus.Session, error) {
	key := bus.RandomSecret(24)
	res, err := s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		tx.UseReserve() // logins keep working while the disk is too full for other writes
		now := nowTS()
		rec := sessionRecord{
			ID: tx.NextID("session"), UserID: u.ID, HostID: u.HostID, KeyHash: hashSessionKey(key),
			AuthType: authType, Start: now, Expires: now + s.cfg.SessionLifetime.Seconds(),
			Bind: connIdentity(ctx),
		}
		return rec.ID, tx.Put(sessionKey(rec.ID), rec)
	})
	if err != nil {
		return nil, err
	}
	return &bus.Session{ID: res.Value.(int64), Key: key}, nil
}
