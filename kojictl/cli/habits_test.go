package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kojibus/kojibus/hubd/hub"
)

// habitsHub is a hub with the sidetag and runroot plugins and a tag
// f40-build, as go tool task run sets one up.
func habitsHub(t *testing.T) *hub.TestHub {
	t.Helper()
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv(EnvConfig, "")
	conf := filepath.Join(t.TempDir(), "hub.conf")
	text := "[hub]\nPlugins = sidetag_hub runroot_hub\n\n[policy]\nsidetag =\n    compare number_of_tags < 10 :: allow\n    all :: deny\n" +
		"channel =\n    method sleep :: use default\n    all :: req\n"
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	h := hub.StartTestHub(t, func(c *hub.Config) { c.HubConf = conf })
	runSteps(t, h.ProfilePath(), []step{
		{name: "add-tag", args: []string{"add-tag", "--arches", "x86_64 aarch64", "f40-build"}},
		{name: "add-host", args: []string{"add-host", "builder1", "x86_64"}, out: []string{"builder1 added"}},
		{name: "runroot channel", args: []string{"add-host-to-channel", "--new", "builder1", "runroot"}},
	})
	return h
}

// TestKojiHabits: what a Koji user types, with the exit codes koji gives.
func TestKojiHabits(t *testing.T) {
	h := habitsHub(t)
	p := h.ProfilePath()
	alice := userProfile(t, h, "alice", "alice-secret-pw")
	runSteps(t, p, []step{
		{name: "add-user alice", args: []string{"add-user", "--password", "alice-secret-pw", "alice"}},

		// global options come before the command; -p after it is the command's
		{name: "-p before the verb is --profile", args: []string{"-p", "koji", "hello"}, out: []string{"kojiadmin"}},
		{name: "-p after the verb is not --profile", args: []string{"hello", "-p", "koji"}, code: 2, errText: "kojictl: error: no such option: -p"},
		{name: "runroot -p is --package", args: []string{"--json", "runroot", "-p", "make", "--nowait", "f40-build", "x86_64", "true"}, out: []string{`"task_id": `}},
		{name: "runroot --package", args: []string{"runroot", "--package", "make", "--nowait", "f40-build", "x86_64", "true"}},

		// check-policy: the caller is the user; actions are results; names must name something
		{name: "check-policy as the caller", args: []string{"check-policy", "tag", "tag=f40-build", "operation=tag"}, out: []string{"Result: allow\n"}},
		{name: "check-policy action", args: []string{"check-policy", "channel", "method=sleep"}, out: []string{"Result: use default\n"}},
		{name: "check-policy req", args: []string{"check-policy", "channel", "method=build"}, out: []string{"Result: req\n"}},
		{name: "check-policy unknown name", args: []string{"check-policy", "tga"}, code: 1, errText: "GenericError: No such policy: tga"},
		{name: "check-policy unknown tag", args: []string{"check-policy", "tag", "tag=nosuch"}, code: 1, errText: "GenericError: No such tag: nosuch"},
		{name: "check-policy unknown user", args: []string{"check-policy", "tag", "tag=f40-build", "user=nobody"}, code: 1, errText: "GenericError: No such user: nobody"},
		{name: "check-policy denies alice", args: []string{"check-policy", "tag", "tag=f40-build", "user=alice"}, code: 1, out: []string{"Result: deny\n"}, errText: "policy tag denies"},
		{name: "check-policy --json denies", args: []string{"--json", "check-policy", "tag", "tag=f40-build", "user=alice"}, code: 1, out: []string{`"result": "deny"`}},

		// --json everywhere, errors too
		{name: "add-sidetag --json", args: []string{"--json", "add-sidetag", "f40-build"}, out: []string{`"name": "f40-build-side-`, `"id": `}},
		{name: "list-sidetags --json", args: []string{"--json", "list-sidetags", "--mine"}, out: []string{"re:\"user_id\": 1,\n"}},
		{name: "error as JSON", args: []string{"--json", "taginfo", "--bogus"}, code: 2, errText: `{"error":"no such option: --bogus","exit_code":2}`},
		{name: "fault as JSON", args: []string{"--json", "call", "getTag", "nosuch", "strict=True"}, code: 1,
			errText: `{"error":"No such tagInfo: 'nosuch'","exit_code":1,"fault_code":1000,"fault_name":"GenericError"}`},

		// unblock-pkg and remove-pkg
		{name: "add-pkg", args: []string{"add-pkg", "--owner", "kojiadmin", "f40-build", "bash", "zsh"}},
		{name: "block-pkg", args: []string{"block-pkg", "f40-build", "bash"}},
		{name: "unblock-pkg", args: []string{"unblock-pkg", "f40-build", "bash"}},
		{name: "unblocked", args: []string{"--quiet", "list-pkgs", "--tag", "f40-build", "--show-blocked"}, out: []string{"re:(?m)^bash .*kojiadmin *$"}},
		{name: "unblock-pkg not blocked", args: []string{"unblock-pkg", "f40-build", "zsh"}, code: 1, errText: "zsh"},
		{name: "remove-pkg", args: []string{"remove-pkg", "f40-build", "zsh"}},
		{name: "remove-pkg missing", args: []string{"remove-pkg", "f40-build", "zsh"}, code: 1, out: []string{"Package zsh is not in tag f40-build\n"}},
		{name: "removed", args: []string{"--quiet", "list-pkgs", "--tag", "f40-build"}, out: []string{"re:^bash +f40-build +kojiadmin *\n$"}},
		{name: "remove-pkg usage", args: []string{"remove-pkg", "f40-build"}, code: 2, errText: "Please specify a tag and at least one package"},

		// bridge-status without a bridge: the real message alone
		{name: "bridge-status", args: []string{"bridge-status"}, code: 1, errText: "no protonmsg bridge answered"},

		// values in the user's words, no Go internals
		{name: "priority not a number", args: []string{"make-task", "--priority", "abc", "sleep", "0"}, code: 2, errText: "kojictl: error: option --priority: invalid integer value: 'abc'"},
		{name: "priority out of range", args: []string{"set-task-priority", "--priority", "99999999999", "1"}, code: 2, errText: "kojictl: error: option --priority: integer value out of range: '99999999999'"},
		{name: "negative priority", args: []string{"make-task", "--priority", "-5", "sleep", "0"}, out: []string{"Created task id "}},
		{name: "negative priority after =", args: []string{"set-task-priority", "1", "-5"}, code: 2, errText: "no such option: -5"},
		{name: "sleep too long", args: []string{"make-task", "sleep", "99999999999999999999"}, code: 1, errText: "argument 99999999999999999999: int exceeds XML-RPC limits"},
		{name: "since-time words", args: []string{"watch-events", "--since-time", "yesterday"}, code: 2, errText: "kojictl: error: option --since-time: invalid time specification: yesterday"},
	})
	runSteps(t, alice, []step{
		{name: "alice may not bypass", args: []string{"call", "tagBuildBypass", "f40-build", "bash-1-1"}, code: 1, errText: "ActionNotAllowed"},
	})
}

// TestRunrootSaysWhatItWaitsFor: a runroot no ready host can take says
// so once and keeps waiting, as Koji's task does.
func TestRunrootSaysWhatItWaitsFor(t *testing.T) {
	h := habitsHub(t)
	r := startKojictl(t, h.ProfilePath(), "runroot", "f40-build", "aarch64", "true")
	want := regexp.MustCompile(`^Task \d+ waits for a host: no ready host of channel runroot has arch aarch64 now \(waiting until one has\)\n$`)
	deadline := time.Now().Add(20 * time.Second)
	for !want.MatchString(r.err.String()) {
		select {
		case code := <-r.done:
			t.Fatalf("runroot exited %d:\n%s%s", code, r.out, r.err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("stderr: %q", r.err.String())
		}
	}
	// still waiting: the task is free
	out := kojictl(t, h.ProfilePath(), "", "--quiet", "list-tasks")
	if !strings.Contains(out.out, "FREE") {
		t.Fatalf("list-tasks: %s", out.out)
	}
}
