package bus

import (
	"strings"
	"testing"
)

func TestSplitAPISubject(t *testing.T) {
	tests := []struct {
		subject, token, method string
		ok                     bool
	}{
		{"koji.api.alice.getTag", "alice", "getTag", true},
		{"koji.api.=.hello", UnboundIdentity, "hello", true},
		{"koji.api.b1.host.getID", "b1", "host.getID", true},
		{"koji.api.getTag", "", "", false},
		{"koji.api..getTag", "", "", false},
		{"koji.api.alice.", "", "", false},
		{"koji.event.alice.getTag", "", "", false},
	}
	for _, tt := range tests {
		token, method, ok := SplitAPISubject(tt.subject)
		if ok != tt.ok || (ok && (token != tt.token || method != tt.method)) {
			t.Errorf("SplitAPISubject(%q) = %q, %q, %v; want %q, %q, %v", tt.subject, token, method, ok, tt.token, tt.method, tt.ok)
		}
	}
}

// FuzzIdentitySubjects: every user name's token is one subject token that
// no other kind of identity has, and its requests split back to it.
func FuzzIdentitySubjects(f *testing.F) {
	for _, s := range []string{"alice", "kojiadmin", "a.b c", "=", "=a", "=b", "$bridge.x", "\xb4x"} {
		f.Add(s, "getTag")
	}
	f.Fuzz(func(t *testing.T, name, method string) {
		if name == "" || method == "" || strings.ContainsAny(method, " \t\r\n*>") || strings.Contains(method, "..") ||
			strings.HasPrefix(method, ".") || strings.HasSuffix(method, ".") {
			return
		}
		tok := IdentityToken(name)
		if strings.ContainsAny(tok, ".*> ") || strings.HasPrefix(tok, "=a") || strings.HasPrefix(tok, "=b") || tok == UnboundIdentity {
			t.Fatalf("IdentityToken(%q) = %q: not one token of its own", name, tok)
		}
		gotTok, gotMethod, ok := SplitAPISubject(IdentityAPISubject(tok, method))
		if !ok || gotTok != tok || gotMethod != method {
			t.Fatalf("split of %q = %q, %q, %v", IdentityAPISubject(tok, method), gotTok, gotMethod, ok)
		}
	})
}
