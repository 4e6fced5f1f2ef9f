package config

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// FuzzParse: no input makes Parse panic; every rejection is a *ParseError
// naming a line of the input; what parses can be read through every
// accessor, and (single-line values) written back with Write and re-read to
// the same values.
func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	for _, seed := range []string{
		"", "[a]\n", "[a]\nk = v\n", "[DEFAULT]\nx: 1\n[s]\ny = 2\n", "k = v\n", "[a\n", "[]\n",
		"[a]\nk = v\n  more\n\tand more\n", "[a]\nk = 1 # c\nj = 2 ; c\n", "\ufeff[a]\r\nk=v\r\n",
		"[a]\nx = 1\nX = 2\n", "[a]\n[a]\n", "[a]\n=\n", "[a]\n:\n", "  [a]\n  k = v\n", "[a] junk\nk=v",
		"[a]\nk = v\n\n  k2 = w\n", "[a]\nb = maybe\nn = 1e3\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.conf", data)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("%T %v, want *ParseError", err, err)
			}
			lines := bytes.Count(data, []byte("\n")) + 1
			if pe.File != "fuzz.conf" || pe.Line < 1 || pe.Line > lines || pe.Msg == "" {
				t.Fatalf("ParseError %+v does not name a line of the %d-line input", pe, lines)
			}
			return
		}
		sections := []*Section{file.Defaults}
		for _, name := range file.Sections() {
			s := file.Section(name)
			if s == nil || s.Name != name {
				t.Fatalf("Section(%q) = %v", name, s)
			}
			sections = append(sections, s)
		}
		multiline := false
		for _, s := range sections {
			for _, k := range s.AllKeys() {
				v, ok := s.Get(k)
				if !ok {
					t.Fatalf("[%s] %q listed but not readable", s.Name, k)
				}
				if strings.Contains(v, "\n") {
					multiline = true
				}
				// typed accessors either succeed or name the option's line
				for _, err := range []error{second(s.Bool(k, false)), second(s.Int(k, 0)), second(s.Float(k, 0))} {
					var pe *ParseError
					if err != nil && (!errors.As(err, &pe) || pe.Line < 1) {
						t.Fatalf("[%s] %s: %v does not name a line", s.Name, k, err)
					}
				}
			}
		}
		if multiline {
			return // Write renders single-line values only
		}
		var kvs []KV
		for _, s := range sections {
			kv := KV{Section: s.Name}
			for _, k := range s.Keys() {
				v, _ := s.Get(k)
				kv.Pairs = append(kv.Pairs, [2]string{k, v})
			}
			kvs = append(kvs, kv)
		}
		out := Write(kvs...)
		back, err := Parse("back.conf", out)
		if err != nil {
			t.Fatalf("re-parse of written file: %v\n%s", err, out)
		}
		for _, s := range sections {
			bs := back.Section(s.Name)
			if s.Name == "DEFAULT" {
				bs = back.Defaults
			}
			for _, k := range s.Keys() {
				v, _ := s.Get(k)
				if bv, ok := bs.Get(k); !ok || bv != v {
					t.Fatalf("[%s] %s: %q written, %q (%v) read back\n%s", s.Name, k, v, bv, ok, out)
				}
			}
		}
	})
}
