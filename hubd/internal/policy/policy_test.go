package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

// testRegistry adds stand-ins for hub tests that read only the data: the
// hub's own read its state (hubd/hub/policy.go).
func testRegistry() *Registry {
	r := NewRegistry()
	field := func(name, key string) {
		r.Register(name, func(w []string) (Test, error) {
			pats := w[1:]
			return TestFunc(func(_ *Eval, d Data) (bool, error) {
				s, ok := d[key].(string)
				return ok && MatchAny(s, pats), nil
			}), nil
		})
	}
	field("tag", "tag")
	field("fromtag", "fromtag")
	field("operation", "operation")
	field("method", "method")
	field("user", "user")
	r.Register("has_perm", func(w []string) (Test, error) {
		pats := w[1:]
		return TestFunc(func(_ *Eval, d Data) (bool, error) {
			perms, _ := d["perms"].([]string)
			for _, p := range perms {
				if MatchAny(p, pats) {
					return true, nil
				}
			}
			return false, nil
		}), nil
	})
	r.Register("is_child_task", func([]string) (Test, error) {
		return TestFunc(func(_ *Eval, d Data) (bool, error) { return bus.PyTruthy(d["parent"]), nil }), nil
	})
	return r
}

func mustSet(t *testing.T, policies map[string]string) *Set {
	t.Helper()
	s, err := NewSet(policies, testRegistry(), true)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The tag policy in the style of Koji's documentation: nested blocks,
// fall-through, !! and a deny with a message.
const tagPolicy = `
# admins can do anything
has_perm admin :: allow
tag *-candidate :: {
    fromtag *-updates-testing :: deny builds go forward, not back
    operation tag move :: allow
}
tag *-updates* && operation move :: {
    fromtag *-candidate :: allow
    fromtag *-updates-testing !! deny only from candidate or testing
}
tag *-updates* !! deny not a release tag
`

func TestTagPolicy(t *testing.T) {
	s := mustSet(t, map[string]string{"tag": tagPolicy})
	tests := []struct {
		name    string
		data    Data
		allowed bool
		reason  string
		rule    string
	}{
		{"admin", Data{"perms": []string{"admin"}, "tag": "f40-updates", "operation": "untag"}, true, "", "has_perm admin :: allow"},
		{"tag into candidate", Data{"tag": "f40-candidate", "operation": "tag"}, true, "", "operation tag move :: allow"},
		{"back from testing", Data{"tag": "f40-candidate", "fromtag": "f40-updates-testing", "operation": "move"}, false, "builds go forward, not back", "fromtag *-updates-testing :: deny builds go forward, not back"},
		// the candidate block has no matching rule for untag: fall through to the last rule
		{"untag from candidate falls through", Data{"tag": "f40-candidate", "operation": "untag"}, false, "not a release tag", "tag *-updates* !! deny not a release tag"},
		{"candidate to updates", Data{"tag": "f40-updates", "fromtag": "f40-candidate", "operation": "move"}, true, "", "fromtag *-candidate :: allow"},
		{"other to updates", Data{"tag": "f40-updates", "fromtag": "f40-override", "operation": "move"}, false, "only from candidate or testing", "fromtag *-updates-testing !! deny only from candidate or testing"},
		// no rule matches: Koji's check_policy default
		{"plain tag into updates", Data{"tag": "f40-updates", "operation": "tag"}, false, "not covered by policy", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := s.Check("tag", tc.data, nil, "deny", false, false)
			if err != nil {
				t.Fatal(err)
			}
			if d.Allowed != tc.allowed || d.Reason != tc.reason || d.Rule != tc.rule {
				t.Fatalf("got allowed=%v reason=%q rule=%q, want %v %q %q\ntrace: %v", d.Allowed, d.Reason, d.Rule, tc.allowed, tc.reason, tc.rule, d.Trace)
			}
			err = s.Assert("tag", tc.data, nil, false, false)
			if tc.allowed != (err == nil) {
				t.Fatalf("Assert: %v", err)
			}
			if err != nil {
				want := "policy violation (tag): " + tc.reason
				var f *bus.Fault
				if !errors.As(err, &f) || f.Code != bus.CodeActionNotAllowed || f.Message != want {
					t.Fatalf("Assert error %v, want ActionNotAllowed %q", err, want)
				}
			}
		})
	}
}

