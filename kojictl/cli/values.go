package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"github.com/kojibus/kojibus/bus"
)

// decodeJSON decodes keeping numbers as json.Number, so integers stay integers.
func decodeJSON(data []byte, out any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(out)
}

// decodeJSONStrict decodes exactly one JSON value (json.loads: trailing data is an error).
func decodeJSONStrict(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("extra data after JSON value")
	}
	return v, nil
}

// argFilter is koji's arg_filter(): an int, else a float, else the literals
// None/True/False, else (with parseJSON) JSON, else the string itself.
// -x key=value of add-tag/edit-tag and the plain arguments of call use it.
func argFilter(s string, parseJSON bool) any {
	if n, ok := pyInt(s); ok {
		return n
	}
	if f, ok := pyFloat(s); ok {
		return f
	}
	switch s {
	case "None":
		return nil
	case "True":
		return true
	case "False":
		return false
	}
	if parseJSON {
		if v, err := decodeJSONStrict([]byte(s)); err == nil {
			return v
		}
	}
	return s
}

// pyInt parses as Python's int(): surrounding whitespace, a sign, digits
// with single underscores between them.
func pyInt(s string) (int64, bool) {
	n, isInt, err := pyIntParse(s)
	return n, isInt && err == nil
}

// intOverflows reports whether s is a Python int literal beyond 64 bits
// (Python takes it; Koji's XML-RPC marshaller refuses it).
func intOverflows(s string) bool {
	_, isInt, err := pyIntParse(s)
	return isInt && err != nil
}

// pyIntParse: isInt says s has the syntax of an int; err that it does not fit 64 bits.
func pyIntParse(s string) (n int64, isInt bool, err error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, false, nil
	}
	body := strings.TrimLeft(t, "+-")
	if len(t)-len(body) > 1 || body == "" || body[0] == '_' || body[len(body)-1] == '_' || strings.Contains(body, "__") {
		return 0, false, nil
	}
	for _, r := range body {
		if (r < '0' || r > '9') && r != '_' {
			return 0, false, nil
		}
	}
	n, err = strconv.ParseInt(strings.ReplaceAll(t, "_", ""), 10, 64)
	return n, true, err
}

// pyFloat parses as Python's float(), for finite values (JSON cannot carry the others).
func pyFloat(s string) (float64, bool) {
	t := strings.TrimSpace(s)
	if t == "" || strings.ContainsAny(t, "xXpP") || strings.Contains(t, "__") {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(t, "_", ""), 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// parseExtra turns -x key=value options into an extra dict (koji's add-tag/edit-tag).
func parseExtra(opts []string) (map[string]any, error) {
	extra := map[string]any{}
	for _, x := range opts {
		key, value, ok := strings.Cut(x, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("Invalid extra option, expected key=value: %s", x)
		}
		if _, dup := extra[key]; dup {
			return nil, fmt.Errorf("Duplicate extra key: %s", key)
		}
		extra[key] = argFilter(value, true)
	}
	return extra, nil
}

// parseArches is koji.parse_arches: commas or spaces in, one space between arches out.
func parseArches(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, ",", " ")), " ")
}

// fnmatch is Python's fnmatch.fnmatch on names: * and ? match any character, dots included.
func fnmatch(name, pattern string) bool {
	// path.Match treats '/' specially; tag names have none worth caring about,
	// but escape it so a '/' is literal on both sides.
	ok, err := path.Match(strings.ReplaceAll(pattern, "/", "\x00"), strings.ReplaceAll(name, "/", "\x00"))
	return err == nil && ok
}

// pyRepr renders a decoded JSON value as Python's repr would.
func pyRepr(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case bool:
		if x {
			return "True"
		}
		return "False"
	case json.Number:
		return x.String()
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e16 {
			return strconv.FormatFloat(x, 'f', 1, 64)
		}
		return strconv.FormatFloat(x, 'g', -1, 64)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case string:
		return bus.PyStr(x)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pyRepr(e)
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		keys := sortedKeys(x)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = bus.PyStr(k) + ": " + pyRepr(x[k])
		}
		return "{" + strings.Join(parts, ", ") + "}"
	default:
		b, _ := json.Marshal(x)
		var y any
		if decodeJSON(b, &y) == nil {
			if _, same := y.(map[string]any); same || y == nil {
				return pyRepr(y)
			}
			return pyRepr(y)
		}
		return fmt.Sprint(x)
	}
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// pformat is a small pprint.pformat: the repr on one line when it fits in
// width, else one element per line, aligned as pprint aligns them.
func pformat(v any, indent, width int) string {
	r := pyRepr(v)
	if len(r)+indent <= width {
		return r
	}
	switch x := v.(type) {
	case []any:
		if len(x) == 0 {
			return r
		}
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = pformat(e, indent+1, width)
		}
		return "[" + strings.Join(parts, ",\n"+strings.Repeat(" ", indent+1)) + "]"
	case map[string]any:
		if len(x) == 0 {
			return r
		}
		keys := sortedKeys(x)
		parts := make([]string, len(keys))
		for i, k := range keys {
			kr := bus.PyStr(k) + ": "
			parts[i] = kr + pformat(x[k], indent+1+len(kr), width)
		}
		return "{" + strings.Join(parts, ",\n"+strings.Repeat(" ", indent+1)) + "}"
	}
	return r
}

