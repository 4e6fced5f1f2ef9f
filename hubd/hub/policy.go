package hub

// Policies: Koji's policy language (hubd/internal/policy) with the hub's
// tests, read from hub.conf's [policy] section and consulted where Koji
// consults them: tag (tag/untag/move), package_list, channel and priority
// (task creation). `checkPolicy` (kojibus) evaluates one without changing
// anything.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
	"github.com/kojibus/kojibus/hubd/internal/policy"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerPolicy) }

// HubConf is what hubd reads from Koji's hub.conf.
type HubConf struct {
	Policies  map[string]string // [policy]: name -> rules
	lines     map[string]int    // the line of each policy's option in the file
	MissingOK bool              // [hub] MissingPolicyOk (default true)
	Plugins   []string          // [hub] Plugins
	Limits    Limits            // [hub] MaxRequestSize, ... (limits.go)
}

// LoadHubConf reads hub.conf; "" gives the defaults.
func LoadHubConf(path string) (*HubConf, error) {
	hc := &HubConf{Policies: map[string]string{}, MissingOK: true, lines: map[string]int{}, Limits: defaultLimits()}
	if path == "" {
		return hc, nil
	}
	f, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if h := f.Section("hub"); h != nil {
		if hc.MissingOK, err = h.Bool("MissingPolicyOk", true); err != nil {
			return nil, err
		}
		hc.Plugins = strings.FieldsFunc(h.String("Plugins", ""), func(r rune) bool { return r == ' ' || r == ',' || r == '\t' || r == '\n' })
		if hc.Limits, err = loadLimits(h); err != nil {
			return nil, err
		}
	}
	if p := f.Section("policy"); p != nil {
		for _, name := range p.Keys() {
			text, _ := p.Get(name)
			hc.Policies[name] = text
			hc.lines[name] = p.Line(name)
		}
	}
	return hc, nil
}

// hubDefaultPolicies are kojibus' defaults for policies Koji leaves to
// MissingPolicyOk: tagging needs the tag permission (or admin) unless the
// configuration says otherwise.
var hubDefaultPolicies = map[string]string{
	"tag": "has_perm admin :: allow\nhas_perm tag :: allow\nall :: deny",
}

// policyEnv is what the hub's tests read: the state as the transaction sees it.
type policyEnv struct {
	v state.View
}

func envView(ev *policy.Eval) (state.View, bool) {
	e, ok := ev.Env.(*policyEnv)
	if !ok {
		return state.View{}, false
	}
	return e.v, true
}