func TestForceAndMissingPolicies(t *testing.T) {
	s := mustSet(t, map[string]string{"tag": "all :: deny never"})
	if d, _ := s.Check("tag", Data{}, nil, "deny", true, true); !d.Allowed {
		t.Error("force by an admin must pass")
	}
	if d, _ := s.Check("tag", Data{}, nil, "deny", true, false); d.Allowed {
		t.Error("force by a non-admin must not pass")
	}
	if d, _ := s.Check("dist_repo", Data{}, nil, "deny", false, false); !d.Allowed {
		t.Error("a missing policy allows with MissingPolicyOk")
	}
	s.MissingOK = false
	if d, _ := s.Check("dist_repo", Data{}, nil, "deny", false, false); d.Allowed || d.Reason != "missing policy" {
		t.Errorf("missing policy without MissingPolicyOk: %+v", d)
	}
	s2 := mustSet(t, map[string]string{"tag": "all :: maybe"})
	if d, _ := s2.Check("tag", Data{}, nil, "deny", false, false); d.Allowed || d.Reason != "error in policy" {
		t.Errorf("a word other than allow/deny: %+v", d)
	}
}

func TestChannelAndPriorityDefaultsAndExamples(t *testing.T) {
	s := mustSet(t, nil)
	ev := &Eval{Set: s}
	for _, tc := range []struct {
		data Data
		want string
	}{
		{Data{"req_channel": "runroot", "method": "runroot"}, "req"},
		{Data{"parent": float64(7), "method": "buildArch"}, "parent"},
		{Data{"method": "sleep"}, "use default"},
	} {
		if got, err := ev.Apply("channel", tc.data); err != nil || got != tc.want {
			t.Errorf("default channel policy %v: %q %v, want %q", tc.data, got, err, tc.want)
		}
	}
	if got, _ := ev.Apply("priority", Data{}); got != "stay" {
		t.Errorf("default priority policy: %q", got)
	}
	s = mustSet(t, map[string]string{
		"channel":  "method sleep :: use slow\nis_child_task :: parent\nall :: use default",
		"priority": "method sleep :: adjust +5\nuser kojiadmin :: set 10\nall :: stay",
	})
	ev = &Eval{Set: s}
	if got, _ := ev.Apply("channel", Data{"method": "sleep"}); got != "use slow" {
		t.Errorf("channel for sleep: %q", got)
	}
	if got, _ := ev.Apply("priority", Data{"method": "sleep"}); got != "adjust +5" {
		t.Errorf("priority for sleep: %q", got)
	}
}

// The sidetag plugin's example policy, with compare.
func TestSidetagExample(t *testing.T) {
	s := mustSet(t, map[string]string{"sidetag": `
        # allow maximum of 10 sidetags per user for f30-build tag
        tag f30-build && compare number_of_tags <= 10 :: allow
        # forbid everything else
        all :: deny`})
	for _, tc := range []struct {
		data Data
		want bool
	}{
		{Data{"tag": "f30-build", "number_of_tags": float64(3)}, true},
		{Data{"tag": "f30-build", "number_of_tags": float64(10)}, true},
		{Data{"tag": "f30-build", "number_of_tags": float64(11)}, false},
		{Data{"tag": "f31-build", "number_of_tags": float64(0)}, false},
		{Data{"tag": "f30-build"}, false}, // no field: compare is false
	} {
		if d, _ := s.Check("sidetag", tc.data, nil, "deny", false, false); d.Allowed != tc.want {
			t.Errorf("%v: allowed %v, want %v", tc.data, d.Allowed, tc.want)
		}
	}
}

