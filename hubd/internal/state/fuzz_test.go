package state

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
)

// FuzzAppendTxn: the hand-written transaction encoder gives what
// json.Marshal gives, for any key, address, request id, value and body
// (staged the way Txn stages them: encoded by json.Marshal).
func FuzzAppendTxn(f *testing.F) {
	f.Add("tag.1", "tag.create", "req-1", "<a&b>", int64(7), true, "koji.tasks.1", "task-1-1")
	f.Add("k", "", "", "", int64(0), false, "", "")
	f.Add("seq.tag", "a\u2028b", "r\"\\", "\x00\xff", int64(-1), true, "", "m")
	f.Fuzz(func(t *testing.T, key, address, request, text string, n int64, del bool, subject, msgID string) {
		val, _ := json.Marshal(map[string]any{"s": text, "n": n})
		body, _ := json.Marshal([]any{text, n, nil})
		props, _ := json.Marshal(map[string]any{"type": text})
		res, _ := json.Marshal(text)
		m := &txnMsg{
			Writes: []txnWrite{{Key: key, Val: val, Expect: uint64(n)}, {Key: key + "." + text, Del: del, Seq: !del}},
			Events: []OutEvent{
				{Address: address, Props: props, Body: body},
				{Address: address, Body: nil},
				{Subject: subject, MsgID: msgID, Body: body, Notify: text, Headers: map[string]string{text: subject, "Id": msgID}},
				{Subject: subject, Body: val, Consumer: &ConsumerSpec{Stream: text, Name: msgID, Filter: subject}},
			},
			Request: request,
		}
		if request != "" {
			m.Result = res
		}
		got, err := appendTxn(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("appendTxn\n%s\njson.Marshal\n%s", got, want)
		}
		// The walk that decodes transactions too deep for the decoder
		// reads any transaction as the decoder does.
		if plain, deep := mustDecode(t, got), mustDecodeDeep(t, got); !reflect.DeepEqual(plain, deep) {
			t.Fatalf("decodeTxnDeep\n%s\ndecodeTxn\n%s", dump(deep), dump(plain))
		}
		if len(m.Writes) > 0 {
			m.Writes, m.Events = nil, m.Events[:1]
			if got, _ := appendTxn(nil, m); !bytes.Equal(got, mustMarshal(t, m)) {
				t.Fatalf("without writes: appendTxn\n%s\njson.Marshal\n%s", got, mustMarshal(t, m))
			}
		}
	})
}

func mustDecode(t *testing.T, data []byte) *txnMsg {
	t.Helper()
	m := &txnMsg{}
	if err := json.Unmarshal(data, m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustDecodeDeep(t *testing.T, data []byte) *txnMsg {
	t.Helper()
	m, err := decodeTxnDeep(data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