// newPolicyRegistry is the generic tests plus the hub's.
func newPolicyRegistry() *policy.Registry {
	r := policy.NewRegistry()
	// patternTest builds "NAME PATTERN..." over the names a function finds.
	patternTest := func(name string, names func(v state.View, d policy.Data) ([]string, error)) {
		r.Register(name, func(w []string) (policy.Test, error) {
			pats := w[1:]
			return policy.TestFunc(func(ev *policy.Eval, d policy.Data) (bool, error) {
				v, _ := envView(ev)
				got, err := names(v, d)
				if err != nil {
					return false, err
				}
				for _, n := range got {
					if policy.MatchAny(n, pats) {
						return true, nil
					}
				}
				return false, nil
			}), nil
		})
	}
	flagTest := func(name string, f func(v state.View, d policy.Data) (bool, error)) {
		r.Register(name, func([]string) (policy.Test, error) {
			return policy.TestFunc(func(ev *policy.Eval, d policy.Data) (bool, error) {
				v, _ := envView(ev)
				return f(v, d)
			}), nil
		})
	}
	str := func(d policy.Data, key string) []string {
		if s, ok := d[key].(string); ok {
			return []string{s}
		}
		return nil
	}
	patternTest("operation", func(_ state.View, d policy.Data) ([]string, error) { return str(d, "operation"), nil })
	patternTest("method", func(_ state.View, d policy.Data) ([]string, error) { return str(d, "method"), nil })
	patternTest("tag", func(v state.View, d policy.Data) ([]string, error) { return tagName(v, d["tag"]), nil })
	patternTest("fromtag", func(v state.View, d policy.Data) ([]string, error) { return tagName(v, d["fromtag"]), nil })
	patternTest("package", func(v state.View, d policy.Data) ([]string, error) {
		if p, ok := d["package"]; ok && p != nil {
			if pk, ok := lookupPackage(v, refOf(p)); ok {
				return []string{pk.Name}, nil
			}
			if s, ok := p.(string); ok {
				return []string{s}, nil // a new package has no record yet
			}
			return nil, nil
		}
		b, err := policyBuild(v, d)
		if err != nil || b == nil {
			return nil, err
		}
		return []string{b.Name}, nil
	})
	for _, field := range []string{"version", "release"} {
		patternTest(field, func(v state.View, d policy.Data) ([]string, error) {
			if s, ok := d[field].(string); ok {
				return []string{s}, nil
			}
			b, err := policyBuild(v, d)
			if err != nil || b == nil {
				return nil, err
			}
			if field == "version" {
				return []string{b.Version}, nil
			}
			return []string{b.Release}, nil
		})
	}
	patternTest("volume", func(v state.View, d policy.Data) ([]string, error) {
		if s, ok := d["volume"].(string); ok {
			return []string{s}, nil
		}
		b, err := policyBuild(v, d)
		if err != nil || b == nil {
			return nil, err
		}
		return []string{b.VolumeName}, nil
	})
	patternTest("user", func(v state.View, d policy.Data) ([]string, error) {
		if u, ok := lookupUser(v, registry.Ref{ID: idOf(d["user_id"])}); ok {
			return []string{u.Name}, nil
		}
		return nil, nil
	})
	patternTest("has_perm", func(v state.View, d policy.Data) ([]string, error) {
		if u, ok := lookupUser(v, registry.Ref{ID: idOf(d["user_id"])}); ok {
			return u.Perms, nil // admin is not implied (Koji's hasPerm)
		}
		return nil, nil
	})
	// kojibus has no user groups yet: no user is in any.
	patternTest("user_in_group", func(state.View, policy.Data) ([]string, error) { return nil, nil })
	patternTest("source", func(v state.View, d policy.Data) ([]string, error) {
		if s, ok := d["source"].(string); ok {
			return []string{s}, nil
		}
		b, err := policyBuild(v, d)
		if err != nil || b == nil || b.Source == nil {
			return nil, err
		}
		return []string{*b.Source}, nil
	})
	patternTest("hastag", func(v state.View, d policy.Data) ([]string, error) {
		b, err := policyBuild(v, d)
		if err != nil || b == nil {
			return nil, err
		}
		var names []string
		for _, tid := range tagIDsOfBuild(v, b.ID) {
			names = append(names, tagName(v, tid)...)
		}
		return names, nil
	})
	buildTags := func(v state.View, d policy.Data) []int64 {
		var ids []int64
		for _, key := range []string{"build_tag", "buildtag"} {
			if t, ok := lookupTag(v, refOf(d[key])); ok && d[key] != nil {
				ids = append(ids, t.ID)
			}
		}
		if list, ok := d["build_tags"].([]any); ok {
			for _, x := range list {
				if t, ok := lookupTag(v, refOf(x)); ok {
					ids = append(ids, t.ID)
				}
			}
		}
		if tname, ok := d["target"].(string); ok {
			if tgt, ok := lookupTarget(v, registry.Ref{Name: tname}); ok {
				ids = append(ids, tgt.BuildTag)
			}
		}
		return ids
	}
	patternTest("buildtag", func(v state.View, d policy.Data) ([]string, error) {
		var names []string
		for _, id := range buildTags(v, d) {
			names = append(names, tagName(v, id)...)
		}
		return names, nil
	})
	patternTest("buildtag_inherits_from", func(v state.View, d policy.Data) ([]string, error) {
		var names []string
		for _, id := range buildTags(v, d) {
			for _, anc := range tagChain(v, id) {
				if anc != id {
					names = append(names, tagName(v, anc)...)
				}
			}
		}
		return names, nil
	})
	patternTest("buildtype", func(v state.View, d policy.Data) ([]string, error) {
		if list, ok := d["btypes"].([]any); ok {
			var out []string
			for _, x := range list {
				out = append(out, fmt.Sprint(x))
			}
			return out, nil
		}
		b, err := policyBuild(v, d)
		if err != nil || b == nil {
			return nil, err
		}
		return []string{"rpm"}, nil // kojibus builds are rpm builds
	})
	flagTest("skip_tag", func(_ state.View, d policy.Data) (bool, error) { return bus.PyTruthy(d["skip_tag"]), nil })
	flagTest("is_child_task", func(_ state.View, d policy.Data) (bool, error) { return bus.PyTruthy(d["parent"]), nil })
	flagTest("is_new_package", func(v state.View, d policy.Data) (bool, error) {
		p, ok := d["package"]
		if !ok {
			return false, bus.GenericError("policy requires package data")
		}
		_, exists := lookupPackage(v, refOf(p))
		return !exists, nil
	})
	flagTest("is_draft", func(v state.View, d policy.Data) (bool, error) {
		if x, ok := d["draft"]; ok {
			return bus.PyTruthy(x), nil
		}
		b, err := policyBuild(v, d)
		return err == nil && b != nil && b.Draft, err
	})
	flagTest("is_build_owner", func(v state.View, d policy.Data) (bool, error) {
		b, err := policyBuild(v, d)
		if err != nil || b == nil {
			return false, err
		}
		return b.OwnerID == idOf(d["user_id"]), nil
	})
	flagTest("imported", func(v state.View, d policy.Data) (bool, error) {
		b, err := policyBuild(v, d)
		if err != nil {
			return false, err
		}
		if b == nil {
			return false, bus.GenericError("policy requires build data")
		}
		return false, nil // kojibus builds list no rpms or archives without a buildroot
	})
	registerSidetagTests(r)
	return r
}

