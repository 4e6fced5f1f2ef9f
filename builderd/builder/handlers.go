package builder

import (
	"bytes"
	"context"
	"encoding/json"
	"sort"
	"strconv"
	"sync"

	"github.com/kojibus/kojibus/bus"
)

// Handler is a task method, as Koji's task handler classes: its name, its
// weight (Koji's _taskWeight, default 1.0: the share of the host's capacity
// a run takes) and the function that runs it. The result must marshal to
// JSON; an error fails the task with its fault (bus.AsFault).
type Handler struct {
	Method string
	Weight float64
	Run    func(ctx context.Context, t *Task, a Args) (any, error)
}

// Registry holds the handlers a builder offers (reported to the hub as
// data["methods"] in host.updateHost). Plugins register theirs here too.
type Registry struct {
	mu sync.RWMutex
	m  map[string]*Handler
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{m: map[string]*Handler{}} }

// Register adds or replaces a handler.
func (r *Registry) Register(h Handler) {
	if h.Weight == 0 {
		h.Weight = 1.0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[h.Method] = &h
}

// Lookup returns the handler of a method, nil if there is none.
func (r *Registry) Lookup(method string) *Handler {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.m[method]
}

// Methods lists the handled methods, sorted.
func (r *Registry) Methods() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.m))
	for k := range r.m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// DefaultRegistry has the core handlers: sleep, fork, waitrepo, newRepo.
func DefaultRegistry() *Registry {
	r := NewRegistry()
	r.Register(Handler{Method: "sleep", Weight: 1.0, Run: sleepHandler})
	r.Register(Handler{Method: "fork", Weight: 1.0, Run: forkHandler})
	r.Register(Handler{Method: "waitrepo", Weight: 0.2, Run: waitrepoHandler})
	r.Register(Handler{Method: "newRepo", Weight: 0.1, Run: newRepoHandler})
	return r
}

// Args are a task's request: positional arguments and, as Koji encodes them,
// keyword arguments in a trailing {"__starstar": true, ...} element.
type Args struct {
	Pos []json.RawMessage
	Kw  map[string]json.RawMessage
}

func parseArgs(req []json.RawMessage) Args {
	a := Args{Pos: req}
	if n := len(req); n > 0 {
		last := bytes.TrimSpace(req[n-1])
		if len(last) > 0 && last[0] == '{' {
			var kw map[string]json.RawMessage
			if json.Unmarshal(last, &kw) == nil {
				if star, ok := kw["__starstar"]; ok && string(star) == "true" {
					delete(kw, "__starstar")
					a.Pos, a.Kw = req[:n-1], kw
				}
			}
		}
	}
	return a
}

// Get decodes the argument at position i or named name into out; it
// reports whether the argument was given (a JSON null counts as not given).
func (a Args) Get(i int, name string, out any) (bool, error) {
	var raw json.RawMessage
	switch {
	case i < len(a.Pos):
		raw = a.Pos[i]
	case a.Kw != nil && a.Kw[name] != nil:
		raw = a.Kw[name]
	default:
		return false, nil
	}
	if string(bytes.TrimSpace(raw)) == "null" {
		return false, nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return false, paramError("parameter %s: %v", name, err)
	}
	return true, nil
}

// Number reads a numeric argument (an int, a float or a numeric string).
func (a Args) Number(i int, name string, def float64, required bool) (float64, error) {
	var v any
	ok, err := a.Get(i, name, &v)
	if err != nil {
		return 0, err
	}
	if !ok {
		if required {
			return 0, paramError("missing parameter %s", name)
		}
		return def, nil
	}
	switch x := v.(type) {
	case float64:
		return x, nil
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err == nil {
			return f, nil
		}
	}
	return 0, paramError("parameter %s must be a number, not %v", name, v)
}

func paramError(format string, args ...any) error { return bus.ParameterError(format, args...) }
