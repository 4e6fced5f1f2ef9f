package state

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// appendTxn appends the JSON of a transaction message, byte for byte what
// json.Marshal gives (FuzzAppendTxn checks it), without json.Marshal's
// second pass over every embedded value: the values, properties and bodies
// were encoded by json.Marshal when staged, so they are valid and compact
// already, and checking and compacting them again was most of the cost of
// sending a commit.
func appendTxn(b []byte, t *txnMsg) ([]byte, error) {
	b = append(b, '{')
	first := true
	field := func(name string) {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(append(append(b, '"'), name...), `":`...)
	}
	if len(t.Writes) > 0 {
		field("w")
		b = append(b, '[')
		for i, w := range t.Writes {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"k":`...)
			b = appendString(b, w.Key)
			if len(w.Val) > 0 {
				b = append(append(b, `,"v":`...), w.Val...)
			}
			if w.Del {
				b = append(b, `,"d":true`...)
			}
			b = strconv.AppendUint(append(b, `,"x":`...), w.Expect, 10)
			if w.Seq {
				b = append(b, `,"s":true`...)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	if len(t.Events) > 0 {
		field("e")
		b = append(b, '[')
		for i := range t.Events {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendOutEvent(b, &t.Events[i]); err != nil {
				return nil, err
			}
		}
		b = append(b, ']')
	}
	if t.Request != "" {
		field("r")
		b = appendString(b, t.Request)
	}
	if len(t.Result) > 0 {
		field("res")
		b = append(b, t.Result...)
	}
	return append(b, '}'), nil
}

// appendOutEvent appends an OutEvent as json.Marshal encodes it.
func appendOutEvent(b []byte, e *OutEvent) ([]byte, error) {
	b = append(b, '{')
	if e.Address != "" {
		b = appendString(append(b, `"address":`...), e.Address)
		b = append(b, ',')
	}
	if len(e.Props) > 0 {
		b = append(append(append(b, `"props":`...), e.Props...), ',')
	}
	b = append(b, `"body":`...)
	if len(e.Body) > 0 {
		b = append(b, e.Body...)
	} else {
		b = append(b, "null"...)
	}
	for _, f := range []struct{ name, val string }{{"subject", e.Subject}, {"msg_id", e.MsgID}} {
		if f.val != "" {
			b = appendString(append(append(append(b, `,"`...), f.name...), `":`...), f.val)
		}
	}
	if len(e.Headers) > 0 || e.Notify != "" || e.Consumer != nil {
		// Dispatches only: few, and their maps take json.Marshal's key order.
		rest := struct {
			Headers  map[string]string `json:"headers,omitempty"`
			Notify   string            `json:"notify,omitempty"`
			Consumer *ConsumerSpec     `json:"consumer,omitempty"`
		}{e.Headers, e.Notify, e.Consumer}
		raw, err := json.Marshal(rest)
		if err != nil {
			return nil, err
		}
		b = append(append(b, ','), raw[1:len(raw)-1]...)
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string the way json.Marshal does: plain
// printable ASCII as it is, anything else through the encoder (which
// escapes quotes, controls and, for HTML, <, > and &).
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= utf8.RuneSelf || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			raw, _ := json.Marshal(s) // a string always encodes
			return append(b, raw...)
		}
	}
	return append(append(append(b, '"'), s...), '"')
}

// txnSize is about the size of a transaction's JSON, to allocate it once.
func txnSize(t *txnMsg) int {
	n := 16 + len(t.Request) + len(t.Result)
	for _, w := range t.Writes {
		n += 32 + len(w.Key) + len(w.Val)
	}
	for _, e := range t.Events {
		n += 64 + len(e.Address) + len(e.Props) + len(e.Body) + len(e.Subject) + len(e.MsgID)
	}
	return n
}