// registerSidetagTests adds the sidetag plugin's tests: is_sidetag (the
// data's tag is a sidetag) and is_sidetag_owner [tag|fromtag|both] (the
// user owns it; both: the tag and the fromtag). A missing field gives
// false, not an error.
func registerSidetagTests(r *policy.Registry) {
	sidetag := func(v state.View, x any) (*tagRecord, bool) {
		if x == nil {
			return nil, false
		}
		t, ok := lookupTag(v, refOf(x))
		if !ok || !bus.PyTruthy(t.Extra["sidetag"]) {
			return nil, false
		}
		return t, true
	}
	r.Register("is_sidetag", func(w []string) (policy.Test, error) {
		return policy.TestFunc(func(ev *policy.Eval, d policy.Data) (bool, error) {
			v, _ := envView(ev)
			_, ok := sidetag(v, d["tag"])
			return ok, nil
		}), nil
	})
	r.Register("is_sidetag_owner", func(w []string) (policy.Test, error) {
		fields := []string{"tag"}
		if len(w) > 1 {
			switch w[1] {
			case "tag", "fromtag":
				fields = []string{w[1]}
			case "both":
				fields = []string{"tag", "fromtag"}
			default:
				return nil, fmt.Errorf("is_sidetag_owner: expected tag, fromtag or both, got %s", w[1])
			}
		}
		return policy.TestFunc(func(ev *policy.Eval, d policy.Data) (bool, error) {
			v, _ := envView(ev)
			uid := idOf(d["user_id"])
			for _, f := range fields {
				t, ok := sidetag(v, d[f])
				if !ok || idOf(t.Extra["sidetag_user_id"]) != uid || uid == 0 {
					return false, nil
				}
			}
			return true, nil
		}), nil
	})
}

// idOf reads an id from policy data (int64 from the hub, float64 from JSON).
func idOf(x any) int64 {
	switch v := x.(type) {
	case int64:
		return v
	case int:
		return int64(v)
	case float64:
		return int64(v)
	case *int64:
		if v != nil {
			return *v
		}
	}
	return 0
}

// refOf turns an id or a name from policy data into a reference.
func refOf(x any) registry.Ref {
	if s, ok := x.(string); ok {
		return registry.Ref{Name: s}
	}
	return registry.Ref{ID: idOf(x)}
}

func tagName(v state.View, x any) []string {
	if x == nil || idOf(x) == 0 && fmt.Sprint(x) == "0" {
		return nil
	}
	if t, ok := lookupTag(v, refOf(x)); ok {
		return []string{t.Name}
	}
	return nil
}

func policyBuild(v state.View, d policy.Data) (*bus.Build, error) {
	x, ok := d["build"]
	if !ok || x == nil {
		return nil, nil
	}
	if s, ok := x.(string); ok {
		id := int64(0)
		if ok, _ := v.GetJSON(buildNVRKey(s), &id); !ok {
			return nil, nil
		}
		b, _ := buildByID(v, id)
		return b, nil
	}
	b, _ := buildByID(v, idOf(x))
	return b, nil
}

