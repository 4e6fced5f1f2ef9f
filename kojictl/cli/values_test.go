package cli

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestArgFilter(t *testing.T) {
	tests := []struct {
		in        string
		parseJSON bool
		want      any
	}{
		{"1", true, int64(1)},
		{"-42", true, int64(-42)},
		{" 7 ", true, int64(7)},
		{"1_000", true, int64(1000)},
		{"1__0", false, "1__0"},
		{"1.5", true, 1.5},
		{"1e3", true, 1000.0},
		{".fc30", true, ".fc30"}, // koji: float(".fc30") fails, so it stays a string
		{"None", true, nil},
		{"True", true, true},
		{"False", false, false},
		{"true", true, true}, // JSON
		{"true", false, "true"},
		{"null", true, nil},
		{`{"a": [1, 2]}`, true, map[string]any{"a": []any{json.Number("1"), json.Number("2")}}},
		{`["x"]`, true, []any{"x"}},
		{`["x"]`, false, `["x"]`},
		{"dnf", true, "dnf"},
		{"nan", true, "nan"}, // JSON cannot carry NaN/inf: kept as text
		{"inf", true, "inf"},
		{"0x10", true, "0x10"},
		{"", true, ""},
	}
	for _, tt := range tests {
		got := argFilter(tt.in, tt.parseJSON)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("argFilter(%q, %v) = %#v, want %#v", tt.in, tt.parseJSON, got, tt.want)
		}
	}
}

func TestParseExtra(t *testing.T) {
	got, err := parseExtra([]string{"mock.package_manager=dnf", "repo.auto=true", "rpm.macro.dist=.fc30", "n=3", "s=a=b"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"mock.package_manager": "dnf", "repo.auto": true, "rpm.macro.dist": ".fc30", "n": int64(3), "s": "a=b"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parseExtra = %#v, want %#v", got, want)
	}
	for _, bad := range [][]string{{"a=1", "a=2"}, {"novalue"}, {"=x"}} {
		if _, err := parseExtra(bad); err == nil {
			t.Errorf("parseExtra(%q): no error", bad)
		}
	}
	if _, err := parseExtra([]string{"a=1", "a=2"}); err == nil || err.Error() != "Duplicate extra key: a" {
		t.Errorf("duplicate key error = %v", err)
	}
}

func TestParsePyLiteral(t *testing.T) {
	tests := []struct {
		in   string
		want any
	}{
		{"1", json.Number("1")},
		{"-2.5", json.Number("-2.5")},
		{"'a b'", "a b"},
		{`"it's"`, "it's"},
		{`'a\nb\x41'`, "a\nbA"},
		{"None", nil},
		{"True", true},
		{"[1, 'x', None]", []any{json.Number("1"), "x", nil}},
		{"(1,)", []any{json.Number("1")}},
		{"{'a': {'b': [True]}, 'c': 2}", map[string]any{"a": map[string]any{"b": []any{true}}, "c": json.Number("2")}},
		{"[]", []any{}},
		{"{}", map[string]any{}},
	}
	for _, tt := range tests {
		got, err := parsePyLiteral(tt.in)
		if err != nil {
			t.Errorf("parsePyLiteral(%q): %v", tt.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("parsePyLiteral(%q) = %#v, want %#v", tt.in, got, tt.want)
		}
	}
	for _, bad := range []string{"", "[1,", "{'a' 1}", "'open", "foo", "1 2", "[1] x"} {
		if v, err := parsePyLiteral(bad); err == nil {
			t.Errorf("parsePyLiteral(%q) = %#v, want error", bad, v)
		}
	}
}

func TestPyRepr(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{nil, "None"},
		{true, "True"},
		{"dnf", "'dnf'"},
		{"it's", `"it's"`},
		{"a\nb", `'a\nb'`},
		{json.Number("3"), "3"},
		{2.0, "2.0"},
		{[]any{json.Number("1"), "a"}, "[1, 'a']"},
		{map[string]any{"b": false, "a": nil}, "{'a': None, 'b': False}"},
	}
	for _, tt := range tests {
		if got := pyRepr(tt.in); got != tt.want {
			t.Errorf("pyRepr(%#v) = %s, want %s", tt.in, got, tt.want)
		}
	}
	long := map[string]any{"name": "a-very-long-tag-name-to-force-wrapping", "extra": map[string]any{"x": "y"}, "arches": "x86_64 aarch64"}
	want := "{'arches': 'x86_64 aarch64',\n 'extra': {'x': 'y'},\n 'name': 'a-very-long-tag-name-to-force-wrapping'}"
	if got := pformat(long, 0, 80); got != want {
		t.Errorf("pformat =\n%s\nwant\n%s", got, want)
	}
}

func TestHelpers(t *testing.T) {
	if got := parseArches("x86_64, aarch64 ppc64le"); got != "x86_64 aarch64 ppc64le" {
		t.Errorf("parseArches = %q", got)
	}
	for _, tt := range []struct {
		nvr, n, v, r string
		ok           bool
	}{{"foo-1.0-1", "foo", "1.0", "1", true}, {"foo-bar-2-3.fc30", "foo-bar", "2", "3.fc30", true}, {"foo-1", "", "", "", false}, {"foo", "", "", "", false}, {"-1-2", "", "", "", false}} {
		n, v, r, err := parseNVR(tt.nvr)
		if (err == nil) != tt.ok || n != tt.n || v != tt.v || r != tt.r {
			t.Errorf("parseNVR(%q) = %q %q %q %v", tt.nvr, n, v, r, err)
		}
	}
	for _, tt := range []struct {
		glob, subject, client string
	}{
		{"", "koji.event.>", ""},
		{"build.tag", "koji.event.build.tag", ""},
		{"task.*", "koji.event.task.*", ""},
		{"repo.>", "koji.event.repo.>", ""},
		{"*.tag", "koji.event.*.tag", ""},
		{"build.ta*", "koji.event.>", "build.ta*"},
		{"*tag", "koji.event.>", "*tag"},
	} {
		s, c := eventFilter(tt.glob)
		if s != tt.subject || c != tt.client {
			t.Errorf("eventFilter(%q) = %q, %q; want %q, %q", tt.glob, s, c, tt.subject, tt.client)
		}
	}
	if !fnmatch("f30-build", "f30-*") || fnmatch("f31", "f30*") || !fnmatch("build.tag", "*tag") {
		t.Error("fnmatch")
	}
}
