package registry

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

func nop(context.Context, *Call) (any, error) { return nil, nil }

// runrootMethod is the runroot plugin's signature, as koji list-api shows it.
func runrootMethod() Method {
	return Method{
		Name:    "runroot",
		Doc:     " Create a runroot task ",
		Params:  []Param{P("tagInfo"), P("arch"), P("command"), Opt("channel", nil)},
		VarKw:   "opts",
		Handler: nop,
	}
}

func req(t *testing.T, body string) *bus.Request {
	t.Helper()
	r, err := bus.DecodeRequest([]byte(body), bus.RequestLimits{})
	if err != nil {
		t.Fatalf("DecodeRequest(%s): %v", body, err)
	}
	return r
}

// The texts are Python 3's TypeError messages (checked against CPython for
// the same signatures), which Koji returns as ParameterError.
func TestBindPythonErrorTexts(t *testing.T) {
	f := Method{Name: "f", Params: []Param{P("a")}, Handler: nop}
	g := Method{Name: "getKojiVersion", Handler: nop}
	h := Method{Name: "h", Params: []Param{P("a"), P("b")}, Handler: nop}
	rr := runrootMethod()
	cases := []struct {
		name string
		m    Method
		body string
		want string
	}{
		{"missing three", rr, `{"args":[]}`, "runroot() missing 3 required positional arguments: 'tagInfo', 'arch', and 'command'"},
		{"missing two", rr, `{"args":[1]}`, "runroot() missing 2 required positional arguments: 'arch' and 'command'"},
		{"missing one", h, `{"args":[1]}`, "h() missing 1 required positional argument: 'b'"},
		{"missing one after kwarg", h, `{"kwargs":{"a":1}}`, "h() missing 1 required positional argument: 'b'"},
		{"too many with defaults", rr, `{"args":[1,2,3,4,5]}`, "runroot() takes from 3 to 4 positional arguments but 5 were given"},
		{"too many, one param", f, `{"args":[1,2]}`, "f() takes 1 positional argument but 2 were given"},
		{"too many, none taken", g, `{"args":[1]}`, "getKojiVersion() takes 0 positional arguments but 1 was given"},
		{"too many, two params", h, `{"args":[1,2,3]}`, "h() takes 2 positional arguments but 3 were given"},
		{"multiple values", rr, `{"args":[1,2,3],"kwargs":{"tagInfo":1}}`, "runroot() got multiple values for argument 'tagInfo'"},
		{"unexpected keyword", f, `{"args":[1],"kwargs":{"x":1}}`, "f() got an unexpected keyword argument 'x'"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.m.Bind(req(t, tc.body))
			var f *bus.Fault
			if !errors.As(err, &f) {
				t.Fatalf("Bind(%s) = %v, want a fault", tc.body, err)
			}
			if f.Code != bus.CodeParameterError || f.Name != "ParameterError" {
				t.Errorf("fault %d %s, want 1019 ParameterError", f.Code, f.Name)
			}
			if f.Message != tc.want {
				t.Errorf("message\n got %q\nwant %q", f.Message, tc.want)
			}
		})
	}
}

