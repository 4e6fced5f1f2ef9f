package bridge

import (
	"encoding/json"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

func TestPythonFloatRepr(t *testing.T) {
	for f, want := range map[float64]string{
		1: "1.0", 1.5: "1.5", 0.1: "0.1", -2: "-2.0", 1e16: "1e+16", 1e15: "1000000000000000.0",
		1.5e-5: "1.5e-05", 0.0001: "0.0001", 123456789012345678: "1.2345678901234568e+17",
	} {
		if got := pythonFloatRepr(f); got != want {
			t.Errorf("repr(%v) = %s, want %s", f, got, want)
		}
	}
}

func TestXMLRPCDumps(t *testing.T) {
	args, err := parseOrdered([]byte(`[3000000000, -1, [true, false], {"b": null, "a": "x&y"}, 2.0, "é"]`))
	if err != nil {
		t.Fatal(err)
	}
	want := "<?xml version='1.0'?>\n<methodCall>\n<methodName>m</methodName>\n<params>\n" +
		"<param>\n<value><i8>3000000000</i8></value>\n</param>\n" +
		"<param>\n<value><int>-1</int></value>\n</param>\n" +
		"<param>\n<value><array><data>\n<value><boolean>1</boolean></value>\n<value><boolean>0</boolean></value>\n</data></array></value>\n</param>\n" +
		"<param>\n<value><struct>\n<member>\n<name>b</name>\n<value><nil/></value></member>\n<member>\n<name>a</name>\n<value><string>x&amp;y</string></value>\n</member>\n</struct></value>\n</param>\n" +
		"<param>\n<value><double>2.0</double></value>\n</param>\n" +
		"<param>\n<value><string>é</string></value>\n</param>\n" +
		"</params>\n</methodCall>\n"
	if got := xmlrpcDumps(args.([]any), "m"); got != want {
		t.Errorf("dumps =\n%s\nwant\n%s", got, want)
	}
	// and as a body: a Python float, the XML text as a JSON string
	body, _ := parseOrdered([]byte(`{"info":{"weight":1,"method":"m","request":[]}}`))
	kojiForm(&bus.Event{Address: "task.open", Props: map[string]any{"type": "TaskStateChange"}}, body)
	if got, want := string(pythonJSON(body)), `{"info": {"weight": 1.0, "method": "m", "request": "<?xml version='1.0'?>\n<methodCall>\n<methodName>m</methodName>\n<params>\n</params>\n</methodCall>\n"}}`; got != want {
		t.Errorf("body %s\nwant %s", got, want)
	}
}

// TestTaskKojiFormFastPath: the splice of a hub task body equals the full
// decode's rewrite.
func TestTaskKojiFormFastPath(t *testing.T) {
	raw := []byte(`{"attribute":"state","old":"FREE","new":"OPEN","info":{"id":1,"state":1,"channel_id":1,"owner":1,"method":"sleep","arch":"noarch","priority":20,"weight":1.5,"request":[5,"x<y",{"weight":2,"__starstar":true}],"channel":"default"}}`)
	ev := &bus.Event{ID: 3, Address: "task.open", Props: map[string]any{"type": "TaskStateChange"}, Body: raw}
	fast, ok := taskKojiForm(raw, pythonize(raw))
	if !ok {
		t.Fatal("the hub's layout was not recognised")
	}
	body, err := parseOrdered(raw)
	if err != nil {
		t.Fatal(err)
	}
	kojiForm(ev, body)
	if slow := pythonJSON(body); string(fast) != string(slow) {
		t.Fatalf("fast\n%s\nslow\n%s", fast, slow)
	}
	if _, ok := taskKojiForm([]byte(`{"info":{"request":[1],"weight":1}}`), nil); ok {
		t.Fatal("another layout taken for the hub's")
	}
}

// FuzzTaskKojiForm: whenever the splice takes a body, it writes what the
// full decode writes; a TaskStateChange always converts to ASCII JSON.
func FuzzTaskKojiForm(f *testing.F) {
	f.Add([]byte(`{"attribute":"state","info":{"id":1,"method":"sleep","priority":20,"weight":1,"request":[5,null,{"a":1.5}]}}`))
	f.Add([]byte(`{"info":{"method":"m","weight":2.5,"request":null,"channel":"x"}}`))
	f.Add([]byte(`{"x":"\"info\":{","info":{"label":"a,\"weight\":1","method":"m","weight":1e3,"request":["<&>"]}}`))
	c := &Config{TopicPrefix: "/topic/koji"}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return
		}
		ev := &bus.Event{ID: 1, Address: "task.open", Props: map[string]any{"type": "TaskStateChange"}, Body: raw}
		out, err := c.Convert(ev)
		if err != nil {
			return
		}
		if !json.Valid([]byte(out.Body)) {
			t.Fatalf("not JSON: %q", out.Body)
		}
		fast, ok := taskKojiForm(raw, pythonize(raw))
		if !ok {
			return
		}
		body, err := parseOrdered(raw)
		if err != nil {
			return
		}
		kojiForm(ev, body)
		if slow := pythonJSON(body); string(fast) != string(slow) {
			t.Fatalf("fast\n%s\nslow\n%s\nfrom %s", fast, slow, raw)
		}
	})
}
