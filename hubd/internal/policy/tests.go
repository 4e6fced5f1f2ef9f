package policy

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/kojibus/kojibus/bus"
)

func registerGeneric(r *Registry) {
	always := func(v bool) Factory {
		return func([]string) (Test, error) {
			return TestFunc(func(*Eval, Data) (bool, error) { return v, nil }), nil
		}
	}
	r.Register("true", always(true))
	r.Register("all", always(true))
	r.Register("false", always(false))
	r.Register("none", always(false))
	r.Register("has", func(w []string) (Test, error) {
		if len(w) < 2 {
			return nil, fmt.Errorf("Invalid or missing field in policy test")
		}
		return TestFunc(func(_ *Eval, d Data) (bool, error) { _, ok := d[w[1]]; return ok, nil }), nil
	})
	r.Register("bool", func(w []string) (Test, error) {
		if len(w) < 2 {
			return nil, fmt.Errorf("Invalid or missing field in policy test")
		}
		return TestFunc(func(_ *Eval, d Data) (bool, error) { v, ok := d[w[1]]; return ok && bus.PyTruthy(v), nil }), nil
	})
	r.Register("match", matchFactory(""))
	r.Register("target", matchFactory("target"))
	r.Register("match_any", listMatchFactory(false))
	r.Register("match_all", listMatchFactory(true))
	r.Register("compare", compareFactory)
	r.Register("policy", func(w []string) (Test, error) {
		if len(w) != 2 {
			return nil, fmt.Errorf("policy test takes one policy name")
		}
		return TestFunc(func(ev *Eval, d Data) (bool, error) {
			res, err := ev.Apply(w[1], d)
			if err != nil || res == "" {
				return false, err
			}
			word, _, _ := strings.Cut(res, " ")
			switch strings.ToLower(word) {
			case "yes", "true", "allow":
				return true, nil
			}
			return false, nil
		}), nil
	})
}

// matchFactory builds "match FIELD PATTERN..." (field "" ) or a test that
// matches a fixed field ("target PATTERN...").
func matchFactory(field string) Factory {
	return func(w []string) (Test, error) {
		args := w[1:]
		f := field
		if f == "" {
			if len(args) < 1 {
				return nil, fmt.Errorf("Invalid or missing field in policy test")
			}
			f, args = args[0], args[1:]
		}
		pats := args
		return TestFunc(func(_ *Eval, d Data) (bool, error) {
			v, ok := d[f]
			if !ok || v == nil {
				return false, nil
			}
			s, ok := v.(string)
			if !ok {
				return false, bus.GenericError("policy test %s: field %s is not a string (%v)", w[0], f, v)
			}
			return MatchAny(s, pats), nil
		}), nil
	}
}

// listMatchFactory builds match_any / match_all FIELD PATTERN...
func listMatchFactory(all bool) Factory {
	return func(w []string) (Test, error) {
		if len(w) < 2 {
			return nil, fmt.Errorf("Invalid or missing field in policy test")
		}
		f, pats := w[1], w[2:]
		return TestFunc(func(_ *Eval, d Data) (bool, error) {
			items, ok := d[f].([]any)
			if !ok {
				if ss, isStrings := d[f].([]string); isStrings {
					for _, s := range ss {
						items = append(items, s)
					}
					ok = true
				}
			}
			if !ok || len(items) == 0 {
				return false, nil
			}
			for _, it := range items {
				if it == nil {
					if all {
						return false, nil
					}
					continue
				}
				m := MatchAny(pyStr(it), pats)
				if all && !m {
					return false, nil
				}
				if !all && m {
					return true, nil
				}
			}
			return all, nil
		}), nil
	}
}

// pyStr is Python's str() of a JSON-like value, as far as policies need it.
func pyStr(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		if x {
			return "True"
		}
		return "False"
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case nil:
		return "None"
	}
	return fmt.Sprint(v)
}

func compareFactory(w []string) (Test, error) {
	if len(w) != 4 {
		return nil, fmt.Errorf("Invalid comparison in test.")
	}
	field, op, raw := w[1], w[2], w[3]
	var want float64
	if n, err := strconv.ParseInt(raw, 10, 64); err == nil {
		want = float64(n)
	} else if f, err := strconv.ParseFloat(raw, 64); err == nil {
		want = f
	} else {
		return nil, fmt.Errorf("Invalid comparison in test.")
	}
	cmp := map[string]func(a, b float64) bool{
		"<": func(a, b float64) bool { return a < b }, ">": func(a, b float64) bool { return a > b },
		"<=": func(a, b float64) bool { return a <= b }, ">=": func(a, b float64) bool { return a >= b },
		"=": func(a, b float64) bool { return a == b }, "!=": func(a, b float64) bool { return a != b },
	}[op]
	if cmp == nil {
		return nil, fmt.Errorf("Invalid comparison in test.")
	}
	return TestFunc(func(_ *Eval, d Data) (bool, error) {
		v, ok := d[field]
		if !ok {
			return false, nil
		}
		var got float64
		switch x := v.(type) {
		case float64:
			got = x
		case int:
			got = float64(x)
		case int64:
			got = float64(x)
		case bool:
			if x {
				got = 1
			}
		default:
			return false, bus.GenericError("policy test compare: field %s is not a number (%v)", field, v)
		}
		return cmp(got, want), nil
	}), nil
}

// MatchAny reports whether s matches any pattern (Koji's multi_fnmatch).
func MatchAny(s string, patterns []string) bool {
	for _, p := range patterns {
		if Fnmatch(s, p) {
			return true
		}
	}
	return false
}

var fnCache sync.Map // pattern -> *regexp.Regexp

// Fnmatch is Python's fnmatch.fnmatch on POSIX: case-sensitive; '*'
// matches anything (including '/'), '?' one character, [seq] and [!seq]
// sets; an unclosed '[' is a literal.
func Fnmatch(s, pattern string) bool {
	if re, ok := fnCache.Load(pattern); ok {
		return re.(*regexp.Regexp).MatchString(s)
	}
	re := regexp.MustCompile(translate(pattern))
	fnCache.Store(pattern, re)
	return re.MatchString(s)
}

// translate is fnmatch.translate.
func translate(pat string) string {
	var b strings.Builder
	b.WriteString(`(?s)\A`)
	runes := []rune(pat)
	for i := 0; i < len(runes); i++ {
		c := runes[i]
		switch c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		case '[':
			j := i + 1
			if j < len(runes) && runes[j] == '!' {
				j++
			}
			if j < len(runes) && runes[j] == ']' {
				j++
			}
			for j < len(runes) && runes[j] != ']' {
				j++
			}
			if j >= len(runes) {
				b.WriteString(`\[`)
				continue
			}
			set := runes[i+1 : j]
			i = j
			var cls strings.Builder
			if len(set) > 0 && set[0] == '!' {
				cls.WriteString("^")
				set = set[1:]
			}
			for _, r := range set {
				if r == '\\' || r == ']' || r == '[' || r == '^' {
					cls.WriteRune('\\')
				}
				cls.WriteRune(r)
			}
			if cls.Len() == 0 {
				b.WriteString(`[^\x{0}-\x{10FFFF}]`) // an empty set matches nothing
				continue
			}
			b.WriteString("[" + cls.String() + "]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString(`\z`)
	return b.String()
}
