package bridge

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bus"
)

func TestConvertWritesProtonmsgsMessage(t *testing.T) {
	c := &Config{TopicPrefix: "/topic/koji", ExtraLimit: 20}
	ev := &bus.Event{Seq: 42, Address: "build.complete",
		Props: map[string]any{"type": "BuildStateChange", "name": "bash", "old": nil, "new": "COMPLETE", "build_id": float64(7), "f": 1.5},
		Body:  json.RawMessage(`{"attribute":"state","old":null,"new":1,"info":{"id":7,"nvr":"bash-1-1","extra":{"k":"` + strings.Repeat("v", 30) + `"},"name":"bäsh"}}`)}
	if !Sendable(ev) {
		t.Fatal("a BuildStateChange is sent")
	}
	out, err := c.Convert(ev)
	if err != nil {
		t.Fatal(err)
	}
	// Python's json.dumps: ", " and ": ", ASCII only, key order kept; extra over the limit dropped.
	want := `{"attribute": "state", "old": null, "new": 1, "info": {"id": 7, "nvr": "bash-1-1", "name": "b\u00e4sh"}}`
	if out.Body != want {
		t.Fatalf("body\n%s\nwant\n%s", out.Body, want)
	}
	if out.Address != "/topic/koji.build.complete" || out.ID != "kojibus-42" {
		t.Fatalf("address %q id %q", out.Address, out.ID)
	}
	if v, ok := out.Props["build_id"].(int64); !ok || v != 7 {
		t.Fatalf("build_id %#v, want int64 (proton sends a Python int)", out.Props["build_id"])
	}
	if v, ok := out.Props["f"].(float64); !ok || v != 1.5 {
		t.Fatalf("f %#v, want float64", out.Props["f"])
	}
	m := out.AMQP(time.Minute)
	if m.Header.TTL != time.Minute || m.Header.Priority != 4 || m.Value != want || m.Properties.MessageID != "kojibus-42" {
		t.Fatalf("amqp message %+v", m)
	}
	if m := out.AMQP(0); m.Header != nil {
		t.Fatalf("no ttl: header %+v, want none (as proton)", m.Header)
	}
}

func TestExtraLimitPlaces(t *testing.T) {
	c := &Config{TopicPrefix: "topic://koji", ExtraLimit: 5}
	big := `{"extra":{"a":"long value"},"id":1}`
	for _, tc := range []struct {
		address, body, path string
	}{
		{"build.tag", `{"tag":{},"build":` + big + `}`, "build"},
		{"import.build", `{"build":` + big + `}`, "build"},
		{"build.failed", `{"info":` + big + `}`, "info"},
		{"build.promote", `{"build":` + big + `}`, "build"},
	} {
		out, err := c.Convert(&bus.Event{Address: tc.address, Props: map[string]any{"type": "Tag"}, Body: json.RawMessage(tc.body)})
		if err != nil {
			t.Fatal(err)
		}
		var b map[string]map[string]any
		if err := json.Unmarshal([]byte(out.Body), &b); err != nil {
			t.Fatal(err)
		}
		if _, has := b[tc.path]["extra"]; has {
			t.Errorf("%s: extra kept: %s", tc.address, out.Body)
		}
	}
	// task bodies are not touched
	out, _ := c.Convert(&bus.Event{Address: "task.open", Props: map[string]any{"type": "TaskStateChange"}, Body: json.RawMessage(`{"build":` + big + `}`)})
	if !strings.Contains(out.Body, "extra") {
		t.Errorf("task body changed: %s", out.Body)
	}
}

func TestKojibusOnlyEventsAreNotSent(t *testing.T) {
	for typ, want := range map[any]bool{"TaskStateChange": true, "TaskWeightChange": false, "TagCreate": false, nil: false} {
		if got := Sendable(&bus.Event{Props: map[string]any{"type": typ}}); got != want {
			t.Errorf("type %v: sendable %v, want %v", typ, got, want)
		}
	}
}

func FuzzConvert(f *testing.F) {
	f.Add("build.tag", []byte(`{"build":{"extra":{"x":1}}}`))
	f.Add("task.open", []byte(`{"a":[1,2,{"b":"\u00e9\ud83d\ude00"}]}`))
	c := &Config{TopicPrefix: "/topic/koji", ExtraLimit: 3}
	f.Fuzz(func(t *testing.T, address string, body []byte) {
		out, err := c.Convert(&bus.Event{Address: address, Props: map[string]any{"type": "Tag"}, Body: body})
		if err != nil {
			return
		}
		// JSON as RFC 8259 has it: a number beyond float64 (1E700) is
		// still JSON, though Go's decoder will not make it a float64.
		if !json.Valid([]byte(out.Body)) {
			t.Fatalf("body is not JSON: %q from %q", out.Body, body)
		}
		if !json.Valid(body) {
			t.Fatalf("converted a body that is not JSON: %q", body)
		}
		for _, r := range out.Body {
			if r > 0x7e {
				t.Fatalf("non-ASCII in body %q", out.Body)
			}
		}
	})
}

// pythonize (one pass) and pythonJSON (decode, then write) agree.
func FuzzPythonize(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":[true,null,"x\u003cy\/z"],"c":{"d":"\u00e9\ud83d\ude00\b\f\u0001"}}`, `"\u2028"`, `[1.5e3, -0, {}]`, `{"k": "v"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		// A lone surrogate escape: Go's decoder makes it U+FFFD, Python
		// (and pythonize) keep it; Go-encoded bodies never hold one.
		lower := strings.ToLower(string(raw))
		for _, p := range []string{`\ud8`, `\ud9`, `\uda`, `\udb`, `\udc`, `\udd`, `\ude`, `\udf`} {
			if strings.Contains(lower, p[1:]) {
				return
			}
		}
		// Duplicate keys: Python (and parseOrdered) keep one, pythonize
		// copies both; Go-encoded bodies never hold any.
		if hasDuplicateKeys(raw) {
			return
		}
		v, err := parseOrdered(raw)
		if err != nil {
			t.Fatalf("valid JSON refused: %v", err)
		}
		if a, b := string(pythonize(raw)), string(pythonJSON(v)); a != b {
			t.Fatalf("pythonize %q\npythonJSON %q\nfrom %q", a, b, raw)
		}
	})
}

// hasDuplicateKeys reports whether any object in valid JSON repeats a key.
func hasDuplicateKeys(raw []byte) bool {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	type frame struct {
		keys     map[string]bool
		isObject bool
		wantKey  bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.isObject && top.wantKey {
			if k, ok := tok.(string); ok {
				if top.keys[k] {
					return true
				}
				top.keys[k] = true
				top.wantKey = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			if top != nil && top.isObject {
				top.wantKey = true
			}
			stack = append(stack, &frame{keys: map[string]bool{}, isObject: true, wantKey: true})
			continue
		case json.Delim('['):
			if top != nil && top.isObject {
				top.wantKey = true
			}
			stack = append(stack, &frame{})
			continue
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			continue
		}
		if top != nil && top.isObject {
			top.wantKey = true // a scalar value ends the pair
		}
	}
}
