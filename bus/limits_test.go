package bus

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// nested returns a JSON array nested depth levels deep around 1.
func nested(depth int) string {
	return strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth)
}

func TestDecodeRequestLimits(t *testing.T) {
	small := RequestLimits{Size: 1000, StringSize: 10}
	cases := []struct {
		name string
		body string
		lim  RequestLimits
		want string // "" accepts; else the start of the ParameterError's text
	}{
		{"arguments at the depth limit", `{"args":[` + nested(MaxArgDepth) + `]}`, RequestLimits{}, ""},
		{"a keyword argument at the depth limit", `{"kwargs":{"extra":{"k":` + nested(MaxArgDepth-1) + `}}}`, RequestLimits{}, ""},
		{"one level too deep", `{"args":[` + nested(MaxArgDepth+1) + `]}`, RequestLimits{}, "argument nested 33 levels deep exceeds the limit of 32 levels"},
		{"far deeper than the decoder takes", `{"args":[` + nested(20000) + `]}`, RequestLimits{}, "argument nested 20,000 levels deep exceeds the limit of 32 levels"},
		{"brackets inside strings do not count", `{"args":["` + strings.Repeat("[", 100) + `"]}`, RequestLimits{}, ""},
		{"an escaped quote does not end a string", `{"args":["\"` + strings.Repeat("{", 100) + `"]}`, RequestLimits{}, ""},
		{"a body at the size limit", `{"args":["` + strings.Repeat("x", 1000-13) + `"]}`, RequestLimits{Size: 1000}, ""},
		{"a body over the size limit", `{"args":["` + strings.Repeat("x", 1000-12) + `"]}`, RequestLimits{Size: 1000}, "request of 1,001 bytes exceeds the limit of 1,000 (MaxRequestSize)"},
		{"the default size limit", `{"args":["` + strings.Repeat("x", DefaultMaxRequestSize) + `"]}`, RequestLimits{}, "request of 4,194,317 bytes exceeds the limit of 4,194,304 (MaxRequestSize)"},
		{"a string at its limit", `{"args":["0123456789"]}`, small, ""},
		{"a string over its limit", `{"args":["0123456789a"]}`, small, "string of 11 bytes exceeds the limit of 10 (MaxStringSize)"},
		{"a key over the string limit", `{"kwargs":{"0123456789ab":1}}`, small, "string of 12 bytes exceeds the limit of 10 (MaxStringSize)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, err := DecodeRequest([]byte(tc.body), tc.lim)
			if tc.want == "" {
				if err != nil || req == nil {
					t.Fatalf("DecodeRequest = %v, want it accepted", err)
				}
				return
			}
			var f *Fault
			if !errors.As(err, &f) || f.Code != CodeParameterError || !strings.HasPrefix(f.Message, tc.want) {
				t.Fatalf("DecodeRequest = %v, want ParameterError %q", err, tc.want)
			}
		})
	}
}

func TestClipAndCount(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 7900000: "7,900,000", -1234: "-1,234"} {
		if got := Count(n); got != want {
			t.Errorf("Count(%d) = %q, want %q", n, got, want)
		}
	}
	if got := Clip("short"); got != "short" {
		t.Errorf("Clip(short) = %q", got)
	}
	long := strings.Repeat("é", 4_000_000) // 2-byte characters: the cut must not split one
	got := Clip(long)
	if !strings.HasSuffix(got, "… (8,000,000 bytes)") || len(got) > ClipLen+40 || !json.Valid([]byte(`"`+got+`"`)) {
		t.Errorf("Clip(8 MB) = %q", got)
	}
}

