package hub

import (
	"context"
	"sort"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
)

// registerAll registers every core method; each domain file has its register function.
func (s *Server) registerAll() {
	s.registerSystem()
	s.registerAuth()
	for _, r := range domainRegistrars {
		r(s)
	}
}

// domainRegistrars are added by the domain files (hosts.go, tags.go, ...) in init.
var domainRegistrars []func(*Server)

func (s *Server) registerSystem() {
	s.reg.Register(
		registry.Method{
			Name: "_listapi", Doc: "List every API method with its signature",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return s.reg.ListAPI(), nil },
		},
		registry.Method{
			Name: "system.listMethods", Doc: "List the names of every API method",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return s.reg.Names(), nil },
		},
		registry.Method{
			Name: "system.methodHelp", Doc: "Describe one API method",
			Params: []registry.Param{registry.P("method")},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				name, err := c.String("method")
				if err != nil {
					return nil, err
				}
				m, ok := s.reg.Lookup(name)
				if !ok {
					return "", nil
				}
				return m.Help(), nil
			},
		},
		registry.Method{
			Name: "getAPIVersion", Doc: "Return the API version",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return 1, nil },
		},
		registry.Method{
			Name: "getKojiVersion", Doc: "Return the Koji version this hub is compatible with",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return Version, nil },
		},
		registry.Method{
			Name: "hello", Doc: "Say hello", VarKw: "args",
			Handler: func(ctx context.Context, c *registry.Call) (any, error) { return "Hello World", nil },
		},
		registry.Method{
			Name: "echo", Doc: "Return the arguments given", Params: []registry.Param{registry.Opt("value", nil)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				var v any
				return v, c.Decode("value", &v)
			},
		},
	)
}

func sortByID[T any](items []T, id func(T) int64) {
	sort.Slice(items, func(i, j int) bool { return id(items[i]) < id(items[j]) })
}

var _ = bus.GenericError