// policies returns the set in force.
func (s *Server) policySet() *policy.Set {
	s.policyMu.RLock()
	defer s.policyMu.RUnlock()
	return s.policies
}

// applyPolicies puts the policies of a hub configuration in force; a
// policy that does not parse is refused and the running ones stay.
func (s *Server) applyPolicies(hc *HubConf) error {
	policies := map[string]string{}
	for name, text := range hubDefaultPolicies {
		policies[name] = text
	}
	for name, text := range hc.Policies {
		policies[name] = text
	}
	set, err := policy.NewSet(policies, s.policyReg, hc.MissingOK)
	var pe *policy.ParseError
	if errors.As(err, &pe) && hc.lines[pe.Policy] > 0 {
		// The policy's text starts on its option's line.
		return &config.ParseError{File: s.cfg.HubConf, Line: hc.lines[pe.Policy] + max(pe.Line, 1) - 1,
			Msg: fmt.Sprintf("[policy] %s: %s", pe.Policy, pe.Reason)}
	}
	if err != nil {
		return fmt.Errorf("hub configuration %s: %w", s.cfg.HubConf, err)
	}
	s.policyMu.Lock()
	s.policies = set
	s.policyMu.Unlock()
	return nil
}

// ReloadConfig reads the hub configuration again (SIGHUP).
func (s *Server) ReloadConfig(ctx context.Context) error {
	hc, err := LoadHubConf(s.cfg.HubConf)
	if err == nil {
		err = s.applyPolicies(hc)
	}
	if err != nil {
		s.log.Error("configuration not reloaded; the running policies stay", "err", err)
		return err
	}
	s.log.Info("configuration reloaded", "file", s.cfg.HubConf)
	return nil
}

// assertPolicy is Koji's assert_policy inside a transaction.
func (s *Server) assertPolicy(v state.View, name string, data policy.Data, c *registry.Call, force bool) error {
	isAdmin := c != nil && c.LoggedIn() && viewHasPerm(v, c.Caller.UserID, "admin", false)
	return s.policySet().Assert(name, data, &policyEnv{v: v}, force, isAdmin)
}

// applyPolicy is ruleset.apply: the action, "" when no rule matched.
func (s *Server) applyPolicy(v state.View, name string, data policy.Data) (string, error) {
	ev := &policy.Eval{Set: s.policySet(), Env: &policyEnv{v: v}}
	if ev.Set.Policy(name) == nil {
		return "", nil
	}
	return ev.Apply(name, data)
}

// applyVolumePolicy is Koji's check_volume_policy(strict=False) when a
// build is created: the policy names the volume; no match, or a volume
// that does not exist, gives DEFAULT (logged). kojibus has only DEFAULT.
func (s *Server) applyVolumePolicy(v state.View, b *bus.Build) error {
	data := policy.Data{"package": b.Name, "version": b.Version, "release": b.Release, "user_id": b.OwnerID, "draft": b.Draft}
	if b.Source != nil {
		data["source"] = *b.Source
	}
	res, err := s.applyPolicy(v, "volume", data)
	if err != nil {
		return err
	}
	name := strings.TrimSpace(res)
	if name != "" && name != "DEFAULT" {
		s.log.Error("volume policy returned an unknown volume; using DEFAULT", "volume", name, "build", b.Name+"-"+b.Version+"-"+b.Release)
	}
	b.VolumeID, b.VolumeName = 0, "DEFAULT"
	return nil
}

func (s *Server) registerPolicy() {
	s.reg.Register(registry.Method{
		Name: "host.assertPolicy", Doc: "Assert a policy for a builder task (ActionNotAllowed when denied)",
		Params: []registry.Param{registry.P("name"), registry.P("data"), registry.Opt("force", false)},
		Access: registry.HostOnly, Handler: s.hostPolicy(true),
	}, registry.Method{
		Name: "host.evalPolicy", Doc: "Evaluate a policy for a builder task: the action, or None",
		Params: []registry.Param{registry.P("name"), registry.P("data")},
		Access: registry.HostOnly, Handler: s.hostPolicy(false),
	}, registry.Method{
		Name: "checkPolicy", Doc: "kojibus: evaluate a policy against data without acting: {result, reason, rule, trace}",
		Params: []registry.Param{registry.P("name"), registry.P("data"), registry.Opt("force", false)},
		Perm:   "admin", Handler: s.checkPolicyCall,
	})
}

