package bridge

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	amqp "github.com/Azure/go-amqp"

	"github.com/kojibus/kojibus/bus"
)

// protonTypes are the property types of the messages protonmsg sends (its
// callback names minus "post"). kojibus' own events (tag.create, task.weight,
// repo.request...) have no protonmsg counterpart and are not sent.
var protonTypes = map[string]bool{
	"PackageListChange": true, "TaskStateChange": true, "BuildStateChange": true, "Import": true,
	"RPMSign": true, "Tag": true, "Untag": true, "RepoInit": true, "RepoDone": true, "BuildPromote": true,
}

// Outgoing is one AMQP message to send.
type Outgoing struct {
	Seq     uint64 // KOJI_EVENTS stream sequence
	Address string // <topic_prefix>.<event address>
	Props   map[string]any
	Body    string // JSON as Python's json.dumps writes it
	ID      string // stable message-id: kojibus-<stream seq>
}

// Sendable reports whether protonmsg sends an event.
func Sendable(ev *bus.Event) bool {
	t, _ := ev.Props["type"].(string)
	return protonTypes[t]
}

// Convert maps an event to the message protonmsg would send for it.
func (c *Config) Convert(ev *bus.Event) (*Outgoing, error) {
	if !json.Valid(ev.Body) {
		return nil, fmt.Errorf("event %d body: not JSON", ev.Seq)
	}
	text := pythonize(ev.Body)
	limit := c.ExtraLimit > 0 && extraLimited(ev.Address)
	parity := needsParity(ev)
	if parity && !limit && ev.Props["type"] == "TaskStateChange" {
		if out, ok := taskKojiForm(ev.Body, text); ok {
			text, parity = out, false
		}
	}
	if limit || parity {
		// Only these bodies are decoded: the rest is rewritten in one pass.
		body, err := parseOrdered(ev.Body)
		if err != nil {
			return nil, fmt.Errorf("event %d body: %w", ev.Seq, err)
		}
		if parity {
			kojiForm(ev, body)
			text = pythonJSON(body)
		}
		if build := buildInfo(body, ev.Address); limit && build != nil {
			if extra, ok := build.get("extra"); ok && len(pythonJSON(extra)) > c.ExtraLimit {
				build.del("extra")
				text = pythonJSON(body)
			}
		}
	}
	props := make(map[string]any, len(ev.Props))
	for k, v := range ev.Props {
		props[k] = amqpValue(v)
	}
	return &Outgoing{
		Seq:     ev.Seq,
		Address: c.TopicPrefix + "." + ev.Address,
		Props:   props,
		Body:    string(text),
		ID:      "kojibus-" + strconv.FormatUint(ev.Seq, 10),
	}, nil
}

// extraLimited reports whether extra_limit applies to an address's bodies.
func extraLimited(address string) bool {
	switch address {
	case "build.building", "build.complete", "build.deleted", "build.failed", "build.canceled",
		"build.tag", "build.untag", "build.promote", "sign.rpm":
		return true
	}
	return strings.HasPrefix(address, "import.")
}

// buildInfo finds the build whose extra extra_limit applies to: info in
// build.<state> bodies, build in import.*, sign.rpm, build.tag/untag and
// build.promote bodies.
func buildInfo(body any, address string) *object {
	o, ok := body.(*object)
	if !ok {
		return nil
	}
	key := "build"
	switch address {
	case "build.building", "build.complete", "build.deleted", "build.failed", "build.canceled":
		key = "info"
	case "build.tag", "build.untag", "build.promote", "sign.rpm":
	default:
		if len(address) < 7 || address[:7] != "import." {
			return nil
		}
	}
	v, _ := o.get(key)
	b, _ := v.(*object)
	return b
}

// AMQP turns the message into what go-amqp sends: application properties,
// an amqp-value string body (what proton's Message(body=str) sends), an
// empty properties section but for the message-id, and the TTL.
func (o *Outgoing) AMQP(ttl time.Duration) *amqp.Message {
	m := &amqp.Message{
		Properties:            &amqp.MessageProperties{MessageID: o.ID},
		ApplicationProperties: o.Props,
		Value:                 o.Body,
	}
	if ttl > 0 {
		// Priority 4 is AMQP's default, which go-amqp then leaves out, as proton does.
		m.Header = &amqp.MessageHeader{TTL: ttl, Priority: 4}
	}
	return m
}

// amqpValue makes a property value encode as proton encodes the Python
// value: integers as long, not double.
func amqpValue(v any) any {
	switch x := v.(type) {
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x)
		}
		return x
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case int:
		return int64(x)
	case nil, string, bool, int64:
		return x
	default:
		return fmt.Sprint(x) // properties are scalars; anything else is shown, not dropped
	}
}

// object is a JSON object that keeps its key order.
type object struct {
	keys []string
	vals map[string]any
}

func (o *object) get(k string) (any, bool) { v, ok := o.vals[k]; return v, ok }

func (o *object) del(k string) {
	if _, ok := o.vals[k]; !ok {
		return
	}
	delete(o.vals, k)
	for i, key := range o.keys {
		if key == k {
			o.keys = append(o.keys[:i], o.keys[i+1:]...)
			return
		}
	}
}

