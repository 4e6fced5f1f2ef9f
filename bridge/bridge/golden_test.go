package bridge_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bridge/bridge"
	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/hub"
)

var update = flag.Bool("update", false, "rewrite the testdata/*.golden files")

// TestGoldenBodies converts the hub's real events with the bridge and
// compares each message body's fields, their Python types and nulls with
// testdata/<address>.golden: Koji 1.35.3's protonmsg bodies for the same
// actions (values vary, names and types do not).
func TestGoldenBodies(t *testing.T) {
	h := hub.StartTestHub(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	calls := []struct {
		method string
		args   []any
		kw     map[string]any
	}{
		{"createTag", []any{"f40"}, map[string]any{"arches": "x86_64"}},
		// koji's add-pkg without --force sends force=None
		{"packageListAdd", []any{"f40", "bash", "kojiadmin"}, map[string]any{"force": nil, "block": false}},
		// created and completed in one call
		{"createEmptyBuild", []any{"bash", "5.2", "1.fc40", nil}, nil},
		{"makeTask", []any{"sleep", []any{5, "a<b", nil, 1.5, map[string]any{"__starstar": true}}}, nil},
		{"cancelTask", []any{1}, nil},
	}
	for _, c := range calls {
		if err := h.Admin.Call(ctx, c.method, c.args, c.kw, nil); err != nil {
			t.Fatalf("%s: %v", c.method, err)
		}
	}
	c := &bridge.Config{TopicPrefix: "/topic/koji"}
	bodies := map[string]map[string]any{}
	var buildEventID uint64
	for _, ev := range readEvents(t, h, "task.canceled") {
		if !bridge.Sendable(ev) {
			continue
		}
		out, err := c.Convert(ev)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		if err := json.Unmarshal([]byte(out.Body), &body); err != nil {
			t.Fatal(err)
		}
		bodies[ev.Address] = body
		if ev.Address == "build.complete" {
			buildEventID = ev.ID
		}
		checkGolden(t, ev.Address, skeleton(out.Body))
	}
	for _, a := range []string{"package.add", "build.complete", "task.free", "task.canceled"} {
		if bodies[a] == nil {
			t.Fatalf("no %s message", a)
		}
	}
	if got := bodies["package.add"]["force"]; got != nil {
		t.Errorf("package.add force = %v, want null", got)
	}
	info := bodies["build.complete"]["info"].(map[string]any)
	if got := info["creation_event_id"]; got != float64(buildEventID) || buildEventID == 0 {
		t.Errorf("build.complete creation_event_id = %v, want the commit's event id %d", got, buildEventID)
	}
	task := bodies["task.free"]["info"].(map[string]any)
	wantRequest := "<?xml version='1.0'?>\n<methodCall>\n<methodName>sleep</methodName>\n<params>\n" +
		"<param>\n<value><int>5</int></value>\n</param>\n" +
		"<param>\n<value><string>a&lt;b</string></value>\n</param>\n" +
		"<param>\n<value><nil/></value></param>\n" +
		"<param>\n<value><double>1.5</double></value>\n</param>\n" +
		"<param>\n<value><struct>\n<member>\n<name>__starstar</name>\n<value><boolean>1</boolean></value>\n</member>\n</struct></value>\n</param>\n" +
		"</params>\n</methodCall>\n"
	if task["request"] != wantRequest {
		t.Errorf("task.free request =\n%s\nwant\n%s", task["request"], wantRequest)
	}
	if task["channel"] != "default" {
		t.Errorf("task.free channel = %v, want default", task["channel"])
	}
}

// readEvents reads the hub's event stream until the last address wanted
// has arrived (events reach the stream after their commit).
func readEvents(t *testing.T, h *hub.TestHub, until string) []*bus.Event {
	t.Helper()
	nc := h.Connect(t, "golden")
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, bus.EventsStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*bus.Event
	for {
		m, err := cons.Next(jetstream.FetchMaxWait(20 * time.Second))
		if err != nil {
			t.Fatalf("after %d events: %v", len(out), err)
		}
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		ev, err := bus.EventFromMsg(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		if err != nil {
			t.Fatal(err)
		}
		ev.Seq = meta.Sequence.Stream
		out = append(out, ev)
		if ev.Address == until {
			return out
		}
	}
}

// skeleton lists a JSON body's fields with their Python types, one
// "path: type" line each, sorted: what consumers depend on, without the
// values that differ from run to run.
func skeleton(body string) string {
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "not JSON: " + err.Error()
	}
	var lines []string
	var walk func(path string, v any)
	walk = func(path string, v any) {
		typ := ""
		switch x := v.(type) {
		case nil:
			typ = "null"
		case bool:
			typ = "bool"
		case string:
			typ = "str"
			if strings.HasPrefix(x, "<?xml") {
				typ = "str (XML-RPC)"
			}
		case json.Number:
			typ = "int"
			if strings.ContainsAny(x.String(), ".eE") {
				typ = "float"
			}
		case []any:
			typ = "list"
		case map[string]any:
			typ = "dict"
			for k, e := range x {
				walk(strings.TrimPrefix(path+"."+k, "."), e)
			}
		}
		if path != "" {
			lines = append(lines, path+": "+typ)
		}
	}
	walk("", v)
	sort.Strings(lines)
	return strings.Join(lines, "\n") + "\n"
}

func checkGolden(t *testing.T, address, got string) {
	t.Helper()
	path := filepath.Join("testdata", address+".golden")
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v (go test -run TestGoldenBodies -update writes it)", address, err)
	}
	if got != string(want) {
		t.Errorf("%s body differs from %s:\n%s", address, path, diffLines(string(want), got))
	}
}

// diffLines shows the lines only one side has.
func diffLines(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	return b.String()
}
