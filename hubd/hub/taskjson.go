package hub

import (
	"encoding/json"
	"reflect"
	"strings"
	"unicode/utf8"

	"github.com/kojibus/kojibus/bus"
)

// getTaskInfo's answer is a prefix of the stored task record: the record is
// json.Marshal of taskRecord, whose first members are bus.Task's fields and
// then "request", and the answer is json.Marshal of bus.Task (or of
// taskInfoWith, which adds "request"). So the answer can be cut from the
// record instead of decoding it and encoding it again, which was most of
// the time of an uncached getTaskInfo. taskInfoPrefix checks the record's
// layout member by member and reports false for anything else (a record of
// another layout, invalid JSON), which the caller then decodes as before.

// taskInfoJSON is getTaskInfo's answer for a stored task record: cut from
// the record when it has the usual layout, decoded and encoded otherwise.
func taskInfoJSON(raw []byte, withRequest bool) (json.RawMessage, error) {
	keys := taskFields
	if withRequest {
		keys = taskFieldsWithRequest
	}
	if b, ok := taskInfoPrefix(raw, keys); ok {
		return b, nil
	}
	return decodedTaskInfo(raw, withRequest)
}

// decodedTaskInfo decodes only the fields of the answer, not the result or
// the outputs.
func decodedTaskInfo(raw []byte, withRequest bool) (json.RawMessage, error) {
	var t struct {
		bus.Task
		Request json.RawMessage `json:"request"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, err
	}
	return json.Marshal(taskInfo(&taskRecord{Task: t.Task, Request: t.Request}, withRequest))
}

// taskFields are the JSON names of bus.Task's fields, in order, and
// taskFieldsWithRequest the same followed by "request".
var taskFields, taskFieldsWithRequest = func() ([]string, []string) {
	with := reflect.TypeFor[taskInfoWith]()
	if with.Field(0).Type != reflect.TypeFor[bus.Task]() || with.Field(1).Name != "Request" {
		panic("hub: taskInfoWith must be bus.Task and then Request")
	}
	var names []string
	for f := range reflect.TypeFor[bus.Task]().Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		names = append(names, name)
	}
	return names, append(names[:len(names):len(names)], "request")
}()

// taskInfoPrefix returns the record cut after its members named keys,
// closed as an object, when raw is a JSON object whose first members are
// exactly keys, in that order, none of them repeated later.
func taskInfoPrefix(raw []byte, keys []string) (json.RawMessage, bool) {
	sc := jsonScan{b: raw}
	sc.space()
	if !sc.byte('{') {
		return nil, false
	}
	end := -1
	for i := 0; ; i++ {
		sc.space()
		if i == 0 && sc.byte('}') {
			break
		}
		key, ok := sc.key()
		if !ok {
			return nil, false
		}
		if i < len(keys) && string(key) != keys[i] {
			return nil, false
		}
		if i >= len(keys) {
			// A later member that Go's decoder would take for one of the
			// answer's (a repeat, in any case) would change the answer.
			for _, k := range keys {
				if len(k) == len(key) && strings.EqualFold(string(key), k) {
					return nil, false
				}
			}
		}
		sc.space()
		if !sc.byte(':') {
			return nil, false
		}
		sc.space()
		if !sc.value(0) {
			return nil, false
		}
		if i == len(keys)-1 {
			end = sc.i
			sc.anyText = true // the rest is not in the answer
		}
		sc.space()
		if sc.byte('}') {
			break
		}
		if !sc.byte(',') {
			return nil, false
		}
	}
	sc.space()
	if end < 0 || sc.i != len(raw) {
		return nil, false
	}
	out := make([]byte, 0, end+1)
	out = append(out, raw[:end]...)
	return append(out, '}'), true
}

// jsonScan walks JSON text and checks it as it goes (RFC 8259).
type jsonScan struct {
	b []byte
	i int
	// anyText takes strings that are not UTF-8 too (encoding/json keeps
	// them in a json.RawMessage, such as a task's result).
	anyText bool
}

func (s *jsonScan) space() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jsonScan) byte(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// key reads a member name; one with escapes is refused (the records' names
// have none), so the name is its bytes.
func (s *jsonScan) key() ([]byte, bool) {
	if !s.byte('"') {
		return nil, false
	}
	start := s.i
	for s.i < len(s.b) {
		switch c := s.b[s.i]; {
		case c == '"':
			s.i++
			return s.b[start : s.i-1], true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return nil, false
		}
		s.i++
	}
	return nil, false
}

const maxJSONDepth = 1000 // as encoding/json

func (s *jsonScan) value(depth int) bool {
	if depth > maxJSONDepth || s.i >= len(s.b) {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.str()
	case c == '{':
		s.i++
		return s.items('}', func() bool {
			if !s.str() {
				return false
			}
			s.space()
			if !s.byte(':') {
				return false
			}
			s.space()
			return s.value(depth + 1)
		})
	case c == '[':
		s.i++
		return s.items(']', func() bool { return s.value(depth + 1) })
	case c == '-' || ('0' <= c && c <= '9'):
		return s.number()
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if string(s.b[s.i:min(len(s.b), s.i+len(lit))]) == lit {
				s.i += len(lit)
				return true
			}
		}
		return false
	}
}

// items reads the comma-separated items of an object or array, after its
// opening bracket, through its closing one.
func (s *jsonScan) items(closing byte, item func() bool) bool {
	s.space()
	if s.byte(closing) {
		return true
	}
	for {
		s.space()
		if !item() {
			return false
		}
		s.space()
		if s.byte(closing) {
			return true
		}
		if !s.byte(',') {
			return false
		}
	}
}

// str reads a string; one that is not UTF-8 is refused unless anyText, as
// encoding/json would replace its bytes.
func (s *jsonScan) str() bool {
	if !s.byte('"') {
		return false
	}
	start, ascii := s.i, true
	for s.i < len(s.b) {
		c := s.b[s.i]
		s.i++
		switch {
		case c == '"':
			return ascii || s.anyText || utf8.Valid(s.b[start:s.i-1])
		case c >= 0x80:
			ascii = false
		case c < 0x20:
			return false
		case c == '\\':
			if s.i >= len(s.b) {
				return false
			}
			e := s.b[s.i]
			s.i++
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for range 4 {
					if s.i >= len(s.b) || !isHex(s.b[s.i]) {
						return false
					}
					s.i++
				}
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func (s *jsonScan) digits() int {
	n := 0
	for s.i < len(s.b) && '0' <= s.b[s.i] && s.b[s.i] <= '9' {
		s.i++
		n++
	}
	return n
}

func (s *jsonScan) number() bool {
	s.byte('-')
	switch {
	case s.byte('0'):
	case s.digits() == 0:
		return false
	}
	if s.byte('.') && s.digits() == 0 {
		return false
	}
	if s.byte('e') || s.byte('E') {
		if !s.byte('+') {
			s.byte('-')
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}
