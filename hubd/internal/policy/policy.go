// Package policy is Koji's policy language (koji/policy.py): the parser,
// the evaluator with Koji's fall-through rules, the generic tests, and the
// registry through which the hub and plugins add theirs.
//
// A policy is a list of rules, one per line:
//
//	test [args] [&& test [args] ...] :: action
//	test [args] [&& test [args] ...] !! action     (the conjunction is false)
//	test ... :: {                                  (a nested block; '}' alone on its line)
//
// Rules are tried top-down and the first whose tests hold decides. A block
// whose rules all fail falls through to the next rule after it. '#' starts
// a comment.
package policy

import (
	"fmt"
	"strings"
)

// Data is what a policy decides on (Koji's policy data dict).
type Data map[string]any

// Test is one built test (Koji's BaseSimpleTest instance).
type Test interface {
	Run(ev *Eval, data Data) (bool, error)
}

// TestFunc adapts a function to Test.
type TestFunc func(ev *Eval, data Data) (bool, error)

// Run runs f.
func (f TestFunc) Run(ev *Eval, data Data) (bool, error) { return f(ev, data) }

// Factory builds a test from its words (name first), when the policy is
// parsed; an error there is a parse error of its line.
type Factory func(words []string) (Test, error)

// Registry holds the tests a policy may use.
type Registry struct {
	tests map[string]Factory
}

// NewRegistry returns a registry with Koji's generic tests.
func NewRegistry() *Registry {
	r := &Registry{tests: map[string]Factory{}}
	registerGeneric(r)
	return r
}

// Register adds (or replaces) a test.
func (r *Registry) Register(name string, f Factory) { r.tests[name] = f }

// Names lists the registered tests.
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.tests))
	for n := range r.tests {
		out = append(out, n)
	}
	return out
}

// ParseError is a policy that does not parse: its name, line and why.
type ParseError struct {
	Policy string
	Line   int // 1-based line within the policy text; 0: the whole text
	Reason string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("policy %s: %s", e.Policy, e.Reason)
	}
	return fmt.Sprintf("policy %s, line %d: %s", e.Policy, e.Line, e.Reason)
}

// Rule is one rule of a policy.
type Rule struct {
	Text   string // the rule as written (Koji's "[rule: ...]")
	Line   int
	tests  []Test
	negate bool
	action string  // a leaf rule's action
	block  []*Rule // a block's rules
}

// Policy is a parsed policy.
type Policy struct {
	Name  string
	Text  string
	rules []*Rule
}

// Parse parses a policy's text with the tests of reg.
func Parse(name, text string, reg *Registry) (*Policy, error) {
	lines := strings.Split(text, "\n")
	type frame struct {
		rules *[]*Rule
		open  int // line of the rule that opened it
	}
	top := []*Rule{}
	stack := []frame{{rules: &top}}
	for i, raw := range lines {
		lineNo := i + 1
		line := raw
		if c := strings.Index(line, "#"); c >= 0 {
			line = line[:c]
		}
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if line == "}" {
			if len(stack) == 1 {
				return nil, &ParseError{name, lineNo, "'}' closes no block"}
			}
			stack = stack[:len(stack)-1]
			continue
		}
		rule, opens, err := parseRule(line, reg)
		if err != nil {
			return nil, &ParseError{name, lineNo, err.Error()}
		}
		rule.Line = lineNo
		cur := stack[len(stack)-1].rules
		*cur = append(*cur, rule)
		if opens {
			stack = append(stack, frame{rules: &rule.block, open: lineNo})
		}
	}
	if len(stack) > 1 {
		return nil, &ParseError{name, stack[len(stack)-1].open, "block not closed: '}' missing"}
	}
	return &Policy{Name: name, Text: text, rules: top}, nil
}

// parseRule parses "tests :: action" or "tests !! action" (Koji splits at
// the last '::', else at the last '!!').
func parseRule(line string, reg *Registry) (*Rule, bool, error) {
	r := &Rule{Text: line}
	var cond, action string
	if i := strings.LastIndex(line, "::"); i >= 0 {
		cond, action = line[:i], line[i+2:]
	} else if i := strings.LastIndex(line, "!!"); i >= 0 {
		cond, action = line[:i], line[i+2:]
		r.negate = true
	} else {
		return nil, false, fmt.Errorf("no '::' or '!!' in rule: %s", line)
	}
	action = strings.TrimSpace(action)
	opens := action == "{"
	if !opens {
		if action == "" {
			return nil, false, fmt.Errorf("rule has no action: %s", line)
		}
		if strings.ContainsAny(action, "{}") {
			return nil, false, fmt.Errorf("a block opens with '{' alone after '::' and closes with '}' alone on its line: %s", line)
		}
		r.action = action
	}
	for _, part := range strings.Split(cond, "&&") {
		words := strings.Fields(part)
		if len(words) == 0 {
			return nil, false, fmt.Errorf("empty test in rule: %s", line)
		}
		f, ok := reg.tests[words[0]]
		if !ok {
			return nil, false, fmt.Errorf("missing test handler: %s", words[0])
		}
		t, err := f(words)
		if err != nil {
			return nil, false, err
		}
		r.tests = append(r.tests, t)
	}
	return r, opens, nil
}
