package hub

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
	"github.com/kojibus/kojibus/hubd/internal/policy"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

const testHubConf = `[hub]
MissingPolicyOk = true

[policy]
tag =
    has_perm admin && operation untag :: deny untagging is done by releng
    tag *-updates && fromtag *-candidate :: allow
    tag *-updates :: deny only moves from candidate
    all :: allow

package_list =
    match action block && user alice :: allow
    has_perm admin :: allow
    all :: deny ask releng

channel =
    method sleep :: use slow
    has req_channel :: req
    all :: use default

priority =
    method sleep && user alice :: set 5
    method sleep :: adjust +3
    all :: stay
`

func writeHubConf(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hub.conf")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func policyHub(t *testing.T) (*TestHub, string) {
	t.Helper()
	path := writeHubConf(t, testHubConf)
	h := StartTestHub(t, func(c *Config) { c.HubConf = path })
	call(t, h.Admin, "addChannel", []any{"slow"}, nil, nil)
	return h, path
}

func TestTagPolicyFromHubConf(t *testing.T) {
	h, _ := policyHub(t)
	setupTag(t, h, "f40-candidate", nil, nil, "bash")
	setupTag(t, h, "f40-updates", nil, nil, "bash")
	id := newBuild(t, h, "bash", "5.2", "1")
	ctx := context.Background()
	before := h.Store().Applied()
	// a plain tag into updates is denied with the policy's message, and nothing changes
	err := h.Admin.Call(ctx, "tagBuild", []any{"f40-updates", id}, nil, nil)
	wantFault(t, err, bus.CodeActionNotAllowed, "policy violation (tag): only moves from candidate")
	if h.Store().Applied() != before {
		t.Fatal("a denied tagBuild changed state")
	}
	call(t, h.Admin, "tagBuild", []any{"f40-candidate", id}, nil, nil)
	call(t, h.Admin, "tagBuild", []any{"f40-updates", id}, map[string]any{"fromtag": "f40-candidate"}, nil)
	err = h.Admin.Call(ctx, "untagBuild", []any{"f40-updates", id}, nil, nil)
	wantFault(t, err, bus.CodeActionNotAllowed, "policy violation (tag): untagging is done by releng")
	// force: an admin passes a denial
	call(t, h.Admin, "untagBuild", []any{"f40-updates", id}, map[string]any{"force": true}, nil)
}

func TestPackageListPolicyFromHubConf(t *testing.T) {
	h, _ := policyHub(t)
	call(t, h.Admin, "createTag", []any{"f40"}, nil, nil)
	alice := h.UserClient(t, "alice", "tag")
	bob := h.UserClient(t, "bob", "tag")
	ctx := context.Background()
	before := h.Store().Applied()
	err := bob.Call(ctx, "packageListAdd", []any{"f40", "zsh"}, map[string]any{"owner": "bob"}, nil)
	wantFault(t, err, bus.CodeActionNotAllowed, "policy violation (package_list): ask releng")
	if h.Store().Applied() != before {
		t.Fatal("a denied packageListAdd changed state")
	}
	call(t, h.Admin, "packageListAdd", []any{"f40", "zsh"}, map[string]any{"owner": "bob"}, nil)
	call(t, alice, "packageListBlock", []any{"f40", "zsh"}, nil, nil)
}

func TestChannelAndPriorityPolicies(t *testing.T) {
	h, _ := policyHub(t)
	alice := h.UserClient(t, "alice", "admin")
	var slow, def bus.Channel
	call(t, h.Admin, "getChannel", []any{"slow"}, nil, &slow)
	call(t, h.Admin, "getChannel", []any{"default"}, nil, &def)
	tests := []struct {
		name     string
		client   *bus.Client
		method   string
		kw       map[string]any
		channel  int64
		priority int
	}{
		{"sleep goes to slow, +3", h.Admin, "sleep", nil, slow.ID, defaultTaskPriority + 3},
		{"alice's sleep is set to 5", alice, "sleep", nil, slow.ID, 5},
		{"requested channel", h.Admin, "fork", map[string]any{"channel": "slow"}, slow.ID, defaultTaskPriority},
		{"others stay", h.Admin, "fork", nil, def.ID, defaultTaskPriority},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var id int64
			call(t, tc.client, "makeTask", []any{tc.method, []any{0}}, tc.kw, &id)
			var task bus.Task
			call(t, h.Admin, "getTaskInfo", []any{id}, nil, &task)
			if task.ChannelID != tc.channel || task.Priority != tc.priority {
				t.Fatalf("channel %d priority %d, want %d %d", task.ChannelID, task.Priority, tc.channel, tc.priority)
			}
		})
	}
}