// parseOrdered decodes JSON keeping object key order; numbers stay as
// written.
func parseOrdered(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			o := &object{vals: map[string]any{}}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				if _, dup := o.vals[k]; !dup {
					o.keys = append(o.keys, k)
				}
				o.vals[k] = v
			}
			_, err := dec.Token()
			return o, err
		case '[':
			var a []any
			for dec.More() {
				v, err := decodeValue(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token()
			if a == nil {
				a = []any{}
			}
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return t, nil
	}
}

// pythonJSON writes a value as Python's json.dumps does by default:
// ", " and ": " separators, non-ASCII as \u escapes of four hex digits.
func pythonJSON(v any) []byte {
	var b bytes.Buffer
	writePython(&b, v)
	return b.Bytes()
}

func writePython(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		if x {
			b.WriteString("true")
		} else {
			b.WriteString("false")
		}
	case json.Number:
		b.WriteString(x.String())
	case pyFloat:
		b.WriteString(pythonFloatRepr(float64(x)))
	case string:
		writePythonString(b, x)
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writePython(b, e)
		}
		b.WriteByte(']')
	case *object:
		b.WriteByte('{')
		for i, k := range x.keys {
			if i > 0 {
				b.WriteString(", ")
			}
			writePythonString(b, k)
			b.WriteString(": ")
			writePython(b, x.vals[k])
		}
		b.WriteByte('}')
	}
}

func writePythonString(b *bytes.Buffer, s string) {
	out := []byte{'"'}
	for _, r := range s { // invalid UTF-8 reads as U+FFFD, as Go's encoder writes it
		out = pythonRune(out, r)
	}
	b.Write(append(out, '"'))
}

// pythonize rewrites compact or spaced JSON as Python's json.dumps writes
// it, in one pass without decoding: ", " and ": " separators, strings
// re-escaped by Python's rules (ASCII only; \b and \f; "<", "/" and other
// printable ASCII unescaped). The input must be valid JSON.
func pythonize(raw []byte) []byte {
	out := make([]byte, 0, len(raw)+len(raw)/8)
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch c {
		case ' ', '\t', '\n', '\r':
		case ',':
			out = append(out, ',', ' ')
		case ':':
			out = append(out, ':', ' ')
		case '"':
			var n int
			out, n = pythonString(out, raw[i:])
			i += n - 1
		default:
			out = append(out, c)
		}
	}
	return out
}

// pythonString re-escapes the JSON string at the start of s and returns
// the output and the input length it used.
func pythonString(out, s []byte) ([]byte, int) {
	out = append(out, '"')
	i := 1
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			return append(out, '"'), i + 1
		case c == '\\':
			if i+1 >= len(s) {
				return out, len(s)
			}
			e := s[i+1]
			if e != 'u' {
				r := map[byte]rune{'"': '"', '\\': '\\', '/': '/', 'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t'}[e]
				out = pythonRune(out, r)
				i += 2
				continue
			}
			r, n := unicodeEscape(s[i:])
			out = pythonRune(out, r)
			i += n
		case c < utf8.RuneSelf:
			out = pythonRune(out, rune(c))
			i++
		default:
			r, n := utf8.DecodeRune(s[i:])
			out = pythonRune(out, r)
			i += n
		}
	}
	return out, i
}

// unicodeEscape decodes a \u escape of four hex digits (and a low surrogate after it).
func unicodeEscape(s []byte) (rune, int) {
	hex4 := func(b []byte) (rune, bool) {
		if len(b) < 4 {
			return 0, false
		}
		v, err := strconv.ParseUint(string(b[:4]), 16, 32)
		return rune(v), err == nil
	}
	r, ok := hex4(s[2:])
	if !ok {
		return utf8.RuneError, len(s)
	}
	if utf16.IsSurrogate(r) && len(s) >= 12 && s[6] == '\\' && s[7] == 'u' {
		if r2, ok := hex4(s[8:]); ok {
			if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
				return d, 12
			}
		}
	}
	return r, 6
}

// pythonRune appends one character of a string as Python's json.dumps
// (ensure_ascii) writes it.
func pythonRune(out []byte, r rune) []byte {
	const hex = "0123456789abcdef"
	switch r {
	case '"':
		return append(out, '\\', '"')
	case '\\':
		return append(out, '\\', '\\')
	case '\n':
		return append(out, '\\', 'n')
	case '\r':
		return append(out, '\\', 'r')
	case '\t':
		return append(out, '\\', 't')
	case '\b':
		return append(out, '\\', 'b')
	case '\f':
		return append(out, '\\', 'f')
	}
	if r >= 0x20 && r < 0x7f {
		return append(out, byte(r))
	}
	units := []rune{r}
	if r > 0xffff {
		r1, r2 := utf16.EncodeRune(r)
		units = []rune{r1, r2}
	}
	for _, u := range units {
		out = append(out, '\\', 'u', hex[u>>12&0xf], hex[u>>8&0xf], hex[u>>4&0xf], hex[u&0xf])
	}
	return out
}
