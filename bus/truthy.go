package bus

import (
	"encoding/json"
	"strings"
)

// PyTruthy is Python's truthiness of a decoded JSON value.
func PyTruthy(v any) bool {
	switch x := v.(type) {
	case nil:
		return false
	case bool:
		return x
	case float64:
		return x != 0
	case int:
		return x != 0
	case int64:
		return x != 0
	case json.Number:
		f, _ := x.Float64()
		return f != 0
	case string:
		return x != ""
	case []any:
		return len(x) > 0
	case []string:
		return len(x) > 0
	case map[string]any:
		return len(x) > 0
	}
	return true
}

// OptionTruthy reads a tag extra option the way Koji's option readers do:
// Python truthiness, except that the strings "0", "false", "no", "off" and
// "none" (any case) are false, as configuration values written as text are.
func OptionTruthy(v any) bool {
	if s, ok := v.(string); ok {
		switch strings.ToLower(s) {
		case "0", "false", "no", "off", "none":
			return false
		}
	}
	return PyTruthy(v)
}
