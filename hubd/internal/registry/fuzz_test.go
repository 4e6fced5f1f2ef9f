package registry

import (
	"errors"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

// fuzzMethods cover the signature shapes the hub registers: none, required
// only, defaults of every kind, and **kwargs.
var fuzzMethods = []Method{
	{Name: "getKojiVersion", Handler: nop},
	{Name: "getTag", Params: []Param{P("tagInfo"), Opt("strict", false), Opt("event", nil), Opt("blocked", false)}, Handler: nop},
	{Name: "createTag", Params: []Param{P("name"), Opt("parent", nil), Opt("arches", nil), Opt("perm", nil),
		Opt("locked", false), Opt("maven_support", false), Opt("maven_include_all", false), Opt("extra", nil)}, Handler: nop},
	{Name: "runroot", Params: []Param{P("tagInfo"), P("arch"), P("command"), Opt("channel", nil)}, VarKw: "opts", Handler: nop},
	{Name: "listThings", Params: []Param{Opt("n", 5), Opt("s", "x"), Opt("l", []any{}), Opt("d", map[string]any{}), Opt("f", 1.5)}, Handler: nop},
}

// isParamFault reports whether err is the typed error every decoder failure must be.
func isParamFault(err error) bool {
	var f *bus.Fault
	return errors.As(err, &f) && f.Code == bus.CodeParameterError && f.Name == "ParameterError" && f.Message != ""
}

// FuzzDecodeBind feeds arbitrary request bodies through the path every API
// call takes (DecodeRequest, Bind, the Args accessors): nothing may panic and
// every rejection must be a ParameterError.
func FuzzDecodeBind(f *testing.F) {
	for _, seed := range []string{
		``, `{}`, `null`, `[]`, `{"args":[]}`, `{"args":null,"kwargs":null}`,
		`{"args":["f30-build"]}`, `{"args":[1,true,null]}`, `{"args":[{"id":3}],"kwargs":{"strict":true}}`,
		`{"args":["t","x86_64","ls"],"kwargs":{"channel":"runroot","mounts":["/a"],"__starstar":true}}`,
		`{"args":[1.5e300, -0, 9007199254740993, 1e400, "\u0000"]}`,
		`{"kwargs":{"n":"5","s":5,"l":"a","d":[1],"f":"x"}}`,
		`{"args":[[1,"a"],{"name":""},{"id":"x","name":7}]}`,
		`{"args":[1]} {"args":[2]}`, `{"args":[`, `{"args":{}}`, `{"kwargs":[]}`, "\xff\xfe",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := bus.DecodeRequest(body, bus.RequestLimits{})
		if err != nil {
			if !isParamFault(err) {
				t.Fatalf("DecodeRequest: %T %v, want a ParameterError", err, err)
			}
			return
		}
		for i := range fuzzMethods {
			m := &fuzzMethods[i]
			a, err := m.Bind(req)
			if err != nil {
				if !isParamFault(err) {
					t.Fatalf("%s: Bind: %T %v, want a ParameterError", m.Name, err, err)
				}
				continue
			}
			if len(req.Args) > len(m.Params) {
				t.Fatalf("%s: Bind accepted %d positional arguments for %d parameters", m.Name, len(req.Args), len(m.Params))
			}
			for _, p := range m.Params {
				if !p.HasDefault && !a.Has(p.Name) {
					t.Fatalf("%s: Bind accepted a call without required %q", m.Name, p.Name)
				}
				exercise(t, m.Name, a, p.Name)
			}
			if len(a.Extra()) > 0 && m.VarKw == "" {
				t.Fatalf("%s: extra keyword arguments without **kwargs", m.Name)
			}
		}
	})
}

// exercise calls every accessor on one parameter.
func exercise(t *testing.T, method string, a *Args, name string) {
	check := func(what string, err error) {
		if err != nil && !isParamFault(err) {
			t.Fatalf("%s: %s(%q): %T %v, want a ParameterError", method, what, name, err, err)
		}
	}
	_, err := a.String(name)
	check("String", err)
	_, err = a.OptString(name)
	check("OptString", err)
	n, err := a.Int(name)
	check("Int", err)
	if err == nil && (n > 1<<53 || n < -(1<<53)) && !isIntLiteral(a, name) {
		t.Fatalf("%s: Int(%q) = %d from a float beyond 2^53", method, name, n)
	}
	if raw, ok := a.raw(name); ok && !isNull(raw) {
		// The plain-integer shortcut agrees with the decoder.
		fast, fastOK := toInt(raw)
		slow, slowOK := decodeInt(raw)
		if fast != slow || fastOK != slowOK {
			t.Fatalf("%s: toInt(%s) = %d %v, the decoder says %d %v", method, raw, fast, fastOK, slow, slowOK)
		}
	}
	_, err = a.OptInt(name)
	check("OptInt", err)
	_, err = a.Float(name)
	check("Float", err)
	_, err = a.OptFloat(name)
	check("OptFloat", err)
	_, err = a.Bool(name)
	check("Bool", err)
	_, err = a.OptBool(name)
	check("OptBool", err)
	_, err = a.Strings(name)
	check("Strings", err)
	_, err = a.Map(name)
	check("Map", err)
	r, err := a.Ref(name)
	check("Ref", err)
	if err == nil && !r.IsID() && r.Name == "" {
		t.Fatalf("%s: Ref(%q) accepted an empty name", method, name)
	}
	_, err = a.OptRef(name)
	check("OptRef", err)
	var anyV any
	check("Decode", a.Decode(name, &anyV))
	var s struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
	}
	check("Decode(struct)", a.Decode(name, &s))
	_ = a.IsNull(name)
}

// isIntLiteral reports whether the raw value parses as a JSON integer (no
// fraction, no exponent), which Int may take at full int64 range.
func isIntLiteral(a *Args, name string) bool {
	v, _ := a.raw(name)
	for i, c := range v {
		if (c < '0' || c > '9') && !(i == 0 && c == '-') {
			return false
		}
	}
	return len(v) > 0
}
