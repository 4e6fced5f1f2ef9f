package config

import (
	"strings"
	"testing"
)

func TestSetValue(t *testing.T) {
	in := "[koji]\nserver = nats://127.0.0.1:4222\nnats_password = s3cret\n\n[other]\nserver = x\n"
	out, changed, err := SetValue([]byte(in), "koji", "server", "nats://127.0.0.1:4333")
	if err != nil || !changed {
		t.Fatal(changed, err)
	}
	want := strings.Replace(in, "4222", "4333", 1)
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
	if out, changed, err := SetValue([]byte(want), "koji", "server", "nats://127.0.0.1:4333"); err != nil || changed || string(out) != want {
		t.Fatalf("same value: %v %v %q", changed, err, out)
	}
	for _, bad := range []string{"[koji]\nuser = a\n", "[a]\nserver = x\n", "no section\n"} {
		if _, _, err := SetValue([]byte(bad), "koji", "server", "y"); err == nil {
			t.Errorf("SetValue on %q: no error", bad)
		}
	}
}

// FuzzSetValue: what SetValue returns parses, holds the new value and every
// other option as it was.
func FuzzSetValue(f *testing.F) {
	for _, seed := range []string{
		"[koji]\nserver = a\n", "[koji]\nserver = a\n  b\n# c\n  d\nuser = u\n", "[DEFAULT]\nserver = d\n[koji]\nuser = x\n",
		"[koji]\nSERVER: a ; c\n\n  e\n", "[x]\nserver = 1\n[koji]\nserver=2\r\nuser = 3\r\n",
	} {
		f.Add([]byte(seed), "nats://h:1")
	}
	f.Fuzz(func(t *testing.T, data []byte, value string) {
		value = strings.TrimSpace(value)
		if strings.ContainsAny(value, "\r\n#;") {
			return
		}
		before, err := Parse("", data)
		if err != nil {
			return
		}
		out, _, err := SetValue(data, "koji", "server", value)
		if err != nil {
			return
		}
		after, err := Parse("", out)
		if err != nil {
			t.Fatalf("result does not parse: %v\n%q", err, out)
		}
		if got, _ := after.Section("koji").Get("server"); got != value {
			t.Fatalf("server = %q, want %q\n%q", got, value, out)
		}
		for _, name := range before.Sections() {
			for _, k := range before.Section(name).Keys() {
				if name == "koji" && k == "server" {
					continue
				}
				v1, _ := before.Section(name).Get(k)
				v2, _ := after.Section(name).Get(k)
				if v1 != v2 {
					t.Fatalf("[%s] %s changed: %q -> %q\n%q", name, k, v1, v2, out)
				}
			}
		}
	})
}
