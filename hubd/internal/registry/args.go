package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"strconv"

	"github.com/kojibus/kojibus/bus"
)

// Args are a call's arguments bound to parameter names. Every accessor
// returns a ParameterError naming the parameter when the value has the wrong type.
type Args struct {
	method string
	params []Param
	values map[string]json.RawMessage
	extra  map[string]json.RawMessage
}

// Call is one API call as a handler sees it.
type Call struct {
	*Args
	Method    *Method
	Caller    *Caller
	RequestID string
}

// Caller is who makes a call; nil fields mean anonymous.
type Caller struct {
	SessionID int64
	UserID    int64
	UserName  string
	HostID    int64 // non-zero for a host session
}

// LoggedIn reports whether the call has a session.
func (c *Call) LoggedIn() bool { return c.Caller != nil && c.Caller.UserID != 0 }

func (a *Args) raw(name string) (json.RawMessage, bool) {
	v, ok := a.values[name]
	if ok {
		return v, true
	}
	for _, p := range a.params {
		if p.Name == name && p.HasDefault {
			switch d := p.Default.(type) { // the usual defaults, without reflection
			case nil:
				return jsonNull, true
			case bool:
				return strconv.AppendBool(nil, d), true
			}
			b, _ := json.Marshal(p.Default)
			return b, true
		}
	}
	return nil, false
}

// Has reports whether the caller passed name explicitly.
func (a *Args) Has(name string) bool {
	_, ok := a.values[name]
	return ok
}

// IsNull reports whether name is None (or absent with a None default).
func (a *Args) IsNull(name string) bool {
	v, ok := a.raw(name)
	return !ok || isNull(v)
}

func isNull(v json.RawMessage) bool {
	return len(v) == 0 || bytes.Equal(bytes.TrimSpace(v), []byte("null"))
}

func (a *Args) typeErr(name, want string) error {
	return paramErr("%s(): parameter '%s' must be %s", a.method, name, want)
}

// Decode decodes name into out (any JSON shape).
func (a *Args) Decode(name string, out any) error {
	v, ok := a.raw(name)
	if !ok {
		return paramErr("%s(): no parameter '%s'", a.method, name)
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		return paramErr("%s(): parameter '%s': %v", a.method, name, err)
	}
	return nil
}

// String returns a required string.
func (a *Args) String(name string) (string, error) {
	v, _ := a.raw(name)
	var s string
	if isNull(v) || json.Unmarshal(v, &s) != nil {
		return "", a.typeErr(name, "a string")
	}
	return s, nil
}

// OptString returns a string or nil (None).
func (a *Args) OptString(name string) (*string, error) {
	if a.IsNull(name) {
		return nil, nil
	}
	s, err := a.String(name)
	return &s, err
}

// Int returns a required integer (JSON numbers without a fraction).
func (a *Args) Int(name string) (int64, error) {
	v, _ := a.raw(name)
	n, ok := toInt(v)
	if !ok {
		return 0, a.typeErr(name, "an integer")
	}
	return n, nil
}

// OptInt returns an integer or nil (None).
func (a *Args) OptInt(name string) (*int64, error) {
	if a.IsNull(name) {
		return nil, nil
	}
	n, err := a.Int(name)
	return &n, err
}

var jsonNull = json.RawMessage("null")

func toInt(v json.RawMessage) (int64, bool) {
	if isNull(v) {
		return 0, false
	}
	// A plain integer, as clients send ids: no decoder needed.
	if len(v) > 0 && len(v) <= 18 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9') {
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			return n, true
		}
	}
	return decodeInt(v)
}

// decodeInt is toInt by the JSON decoder: any number that is a whole one
// (a float only up to 2^53, where floats still count every integer).
func decodeInt(v json.RawMessage) (int64, bool) {
	var num json.Number
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if dec.Decode(&num) != nil {
		return 0, false
	}
	if n, err := num.Int64(); err == nil {
		return n, true
	}
	f, err := num.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// Float returns a required number.
func (a *Args) Float(name string) (float64, error) {
	v, _ := a.raw(name)
	var f float64
	if isNull(v) || json.Unmarshal(v, &f) != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, a.typeErr(name, "a number")
	}
	return f, nil
}

// OptFloat returns a number or nil (None).
func (a *Args) OptFloat(name string) (*float64, error) {
	if a.IsNull(name) {
		return nil, nil
	}
	f, err := a.Float(name)
	return &f, err
}

// Bool returns a boolean; like Python, None and 0/1 are accepted.
func (a *Args) Bool(name string) (bool, error) {
	v, _ := a.raw(name)
	if isNull(v) {
		return false, nil
	}
	switch string(v) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	var b bool
	if json.Unmarshal(v, &b) == nil {
		return b, nil
	}
	if n, ok := toInt(v); ok && (n == 0 || n == 1) {
		return n == 1, nil
	}
	return false, a.typeErr(name, "a boolean")
}

// OptBool returns a boolean or nil (None).
func (a *Args) OptBool(name string) (*bool, error) {
	if a.IsNull(name) {
		return nil, nil
	}
	b, err := a.Bool(name)
	return &b, err
}

// Strings returns a list of strings; a single string is accepted as a one-element list.
func (a *Args) Strings(name string) ([]string, error) {
	v, _ := a.raw(name)
	if isNull(v) {
		return nil, nil
	}
	var list []string
	if json.Unmarshal(v, &list) == nil {
		return list, nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return []string{s}, nil
	}
	return nil, a.typeErr(name, "a list of strings")
}

// Map returns a JSON object (dict) or nil (None).
func (a *Args) Map(name string) (map[string]any, error) {
	v, _ := a.raw(name)
	if isNull(v) {
		return nil, nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(v))
	dec.UseNumber()
	if dec.Decode(&m) != nil {
		return nil, a.typeErr(name, "a dict")
	}
	return m, nil
}

// Ref is Koji's "info" argument: an id (int) or a name (string).
type Ref struct {
	ID   int64
	Name string
}

// IsID reports whether the reference is by id.
func (r Ref) IsID() bool { return r.Name == "" }

// String renders the reference as Koji's error texts do (repr of the
// value), a long name clipped (bus.Clip).
func (r Ref) String() string {
	if r.IsID() {
		return strconv.FormatInt(r.ID, 10)
	}
	return "'" + bus.Clip(r.Name) + "'"
}

// Ref returns an id-or-name argument; a dict with "id" or "name" is accepted as Koji does.
func (a *Args) Ref(name string) (Ref, error) {
	v, _ := a.raw(name)
	if n, ok := toInt(v); ok {
		return Ref{ID: n}, nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil && s != "" {
		return Ref{Name: s}, nil
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(v, &m) == nil {
		if id, ok := toInt(m["id"]); ok {
			return Ref{ID: id}, nil
		}
		if json.Unmarshal(m["name"], &s) == nil && s != "" {
			return Ref{Name: s}, nil
		}
	}
	return Ref{}, a.typeErr(name, "an id or a name")
}

// OptRef returns a reference or nil (None).
func (a *Args) OptRef(name string) (*Ref, error) {
	if a.IsNull(name) {
		return nil, nil
	}
	r, err := a.Ref(name)
	return &r, err
}

// Extra returns the **kwargs collected for VarKw methods.
func (a *Args) Extra() map[string]json.RawMessage { return a.extra }

// Invoke binds req to m and runs it; the one entry point every transport uses.
func (m *Method) Invoke(ctx context.Context, caller *Caller, requestID string, args *Args) (any, error) {
	return m.Handler(ctx, &Call{Args: args, Method: m, Caller: caller, RequestID: requestID})
}
