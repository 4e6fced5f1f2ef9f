package bus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestRequestRoundTrip(t *testing.T) {
	body, err := NewRequest([]any{"f30-build", 3, nil, []string{"a"}}, map[string]any{"strict": true, "event": 12})
	if err != nil {
		t.Fatal(err)
	}
	req, err := DecodeRequest(body, RequestLimits{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range req.Args {
		got = append(got, string(a))
	}
	if want := []string{`"f30-build"`, `3`, `null`, `["a"]`}; !reflect.DeepEqual(got, want) {
		t.Errorf("args = %v, want %v", got, want)
	}
	if string(req.Kwargs["strict"]) != "true" || string(req.Kwargs["event"]) != "12" || len(req.Kwargs) != 2 {
		t.Errorf("kwargs = %v", req.Kwargs)
	}
	// no kwargs: the field is omitted
	body, _ = NewRequest(nil, nil)
	if string(body) != `{"args":[]}` {
		t.Errorf("empty request = %s", body)
	}
	if _, err := NewRequest([]any{func() {}}, nil); err == nil || !strings.Contains(err.Error(), "argument 0") {
		t.Errorf("unencodable argument: %v", err)
	}
	if _, err := NewRequest(nil, map[string]any{"x": make(chan int)}); err == nil || !strings.Contains(err.Error(), "argument x") {
		t.Errorf("unencodable kwarg: %v", err)
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	for _, body := range []string{"", "  \n"} {
		req, err := DecodeRequest([]byte(body), RequestLimits{})
		if err != nil || len(req.Args) != 0 || req.Kwargs != nil {
			t.Errorf("empty body %q: %+v %v", body, req, err)
		}
	}
	for _, body := range []string{`{`, `[1]`, `{"args":{}}`, `{"kwargs":[1]}`, `{"args":[]} x`, `{} {}`, "\xff"} {
		_, err := DecodeRequest([]byte(body), RequestLimits{})
		var f *Fault
		if !errors.As(err, &f) || f.Code != CodeParameterError || !strings.HasPrefix(f.Message, "malformed request: ") {
			t.Errorf("DecodeRequest(%q) = %v, want a ParameterError", body, err)
		}
	}
}

func TestFaults(t *testing.T) {
	f := GenericError("No such tag: %s", "f30")
	if f.Error() != "GenericError: No such tag: f30" || f.Code != 1000 {
		t.Errorf("fault = %+v %q", f, f)
	}
	wrapped := fmt.Errorf("call: %w", ActionNotAllowed("admin permission required"))
	if !errors.Is(wrapped, ErrActionNotAllowed) || errors.Is(wrapped, ErrParameter) {
		t.Error("errors.Is must match faults by code")
	}
	if !errors.Is(wrapped, &Fault{Code: CodeActionNotAllowed, Message: "admin permission required"}) ||
		errors.Is(wrapped, &Fault{Code: CodeActionNotAllowed, Message: "other"}) {
		t.Error("a sentinel with a message matches that message only")
	}
	if AsFault(nil) != nil {
		t.Error("AsFault(nil) != nil")
	}
	if g := AsFault(errors.New("disk full")); g.Code != CodeGenericError || g.Message != "disk full" {
		t.Errorf("AsFault(plain) = %+v", g)
	}
	if AsFault(wrapped).Name != "ActionNotAllowed" {
		t.Error("AsFault must unwrap faults")
	}
	if FaultName(CodeParameterError) != "ParameterError" || FaultName(4242) != "GenericError" {
		t.Error("FaultName")
	}
	var resp Response
	b, _ := json.Marshal(Response{Error: ParameterError("bad")})
	if err := json.Unmarshal(b, &resp); err != nil || resp.Error.Name != "ParameterError" || resp.Error.Code != 1019 {
		t.Errorf("fault on the wire: %s", b)
	}
}

func TestParseDurability(t *testing.T) {
	cases := []struct {
		in   string
		d    Durability
		iv   time.Duration
		fail bool
	}{
		{"", DurabilitySync, 0, false},
		{"sync", DurabilitySync, 0, false},
		{"interval", DurabilityInterval, 2 * time.Minute, false},
		{"interval:5s", DurabilityInterval, 5 * time.Second, false},
		{"interval:0s", "", 0, true},
		{"interval:-1s", "", 0, true},
		{"interval:soon", "", 0, true},
		{"always", "", 0, true},
	}
	for _, tc := range cases {
		d, iv, err := ParseDurability(tc.in)
		if (err != nil) != tc.fail || d != tc.d || iv != tc.iv {
			t.Errorf("ParseDurability(%q) = %q %v %v", tc.in, d, iv, err)
		}
	}
}

func TestEventRoundTrip(t *testing.T) {
	ev := &Event{ID: 42, Address: "build.tag", Props: map[string]any{"tag": "f30", "build_id": 7, "user": nil, "ok": true}, Body: json.RawMessage(`{"x":1}`)}
	m, err := EventToMsg(ev)
	if err != nil {
		t.Fatal(err)
	}
	if m.Subject != "koji.event.build.tag" || EventAddress(m.Subject) != "build.tag" {
		t.Errorf("subject %q", m.Subject)
	}
	for h, want := range map[string]string{
		HeaderEventID: "42", HeaderAddress: "build.tag",
		"Koji-Prop-tag": "f30", "Koji-Prop-build_id": "7", "Koji-Prop-user": "", "Koji-Prop-ok": "True",
	} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("header %s = %q, want %q", h, got, want)
		}
	}
	back, err := EventFromMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	if back.ID != 42 || back.Address != "build.tag" || string(back.Body) != `{"x":1}` ||
		back.Props["tag"] != "f30" || back.Props["build_id"] != float64(7) || back.Props["ok"] != true {
		t.Errorf("round trip = %+v", back)
	}
	m.Header.Set(HeaderEventID, "x")
	if _, err := EventFromMsg(m); err == nil {
		t.Error("a bad event id must be refused")
	}
}

func TestSubjects(t *testing.T) {
	if IdentityAPISubject("alice", "getTag") != "koji.api.alice.getTag" || EventSubject("tag.create") != "koji.event.tag.create" {
		t.Error("subjects")
	}
}

// The hub's success form and a full decode give the same answer for any
// reply: the same fault, or results equal once compacted.
func FuzzDecodeResponse(f *testing.F) {
	for _, s := range []string{`{"result":{"id":1,"state":2}}`, `{"result":null,"error":{"faultCode":1000,"faultString":"x"}}`,
		`{"result":1,"result":2}`, `{"result":{},"error":{}}`, `{"result": [1, "a"] }`, `{"result":"}"}`, `{"result":}`, `{}`, `[]`, `x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if json.Valid(data) {
			// A result the hub encoded comes back as it was.
			if got, err := DecodeResponse(EncodeResult(data)); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("DecodeResponse(EncodeResult(%q)) = %q, %v", data, got, err)
			}
		}
		got, gotErr := DecodeResponse(data)
		var r Response
		wantErr := json.Unmarshal(data, &r)
		if wantErr == nil && r.Error != nil {
			wantErr = r.Error
		}
		if (gotErr == nil) != (wantErr == nil) {
			t.Fatalf("DecodeResponse(%q) = %s, %v; a full decode gives %s, %v", data, got, gotErr, r.Result, wantErr)
		}
		if gotErr != nil {
			var gf, wf *Fault
			if errors.As(gotErr, &gf) != errors.As(wantErr, &wf) || (gf != nil && *gf != *wf) {
				t.Fatalf("DecodeResponse(%q): fault %v, a full decode gives %v", data, gotErr, wantErr)
			}
			return
		}
		var a, b bytes.Buffer
		if (json.Compact(&a, got) == nil) != (json.Compact(&b, r.Result) == nil) || a.String() != b.String() {
			t.Fatalf("DecodeResponse(%q) = %q, a full decode gives %q", data, got, r.Result)
		}
	})
}
