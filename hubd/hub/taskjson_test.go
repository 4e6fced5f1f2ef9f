package hub

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
	"unicode/utf8"

	"github.com/kojibus/kojibus/bus"
)

// fuzzedTaskRecord builds a task record from fuzzed parts, as the hub
// stores them: a raw part that is not JSON is left out and a timestamp
// that JSON cannot hold (NaN, ±Inf) is 0, as the hub never stores either.
func fuzzedTaskRecord(id int64, st int, text string, ts float64, set bool, request, result []byte, attempt int64) taskRecord {
	if !json.Valid(request) {
		request = nil
	}
	if !json.Valid(result) {
		result = nil
	}
	if math.IsNaN(ts) || math.IsInf(ts, 0) {
		ts = 0
	}
	rec := taskRecord{
		Task: bus.Task{ID: id, State: st, CreateTime: text, CreateTS: ts, Owner: id ^ 7, Method: text,
			Arch: "noarch", Priority: st, Weight: ts},
		Request: request, Result: result, Attempt: attempt, Pinned: set, Retries: st,
	}
	if set {
		rec.StartTime, rec.StartTS, rec.HostID, rec.Parent, rec.Label = &text, &ts, &id, &attempt, &text
		rec.Waiting, rec.Awaited = &set, &set
		rec.Outputs = []outputFile{{Name: text, Size: id}}
	}
	return rec
}

// FuzzTaskInfoPrefix: for every record the hub can store, the answer cut
// from it is byte for byte the answer decoded and encoded again.
func FuzzTaskInfoPrefix(f *testing.F) {
	f.Add(int64(7), 1, "2026-12-03 11:00:00.000000+00:00", 1.7647e9, true, []byte(`[0]`), []byte(`{"a":"<b>"}`), int64(2))
	f.Add(int64(4611686018427387904), 0, "\xe7", 1e300, false, []byte("{}"), []byte(""), int64(-3))
	f.Add(int64(-1), -5, "\u2028\"\\<>&\x01é", -0.0, false, []byte(` null `), []byte(nil), int64(0))
	f.Add(int64(1)<<62, 0, "", 1e300, true, []byte(`{"x":[1e5,"\u00e9"]}`), []byte(`"r"`), int64(-3))
	f.Fuzz(func(t *testing.T, id int64, st int, text string, ts float64, set bool, request, result []byte, attempt int64) {
		rec := fuzzedTaskRecord(id, st, text, ts, set, request, result, attempt)
		raw, err := json.Marshal(rec)
		if err != nil {
			t.Fatalf("a record the hub could store did not encode: %v", err)
		}
		for _, withRequest := range []bool{false, true} {
			keys := taskFields
			if withRequest {
				keys = taskFieldsWithRequest
			}
			cut, ok := taskInfoPrefix(raw, keys)
			if !ok {
				// Only text that is not UTF-8 in the answer's members (a
				// request kept raw as a client sent it) is left to the
				// decoder, which replaces it.
				if utf8.Valid(raw) {
					t.Fatalf("a stored record not cut (request %v): %s", withRequest, raw)
				}
				continue
			}
			want, err := decodedTaskInfo(raw, withRequest)
			if err != nil {
				t.Fatal(err)
			}
			// The same bytes, but for an invalid UTF-8 text: the record
			// holds it as \ufffd, encoded again it is the character.
			if !bytes.Equal(cut, want) && !sameJSON(cut, want) {
				t.Fatalf("request %v:\n cut %s\nwant %s", withRequest, cut, want)
			}
		}
	})
}

// FuzzTaskInfoPrefixBytes: whatever the bytes, a cut answer is valid JSON
// taken from valid JSON, and the answer of taskInfoJSON is the decoded one
// unless the record has the stored layout.
func FuzzTaskInfoPrefixBytes(f *testing.F) {
	good, _ := json.Marshal(fuzzedTaskRecord(3, 2, "t", 1.5, true, []byte(`{"a":1}`), nil, 1))
	f.Add(good)
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`{"ID":1,"id":2}`))
	f.Add(append(bytes.TrimSuffix(good, []byte("}")), []byte(`,"ID":9}`)...))
	f.Add([]byte(`{"id":01}`))
	f.Add([]byte("{\"id\":\"\xff\"}"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, keys := range [][]string{taskFields, taskFieldsWithRequest, {"id"}} {
			cut, ok := taskInfoPrefix(raw, keys)
			if !ok {
				continue
			}
			if !json.Valid(raw) || !json.Valid(cut) {
				t.Fatalf("cut %s from %q: both must be JSON", cut, raw)
			}
			var whole, part map[string]json.RawMessage
			if err := json.Unmarshal(raw, &whole); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(cut, &part); err != nil {
				t.Fatal(err)
			}
			if len(part) != len(keys) {
				t.Fatalf("cut %s has %d members, want %v", cut, len(part), keys)
			}
			for _, k := range keys {
				if !bytes.Equal(part[k], whole[k]) {
					t.Fatalf("member %s: cut %s, record %s", k, part[k], whole[k])
				}
			}
		}
	})
}

func TestTaskInfoPrefixRefusesOtherLayouts(t *testing.T) {
	good, err := json.Marshal(fuzzedTaskRecord(3, 2, "t", 1.5, true, []byte(`{"a":1}`), nil, 1))
	if err != nil {
		t.Fatal(err)
	}
	open := bytes.TrimSuffix(good, []byte("}"))
	for name, raw := range map[string][]byte{
		"fields in another order":  []byte(`{"state":1,"id":2}`),
		"a member missing":         []byte(`{"id":2}`),
		"a later repeat":           append(bytes.Clone(open), `,"id":9}`...),
		"a later repeat, any case": append(bytes.Clone(open), `,"Weight":9}`...),
		"an escaped name":          bytes.Replace(good, []byte(`"state"`), []byte(`"st\u0061te"`), 1),
		"not closed":               open,
		"trailing data":            append(bytes.Clone(good), `{}`...),
		"a bad number":             bytes.Replace(good, []byte(`"id":3`), []byte(`"id":03`), 1),
		"not UTF-8":                bytes.Replace(good, []byte(`"method":"t"`), []byte("\"method\":\"\xff\""), 1),
		"an array":                 []byte(`[1]`),
		"empty":                    nil,
		"a bad literal":            bytes.Replace(good, []byte(`"pinned":true`), []byte(`"pinned":tru`), 1),
	} {
		if cut, ok := taskInfoPrefix(raw, taskFieldsWithRequest); ok {
			t.Errorf("%s: cut %s from %s", name, cut, raw)
		}
	}
	// The stored record itself is cut, and the answer is what Koji's
	// getTaskInfo returns: the task's fields and, asked for, the request.
	for withRequest, want := range map[bool]string{false: `"weight":1.5}`, true: `"weight":1.5,"request":{"a":1}}`} {
		cut, err := taskInfoJSON(good, withRequest)
		if err != nil || !bytes.HasSuffix(cut, []byte(want)) || !bytes.HasPrefix(cut, []byte(`{"id":3,"state":2,`)) {
			t.Errorf("taskInfoJSON(request %v) = %s, %v", withRequest, cut, err)
		}
	}
}