// FuzzDecodeRequest: any body, deep or large, is either refused with a
// ParameterError or decoded into arguments that are within the limits and
// decode again once wrapped as deeply as the hub stores them.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"args":[1,"a",null]}`, `{"kwargs":{"extra":{"k":[[1]]}}}`,
		`{"args":[` + nested(MaxArgDepth) + `]}`, `{"args":[` + nested(MaxArgDepth+1) + `]}`,
		`{"args":[` + nested(10001) + `]}`, `{"args":["` + strings.Repeat("\\\"[", 200) + `"]}`,
		`{"args":["` + strings.Repeat("x", 5000) + `"]}`, `["[`, `"\`, `{"args":[{"a":{"b":{"c":[]}}}]} x`,
	} {
		f.Add([]byte(seed))
	}
	lim := RequestLimits{Size: 1 << 16, StringSize: 1 << 12}
	f.Fuzz(func(t *testing.T, body []byte) {
		if got, want := ScanJSON(body), scanJSONByByte(body); got != want {
			t.Fatalf("ScanJSON(%q) = %+v, byte by byte %+v", body, got, want)
		}
		req, err := DecodeRequest(body, lim)
		if err != nil {
			var fault *Fault
			if !errors.As(err, &fault) || fault.Code != CodeParameterError {
				t.Fatalf("DecodeRequest: %T %v, want a ParameterError", err, err)
			}
			if len(fault.Message) > 200 {
				t.Fatalf("a fault of %d bytes", len(fault.Message))
			}
			return
		}
		if len(body) > lim.Size {
			t.Fatalf("accepted a body of %d bytes", len(body))
		}
		values := append([]json.RawMessage{}, req.Args...)
		for _, v := range req.Kwargs {
			values = append(values, v)
		}
		for _, v := range values {
			if sh := ScanJSON(v); sh.Depth > MaxArgDepth || sh.LongestString > lim.StringSize {
				t.Fatalf("accepted an argument of shape %+v: %.200s", sh, v)
			}
			// Wrapped as a transaction wraps an event's body, and deeper.
			wrapped := `{"e":[{"body":{"info":{"result":[` + string(v) + `]}}}]}`
			var out any
			if err := json.Unmarshal([]byte(wrapped), &out); err != nil {
				t.Fatalf("an accepted argument does not decode once wrapped: %v", err)
			}
		}
	})
}

// scanJSONByByte is ScanJSON as a plain state machine over one byte at a
// time: what FuzzDecodeRequest holds ScanJSON to.
func scanJSONByByte(data []byte) JSONShape {
	var sh JSONShape
	depth, inString, escaped, start := 0, false, false, 0
	for i, c := range data {
		switch {
		case inString && escaped:
			escaped = false
		case inString && c == '\\':
			escaped = true
		case inString && c == '"':
			inString = false
			sh.LongestString = max(sh.LongestString, i-start)
		case inString:
		case c == '"':
			inString, start = true, i+1
		case c == '[' || c == '{':
			depth++
			sh.Depth = max(sh.Depth, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	if inString {
		sh.LongestString = max(sh.LongestString, len(data)-start)
	}
	return sh
}

// BenchmarkDecodeRequest: what the limits' scan adds to decoding a request
// (scan-only, with-limits), beside the decode alone, for a createTag-sized
// body and a large one.
func BenchmarkDecodeRequest(b *testing.B) {
	small, _ := NewRequest([]any{"f40-build"}, map[string]any{"arches": "x86_64 aarch64", "extra": map[string]any{"mock.package_manager": "dnf"}})
	large, _ := NewRequest([]any{"f40-build"}, map[string]any{"extra": map[string]any{"k": strings.Repeat("x", 64<<10), "l": []any{[]any{1, 2}, map[string]any{"a": "b"}}}})
	for _, body := range []struct {
		name string
		data []byte
	}{{"small", small}, {"64KiB", large}} {
		b.Run(body.name+"/decode-only", func(b *testing.B) {
			b.SetBytes(int64(len(body.data)))
			for b.Loop() {
				var req Request
				if err := json.Unmarshal(body.data, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(body.name+"/scan-only", func(b *testing.B) {
			b.SetBytes(int64(len(body.data)))
			for b.Loop() {
				ScanJSON(body.data)
			}
		})
		b.Run(body.name+"/with-limits", func(b *testing.B) {
			b.SetBytes(int64(len(body.data)))
			for b.Loop() {
				if _, err := DecodeRequest(body.data, RequestLimits{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