func TestBindMatchesArguments(t *testing.T) {
	rr := runrootMethod()
	a, err := rr.Bind(req(t, `{"args":["f30-build","x86_64"],"kwargs":{"command":"ls","mounts":["/mnt"],"__starstar":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	if s, err := a.String("tagInfo"); err != nil || s != "f30-build" {
		t.Errorf("tagInfo = %q, %v", s, err)
	}
	if s, err := a.String("command"); err != nil || s != "ls" {
		t.Errorf("command = %q, %v", s, err)
	}
	if a.Has("channel") || !a.IsNull("channel") {
		t.Errorf("channel: Has=%v IsNull=%v, want absent and None", a.Has("channel"), a.IsNull("channel"))
	}
	if ch, err := a.OptString("channel"); err != nil || ch != nil {
		t.Errorf("channel = %v, %v; want None", ch, err)
	}
	extra := a.Extra()
	if len(extra) != 1 || string(extra["mounts"]) != `["/mnt"]` {
		t.Errorf("extra = %v, want only mounts (the __starstar marker is dropped)", extra)
	}
}

func TestArgsAccessors(t *testing.T) {
	m := Method{Name: "m", Params: []Param{
		P("s"), P("n"), P("fl"), P("b"), P("list"), P("one"), P("d"), P("ref"), P("refd"), P("bad"),
		Opt("def", "x"), Opt("none", nil), Opt("flag", false),
	}, Handler: nop}
	a, err := m.Bind(req(t, `{"args":["str", 7, 2.5, 1, ["a","b"], "solo", {"k":1}, "f30", {"id":3}, [1]]}`))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := a.String("s"); err != nil || v != "str" {
		t.Errorf("String = %q %v", v, err)
	}
	if v, err := a.Int("n"); err != nil || v != 7 {
		t.Errorf("Int = %d %v", v, err)
	}
	if v, err := a.Float("fl"); err != nil || v != 2.5 {
		t.Errorf("Float = %v %v", v, err)
	}
	if v, err := a.Bool("b"); err != nil || !v {
		t.Errorf("Bool(1) = %v %v, want True as Python", v, err)
	}
	if v, err := a.Strings("list"); err != nil || !reflect.DeepEqual(v, []string{"a", "b"}) {
		t.Errorf("Strings = %v %v", v, err)
	}
	if v, err := a.Strings("one"); err != nil || !reflect.DeepEqual(v, []string{"solo"}) {
		t.Errorf("Strings(single) = %v %v", v, err)
	}
	if v, err := a.Map("d"); err != nil || v["k"] != json.Number("1") {
		t.Errorf("Map = %v %v", v, err)
	}
	if v, err := a.Ref("ref"); err != nil || v.IsID() || v.Name != "f30" || v.String() != "'f30'" {
		t.Errorf("Ref(name) = %+v %v", v, err)
	}
	if v, err := a.Ref("refd"); err != nil || !v.IsID() || v.ID != 3 || v.String() != "3" {
		t.Errorf("Ref(dict) = %+v %v", v, err)
	}
	if v, err := a.String("def"); err != nil || v != "x" {
		t.Errorf("default = %q %v", v, err)
	}
	if v, err := a.OptInt("none"); err != nil || v != nil {
		t.Errorf("OptInt(None) = %v %v", v, err)
	}
	if v, err := a.Bool("flag"); err != nil || v {
		t.Errorf("Bool(default False) = %v %v", v, err)
	}
	// Wrong types: ParameterErrors naming method and parameter.
	wrong := []struct {
		call func() error
		want string
	}{
		{func() error { _, err := a.String("n"); return err }, "m(): parameter 'n' must be a string"},
		{func() error { _, err := a.Int("fl"); return err }, "m(): parameter 'fl' must be an integer"},
		{func() error { _, err := a.Int("s"); return err }, "m(): parameter 's' must be an integer"},
		{func() error { _, err := a.Float("s"); return err }, "m(): parameter 's' must be a number"},
		{func() error { _, err := a.Bool("n"); return err }, "m(): parameter 'n' must be a boolean"},
		{func() error { _, err := a.Strings("bad"); return err }, "m(): parameter 'bad' must be a list of strings"},
		{func() error { _, err := a.Map("list"); return err }, "m(): parameter 'list' must be a dict"},
		{func() error { _, err := a.Ref("bad"); return err }, "m(): parameter 'bad' must be an id or a name"},
		{func() error { _, err := a.Ref("fl"); return err }, "m(): parameter 'fl' must be an id or a name"},
		{func() error { _, err := a.String("nosuch"); return err }, "m(): parameter 'nosuch' must be a string"},
		{func() error { var x int; return a.Decode("s", &x) }, "m(): parameter 's': "},
	}
	for i, w := range wrong {
		err := w.call()
		var f *bus.Fault
		if !errors.As(err, &f) || f.Code != bus.CodeParameterError {
			t.Errorf("case %d: %v, want a ParameterError", i, err)
			continue
		}
		if !strings.HasPrefix(f.Message, w.want) {
			t.Errorf("case %d: %q, want %q", i, f.Message, w.want)
		}
	}
}

func TestArgDesc(t *testing.T) {
	cases := []struct {
		m    Method
		want string
	}{
		{runrootMethod(), "(tagInfo, arch, command, channel=None, **opts)"},
		{Method{Name: "getKojiVersion"}, "()"},
		{Method{Name: "getTag", Params: []Param{P("tagInfo"), Opt("strict", false), Opt("event", nil), Opt("blocked", false)}},
			"(tagInfo, strict=False, event=None, blocked=False)"},
		{Method{Name: "x", Params: []Param{Opt("on", true), Opt("n", 5), Opt("s", "abc"), Opt("l", []any{}), Opt("d", map[string]any{})}},
			"(on=True, n=5, s='abc', l=[], d={})"},
		{Method{Name: "y", VarKw: "kwargs"}, "(**kwargs)"},
	}
	for _, tc := range cases {
		if got := tc.m.ArgDesc(); got != tc.want {
			t.Errorf("%s: ArgDesc = %q, want %q", tc.m.Name, got, tc.want)
		}
	}
}

// listAPIRunroot is _listapi's entry for runroot from a real Koji 1.35.3 hub
// (reference/koji-hub-response-shapes.json, "_listapi[runroot]").
const listAPIRunroot = `[{
  "name": "runroot",
  "doc": " Create a runroot task ",
  "argspec": [["tagInfo", "arch", "command", "channel"], null, "opts", [null], [], null, {}],
  "argdesc": "(tagInfo, arch, command, channel=None, **opts)",
  "args": ["tagInfo", "arch", "command", ["channel", null], "opts"]
}]`

func TestListAPIShape(t *testing.T) {
	r := New()
	r.Register(runrootMethod())
	got, err := json.Marshal(r.ListAPI())
	if err != nil {
		t.Fatal(err)
	}
	var gotV, wantV any
	if err := json.Unmarshal(got, &gotV); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(listAPIRunroot), &wantV); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotV, wantV) {
		t.Errorf("_listapi\n got %s\nwant %s", got, listAPIRunroot)
	}
	m, _ := r.Lookup("runroot")
	// system.methodHelp(runroot) from the same hub.
	if want := "runroot(tagInfo, arch, command, channel=None, **opts)\ndescription:  Create a runroot task "; m.Help() != want {
		t.Errorf("Help = %q, want %q", m.Help(), want)
	}
}

func TestListAPINoDefaultsNoVarKw(t *testing.T) {
	m := Method{Name: "getUser", Params: []Param{P("userInfo")}, Handler: nop}
	b, _ := json.Marshal(m.Entry())
	want := `{"name":"getUser","doc":"","argdesc":"(userInfo)","args":["userInfo"],"argspec":[["userInfo"],null,null,null,[],null,{}]}`
	if string(b) != want {
		t.Errorf("entry\n got %s\nwant %s", b, want)
	}
}

func TestRegistry(t *testing.T) {
	r := New()
	r.Register(Method{Name: "b", Handler: nop}, Method{Name: "a", Handler: nop})
	if got := r.Names(); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Errorf("Names = %v", got)
	}
	if _, ok := r.Lookup("c"); ok {
		t.Error("Lookup of an unknown method succeeded")
	}
	for _, bad := range []Method{{Name: "a", Handler: nop}, {Name: "", Handler: nop}, {Name: "z"}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Register(%+v) did not panic", bad)
				}
			}()
			r.Register(bad)
		}()
	}
}

func TestInvokePassesCall(t *testing.T) {
	var seen *Call
	m := Method{Name: "echo", Params: []Param{P("x")}, Handler: func(ctx context.Context, c *Call) (any, error) {
		seen = c
		return c.String("x")
	}}
	a, err := m.Bind(req(t, `{"args":["hi"]}`))
	if err != nil {
		t.Fatal(err)
	}
	caller := &Caller{UserID: 5, UserName: "alice"}
	out, err := m.Invoke(context.Background(), caller, "rid", a)
	if err != nil || out != "hi" {
		t.Fatalf("Invoke = %v, %v", out, err)
	}
	if seen.Caller != caller || seen.RequestID != "rid" || seen.Method.Name != "echo" || !seen.LoggedIn() {
		t.Errorf("call = %+v", seen)
	}
	if (&Call{}).LoggedIn() {
		t.Error("a call without caller is logged in")
	}
}
