package state

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// decodeTxnDeep decodes a transaction message whose values nest deeper
// than the JSON decoder goes (10,000 levels). The store refuses to commit
// such a transaction (checkTxn), but a hub before that check could have
// had one acknowledged; voiding it when a view loads it would lose an
// acknowledged write. The envelope is walked token by token, which has no
// depth limit, and the values are kept as the raw bytes they were sent as.
func decodeTxnDeep(data []byte) (*txnMsg, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	t := &txnMsg{}
	err := walkObject(dec, data, func(key string, raw json.RawMessage) error {
		switch key {
		case "w":
			return walkArray(dec, func() error {
				var w txnWrite
				err := walkObject(dec, data, func(key string, raw json.RawMessage) error {
					return setField(key, raw, map[string]any{"k": &w.Key, "v": &w.Val, "d": &w.Del, "x": &w.Expect, "s": &w.Seq})
				})
				t.Writes = append(t.Writes, w)
				return err
			})
		case "e":
			return walkArray(dec, func() error {
				var e OutEvent
				err := walkObject(dec, data, func(key string, raw json.RawMessage) error {
					return setField(key, raw, map[string]any{"address": &e.Address, "props": &e.Props, "body": &e.Body,
						"subject": &e.Subject, "msg_id": &e.MsgID, "headers": &e.Headers, "notify": &e.Notify, "consumer": &e.Consumer})
				})
				t.Events = append(t.Events, e)
				return err
			})
		}
		return setField(key, raw, map[string]any{"r": &t.Request, "res": &t.Result})
	}, "w", "e")
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("state: data after the transaction")
	}
	return t, nil
}

// walkObject reads an object from dec, calling field for each member: with
// the member's raw value, or, for the keys in nested, with nil and dec
// positioned at the value for field to read itself.
func walkObject(dec *json.Decoder, data []byte, field func(key string, raw json.RawMessage) error, nested ...string) error {
	if err := expectDelim(dec, '{'); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("state: object key %v", tok)
		}
		var raw json.RawMessage
		isNested := false
		for _, n := range nested {
			isNested = isNested || n == key
		}
		if !isNested {
			if raw, err = rawValue(dec, data); err != nil {
				return err
			}
		}
		if err := field(key, raw); err != nil {
			return err
		}
	}
	return expectDelim(dec, '}')
}

// walkArray reads an array from dec, calling elem to read each element.
func walkArray(dec *json.Decoder, elem func() error) error {
	if err := expectDelim(dec, '['); err != nil {
		return err
	}
	for dec.More() {
		if err := elem(); err != nil {
			return err
		}
	}
	return expectDelim(dec, ']')
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("state: want %v, got %v", want, tok)
	}
	return nil
}

// rawValue skips the next value of dec, at any depth, and returns its bytes.
func rawValue(dec *json.Decoder, data []byte) (json.RawMessage, error) {
	start := dec.InputOffset()
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if d, ok := tok.(json.Delim); ok {
			if d == '[' || d == '{' {
				depth++
			} else {
				depth--
			}
		}
		if depth == 0 {
			break
		}
	}
	// The value follows the member's ':' (and any space) and ends where
	// the decoder stopped.
	raw := bytes.TrimLeft(data[start:dec.InputOffset()], " \t\r\n:,")
	return json.RawMessage(bytes.Clone(raw)), nil
}

// setField stores a member's raw value into its field: raw values as they
// are, others decoded (they are shallow). Unknown keys are ignored, as
// json.Unmarshal ignores them.
func setField(key string, raw json.RawMessage, fields map[string]any) error {
	dst, ok := fields[key]
	if !ok {
		return nil
	}
	if r, ok := dst.(*json.RawMessage); ok {
		*r = raw
		return nil
	}
	return json.Unmarshal(raw, dst)
}
