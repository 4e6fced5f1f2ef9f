// Package registry is the hub's one API registry: every method is registered
// once with its Koji name, parameters, docstring and permission, and the same
// entry serves koji.api.<method> on NATS, the XML-RPC endpoint, _listapi,
// system.listMethods and system.methodHelp.
package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/kojibus/kojibus/bus"
)

// Access says who may call a method before its handler runs.
type Access string

const (
	// Anyone may call it, logged in or not (getTag, hello, ...).
	Anyone Access = ""
	// LoggedIn requires a valid session.
	LoggedIn Access = "login"
	// HostOnly requires a host session (the host.* calls of builders).
	HostOnly Access = "host-session"
)

// Param is one parameter of a method, as Koji's Python signature has it.
type Param struct {
	Name       string
	Default    any  // the default value when HasDefault (nil is Python's None)
	HasDefault bool // false: required
}

// P is a required parameter.
func P(name string) Param { return Param{Name: name} }

// Opt is a parameter with a default.
func Opt(name string, def any) Param { return Param{Name: name, Default: def, HasDefault: true} }

// Handler runs a method call.
type Handler func(ctx context.Context, c *Call) (any, error)

// Method is one API method.
type Method struct {
	Name   string
	Doc    string
	Params []Param
	// VarKw names a **kwargs parameter collecting unknown keyword arguments ("" = none).
	VarKw string
	// Access is checked before the handler; Perm, when set, is a Koji
	// permission the caller must hold (admin satisfies any).
	Access Access
	Perm   string
	// Write marks methods that change state; they honour Koji-Request-Id.
	Write bool
	// AnswersRepeats marks writes that answer a repeated call from the state
	// itself (a run's close, say), so they keep no request record: one
	// write less for each call.
	AnswersRepeats bool
	Handler        Handler
}

// ArgDesc renders the signature as koji list-api does: "(tagInfo, arch, command, channel=None, **opts)".
func (m *Method) ArgDesc() string {
	parts := make([]string, 0, len(m.Params)+1)
	for _, p := range m.Params {
		if p.HasDefault {
			parts = append(parts, p.Name+"="+pyRepr(p.Default))
		} else {
			parts = append(parts, p.Name)
		}
	}
	if m.VarKw != "" {
		parts = append(parts, "**"+m.VarKw)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// pyRepr renders a default the way Python's repr would.
func pyRepr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case string:
		return "'" + x + "'"
	case []any:
		return "[]"
	case map[string]any:
		return "{}"
	default:
		return fmt.Sprint(x)
	}
}

// Registry holds every method.
type Registry struct {
	mu      sync.RWMutex
	methods map[string]*Method
}

// New returns an empty registry.
func New() *Registry { return &Registry{methods: map[string]*Method{}} }

// Register adds methods; registering a name twice is a programming error.
func (r *Registry) Register(ms ...Method) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := range ms {
		m := ms[i]
		if m.Name == "" || m.Handler == nil {
			panic("registry: method without name or handler")
		}
		if _, dup := r.methods[m.Name]; dup {
			panic("registry: method registered twice: " + m.Name)
		}
		r.methods[m.Name] = &m
	}
}

// Lookup returns a method by name.
func (r *Registry) Lookup(name string) (*Method, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.methods[name]
	return m, ok
}

// Names returns every method name, sorted.
func (r *Registry) Names() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	names := make([]string, 0, len(r.methods))
	for n := range r.methods {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// APIEntry is one element of _listapi, in Koji's shape.
type APIEntry struct {
	Name    string `json:"name"`
	Doc     string `json:"doc"`
	ArgDesc string `json:"argdesc"`
	Args    []any  `json:"args"`
	ArgSpec []any  `json:"argspec"`
}

// ListAPI returns _listapi's answer.
func (r *Registry) ListAPI() []APIEntry {
	names := r.Names()
	out := make([]APIEntry, 0, len(names))
	for _, n := range names {
		m, _ := r.Lookup(n)
		out = append(out, m.Entry())
	}
	return out
}

// Entry describes m as _listapi does.
func (m *Method) Entry() APIEntry {
	args := []any{}
	names := []any{}
	defaults := []any{}
	for _, p := range m.Params {
		names = append(names, p.Name)
		if p.HasDefault {
			args = append(args, []any{p.Name, p.Default})
			defaults = append(defaults, p.Default)
		} else {
			args = append(args, p.Name)
		}
	}
	var varkw any
	if m.VarKw != "" {
		args = append(args, m.VarKw)
		varkw = m.VarKw
	}
	var defs any
	if len(defaults) > 0 {
		defs = defaults
	}
	return APIEntry{
		Name:    m.Name,
		Doc:     m.Doc,
		ArgDesc: m.ArgDesc(),
		Args:    args,
		ArgSpec: []any{names, nil, varkw, defs, []any{}, nil, map[string]any{}},
	}
}

// Help is system.methodHelp's answer.
func (m *Method) Help() string {
	return m.Name + m.ArgDesc() + "\ndescription: " + m.Doc
}

// Bind matches a request's positional and keyword arguments to the method's
// parameters as Python would, with Python's error texts as ParameterErrors.
func (m *Method) Bind(req *bus.Request) (*Args, error) {
	a := &Args{method: m.Name, values: map[string]json.RawMessage{}, params: m.Params}
	if len(req.Args) > len(m.Params) {
		return nil, bus.ParameterError("%s() takes %s but %s given", m.Name, m.takesText(), wasGiven(len(req.Args)))
	}
	for i, v := range req.Args {
		a.values[m.Params[i].Name] = v
	}
	for k, v := range req.Kwargs {
		if k == "__starstar" {
			continue // koji's marker for an encoded kwargs dict
		}
		known := false
		for _, p := range m.Params {
			if p.Name == k {
				known = true
				break
			}
		}
		switch {
		case known:
			if _, dup := a.values[k]; dup {
				return nil, bus.ParameterError("%s() got multiple values for argument '%s'", m.Name, k)
			}
			a.values[k] = v
		case m.VarKw != "":
			if a.extra == nil {
				a.extra = map[string]json.RawMessage{}
			}
			a.extra[k] = v
		default:
			return nil, bus.ParameterError("%s() got an unexpected keyword argument '%s'", m.Name, k)
		}
	}
	var missing []string
	for _, p := range m.Params {
		if _, ok := a.values[p.Name]; !ok && !p.HasDefault {
			missing = append(missing, "'"+p.Name+"'")
		}
	}
	if len(missing) > 0 {
		word := "argument"
		if len(missing) > 1 {
			word = "arguments"
		}
		return nil, bus.ParameterError("%s() missing %d required positional %s: %s", m.Name, len(missing), word, joinPy(missing))
	}
	return a, nil
}

func joinPy(items []string) string {
	switch len(items) {
	case 1:
		return items[0]
	case 2:
		return items[0] + " and " + items[1]
	}
	return strings.Join(items[:len(items)-1], ", ") + ", and " + items[len(items)-1]
}

// takesText renders how many positional arguments m takes as Python's
// TypeError does: "1 positional argument", "from 3 to 4 positional arguments".
func (m *Method) takesText() string {
	required := 0
	for _, p := range m.Params {
		if !p.HasDefault {
			required++
		}
	}
	if required < len(m.Params) {
		return fmt.Sprintf("from %d to %d positional arguments", required, len(m.Params))
	}
	if len(m.Params) == 1 {
		return "1 positional argument"
	}
	return fmt.Sprintf("%d positional arguments", len(m.Params))
}

func wasGiven(n int) string {
	if n == 1 {
		return "1 was"
	}
	return fmt.Sprintf("%d were", n)
}
