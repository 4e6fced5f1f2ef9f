// Package config is kojibus' one configuration loader: Koji's INI files
// (hub.conf, kojictl profiles, builder credentials, runroot.conf,
// protonmsg.conf) read with Python configparser's rules, so files written for
// Koji read the same here.
package config

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// ParseError names the file, the line and what is wrong.
type ParseError struct {
	File string
	Line int
	Msg  string
}

func (e *ParseError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return fmt.Sprintf("%s, line %d: %s", e.File, e.Line, e.Msg)
}

// File is a parsed INI file: sections in file order, options lower-cased
// (configparser's optionxform), values with continuation lines joined by "\n".
type File struct {
	Name     string
	sections []*Section
	byName   map[string]*Section
	Defaults *Section
}

// Section is one [name] block.
type Section struct {
	Name  string
	keys  []string
	vals  map[string]string
	lines map[string]int
	file  *File
}

// Load reads and parses a file.
func Load(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse parses INI text.
func Parse(name string, data []byte) (*File, error) {
	f := &File{Name: name, byName: map[string]*Section{}}
	f.Defaults = &Section{Name: "DEFAULT", vals: map[string]string{}, lines: map[string]int{}, file: f}
	var cur *Section
	var lastKey string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		raw := strings.TrimRight(sc.Text(), " \t\r")
		if lineNo == 1 {
			raw = strings.TrimPrefix(raw, "\ufeff")
		}
		trimmed := strings.TrimSpace(raw)
		if trimmed == "" {
			lastKey = "" // a blank line ends a multi-line value
			continue
		}
		if trimmed[0] == '#' || trimmed[0] == ';' {
			continue
		}
		indented := raw[0] == ' ' || raw[0] == '\t'
		if indented && lastKey != "" && cur != nil {
			cur.vals[lastKey] += "\n" + stripInlineComment(trimmed)
			continue
		}
		if trimmed[0] == '[' {
			end := strings.IndexByte(trimmed, ']')
			if end < 0 {
				return nil, &ParseError{name, lineNo, "section header without ']'"}
			}
			sname := strings.TrimSpace(trimmed[1:end])
			if sname == "" {
				return nil, &ParseError{name, lineNo, "empty section name"}
			}
			if sname == "DEFAULT" {
				cur = f.Defaults
			} else {
				if _, dup := f.byName[sname]; dup {
					return nil, &ParseError{name, lineNo, fmt.Sprintf("section %q already exists", sname)}
				}
				cur = &Section{Name: sname, vals: map[string]string{}, lines: map[string]int{}, file: f}
				f.byName[sname] = cur
				f.sections = append(f.sections, cur)
			}
			lastKey = ""
			continue
		}
		if cur == nil {
			return nil, &ParseError{name, lineNo, "option outside of any section"}
		}
		sep := strings.IndexAny(trimmed, "=:")
		if sep <= 0 {
			return nil, &ParseError{name, lineNo, fmt.Sprintf("expected 'option = value', got %q", trimmed)}
		}
		key := strings.ToLower(strings.TrimSpace(trimmed[:sep]))
		if key == "" {
			return nil, &ParseError{name, lineNo, "empty option name"}
		}
		if _, dup := cur.vals[key]; dup {
			return nil, &ParseError{name, lineNo, fmt.Sprintf("option %q in section %q already exists", key, cur.Name)}
		}
		cur.vals[key] = stripInlineComment(strings.TrimSpace(trimmed[sep+1:]))
		cur.keys = append(cur.keys, key)
		cur.lines[key] = lineNo
		lastKey = key
	}
	if err := sc.Err(); err != nil {
		// the scanner stopped inside the line after the last one it returned
		return nil, &ParseError{name, lineNo + 1, err.Error()}
	}
	for _, s := range append(f.sections, f.Defaults) {
		for k, v := range s.vals {
			s.vals[k] = strings.TrimRight(v, "\n")
		}
	}
	return f, nil
}

// configparser keeps inline comments unless configured; Koji's files put
// them on their own lines. We strip " #..." and " ;..." as Koji's docs read.
func stripInlineComment(v string) string {
	for _, marker := range []string{" #", "\t#", " ;", "\t;"} {
		if i := strings.Index(v, marker); i >= 0 {
			v = strings.TrimSpace(v[:i])
		}
	}
	return v
}

// Sections returns the section names in file order (DEFAULT excluded).
func (f *File) Sections() []string {
	out := make([]string, len(f.sections))
	for i, s := range f.sections {
		out[i] = s.Name
	}
	return out
}

// Section returns a section, nil if absent.
func (f *File) Section(name string) *Section { return f.byName[name] }

// Keys returns the options set in the section, in file order.
func (s *Section) Keys() []string {
	if s == nil {
		return nil
	}
	keys := append([]string{}, s.keys...)
	return keys
}

