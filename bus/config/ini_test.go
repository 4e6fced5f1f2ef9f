package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// A koji-style profile with what configparser accepts: comments, both
// separators, case-insensitive options, DEFAULT, continuation lines.
const sample = "\ufeff# koji profile\n" +
	"[DEFAULT]\n" +
	"topdir = /mnt/koji\n" +
	"anon_retry = yes\n" +
	"\n" +
	"[koji]\n" +
	"; the hub\n" +
	"Server = nats://127.0.0.1:4222   # inline comment\n" +
	"authtype: password\n" +
	"weight = 1.5\n" +
	"retries=3\n" +
	"mounts = /a\n" +
	"    /b ; second\n" +
	"\t/c\n" +
	"\n" +
	"  indented_after_blank = kept as option\n" +
	"empty =\n" +
	"\n" +
	"[runroot path0]\n" +
	"mountpoint = /mnt/koji\n" +
	"anon_retry = off\n"

func TestParseSample(t *testing.T) {
	f, err := Parse("koji.conf", []byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Sections(); !reflect.DeepEqual(got, []string{"koji", "runroot path0"}) {
		t.Errorf("Sections = %q", got)
	}
	k := f.Section("koji")
	want := map[string]string{
		"server":               "nats://127.0.0.1:4222",
		"SERVER":               "nats://127.0.0.1:4222",
		"authtype":             "password",
		"weight":               "1.5",
		"retries":              "3",
		"mounts":               "/a\n/b\n/c",
		"indented_after_blank": "kept as option",
		"empty":                "",
		"topdir":               "/mnt/koji", // from DEFAULT
	}
	for key, w := range want {
		if v, ok := k.Get(key); !ok || v != w {
			t.Errorf("[koji] %s = %q (%v), want %q", key, v, ok, w)
		}
	}
	if got := k.Keys(); !reflect.DeepEqual(got, []string{"server", "authtype", "weight", "retries", "mounts", "indented_after_blank", "empty"}) {
		t.Errorf("Keys = %q", got)
	}
	if got := k.AllKeys(); !reflect.DeepEqual(got, []string{"anon_retry", "authtype", "empty", "indented_after_blank", "mounts", "retries", "server", "topdir", "weight"}) {
		t.Errorf("AllKeys = %q", got)
	}
	if b, err := k.Bool("anon_retry", false); err != nil || !b {
		t.Errorf("Bool(anon_retry) from DEFAULT = %v %v", b, err)
	}
	p := f.Section("runroot path0")
	if b, err := p.Bool("anon_retry", true); err != nil || b {
		t.Errorf("section value must override DEFAULT: %v %v", b, err)
	}
	if n, err := k.Int("retries", 0); err != nil || n != 3 {
		t.Errorf("Int = %d %v", n, err)
	}
	if x, err := k.Float("weight", 0); err != nil || x != 1.5 {
		t.Errorf("Float = %v %v", x, err)
	}
	if got := k.String("nosuch", "dflt"); got != "dflt" {
		t.Errorf("String default = %q", got)
	}
	if f.Section("nosuch") != nil {
		t.Error("absent section is not nil")
	}
	var none *Section
	if _, ok := none.Get("x"); ok || none.Keys() != nil {
		t.Error("a nil section must read as empty")
	}
	if f.Defaults.String("topdir", "") != "/mnt/koji" {
		t.Error("DEFAULT not readable")
	}
}

func TestTypedAccessorsName(t *testing.T) {
	f, err := Parse("hub.conf", []byte("[hub]\n\nflag = maybe\ncount = many\nratio = 1,5\n"))
	if err != nil {
		t.Fatal(err)
	}
	s := f.Section("hub")
	for _, tc := range []struct {
		err  error
		line int
		want string
	}{
		{second(s.Bool("flag", false)), 3, `hub.conf, line 3: [hub] flag: not a boolean: "maybe"`},
		{second(s.Int("count", 0)), 4, `hub.conf, line 4: [hub] count: not an integer: "many"`},
		{second(s.Float("ratio", 0)), 5, `hub.conf, line 5: [hub] ratio: not a number: "1,5"`},
	} {
		var pe *ParseError
		if !errors.As(tc.err, &pe) || pe.Line != tc.line {
			t.Errorf("%v: want a ParseError at line %d", tc.err, tc.line)
			continue
		}
		if tc.err.Error() != tc.want {
			t.Errorf("error %q, want %q", tc.err, tc.want)
		}
	}
	for _, v := range []string{"1", "yes", "true", "on", "YES", "True"} {
		f, _ := Parse("", []byte("[s]\nb = "+v+"\n"))
		if b, err := f.Section("s").Bool("b", false); err != nil || !b {
			t.Errorf("Bool(%q) = %v %v", v, b, err)
		}
	}
	for _, v := range []string{"0", "no", "false", "off", "Off"} {
		f, _ := Parse("", []byte("[s]\nb = "+v+"\n"))
		if b, err := f.Section("s").Bool("b", true); err != nil || b {
			t.Errorf("Bool(%q) = %v %v", v, b, err)
		}
	}
}

func second[T any](_ T, err error) error { return err }

func TestParseErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		name string
		text string
		line int
		msg  string
	}{
		{"option before section", "# c\nkey = v\n", 2, "option outside of any section"},
		{"unclosed header", "[koji]\na = 1\n[oops\n", 3, "section header without ']'"},
		{"empty header", "\n\n[ ]\n", 3, "empty section name"},
		{"duplicate section", "[a]\n[b]\n[a]\n", 3, `section "a" already exists`},
		{"duplicate option", "[a]\nX = 1\nx = 2\n", 3, `option "x" in section "a" already exists`},
		{"no separator", "[a]\njust words\n", 2, `expected 'option = value', got "just words"`},
		{"empty option name", "[a]\n= v\n", 2, `expected 'option = value', got "= v"`},
		{"blank key before colon", "[a]\n  \n :v\n", 3, `expected 'option = value', got ":v"`},
		{"line too long", "[a]\nk = " + strings.Repeat("x", 2<<20) + "\n", 2, "token too long"},
		{"first line too long", strings.Repeat("x", 2<<20), 1, "token too long"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("p.conf", []byte(tc.text))
			if err == nil {
				t.Fatalf("parsed: %v", f.Sections())
			}
			var pe *ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("%T %v, want *ParseError", err, err)
			}
			if pe.File != "p.conf" || pe.Line != tc.line || !strings.Contains(pe.Msg, tc.msg) {
				t.Errorf("got %+v, want line %d %q", pe, tc.line, tc.msg)
			}
			if !strings.HasPrefix(err.Error(), "p.conf, line ") {
				t.Errorf("Error() = %q", err)
			}
		})
	}
	if got := (&ParseError{Line: 4, Msg: "bad"}).Error(); got != "line 4: bad" {
		t.Errorf("unnamed ParseError = %q", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "k.conf")
	if err := os.WriteFile(path, []byte("[koji]\nserver = nats://h:4222\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Name != path || f.Section("koji").String("server", "") != "nats://h:4222" {
		t.Errorf("Load: %+v", f)
	}
	if _, err := Load(filepath.Join(dir, "absent.conf")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(absent) = %v, want a wrapped ErrNotExist", err)
	}
}

func TestWriteRoundTrip(t *testing.T) {
	out := Write(
		KV{Section: "koji", Pairs: [][2]string{{"server", "nats://127.0.0.1:4222"}, {"user", "kojiadmin"}, {"password", "p#w;d"}}},
		KV{Section: "builder", Pairs: [][2]string{{"host", "b1"}}},
	)
	want := "[koji]\nserver = nats://127.0.0.1:4222\nuser = kojiadmin\npassword = p#w;d\n\n[builder]\nhost = b1\n"
	if string(out) != want {
		t.Fatalf("Write:\n%s\nwant:\n%s", out, want)
	}
	f, err := Parse("", out)
	if err != nil {
		t.Fatal(err)
	}
	if v := f.Section("koji").String("password", ""); v != "p#w;d" {
		t.Errorf("password read back as %q", v)
	}
}

func TestInheritedOptionErrorNamesDefaultLine(t *testing.T) {
	f, err := Parse("k.conf", []byte("[DEFAULT]\nretries = lots\n[koji]\nserver = x\n"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Section("koji").Int("retries", 0)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Line != 2 {
		t.Errorf("%v: want the DEFAULT line 2", err)
	}
}