// parsePyLiteral is ast.literal_eval for the values call --python accepts:
// numbers, strings, True/False/None, lists, tuples and dicts.
func parsePyLiteral(s string) (any, error) {
	p := &pyParser{s: s}
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("invalid Python literal %q: trailing text at offset %d", s, p.i)
	}
	return v, nil
}

type pyParser struct {
	s string
	i int
}

func (p *pyParser) space() {
	for p.i < len(p.s) && strings.ContainsRune(" \t\n\r", rune(p.s[p.i])) {
		p.i++
	}
}

func (p *pyParser) errf(format string, args ...any) error {
	return fmt.Errorf("invalid Python literal %q: %s", p.s, fmt.Sprintf(format, args...))
}

func (p *pyParser) value() (any, error) {
	p.space()
	if p.i >= len(p.s) {
		return nil, p.errf("unexpected end")
	}
	switch c := p.s[p.i]; {
	case c == '[':
		p.i++
		return p.seq(']')
	case c == '(':
		p.i++
		return p.seq(')')
	case c == '{':
		p.i++
		return p.dict()
	case c == '\'' || c == '"':
		return p.str()
	case c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		start := p.i
		for p.i < len(p.s) && (unicode.IsLetter(rune(p.s[p.i])) || p.s[p.i] == '_') {
			p.i++
		}
		switch p.s[start:p.i] {
		case "None":
			return nil, nil
		case "True":
			return true, nil
		case "False":
			return false, nil
		}
		return nil, p.errf("unexpected %q at offset %d", p.s[start:max(p.i, start+1)], start)
	}
}

func (p *pyParser) seq(end byte) (any, error) {
	out := []any{}
	for {
		p.space()
		if p.i < len(p.s) && p.s[p.i] == end {
			p.i++
			return out, nil
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.space()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == end {
			p.i++
			return out, nil
		}
		return nil, p.errf("expected ',' or %q at offset %d", end, p.i)
	}
}

func (p *pyParser) dict() (any, error) {
	out := map[string]any{}
	for {
		p.space()
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			return out, nil
		}
		k, err := p.value()
		if err != nil {
			return nil, err
		}
		var key string
		switch kk := k.(type) {
		case string:
			key = kk
		case nil, bool, json.Number:
			key = pyRepr(kk) // JSON objects only have string keys
		default:
			return nil, p.errf("unsupported dict key %s", pyRepr(k))
		}
		p.space()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return nil, p.errf("expected ':' at offset %d", p.i)
		}
		p.i++
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		out[key] = v
		p.space()
		if p.i < len(p.s) && p.s[p.i] == ',' {
			p.i++
			continue
		}
		if p.i < len(p.s) && p.s[p.i] == '}' {
			p.i++
			return out, nil
		}
		return nil, p.errf("expected ',' or '}' at offset %d", p.i)
	}
}

func (p *pyParser) str() (any, error) {
	q := p.s[p.i]
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == q:
			p.i++
			return b.String(), nil
		case c == '\\' && p.i+1 < len(p.s):
			p.i++
			e := p.s[p.i]
			p.i++
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '0':
				b.WriteByte(0)
			case '\\', '\'', '"':
				b.WriteByte(e)
			case 'x', 'u', 'U':
				n := map[byte]int{'x': 2, 'u': 4, 'U': 8}[e]
				if p.i+n > len(p.s) {
					return nil, p.errf("truncated \\%c escape", e)
				}
				r, err := strconv.ParseUint(p.s[p.i:p.i+n], 16, 32)
				if err != nil {
					return nil, p.errf("bad \\%c escape", e)
				}
				b.WriteRune(rune(r))
				p.i += n
			default:
				b.WriteByte('\\')
				b.WriteByte(e)
			}
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return nil, p.errf("unterminated string")
}

func (p *pyParser) number() (any, error) {
	start := p.i
	if p.s[p.i] == '-' || p.s[p.i] == '+' {
		p.i++
	}
	for p.i < len(p.s) && strings.ContainsRune("0123456789._eE+-", rune(p.s[p.i])) {
		if (p.s[p.i] == '+' || p.s[p.i] == '-') && p.s[p.i-1] != 'e' && p.s[p.i-1] != 'E' {
			break
		}
		p.i++
	}
	text := p.s[start:p.i]
	if n, ok := pyInt(text); ok {
		return json.Number(strconv.FormatInt(n, 10)), nil
	}
	if f, ok := pyFloat(text); ok {
		return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
	}
	return nil, p.errf("bad number %q", text)
}