// AllKeys returns the section's options plus inherited DEFAULT ones, sorted.
func (s *Section) AllKeys() []string {
	set := map[string]bool{}
	for _, k := range s.Keys() {
		set[k] = true
	}
	if s != nil && s.file != nil && s != s.file.Defaults {
		for _, k := range s.file.Defaults.keys {
			set[k] = true
		}
	}
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Get returns an option (falling back to DEFAULT).
func (s *Section) Get(key string) (string, bool) {
	if s == nil {
		return "", false
	}
	key = strings.ToLower(key)
	if v, ok := s.vals[key]; ok {
		return v, true
	}
	if s.file != nil && s != s.file.Defaults {
		v, ok := s.file.Defaults.vals[key]
		return v, ok
	}
	return "", false
}

// Line returns the line of an option in the file (0 when absent).
func (s *Section) Line(key string) int {
	if s == nil {
		return 0
	}
	return s.lines[strings.ToLower(key)]
}

// String returns an option or def.
func (s *Section) String(key, def string) string {
	if v, ok := s.Get(key); ok {
		return v
	}
	return def
}

func (s *Section) errf(key, format string, args ...any) error {
	line := 0
	if s != nil {
		line = s.lines[strings.ToLower(key)]
		if _, own := s.vals[strings.ToLower(key)]; !own && s.file != nil {
			line = s.file.Defaults.lines[strings.ToLower(key)] // inherited from [DEFAULT]
		}
	}
	name := ""
	if s != nil && s.file != nil {
		name = s.file.Name
	}
	return &ParseError{File: name, Line: line, Msg: fmt.Sprintf("[%s] %s: ", s.Name, key) + fmt.Sprintf(format, args...)}
}

// Bool reads a configparser boolean: 1/yes/true/on, 0/no/false/off.
func (s *Section) Bool(key string, def bool) (bool, error) {
	v, ok := s.Get(key)
	if !ok {
		return def, nil
	}
	switch strings.ToLower(v) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return def, s.errf(key, "not a boolean: %q", v)
}

// Int reads an integer option.
func (s *Section) Int(key string, def int) (int, error) {
	v, ok := s.Get(key)
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return def, s.errf(key, "not an integer: %q", v)
	}
	return n, nil
}

// IntRange reads an integer option that must lie in [lo, hi].
func (s *Section) IntRange(key string, def, lo, hi int) (int, error) {
	n, err := s.Int(key, def)
	if err == nil && (n < lo || n > hi) {
		return def, s.errf(key, "%d is out of range [%d, %d]", n, lo, hi)
	}
	return n, err
}

// Float reads a number option.
func (s *Section) Float(key string, def float64) (float64, error) {
	v, ok := s.Get(key)
	if !ok {
		return def, nil
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil {
		return def, s.errf(key, "not a number: %q", v)
	}
	return n, nil
}

// Write renders sections as INI text (used for the profiles and credentials files hubd writes).
func Write(sections ...KV) []byte {
	var b strings.Builder
	for i, s := range sections {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "[%s]\n", s.Section)
		for _, kv := range s.Pairs {
			fmt.Fprintf(&b, "%s = %s\n", kv[0], kv[1])
		}
	}
	return []byte(b.String())
}

// KV is a section to write: ordered key/value pairs.
type KV struct {
	Section string
	Pairs   [][2]string
}

// SetValue returns data with key of section set to value, every other line
// kept as it was; changed is false when the value was already so. The key
// must exist (files hubd writes are rewritten, never extended).
func SetValue(data []byte, section, key, value string) (out []byte, changed bool, err error) {
	f, err := Parse("", data)
	if err != nil {
		return nil, false, err
	}
	sec := f.Section(section)
	old, ok := sec.Get(key)
	n := sec.Line(key) - 1
	lines := strings.Split(string(data), "\n")
	if !ok || n < 0 || n >= len(lines) {
		return nil, false, fmt.Errorf("no %s in [%s]", key, section)
	}
	if old == value {
		return data, false, nil
	}
	if strings.ContainsAny(value, "\r\n") {
		return nil, false, fmt.Errorf("%s: a value of one line only", key)
	}
	// the old value's continuation lines go with it
	end := n + 1
	for end < len(lines) {
		t := strings.TrimSpace(lines[end])
		if t == "" || (t[0] != '#' && t[0] != ';' && lines[end][0] != ' ' && lines[end][0] != '\t') {
			break
		}
		end++
	}
	kept := append([]string{}, lines[:n]...)
	kept = append(kept, key+" = "+value)
	for _, l := range lines[n+1 : end] {
		if t := strings.TrimSpace(l); t[0] == '#' || t[0] == ';' {
			kept = append(kept, l)
		}
	}
	kept = append(kept, lines[end:]...)
	return []byte(strings.Join(kept, "\n")), true, nil
}
