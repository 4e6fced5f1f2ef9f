package hub

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

// runrootHub starts a hub with Plugins = runroot_hub, a tag f40-build
// (x86_64) and host b1 (x86_64) in a new runroot channel.
func runrootHub(t *testing.T) *TestHub {
	t.Helper()
	conf := writeHubConf(t, "[hub]\nPlugins = runroot_hub\n")
	h := StartTestHub(t, func(c *Config) { c.HubConf = conf })
	call(t, h.Admin, "createTag", []any{"f40-build"}, map[string]any{"arches": "x86_64"}, nil)
	call(t, h.Admin, "addHost", []any{"b1", []string{"x86_64"}}, nil, nil)
	call(t, h.Admin, "addHostToChannel", []any{"b1", "runroot"}, map[string]any{"create": true}, nil)
	return h
}

func TestRunrootPluginIsOffUnlessEnabled(t *testing.T) {
	h := StartTestHub(t, nil)
	var methods []string
	call(t, h.Admin, "system.listMethods", nil, nil, &methods)
	if slices.Contains(methods, "runroot") {
		t.Fatal("list-api shows runroot without the plugin")
	}
	h = runrootHub(t)
	call(t, h.Admin, "system.listMethods", nil, nil, &methods)
	if !slices.Contains(methods, "runroot") {
		t.Fatal("list-api does not show runroot with Plugins = runroot_hub")
	}
}

func TestRunrootCreatesTheTask(t *testing.T) {
	h := runrootHub(t)
	runner := h.UserClient(t, "rr", "runroot")
	cases := []struct {
		name    string
		args    []any
		kwargs  map[string]any
		channel string
		arch    string
		request string
	}{
		{"string command", []any{"f40-build", "x86_64", "echo hi"}, nil, "runroot", "x86_64",
			`["f40-build","x86_64","echo hi"]`},
		{"list command and the CLI's options", []any{"f40-build", "x86_64", []string{"ls", "-l"}},
			map[string]any{"packages": []string{}, "mounts": []string{"/mnt/x"}, "repo_id": nil, "skip_setarch": false, "weight": nil},
			"runroot", "x86_64",
			`["f40-build","x86_64",["ls","-l"],{"__starstar":true,"mounts":["/mnt/x"],"packages":[],"repo_id":null,"skip_setarch":false,"weight":null}]`},
		{"channel override is not passed on", []any{"f40-build", "x86_64", "true"}, map[string]any{"channel": "default"}, "default", "x86_64",
			`["f40-build","x86_64","true"]`},
		// every host's arch is among the tag's: the task stays noarch
		{"noarch", []any{"f40-build", "noarch", "true"}, nil, "runroot", "noarch", `["f40-build","noarch","true"]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var id int64
			call(t, runner, "runroot", tc.args, tc.kwargs, &id)
			var info map[string]any
			call(t, h.Admin, "getTaskInfo", []any{id}, map[string]any{"request": true}, &info)
			var ch bus.Channel
			call(t, h.Admin, "getChannel", []any{info["channel_id"]}, nil, &ch)
			req, _ := json.Marshal(info["request"])
			if info["method"] != "runroot" || info["priority"] != float64(15) || ch.Name != tc.channel || info["arch"] != tc.arch || string(req) != tc.request {
				t.Fatalf("task %v in channel %s, request %s", info, ch.Name, req)
			}
		})
	}
}

func TestRunrootNoarchPicksAnArchOfTheChannel(t *testing.T) {
	h := runrootHub(t)
	// An aarch64 host outside the tag's arches: noarch must become the
	// channel's x86_64.
	call(t, h.Admin, "addHost", []any{"b2", []string{"aarch64"}}, nil, nil)
	var id int64
	call(t, h.Admin, "runroot", []any{"f40-build", "noarch", "true"}, nil, &id)
	var info map[string]any
	call(t, h.Admin, "getTaskInfo", []any{id}, map[string]any{"request": true}, &info)
	if info["arch"] != "x86_64" || info["request"].([]any)[1] != "noarch" {
		t.Fatalf("noarch runroot: arch %v request %v", info["arch"], info["request"])
	}
}

func TestRunrootRefusals(t *testing.T) {
	h := runrootHub(t)
	call(t, h.Admin, "createTag", []any{"no-arches"}, nil, nil)
	call(t, h.Admin, "createTag", []any{"ppc-only"}, map[string]any{"arches": "ppc64le"}, nil)
	call(t, h.Admin, "addHost", []any{"b2", []string{"aarch64"}}, nil, nil)
	plain := h.UserClient(t, "plain")
	assertRefused(t, h, []badCall{
		{name: "no permission", client: plain, method: "runroot", args: []any{"f40-build", "x86_64", "true"},
			code: bus.CodeActionNotAllowed, msg: "runroot permission required (logged in as plain)"},
		{name: "anonymous", client: h.Anonymous(), method: "runroot", args: []any{"f40-build", "x86_64", "true"},
			code: bus.CodeActionNotAllowed, msg: "runroot permission required (user not logged in)"},
		{name: "bad arch", method: "runroot", args: []any{"f40-build", "x86_64,i686", "true"},
			code: bus.CodeGenericError, msg: "Architecture can be only [a-zA-Z0-9_-]"},
		{name: "command not a string or list", method: "runroot", args: []any{"f40-build", "x86_64", 5},
			code: bus.CodeGenericError, msg: "Invalid type for value '5': <class 'int'>"},
		{name: "no such tag", method: "runroot", args: []any{"nope", "x86_64", "true"},
			code: bus.CodeGenericError, msg: "No such tagInfo: 'nope'"},
		{name: "noarch without tag arches", method: "runroot", args: []any{"no-arches", "noarch", "true"},
			code: bus.CodeGenericError, msg: "no arches defined for tag no-arches"},
		{name: "noarch without common arches", method: "runroot", args: []any{"ppc-only", "noarch", "true"},
			code: bus.CodeGenericError, msg: "no common arches for tag/channel: ppc-only/runroot"},
		{name: "noarch on an unknown channel", method: "runroot", args: []any{"ppc-only", "noarch", "true"}, kwargs: map[string]any{"channel": "nope"},
			code: bus.CodeGenericError, msg: "query returned no rows"},
		{name: "unknown channel", method: "runroot", args: []any{"f40-build", "x86_64", "true"}, kwargs: map[string]any{"channel": "nope"},
			code: bus.CodeGenericError, msg: "No such channel: nope"},
	})
}
