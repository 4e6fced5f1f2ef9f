package integration

import (
	"strings"
	"testing"
)

// A fresh hubd has authentication on and a ready profile for its bootstrap
// admin; kojictl uses it as a user would.
func TestBootstrapAdminHello(t *testing.T) {
	h := StartHub(t)
	out, errOut, code := h.Ctl(t, "hello")
	if code != 0 {
		t.Fatalf("kojictl hello: exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{", kojiadmin!", "You are using the hub at " + h.URL, "Authenticated via password"} {
		if !strings.Contains(out, want) {
			t.Errorf("kojictl hello output lacks %q:\n%s", want, out)
		}
	}
}

// A normal user is refused an admin call with Koji's fault and message, and
// nothing changes.
func TestNormalUserRefusedAdminCall(t *testing.T) {
	h := StartHub(t)
	out, errOut, code := h.Ctl(t, "add-user", "--password", "bob-secret-pw", "bob")
	if code != 0 || !strings.Contains(out, "Added user bob") {
		t.Fatalf("add-user bob: exit %d\n%s%s", code, out, errOut)
	}
	bob := h.WriteProfile(t, "bob", "bob-secret-pw")
	out, errOut, code = RunCtl(t, "-c", bob, "hello")
	if code != 0 || !strings.Contains(out, ", bob!") {
		t.Fatalf("bob hello: exit %d\n%s%s", code, out, errOut)
	}

	out, errOut, code = RunCtl(t, "-c", bob, "add-user", "mallory")
	if code != 1 {
		t.Fatalf("bob add-user: exit %d, want 1\n%s%s", code, out, errOut)
	}
	if want := "ActionNotAllowed: admin permission required (logged in as bob)\n"; errOut != want {
		t.Fatalf("bob add-user stderr = %q, want %q", errOut, want)
	}
	// The same through the generic call command, and the refused user was not created.
	_, errOut, code = RunCtl(t, "-c", bob, "call", "createUser", "mallory")
	if code != 1 || !strings.Contains(errOut, "ActionNotAllowed: admin permission required (logged in as bob)") {
		t.Fatalf("bob call createUser: exit %d\n%s", code, errOut)
	}
	out, errOut, code = h.Ctl(t, "call", "--json-output", "getUser", "mallory")
	if code != 0 || strings.TrimSpace(out) != "null" {
		t.Fatalf("getUser mallory: exit %d\n%s%s", code, out, errOut)
	}
}
