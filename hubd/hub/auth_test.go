package hub

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
)

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestBootstrapWritesPrivateProfileForAdmin(t *testing.T) {
	h := StartTestHub(t, nil)
	st, err := os.Stat(h.ProfilePath())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("profile mode %v, want 0600", st.Mode().Perm())
	}
	var me bus.LoggedInUser
	if err := h.Admin.Call(ctxT(t), "getLoggedInUser", nil, nil, &me); err != nil {
		t.Fatal(err)
	}
	if me.Name != "kojiadmin" {
		t.Fatalf("logged in as %q", me.Name)
	}
	var perms []string
	if err := h.Admin.Call(ctxT(t), "getPerms", nil, nil, &perms); err != nil {
		t.Fatal(err)
	}
	if len(perms) != 1 || perms[0] != "admin" {
		t.Fatalf("admin perms = %v", perms)
	}
}

func TestNormalUserIsRefusedAdminCalls(t *testing.T) {
	h := StartTestHub(t, nil)
	alice := h.UserClient(t, "alice")
	err := alice.Call(ctxT(t), "createUser", []any{"mallory"}, nil, nil)
	var f *bus.Fault
	if !errors.As(err, &f) || f.Code != bus.CodeActionNotAllowed {
		t.Fatalf("err = %v, want ActionNotAllowed", err)
	}
	if f.Message != "admin permission required (logged in as alice)" {
		t.Fatalf("message %q", f.Message)
	}
	var u *bus.User
	if err := h.Admin.Call(ctxT(t), "getUser", []any{"mallory"}, nil, &u); err != nil || u != nil {
		t.Fatalf("mallory exists after a refused call: %v %v", u, err)
	}
}

func TestBadInputGetsTypedErrors(t *testing.T) {
	h := StartTestHub(t, nil)
	cases := []struct {
		name   string
		method string
		args   []any
		kwargs map[string]any
		code   int
		msg    string
	}{
		{"unknown method", "noSuchMethod", nil, nil, bus.CodeGenericError, "Invalid method: noSuchMethod"},
		{"missing arg", "createUser", nil, nil, bus.CodeParameterError, "createUser() missing 1 required positional argument: 'username'"},
		{"too many args", "getAPIVersion", []any{1}, nil, bus.CodeParameterError, "getAPIVersion() takes 0 positional arguments but 1 was given"},
		{"unknown kwarg", "getUser", nil, map[string]any{"bogus": 1}, bus.CodeParameterError, "getUser() got an unexpected keyword argument 'bogus'"},
		{"wrong type", "createUser", []any{42}, nil, bus.CodeParameterError, "createUser(): parameter 'username' must be a string"},
		{"duplicate", "createUser", []any{"kojiadmin"}, nil, bus.CodeGenericError, "user already exists: kojiadmin"},
		{"unknown perm", "grantPermission", []any{"kojiadmin", "nope"}, nil, bus.CodeGenericError, "No such permission: nope"},
		{"unknown user", "grantPermission", []any{"nobody", "admin"}, nil, bus.CodeGenericError, "No such user: 'nobody'"},
		{"already has", "grantPermission", []any{"kojiadmin", "admin"}, nil, bus.CodeGenericError, "user kojiadmin already has permission: admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.Store().Applied()
			err := h.Admin.Call(ctxT(t), tc.method, tc.args, tc.kwargs, nil)
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != tc.code || f.Message != tc.msg {
				t.Fatalf("err = %v, want %s: %s", err, bus.FaultName(tc.code), tc.msg)
			}
			if h.Store().Applied() != before {
				t.Fatal("a refused call changed state")
			}
		})
	}
}

func TestWrongPasswordAndLogout(t *testing.T) {
	h := StartTestHub(t, nil)
	c := h.Anonymous()
	err := c.Login(ctxT(t), "kojiadmin", "wrong")
	if !errors.Is(err, bus.ErrAuth) {
		t.Fatalf("err = %v, want AuthError", err)
	}
	bob := h.UserClient(t, "bob")
	if err := bob.Call(ctxT(t), "logout", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	err = bob.Call(ctxT(t), "getLoggedInUser", nil, nil, nil)
	if !errors.Is(err, bus.ErrAuthExpired) {
		t.Fatalf("after logout: %v, want AuthExpired", err)
	}
}

func TestGrantAndRevokePermission(t *testing.T) {
	h := StartTestHub(t, nil)
	h.UserClient(t, "carol")
	ctx := ctxT(t)
	if err := h.Admin.Call(ctx, "grantPermission", []any{"carol", "runroot"}, map[string]any{"create": true}, nil); err != nil {
		t.Fatal(err)
	}
	var perms []string
	if err := h.Admin.Call(ctx, "getUserPerms", []any{"carol"}, nil, &perms); err != nil || len(perms) != 1 || perms[0] != "runroot" {
		t.Fatalf("perms %v %v", perms, err)
	}
	if err := h.Admin.Call(ctx, "revokePermission", []any{"carol", "runroot"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Admin.Call(ctx, "getUserPerms", []any{"carol"}, nil, &perms); err != nil || len(perms) != 0 {
		t.Fatalf("perms after revoke %v %v", perms, err)
	}
}

// A session checked once is remembered, but only for its exact header: the
// same session with another key is refused, and a logout ends it at once.
func TestCheckedSessionNeedsItsKey(t *testing.T) {
	h := StartTestHub(t, nil)
	bob := h.UserClient(t, "bob")
	ctx := ctxT(t)
	for range 2 {
		if err := bob.Call(ctx, "getLoggedInUser", nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	id, _, ok := strings.Cut(bob.Session(), ":")
	if !ok {
		t.Fatalf("session header %q", bob.Session())
	}
	forged := bob.WithSession(id + ":not-the-key")
	if err := forged.Call(ctx, "getLoggedInUser", nil, nil, nil); !errors.Is(err, bus.ErrAuth) || !strings.Contains(err.Error(), "invalid session key") {
		t.Fatalf("another key: %v, want AuthError: invalid session key", err)
	}
	if err := bob.Call(ctx, "logout", nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := bob.Call(ctx, "getLoggedInUser", nil, nil, nil); !errors.Is(err, bus.ErrAuthExpired) {
		t.Fatalf("after logout: %v, want AuthExpired", err)
	}
}