func TestCheckPolicyAndReload(t *testing.T) {
	h, path := policyHub(t)
	setupTag(t, h, "f40-updates", nil, nil)
	var res map[string]any
	call(t, h.Admin, "checkPolicy", []any{"tag", map[string]any{"tag": "f40-updates", "operation": "tag"}}, nil, &res)
	if res["result"] != "deny" || res["reason"] != "only moves from candidate" || res["rule"] != "tag *-updates :: deny only moves from candidate" {
		t.Fatalf("checkPolicy %v", res)
	}
	if trace, _ := res["trace"].([]any); len(trace) != 3 {
		t.Fatalf("trace %v", res["trace"])
	}
	alice := h.UserClient(t, "alice")
	if err := alice.Call(context.Background(), "checkPolicy", []any{"tag", map[string]any{}}, nil, nil); err == nil {
		t.Fatal("checkPolicy is for admins")
	}

	// a file that does not parse is refused; the running policies stay
	if err := os.WriteFile(path, []byte("[policy]\ntag =\n    all :: allow\n    bogus :: deny\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := h.ReloadConfig(context.Background())
	var pe *config.ParseError
	if !errors.As(err, &pe) || pe.Line != 4 || pe.Msg != "[policy] tag: missing test handler: bogus" {
		t.Fatalf("reload of a bad file: %v", err)
	}
	call(t, h.Admin, "checkPolicy", []any{"tag", map[string]any{"tag": "f40-updates", "operation": "tag"}}, nil, &res)
	if res["result"] != "deny" {
		t.Fatalf("the running policy changed: %v", res)
	}
	// a good one takes effect
	if err := os.WriteFile(path, []byte("[policy]\ntag = all :: allow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.ReloadConfig(context.Background()); err != nil {
		t.Fatal(err)
	}
	call(t, h.Admin, "checkPolicy", []any{"tag", map[string]any{"tag": "f40-updates"}}, nil, &res)
	if res["result"] != "allow" {
		t.Fatalf("after reload: %v", res)
	}
}

func TestBadHubConfRefusesStart(t *testing.T) {
	path := writeHubConf(t, "[policy]\nchannel =\n    method sleep :: {\n        all :: use slow\n")
	srv, err := New(Config{DataDir: t.TempDir(), ListenPort: -1, HubConf: path})
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Start(context.Background())
	srv.Stop()
	if err == nil || !strings.Contains(err.Error(), "hub.conf, line 3: [policy] channel: block not closed") {
		t.Fatalf("start with a bad policy: %v", err)
	}
}

// The hub's tests read its state.
func TestHubPolicyTests(t *testing.T) {
	h := StartTestHub(t, nil)
	setupTag(t, h, "f40", nil, nil, "bash")
	setupTag(t, h, "f40-build", "f40", nil)
	call(t, h.Admin, "createBuildTarget", []any{"f40-candidate", "f40-build", "f40"}, nil, nil)
	id := newBuild(t, h, "bash", "5.2", "1.fc40")
	call(t, h.Admin, "tagBuild", []any{"f40", id}, nil, nil)
	h.UserClient(t, "alice", "tag")
	var aliceID int64
	var u bus.User
	call(t, h.Admin, "getUser", []any{"alice"}, nil, &u)
	aliceID = u.ID
	tests := []struct {
		rule string
		data policy.Data
		want bool
	}{
		{"package bash", policy.Data{"build": id}, true},
		{"package ba*", policy.Data{"package": "bash"}, true},
		{"version 5.*", policy.Data{"build": id}, true},
		{"release *.fc41", policy.Data{"build": id}, false},
		{"hastag f4?", policy.Data{"build": id}, true},
		{"hastag f41", policy.Data{"build": id}, false},
		{"buildtag f40-build", policy.Data{"target": "f40-candidate"}, true},
		{"buildtag_inherits_from f40", policy.Data{"build_tag": "f40-build"}, true},
		{"buildtag_inherits_from f40-build", policy.Data{"build_tag": "f40-build"}, false}, // ancestors only
		{"is_new_package", policy.Data{"package": "zsh"}, true},
		{"is_new_package", policy.Data{"package": "bash"}, false},
		{"is_build_owner", policy.Data{"build": id, "user_id": aliceID}, false},
		{"user alice", policy.Data{"user_id": aliceID}, true},
		{"has_perm tag", policy.Data{"user_id": aliceID}, true},
		{"has_perm admin", policy.Data{"user_id": aliceID}, false},
		{"tag f40", policy.Data{"tag": "f40"}, true},
		{"tag f40", policy.Data{"tag": nil}, false},
		{"fromtag *", policy.Data{}, false},
		{"skip_tag", policy.Data{"skip_tag": true}, true},
		{"is_draft", policy.Data{"build": id}, false},
		{"buildtype rpm", policy.Data{"build": id}, true},
	}
	for _, tc := range tests {
		t.Run(tc.rule, func(t *testing.T) {
			set, err := policy.NewSet(map[string]string{"p": tc.rule + " :: yes"}, newPolicyRegistry(), true)
			if err != nil {
				t.Fatal(err)
			}
			var got string
			err = h.Store().Read(func(v state.View) error {
				var err error
				got, err = (&policy.Eval{Set: set, Env: &policyEnv{v: v}}).Apply("p", tc.data)
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if (got == "yes") != tc.want {
				t.Fatalf("%s on %v: %v, want %v", tc.rule, tc.data, got == "yes", tc.want)
			}
		})
	}
}

// Builder tasks consult the build policies through host.assertPolicy and
// host.evalPolicy; users cannot call them.
func TestHostPolicyCalls(t *testing.T) {
	h := StartTestHub(t, func(c *Config) {
		c.HubConf = writeHubConf(t, "[policy]\nbuild_from_srpm =\n    match source *.src.rpm :: deny no srpm builds\n    all :: allow\n")
	})
	host := h.AddHost(t, "b1", "x86_64")
	ctx := context.Background()
	err := host.Client.Call(ctx, "host.assertPolicy", []any{"build_from_srpm", map[string]any{"source": "bash.src.rpm"}}, nil, nil)
	wantFault(t, err, bus.CodeActionNotAllowed, "policy violation (build_from_srpm): no srpm builds")
	if err := host.Client.Call(ctx, "host.assertPolicy", []any{"build_from_srpm", map[string]any{"source": "git+https://src/bash"}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var res any
	if err := host.Client.Call(ctx, "host.evalPolicy", []any{"channel", map[string]any{"method": "x"}}, nil, &res); err != nil || res != "use default" {
		t.Fatalf("evalPolicy: %v %v", res, err)
	}
	if err := h.Admin.Call(ctx, "host.evalPolicy", []any{"channel", map[string]any{}}, nil, nil); err == nil {
		t.Fatal("a user called a host method")
	}
}

// The volume policy is consulted when a build is created: an answer other
// than DEFAULT falls back to it (kojibus has one volume; Koji's non-strict
// check), and a policy that fails fails the call, changing nothing.
func TestVolumePolicy(t *testing.T) {
	h := StartTestHub(t, func(c *Config) {
		c.HubConf = writeHubConf(t, "[policy]\nvolume =\n    package bash :: archive\n    package zsh && compare package > 1 :: DEFAULT\n    all :: DEFAULT\n")
	})
	id := newBuild(t, h, "bash", "5.2", "1")
	var b bus.Build
	call(t, h.Admin, "getBuild", []any{id}, nil, &b)
	if b.VolumeName != "DEFAULT" || b.VolumeID != 0 {
		t.Fatalf("volume %s/%d", b.VolumeName, b.VolumeID)
	}
	before := h.Store().Applied()
	err := h.Admin.Call(context.Background(), "createEmptyBuild", []any{"zsh", "5.9", "1", nil}, nil, nil)
	wantFault(t, err, bus.CodeGenericError, "policy test compare: field package is not a number (zsh)")
	if h.Store().Applied() != before {
		t.Fatal("a failed volume policy changed state")
	}
}

// The sidetag plugin's tests read the tag's extra; a missing field is false.
func TestSidetagPolicyTests(t *testing.T) {
	h := StartTestHub(t, nil)
	h.UserClient(t, "alice")
	h.UserClient(t, "bob")
	var alice, bob bus.User
	call(t, h.Admin, "getUser", []any{"alice"}, nil, &alice)
	call(t, h.Admin, "getUser", []any{"bob"}, nil, &bob)
	call(t, h.Admin, "createTag", []any{"f40-build"}, nil, nil)
	call(t, h.Admin, "createTag", []any{"f40-build-side-2"}, map[string]any{"parent": "f40-build",
		"extra": map[string]any{"sidetag": true, "sidetag_user": "alice", "sidetag_user_id": alice.ID}}, nil)
	tests := []struct {
		rule string
		data policy.Data
		want bool
	}{
		{"is_sidetag", policy.Data{"tag": "f40-build-side-2"}, true},
		{"is_sidetag", policy.Data{"tag": "f40-build"}, false},
		{"is_sidetag", policy.Data{}, false},
		{"is_sidetag_owner", policy.Data{"tag": "f40-build-side-2", "user_id": alice.ID}, true},
		{"is_sidetag_owner", policy.Data{"tag": "f40-build-side-2", "user_id": bob.ID}, false},
		{"is_sidetag_owner fromtag", policy.Data{"fromtag": "f40-build-side-2", "user_id": alice.ID}, true},
		{"is_sidetag_owner fromtag", policy.Data{"tag": "f40-build-side-2", "user_id": alice.ID}, false},
		{"is_sidetag_owner both", policy.Data{"tag": "f40-build-side-2", "fromtag": "f40-build", "user_id": alice.ID}, false},
		{"is_sidetag_owner both", policy.Data{"tag": "f40-build-side-2", "fromtag": "f40-build-side-2", "user_id": alice.ID}, true},
		{"is_sidetag_owner", policy.Data{"user_id": alice.ID}, false},
	}
	for _, tc := range tests {
		set, err := policy.NewSet(map[string]string{"p": tc.rule + " :: yes"}, newPolicyRegistry(), true)
		if err != nil {
			t.Fatal(err)
		}
		var got string
		_ = h.Store().Read(func(v state.View) error {
			got, err = (&policy.Eval{Set: set, Env: &policyEnv{v: v}}).Apply("p", tc.data)
			return nil
		})
		if err != nil || (got == "yes") != tc.want {
			t.Errorf("%s on %v: %v (%v), want %v", tc.rule, tc.data, got == "yes", err, tc.want)
		}
	}
	if _, err := policy.Parse("p", "is_sidetag_owner sometimes :: yes", newPolicyRegistry()); err == nil {
		t.Error("is_sidetag_owner with a bad argument parsed")
	}
}

// Policy data comes from the task's arguments too (source, target, tag, scratch).
func TestTaskArgumentsInChannelPolicy(t *testing.T) {
	h := StartTestHub(t, func(c *Config) {
		c.HubConf = writeHubConf(t, `[policy]
channel =
    method waitrepo && tag f40 :: use slow
    bool scratch && target f40-candidate && match source git+* :: use slow
    all :: use default
`)
	})
	call(t, h.Admin, "addChannel", []any{"slow"}, nil, nil)
	call(t, h.Admin, "createTag", []any{"f40"}, nil, nil)
	var slow bus.Channel
	call(t, h.Admin, "getChannel", []any{"slow"}, nil, &slow)
	for _, tc := range []struct {
		method string
		args   []any
		slow   bool
	}{
		{"waitrepo", []any{"f40", nil, nil}, true},
		{"waitrepo", []any{"f41", nil, nil}, false},
		{"build", []any{"git+https://src/bash#abc", "f40-candidate", map[string]any{"scratch": true}}, true},
		{"build", []any{"git+https://src/bash#abc", "f40-candidate", map[string]any{}}, false},
	} {
		var id int64
		call(t, h.Admin, "makeTask", []any{tc.method, tc.args}, nil, &id)
		var task bus.Task
		call(t, h.Admin, "getTaskInfo", []any{id}, nil, &task)
		if (task.ChannelID == slow.ID) != tc.slow {
			t.Errorf("%s %v: channel %d, slow=%v", tc.method, tc.args, task.ChannelID, tc.slow)
		}
	}
}

// TestCheckPolicyData: checkPolicy evaluates as the caller unless the data
// names a user, prints an action policy's action, and refuses names that
// name nothing.
func TestCheckPolicyData(t *testing.T) {
	h, _ := policyHub(t)
	setupTag(t, h, "f40-build", nil, nil)
	h.UserClient(t, "alice")
	for _, tc := range []struct {
		name    string
		policy  string
		data    map[string]any
		result  string
		allowed bool
		fault   string
	}{
		{"the caller is the user", "package_list", map[string]any{"action": "add"}, "allow", true, ""},
		{"user= by name", "package_list", map[string]any{"action": "block", "user": "alice"}, "allow", true, ""},
		{"action policy", "channel", map[string]any{"method": "sleep"}, "use slow", true, ""},
		{"action policy default rule", "channel", map[string]any{"method": "build"}, "use default", true, ""},
		{"priority", "priority", map[string]any{"method": "sleep"}, "adjust +3", true, ""},
		{"unknown policy", "tga", map[string]any{}, "", false, "No such policy: tga"},
		{"unknown tag", "tag", map[string]any{"tag": "nosuch"}, "", false, "No such tag: nosuch"},
		{"unknown user", "tag", map[string]any{"user": "nobody"}, "", false, "No such user: nobody"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var res map[string]any
			err := h.Admin.Call(context.Background(), "checkPolicy", []any{tc.policy, tc.data}, nil, &res)
			if tc.fault != "" {
				wantFault(t, err, bus.CodeGenericError, tc.fault)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if res["result"] != tc.result || res["allowed"] != tc.allowed {
				t.Fatalf("checkPolicy %s %v = %v, want %s", tc.policy, tc.data, res, tc.result)
			}
		})
	}
}
