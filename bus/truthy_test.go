package bus

import (
	"encoding/json"
	"testing"
)

func TestOptionTruthy(t *testing.T) {
	cases := []struct {
		in   any
		want bool
	}{
		{nil, false}, {true, true}, {false, false}, {0.0, false}, {2.0, true},
		{json.Number("0"), false}, {json.Number("1"), true},
		{"", false}, {"0", false}, {"False", false}, {"no", false}, {"OFF", false}, {"None", false},
		{"1", true}, {"True", true}, {"yes", true},
		{[]any{}, false}, {[]any{1.0}, true}, {map[string]any{}, false}, {map[string]any{"a": 1.0}, true},
	}
	for _, tc := range cases {
		if got := OptionTruthy(tc.in); got != tc.want {
			t.Errorf("OptionTruthy(%#v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestPyTruthy(t *testing.T) {
	cases := []struct {
		in   any
		want bool
	}{
		{nil, false}, {false, false}, {0.0, false}, {json.Number("0.0"), false}, {"", false}, {[]any{}, false}, {map[string]any{}, false},
		{true, true}, {0.5, true}, {"0", true}, {"false", true}, {[]any{nil}, true},
	}
	for _, tc := range cases {
		if got := PyTruthy(tc.in); got != tc.want {
			t.Errorf("PyTruthy(%#v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
