package bus

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Request is the body of a koji.api.<method> request: Koji's positional and
// keyword arguments.
type Request struct {
	Args   []json.RawMessage          `json:"args"`
	Kwargs map[string]json.RawMessage `json:"kwargs,omitempty"`
}

// Response is the reply: exactly one of Result or Error is meaningful.
type Response struct {
	Result json.RawMessage `json:"result"`
	Error  *Fault          `json:"error,omitempty"`
}

// NewRequest encodes Go values as a request body.
func NewRequest(args []any, kwargs map[string]any) ([]byte, error) {
	req := Request{Args: make([]json.RawMessage, 0, len(args))}
	for i, a := range args {
		b, err := json.Marshal(a)
		if err != nil {
			return nil, fmt.Errorf("encode argument %d: %w", i, err)
		}
		req.Args = append(req.Args, b)
	}
	if len(kwargs) > 0 {
		req.Kwargs = make(map[string]json.RawMessage, len(kwargs))
		for k, v := range kwargs {
			b, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("encode argument %s: %w", k, err)
			}
			req.Kwargs[k] = b
		}
	}
	return json.Marshal(req)
}

// DecodeRequest parses a request body; malformed input is a ParameterError.
func DecodeRequest(data []byte) (*Request, error) {
	var req Request
	if len(bytes.TrimSpace(data)) == 0 {
		return &req, nil
	}
	// Arguments stay raw (decoded when bound), so plain Unmarshal does:
	// it refuses trailing data too, without a Decoder's buffer.
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, ParameterError("malformed request: %v", err)
	}
	return &req, nil
}
