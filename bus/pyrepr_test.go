package bus

import "testing"

func TestPyStr(t *testing.T) {
	tests := []struct{ in, want string }{
		{"a", `'a'`},
		{"it's", `"it's"`},
		{`it's "x"`, `'it\'s "x"'`},
		{`a\b`, `'a\\b'`},
		{"a\tb\x01\u00a0é\u2028", `'a\tb\x01\xa0é\u2028'`},
	}
	for _, tt := range tests {
		if got := PyStr(tt.in); got != tt.want {
			t.Errorf("PyStr(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}
