package bridge

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"

	"github.com/kojibus/kojibus/bus"
)

// Where kojibus' own event bodies differ from what Koji's protonmsg sends
// for the same change, the bridge writes Koji's form:
//
//   - TaskStateChange: info.request is the XML-RPC text of the request
//     (xmlrpc.client.dumps(args, methodname) as Koji stores it), not a JSON
//     list; info.weight is a float (1.0).
//   - BuildStateChange of a build created in the same commit: its
//     info.creation_event_id is that commit's event id (the hub cannot know
//     it before the commit).

// pyFloat is a number that protonmsg's body holds as a Python float.
type pyFloat float64

// needsParity reports whether an event's body needs Koji's form.
func needsParity(ev *bus.Event) bool {
	switch {
	case strings.HasPrefix(ev.Address, "task."):
		return ev.Props["type"] == "TaskStateChange"
	case strings.HasPrefix(ev.Address, "build."):
		return ev.Props["type"] == "BuildStateChange" && bytes.Contains(ev.Body, []byte(`"creation_event_id":0`))
	}
	return false
}

// taskKojiForm is kojiForm for a TaskStateChange without decoding the whole
// body: the hub writes info's weight and request side by side, so the
// pythonized text holds `"weight": W, "request": R` once, and only R is
// decoded. ok is false when the body is not laid out so (kojiForm then).
func taskKojiForm(raw, text []byte) (out []byte, ok bool) {
	// raw is the hub's compact JSON: {...,"info":{...,"method":"M",...,"weight":W,"request":R...}}.
	// Every field of info before request is a scalar, and no JSON string
	// holds an unescaped quote, so the first matches after "info":{ are
	// info's own.
	infoAt := bytes.Index(raw, []byte(`"info":{`))
	if infoAt < 0 {
		return nil, false
	}
	info := raw[infoAt:]
	wi := bytes.Index(info, []byte(`,"weight":`))
	mi := bytes.Index(info, []byte(`,"method":"`))
	if wi < 0 || mi < 0 || mi > wi {
		return nil, false
	}
	rest := info[wi+len(`,"weight":`):]
	comma := bytes.IndexByte(rest, ',')
	if comma < 0 || !bytes.HasPrefix(rest[comma:], []byte(`,"request":`)) {
		return nil, false
	}
	weight := rest[:comma]
	var w float64
	if json.Unmarshal(weight, &w) != nil {
		return nil, false
	}
	var req json.RawMessage
	if json.NewDecoder(bytes.NewReader(rest[comma+len(`,"request":`):])).Decode(&req) != nil {
		return nil, false
	}
	m := info[mi+len(`,"method":"`):]
	end := bytes.IndexByte(m, '"')
	if end < 0 || bytes.IndexByte(m[:end], '\\') >= 0 {
		return nil, false
	}
	request := pythonize(req)
	if req[0] == '[' {
		args, err := parseOrdered(req)
		if err != nil {
			return nil, false
		}
		request = pythonJSON(xmlrpcDumps(args.([]any), string(m[:end])))
	}
	old := []byte(`, "weight": ` + string(pythonize(weight)) + `, "request": ` + string(pythonize(req)))
	textInfo := bytes.Index(text, []byte(`"info": {`))
	if textInfo < 0 {
		return nil, false
	}
	i := bytes.Index(text[textInfo:], old)
	if i < 0 {
		return nil, false
	}
	i += textInfo
	out = make([]byte, 0, len(text)+len(request))
	out = append(out, text[:i]...)
	out = append(out, `, "weight": `+pythonFloatRepr(w)+`, "request": `...)
	out = append(out, request...)
	return append(out, text[i+len(old):]...), true
}

// kojiForm rewrites a decoded body (see needsParity) in place.
func kojiForm(ev *bus.Event, body any) {
	o, ok := body.(*object)
	if !ok {
		return
	}
	v, _ := o.get("info")
	info, ok := v.(*object)
	if !ok {
		return
	}
	if ev.Props["type"] == "BuildStateChange" {
		if n, ok := info.vals["creation_event_id"].(json.Number); ok && n.String() == "0" {
			info.vals["creation_event_id"] = json.Number(strconv.FormatUint(ev.ID, 10))
		}
		return
	}
	if w, ok := info.vals["weight"].(json.Number); ok {
		if f, err := w.Float64(); err == nil {
			info.vals["weight"] = pyFloat(f)
		}
	}
	if req, ok := info.vals["request"].([]any); ok {
		method, _ := info.vals["method"].(string)
		info.vals["request"] = xmlrpcDumps(req, method)
	}
}

// pythonFloatRepr is Python's repr(float): the shortest text that reads
// back the same, with ".0" on whole numbers and an exponent below 1e-4 or
// from 1e16 on.
func pythonFloatRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp < -4 || exp >= 16 {
		return e // Go's 'e' form is Python's: 1e+16, 1.5e-05
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// xmlrpcDumps is Koji's koji.xmlrpcplus.dumps(tuple(args), methodname=method)
// (Python's xmlrpc.client marshaller with allow_none and i8): the text Koji
// keeps as a task's request.
func xmlrpcDumps(args []any, method string) string {
	var b strings.Builder
	b.WriteString("<?xml version='1.0'?>\n<methodCall>\n<methodName>")
	b.WriteString(method)
	b.WriteString("</methodName>\n<params>\n")
	for _, a := range args {
		b.WriteString("<param>\n")
		xmlrpcValue(&b, a)
		b.WriteString("</param>\n")
	}
	b.WriteString("</params>\n</methodCall>\n")
	return b.String()
}

var xmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func xmlrpcValue(b *strings.Builder, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("<value><nil/></value>") // Python writes no newline after nil
	case bool:
		b.WriteString("<value><boolean>")
		if x {
			b.WriteString("1")
		} else {
			b.WriteString("0")
		}
		b.WriteString("</boolean></value>\n")
	case json.Number:
		s := x.String()
		if !strings.ContainsAny(s, ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				tag := "int"
				if n > math.MaxInt32 || n < math.MinInt32 {
					tag = "i8"
				}
				b.WriteString("<value><" + tag + ">" + s + "</" + tag + "></value>\n")
				return
			}
		}
		f, _ := x.Float64()
		b.WriteString("<value><double>" + pythonFloatRepr(f) + "</double></value>\n")
	case pyFloat:
		b.WriteString("<value><double>" + pythonFloatRepr(float64(x)) + "</double></value>\n")
	case string:
		b.WriteString("<value><string>")
		b.WriteString(xmlEscaper.Replace(x))
		b.WriteString("</string></value>\n")
	case []any:
		b.WriteString("<value><array><data>\n")
		for _, e := range x {
			xmlrpcValue(b, e)
		}
		b.WriteString("</data></array></value>\n")
	case *object:
		b.WriteString("<value><struct>\n")
		for _, k := range x.keys {
			b.WriteString("<member>\n<name>" + xmlEscaper.Replace(k) + "</name>\n")
			xmlrpcValue(b, x.vals[k])
			b.WriteString("</member>\n")
		}
		b.WriteString("</struct></value>\n")
	}
}
