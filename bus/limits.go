package bus

import (
	"bytes"
	"strconv"
	"unicode/utf8"
)

// MaxPayload is the largest message the embedded NATS server takes (its
// max_payload): no request, reply, transaction or event may be larger.
const MaxPayload = 8 << 20

// MaxArgDepth bounds how deeply any argument of a request may nest (an
// array or object inside another counts one level). Koji's values nest a
// few levels (a tag's extra, a task's options, a build's result); 32 leaves
// room for any of them and keeps every stored form of a value far below the
// JSON decoder's own limit of 10,000 levels (and Python's recursion limit
// of 1,000 in the clients that read events): a value is stored and
// published wrapped a few levels deeper than it was sent (an event body in
// a transaction, an archived record, a reply), and what the hub stores must
// always decode again.
const MaxArgDepth = 32

// requestWrap is how deep a request body holds its arguments:
// {"args":[...]} and {"kwargs":{"k":...}} both put them two levels down.
const requestWrap = 2

// RequestLimits bound one API request; the hub checks them before it
// decodes the request's arguments (hub.conf [hub] MaxRequestSize and
// MaxStringSize). Zero fields take the defaults.
type RequestLimits struct {
	Size       int // bytes of the whole request body
	StringSize int // bytes of any one string in it (as sent, escapes included)
}

// Defaults of RequestLimits: a request well below MaxPayload (a client's
// headers ride in the same message), and no single string larger than a
// task's result may be.
const (
	DefaultMaxRequestSize = 4 << 20
	DefaultMaxStringSize  = 1 << 20
)

func (l RequestLimits) withDefaults() RequestLimits {
	if l.Size <= 0 {
		l.Size = DefaultMaxRequestSize
	}
	if l.StringSize <= 0 {
		l.StringSize = DefaultMaxStringSize
	}
	return l
}

// JSONShape is what ScanJSON measures of a JSON text.
type JSONShape struct {
	Depth         int // the deepest nesting of arrays and objects (0: a scalar)
	LongestString int // bytes of the longest string as written, quotes excluded
}

// ScanJSON measures a JSON text in one pass without decoding it: how deeply
// it nests and how long its longest string is. It does not check that the
// text is valid JSON (the decoder does that after it); on invalid input the
// figures are only what the bytes seen suggest.
func ScanJSON(data []byte) JSONShape {
	var sh JSONShape
	depth := 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '[', '{':
			depth++
			sh.Depth = max(sh.Depth, depth)
		case ']', '}':
			depth--
		case '"':
			// To the closing quote: a string's bytes are found a run at a
			// time (most strings have no escape).
			start := i + 1
			for i = start; i < len(data); {
				j := bytes.IndexByte(data[i:], '"')
				if j < 0 {
					i = len(data)
					break
				}
				k := bytes.IndexByte(data[i:i+j], '\\')
				if k < 0 {
					i += j
					break
				}
				i += k + 2 // past the escaped byte
			}
			sh.LongestString = max(sh.LongestString, min(i, len(data))-start)
		}
	}
	return sh
}

// checkRequest refuses a request body beyond the limits, naming the limit
// and the size found.
func checkRequest(data []byte, lim RequestLimits) error {
	lim = lim.withDefaults()
	if len(data) > lim.Size {
		return ParameterError("request of %s bytes exceeds the limit of %s (MaxRequestSize)", Count(len(data)), Count(lim.Size))
	}
	sh := ScanJSON(data)
	if d := sh.Depth - requestWrap; d > MaxArgDepth {
		return ParameterError("argument nested %s levels deep exceeds the limit of %d levels", Count(d), MaxArgDepth)
	}
	if sh.LongestString > lim.StringSize {
		return ParameterError("string of %s bytes exceeds the limit of %s (MaxStringSize)", Count(sh.LongestString), Count(lim.StringSize))
	}
	return nil
}

// Count renders n with thousands separators (7,900,000), as sizes are
// quoted in the limits' faults.
func Count(n int) string {
	s := strconv.Itoa(n)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	out := make([]byte, 0, len(s)+len(s)/3+1)
	if neg {
		out = append(out, '-')
	}
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// ClipLen is how much of a caller's value a fault quotes.
const ClipLen = 100

// Clip shortens a caller's value for quoting in a fault: up to ClipLen bytes
// (cut at a character boundary), then "…" and the value's size, so a fault
// never echoes a huge value back.
func Clip(s string) string {
	if len(s) <= ClipLen {
		return s
	}
	cut := ClipLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "… (" + Count(len(s)) + " bytes)"
}