func TestGenericTests(t *testing.T) {
	tests := []struct {
		rule string
		data Data
		want bool
	}{
		{"true", nil, true}, {"all", nil, true}, {"false", nil, false}, {"none", nil, false},
		{"has x", Data{"x": nil}, true}, {"has x", Data{}, false},
		{"bool x", Data{"x": ""}, false}, {"bool x", Data{"x": "a"}, true}, {"bool x", Data{"x": float64(0)}, false},
		{"bool x", Data{"x": []any{}}, false}, {"bool x", Data{}, false},
		{"match x foo*", Data{"x": "foobar"}, true}, {"match x a b c", Data{"x": "c"}, true},
		{"match x foo", Data{"x": nil}, false}, {"match x foo", Data{}, false},
		{"match x a/*", Data{"x": "a/b/c"}, true}, // * crosses '/'
		{"match x ?", Data{"x": "ab"}, false}, {"match x [ab]x", Data{"x": "bx"}, true},
		{"match x [!ab]x", Data{"x": "bx"}, false}, {"match x [!ab]x", Data{"x": "cx"}, true},
		{"match x [ab", Data{"x": "[ab"}, true}, // an unclosed [ is literal
		{"match x F*", Data{"x": "foo"}, false}, // case-sensitive
		{"target f40*", Data{"target": "f40-candidate"}, true},
		{"match_any x a*", Data{"x": []any{"b", "ab", "abc"}}, true},
		{"match_any x a*", Data{"x": []any{}}, false}, {"match_any x a*", Data{"x": "abc"}, false},
		{"match_any x 1", Data{"x": []any{float64(1)}}, true},
		{"match_all x a*", Data{"x": []any{"ab", "ac"}}, true}, {"match_all x a*", Data{"x": []any{"ab", "b"}}, false},
		{"match_all x a*", Data{"x": []any{"ab", nil}}, false}, {"match_all x a*", Data{"x": []any{}}, false},
		{"compare n < 3", Data{"n": float64(2)}, true}, {"compare n >= 2.5", Data{"n": float64(2)}, false},
		{"compare n = 2", Data{"n": float64(2)}, true}, {"compare n != 2", Data{"n": float64(2)}, false},
		{"compare n > -1", Data{"n": float64(0)}, true}, {"compare n <= 1", Data{}, false},
		{"true && has x", Data{"x": 1}, true}, {"true && has x", Data{}, false},
	}
	reg := NewRegistry()
	for _, tc := range tests {
		s, err := NewSet(map[string]string{"p": tc.rule + " :: yes"}, reg, true)
		if err != nil {
			t.Fatalf("%s: %v", tc.rule, err)
		}
		got, err := (&Eval{Set: s}).Apply("p", tc.data)
		if err != nil {
			t.Fatalf("%s: %v", tc.rule, err)
		}
		if (got == "yes") != tc.want {
			t.Errorf("%s on %v: %v, want %v", tc.rule, tc.data, got == "yes", tc.want)
		}
	}
}

func TestPolicyTestAndLoops(t *testing.T) {
	reg := NewRegistry()
	s, err := NewSet(map[string]string{
		"inner": "has ok :: allow extra words\nall :: deny",
		"outer": "policy inner :: yes\nall :: no",
		"loopa": "policy loopb :: yes",
		"loopb": "policy loopa :: yes",
		"lost":  "policy nosuch :: yes",
	}, reg, true)
	if err != nil {
		t.Fatal(err)
	}
	ev := &Eval{Set: s}
	if got, _ := ev.Apply("outer", Data{"ok": 1}); got != "yes" {
		t.Errorf("outer with ok: %q", got)
	}
	if got, _ := ev.Apply("outer", Data{}); got != "no" {
		t.Errorf("outer without ok: %q", got)
	}
	if _, err := (&Eval{Set: s}).Apply("loopa", Data{}); err == nil || !strings.Contains(err.Error(), "encountered policy loop at loopa") {
		t.Errorf("loop: %v", err)
	}
	if _, err := (&Eval{Set: s}).Apply("lost", Data{}); err == nil || !strings.Contains(err.Error(), "no such policy: nosuch") {
		t.Errorf("missing: %v", err)
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	tests := []struct {
		text, reason string
		line         int
	}{
		{"all :: allow\nfoo :: allow", "missing test handler: foo", 2},
		{"all allow", "no '::' or '!!'", 1},
		{"all ::", "rule has no action", 1},
		{"all :: {\n  true :: allow\n", "block not closed", 1},
		{"all :: allow\n}", "'}' closes no block", 2},
		{"has :: allow", "Invalid or missing field in policy test", 1},
		{"compare n ~ 3 :: allow", "Invalid comparison in test.", 1},
		{"compare n < x :: allow", "Invalid comparison in test.", 1},
		{"true && :: allow", "empty test", 1},
		{"all :: allow }", "a block opens with", 1},
	}
	for _, tc := range tests {
		_, err := Parse("p", tc.text, NewRegistry())
		var pe *ParseError
		if !errors.As(err, &pe) || pe.Line != tc.line || !strings.Contains(pe.Reason, tc.reason) {
			t.Errorf("%q: %v, want line %d: %s", tc.text, err, tc.line, tc.reason)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(tagPolicy)
	f.Add("all :: {\n has x !! deny\n}\n")
	f.Add("compare n <= 10 && match a b* :: allow # c")
	reg := NewRegistry()
	f.Fuzz(func(t *testing.T, text string) {
		p, err := Parse("fuzz", text, reg)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 || pe.Line > strings.Count(text, "\n")+1 || pe.Reason == "" {
				t.Fatalf("rejection without its line: %#v", err)
			}
			return
		}
		s := &Set{policies: map[string]*Policy{"fuzz": p}}
		_, _ = (&Eval{Set: s}).Apply("fuzz", Data{"x": "y", "n": float64(1)})
	})
}
