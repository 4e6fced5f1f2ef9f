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

// resultPrefix begins a hub's reply to a call that succeeded: the hub writes
// it as {"result":<value>} exactly (EncodeResult).
const resultPrefix = `{"result":`

// EncodeResult is the reply to a call that succeeded, around its encoded
// result, which it does not scan again.
func EncodeResult(result []byte) []byte {
	out := make([]byte, 0, len(resultPrefix)+len(result)+1)
	return append(append(append(out, resultPrefix...), result...), '}')
}

// DecodeResponse returns the result of a reply, or its fault. A reply of
// the hub's success form is taken with one validity scan of the value (the
// whole reply is then an object whose only key is result); any other is
// decoded in full (FuzzDecodeResponse holds both to the same answer).
func DecodeResponse(data []byte) (json.RawMessage, error) {
	if len(data) > len(resultPrefix)+1 && bytes.HasPrefix(data, []byte(resultPrefix)) && data[len(data)-1] == '}' {
		if raw := data[len(resultPrefix) : len(data)-1]; json.Valid(raw) {
			return raw, nil
		}
	}
	var r Response
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	if r.Error != nil {
		return nil, r.Error
	}
	return r.Result, nil
}

// DecodeRequest parses a request body; malformed input, or input beyond the
// limits (a zero RequestLimits: the defaults), is a ParameterError.
func DecodeRequest(data []byte, lim RequestLimits) (*Request, error) {
	var req Request
	if len(bytes.TrimSpace(data)) == 0 {
		return &req, nil
	}
	if err := checkRequest(data, lim); err != nil {
		return nil, err
	}
	// Arguments stay raw (decoded when bound), so plain Unmarshal does:
	// it refuses trailing data too, without a Decoder's buffer.
	if err := json.Unmarshal(data, &req); err != nil {
		return nil, ParameterError("malformed request: %v", err)
	}
	return &req, nil
}
