package policy

import (
	"fmt"
	"strings"

	"github.com/kojibus/kojibus/bus"
)

// Set is the policies in force: the configured ones, over Koji's defaults.
type Set struct {
	policies map[string]*Policy
	// MissingOK is hub.conf's MissingPolicyOk (default true): a policy
	// with neither configuration nor default allows.
	MissingOK bool
}

// Defaults are Koji's built-in policies (kojixmlrpc._default_policies),
// used for a policy the configuration does not give.
var Defaults = map[string]string{
	"build_rpm":          "all :: allow",
	"build_from_srpm":    "has_perm admin :: allow\nall :: deny Only admin can do this via default policy",
	"build_from_repo_id": "has_perm admin :: allow\nall :: deny Only admin can do this via default policy",
	"build_from_scm":     "has_perm admin :: allow\nall :: deny Only admin can do this via default policy",
	"package_list":       "has_perm admin :: allow\nhas_perm tag :: allow\nall :: deny Only admin/tag can do this via default policy",
	"channel":            "has req_channel :: req\nis_child_task :: parent\nall :: use default",
	"vm":                 "has_perm admin win-admin :: allow\nall :: deny Only admin/win-admin can do this via default policy",
	"cg_import":          "all :: allow",
	"volume":             "all :: DEFAULT",
	"priority":           "all :: stay",
	"draft_promotion":    "has_perm draft-promoter :: allow\nis_build_owner :: allow\nall :: deny Only draft-promoter and build owner can do this via default policy",
}

// NewSet parses configured policies (name -> text) over the defaults.
// Default policies whose tests reg lacks are left out.
func NewSet(configured map[string]string, reg *Registry, missingOK bool) (*Set, error) {
	s := &Set{policies: map[string]*Policy{}, MissingOK: missingOK}
	for name, text := range Defaults {
		if p, err := Parse(name, text, reg); err == nil {
			s.policies[name] = p
		}
	}
	for name, text := range configured {
		p, err := Parse(name, text, reg)
		if err != nil {
			return nil, err
		}
		s.policies[name] = p
	}
	return s, nil
}

// Policy returns a policy in force, or nil.
func (s *Set) Policy(name string) *Policy { return s.policies[name] }

// Eval is one evaluation: the set (for the policy test), the caller's
// environment (the hub's view of its state) and the trace.
type Eval struct {
	Set *Set
	Env any
	// Trace records each rule tried and whether it matched, in order.
	Trace []string
	// LastRule is the rule that decided (Koji's "[rule: ...]").
	LastRule string
	depth    []string
}

// Apply runs a policy: the action of the first matching rule, "" when no
// rule matches (Koji's None).
func (ev *Eval) Apply(name string, data Data) (string, error) {
	p := ev.Set.policies[name]
	if p == nil {
		return "", bus.GenericError("no such policy: %s", name)
	}
	for _, n := range ev.depth {
		if n == name {
			return "", bus.GenericError("encountered policy loop at %s", name)
		}
	}
	ev.depth = append(ev.depth, name)
	defer func() { ev.depth = ev.depth[:len(ev.depth)-1] }()
	return ev.apply(p.rules, data)
}

func (ev *Eval) apply(rules []*Rule, data Data) (string, error) {
	for _, r := range rules {
		ok := true
		for _, t := range r.tests {
			res, err := t.Run(ev, data)
			if err != nil {
				return "", err
			}
			if !res {
				ok = false
				break
			}
		}
		if ok == r.negate {
			ev.Trace = append(ev.Trace, fmt.Sprintf("line %d: %s -> no match", r.Line, r.Text))
			continue
		}
		ev.Trace = append(ev.Trace, fmt.Sprintf("line %d: %s -> match", r.Line, r.Text))
		if r.block == nil && r.action != "" {
			ev.LastRule = r.Text
			return r.action, nil
		}
		if res, err := ev.apply(r.block, data); err != nil || res != "" {
			return res, err
		}
		// no rule of the block matched: fall through to the next rule
	}
	return "", nil
}

// Decision is what Check decided.
type Decision struct {
	Allowed bool
	Result  string // allow, deny (or the policy's word that was neither)
	Reason  string
	Rule    string // the rule that decided
	Trace   []string
}

// Check is Koji's check_policy: the first word of the action is allow or
// deny, the rest the reason; no match gives defaultResult ("deny" in Koji)
// with "not covered by policy"; a missing policy allows if MissingOK. With
// force, an admin is allowed anyway.
func (s *Set) Check(name string, data Data, env any, defaultResult string, force, isAdmin bool) (Decision, error) {
	d := Decision{}
	ev := &Eval{Set: s, Env: env}
	if s.policies[name] == nil {
		d.Result, d.Reason = "allow", ""
		if !s.MissingOK {
			d.Result, d.Reason = "deny", "missing policy"
		}
	} else {
		action, err := ev.Apply(name, data)
		if err != nil {
			return d, err
		}
		d.Trace, d.Rule = ev.Trace, ev.LastRule
		if action == "" {
			d.Result, d.Reason = defaultResult, "not covered by policy"
		} else {
			word, rest, _ := strings.Cut(action, " ")
			d.Result, d.Reason = strings.ToLower(word), strings.TrimSpace(rest)
		}
	}
	if d.Result == "allow" {
		d.Allowed = true
		return d, nil
	}
	if d.Result != "deny" {
		d.Reason = "error in policy"
	}
	if force && isAdmin {
		d.Allowed = true
	}
	return d, nil
}

// Assert is Koji's assert_policy: Check, and ActionNotAllowed
// "policy violation (NAME)[: REASON]" unless allowed.
func (s *Set) Assert(name string, data Data, env any, force, isAdmin bool) error {
	d, err := s.Check(name, data, env, "deny", force, isAdmin)
	if err != nil {
		return err
	}
	if d.Allowed {
		return nil
	}
	msg := fmt.Sprintf("policy violation (%s)", name)
	if d.Reason != "" {
		msg += ": " + d.Reason
	}
	return bus.ActionNotAllowed("%s", msg)
}
