package hub

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

// nestedJSON is a JSON array nested depth levels deep.
func nestedJSON(depth int) json.RawMessage {
	return json.RawMessage(strings.Repeat("[", depth) + "1" + strings.Repeat("]", depth))
}

// limitsHub is a hub with small extra and result limits in its hub.conf
// (the request and string limits at their defaults), an open run of a
// sleep task on its one builder, and a tag to edit.
type limitsHub struct {
	*TestHub
	b           *TestHost
	id, attempt int64
}

func setupLimits(t *testing.T) *limitsHub {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "hub.conf")
	if err := os.WriteFile(conf, []byte("[hub]\nMaxExtraSize = 4096\nMaxExtraKeys = 16\nMaxResultSize = 8192\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h := StartTestHub(t, func(c *Config) { c.HubConf = conf })
	ctx := ctxT(t)
	lh := &limitsHub{TestHub: h, b: h.AddHost(t, "builder1", "x86_64")}
	heartbeat(t, lh.b)
	if err := h.Admin.Call(ctx, "makeTask", []any{"sleep", []any{0}}, nil, &lh.id); err != nil {
		t.Fatal(err)
	}
	_, lh.attempt = msgTask(t, pull(t, lh.b))
	if err := lh.b.Client.Call(ctx, "host.openTask", []any{lh.id, lh.attempt}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := h.Admin.Call(ctx, "createTag", []any{"lim-base"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	return lh
}

// Hostile calls are refused with a fault naming the limit and the size,
// before anything is stored: no transaction commits (so no event), and the
// same calls within the limits go through right after.
func TestHostileCallsAreRefusedBeforeAnythingIsStored(t *testing.T) {
	h := setupLimits(t)
	ctx := ctxT(t)
	big := func(n int) string { return strings.Repeat("x", n) }
	manySmall := map[string]any{}
	for i := range 8 {
		manySmall[fmt.Sprintf("k%d", i)] = big(1000)
	}
	manyKeys := map[string]any{}
	for i := range 17 {
		manyKeys[fmt.Sprintf("k%d", i)] = i
	}
	failure, _ := json.Marshal(bus.GenericError("%s", big(10000)))
	assertRefused(t, h.TestHub, []badCall{
		{"createTag with an extra nested 10,000 deep", h.Admin, "createTag", []any{"lim-deep"}, map[string]any{"extra": map[string]any{"k": nestedJSON(9998)}},
			bus.CodeParameterError, "argument nested 9,999 levels deep exceeds the limit of 32 levels"},
		{"host.closeTask with a result nested 9,998 deep", h.b.Client, "host.closeTask", []any{h.id, h.attempt, nestedJSON(9998)}, nil,
			bus.CodeParameterError, "argument nested 9,998 levels deep exceeds the limit of 32 levels"},
		{"a 7.9 MB tag name", h.Admin, "createTag", []any{big(7_900_000)}, nil,
			bus.CodeParameterError, "request of 7,900,013 bytes exceeds the limit of 4,194,304 (MaxRequestSize)"},
		{"a 1 MB tag name", h.Admin, "createTag", []any{big(1_000_000)}, nil,
			bus.CodeGenericError, "Name " + big(bus.ClipLen) + "… (1,000,000 bytes) is too long. Max length is 256 characters"},
		{"getTag of a 1 MB name", h.Admin, "getTag", []any{big(1_000_000)}, map[string]any{"strict": true},
			bus.CodeGenericError, "No such tagInfo: '" + big(bus.ClipLen) + "… (1,000,000 bytes)'"},
		{"deleteBuildTarget of a 1 MB name", h.Admin, "deleteBuildTarget", []any{big(1_000_000)}, nil,
			bus.CodeGenericError, "No such build target: " + big(bus.ClipLen) + "… (1,000,000 bytes)"},
		{"a string over MaxStringSize", h.Admin, "createTag", []any{"lim-str"}, map[string]any{"extra": map[string]any{"k": big(2 << 20)}},
			bus.CodeParameterError, "string of 2,097,152 bytes exceeds the limit of 1,048,576 (MaxStringSize)"},
		{"an extra over MaxExtraSize", h.Admin, "createTag", []any{"lim-extra"}, map[string]any{"extra": manySmall},
			bus.CodeParameterError, "tag extra of 8,065 bytes exceeds the limit of 4,096 (MaxExtraSize)"},
		{"an extra over MaxExtraKeys", h.Admin, "createTag", []any{"lim-keys"}, map[string]any{"extra": manyKeys},
			bus.CodeParameterError, "tag extra of 17 keys exceeds the limit of 16 (MaxExtraKeys)"},
		{"editTag2 growing an extra over MaxExtraSize", h.Admin, "editTag2", []any{"lim-base"}, map[string]any{"extra": manySmall},
			bus.CodeParameterError, "tag extra of 8,065 bytes exceeds the limit of 4,096 (MaxExtraSize)"},
		{"host.failTask with a result over MaxResultSize", h.b.Client, "host.failTask", []any{h.id, h.attempt, map[string]any{"faultString": big(10000)}}, nil,
			bus.CodeParameterError, fmt.Sprintf("task result of %s bytes exceeds the limit of 8,192 (MaxResultSize)", bus.Count(len(failure)))},
		{"host.closeTask with a result over MaxResultSize", h.b.Client, "host.closeTask", []any{h.id, h.attempt, []string{big(5000), big(5000)}}, nil,
			bus.CodeParameterError, "task result of 10,007 bytes exceeds the limit of 8,192 (MaxResultSize)"},
	})
	// The same calls within the limits.
	for _, c := range []struct {
		client *bus.Client
		method string
		args   []any
		kwargs map[string]any
	}{
		{h.Admin, "createTag", []any{"lim-deep"}, map[string]any{"extra": map[string]any{"k": nestedJSON(bus.MaxArgDepth - 2)}}},
		{h.Admin, "createTag", []any{big(256)}, nil},
		{h.Admin, "createTag", []any{"lim-str"}, map[string]any{"extra": map[string]any{"k": big(1000)}}},
		{h.Admin, "createTag", []any{"lim-extra"}, map[string]any{"extra": map[string]any{"k": big(4000)}}},
		{h.Admin, "createTag", []any{"lim-keys"}, map[string]any{"extra": map[string]any{"k": 1}}},
		{h.Admin, "editTag2", []any{"lim-base"}, map[string]any{"extra": map[string]any{"k": "v"}}},
		{h.b.Client, "host.closeTask", []any{h.id, h.attempt, []any{big(4000), nestedJSON(bus.MaxArgDepth - 1)}}, nil},
	} {
		if err := c.client.Call(ctx, c.method, c.args, c.kwargs, nil); err != nil {
			t.Errorf("%s within the limits: %v", c.method, err)
		}
	}
	var info struct {
		State int `json:"state"`
	}
	if err := h.Admin.Call(ctx, "getTaskInfo", []any{h.id}, nil, &info); err != nil || info.State != bus.TaskClosed {
		t.Fatalf("task %d after the calls: %+v, %v", h.id, info, err)
	}
}

// The limits are read from hub.conf's [hub] section; a value out of range
// is refused with its line.
func TestLimitsFromHubConf(t *testing.T) {
	dir := t.TempDir()
	write := func(text string) string {
		p := filepath.Join(dir, "hub.conf")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	hc, err := LoadHubConf(write("[hub]\nMaxRequestSize = 100000\nMaxStringSize = 5000\nMaxResultSize = 2048\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := defaultLimits()
	want.Size, want.StringSize, want.ResultSize = 100000, 5000, 2048
	if hc.Limits != want {
		t.Errorf("limits = %+v, want %+v", hc.Limits, want)
	}
	if hc, err := LoadHubConf(""); err != nil || hc.Limits != defaultLimits() {
		t.Errorf("no hub.conf: %+v %v", hc, err)
	}
	for _, text := range []string{"[hub]\n\nMaxRequestSize = 9000000\n", "[hub]\n\nMaxExtraKeys = 0\n", "[hub]\n\nMaxExtraSize = lots\n"} {
		if _, err := LoadHubConf(write(text)); err == nil || !strings.Contains(err.Error(), "line 3") {
			t.Errorf("LoadHubConf(%q) = %v, want an error naming line 3", text, err)
		}
	}
}