// hostPolicy serves host.assertPolicy and host.evalPolicy: builder tasks
// consult build_rpm, build_from_srpm, build_from_repo_id and
// build_from_scm through them, as kojid does.
func (s *Server) hostPolicy(assert bool) registry.Handler {
	return func(ctx context.Context, c *registry.Call) (any, error) {
		name, err := c.String("name")
		if err != nil {
			return nil, err
		}
		data, err := policyDataArg(c)
		if err != nil {
			return nil, err
		}
		var out any
		err = s.store.Read(func(v state.View) error {
			if assert {
				force, err := c.Bool("force")
				if err != nil {
					return err
				}
				return s.assertPolicy(v, name, data, c, force)
			}
			res, err := s.applyPolicy(v, name, data)
			if res != "" {
				out = res
			}
			return err
		})
		return out, err
	}
}

// policyDataArg reads the data argument of the policy calls (None: empty).
func policyDataArg(c *registry.Call) (map[string]any, error) {
	var data map[string]any
	if err := c.Decode("data", &data); err != nil {
		return nil, err
	}
	if data == nil {
		data = map[string]any{}
	}
	return data, nil
}

// knownPolicies are the policy names Koji and its plugins consult;
// checkPolicy refuses any other name not in hub.conf (a typo, not a policy).
var knownPolicies = []string{"tag", "package_list", "channel", "priority", "volume", "build_from_srpm",
	"build_from_repo_id", "build_from_scm", "build_rpm", "cg_import", "vm", "draft_promotion", "sidetag", "runroot"}

// actionPolicies answer with an action (a channel, a priority, a volume)
// instead of allow or deny.
var actionPolicies = map[string]bool{"channel": true, "priority": true, "volume": true}

func (s *Server) checkPolicyCall(ctx context.Context, c *registry.Call) (any, error) {
	name, err := c.String("name")
	if err != nil {
		return nil, err
	}
	data, err := policyDataArg(c)
	if err != nil {
		return nil, err
	}
	force, err := c.Bool("force")
	if err != nil {
		return nil, err
	}
	set := s.policySet()
	if set.Policy(name) == nil && !slices.Contains(knownPolicies, name) {
		return nil, bus.GenericError("No such policy: %s", name)
	}
	var d policy.Decision
	err = s.store.Read(func(v state.View) error {
		// names for the id fields, as kojictl gives them
		for _, key := range []string{"tag", "fromtag", "build_tag"} {
			if n, ok := data[key].(string); ok {
				t, ok := lookupTag(v, registry.Ref{Name: n})
				if !ok {
					return bus.GenericError("No such tag: %s", n)
				}
				data[key] = t.ID
			}
		}
		// the caller is the policy's user unless the data names one
		_, hasUser := data["user"]
		if _, ok := data["user_id"]; !ok && !hasUser {
			data["user_id"] = c.Caller.UserID
		}
		if n, ok := data["user"].(string); ok {
			u, ok := lookupUser(v, registry.Ref{Name: n})
			if !ok {
				return bus.GenericError("No such user: %s", n)
			}
			data["user_id"] = u.ID
		}
		if actionPolicies[name] {
			ev := &policy.Eval{Set: set, Env: &policyEnv{v: v}}
			d = policy.Decision{Allowed: true, Reason: "no such policy: the hub's default"}
			if set.Policy(name) == nil {
				return nil
			}
			action, err := ev.Apply(name, data)
			d.Result, d.Trace, d.Rule, d.Reason = action, ev.Trace, ev.LastRule, ""
			if action == "" {
				d.Reason = "not covered by policy: the hub's default"
			}
			return err
		}
		var err error
		isAdmin := viewHasPerm(v, c.Caller.UserID, "admin", false)
		d, err = set.Check(name, data, &policyEnv{v: v}, "deny", force, isAdmin)
		return err
	})
	if err != nil {
		return nil, err
	}
	if set.Policy(name) == nil && !actionPolicies[name] && !strings.HasPrefix(d.Reason, "missing") {
		d.Reason = "no such policy: allowed by MissingPolicyOk"
	}
	trace := d.Trace
	if trace == nil {
		trace = []string{}
	}
	return map[string]any{"result": d.Result, "allowed": d.Allowed, "action": actionPolicies[name], "reason": d.Reason, "rule": d.Rule, "trace": trace}, nil
}
