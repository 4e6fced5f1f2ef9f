package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kojibus/kojibus/bus"
)

const integrationHubConf = `[hub]
MissingPolicyOk = true

[policy]
channel =
    method sleep :: use slow
    all :: use default

priority =
    method sleep :: adjust -5
    all :: stay

tag =
    tag *-updates :: deny updates come from bodhi
    all :: allow
`

// hubd --config hub.conf: the channel policy sends sleep tasks to another
// channel, the priority policy adjusts them, and a tag policy denial
// reaches the kojictl user with its message.
func TestHubConfPolicies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hub.conf")
	if err := os.WriteFile(path, []byte(integrationHubConf), 0o644); err != nil {
		t.Fatal(err)
	}
	h := StartHub(t, "--config", path)
	admin := h.AdminClient(t)
	ctx := context.Background()
	if err := admin.Call(ctx, "addChannel", []any{"slow"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var slow, def bus.Channel
	_ = admin.Call(ctx, "getChannel", []any{"slow"}, nil, &slow)
	_ = admin.Call(ctx, "getChannel", []any{"default"}, nil, &def)
	for _, tc := range []struct {
		method   string
		channel  int64
		priority int
	}{{"sleep", slow.ID, 15}, {"fork", def.ID, 20}} {
		out, errOut, code := h.Ctl(t, "make-task", tc.method, "0")
		if code != 0 {
			t.Fatalf("make-task %s: %d %s%s", tc.method, code, out, errOut)
		}
		id := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), " ")+1:])
		var task bus.Task
		if err := admin.Call(ctx, "getTaskInfo", []any{id}, nil, &task); err != nil {
			t.Fatalf("getTaskInfo %q: %v", id, err)
		}
		if task.ChannelID != tc.channel || task.Priority != tc.priority {
			t.Errorf("%s task: channel %d priority %d, want %d %d", tc.method, task.ChannelID, task.Priority, tc.channel, tc.priority)
		}
	}

	for _, args := range [][]string{
		{"add-tag", "f40-updates"},
		{"add-pkg", "--owner", "kojiadmin", "f40-updates", "bash"},
	} {
		if out, errOut, code := h.Ctl(t, args...); code != 0 {
			t.Fatalf("%v: %d %s%s", args, code, out, errOut)
		}
	}
	if err := admin.Call(ctx, "createEmptyBuild", []any{"bash", "5.2", "1", nil}, nil, nil); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := h.Ctl(t, "tag-build", "--nowait", "f40-updates", "bash-5.2-1")
	if code == 0 || !strings.Contains(out+errOut, "policy violation (tag): updates come from bodhi") {
		t.Fatalf("tag-build against the policy: exit %d\n%s%s", code, out, errOut)
	}
	out, _, code = h.Ctl(t, "check-policy", "tag", "tag=f40-updates", "operation=tag")
	if code == 0 || !strings.Contains(out, "Result: deny") || !strings.Contains(out, "Rule: tag *-updates :: deny updates come from bodhi") {
		t.Fatalf("check-policy: exit %d\n%s", code, out)
	}

	// SIGHUP re-reads hub.conf; a file that does not parse leaves the running policies
	if err := os.WriteFile(path, []byte(strings.Replace(integrationHubConf, "tag *-updates :: deny", "tag *-nothing :: deny", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if line := h.Hup(); !strings.Contains(line, "configuration reloaded") {
		t.Fatalf("reload: %s", line)
	}
	if out, errOut, code := h.Ctl(t, "tag-build", "--nowait", "f40-updates", "bash-5.2-1"); code != 0 {
		t.Fatalf("tag-build after the reload: %d %s%s", code, out, errOut)
	}
	if err := os.WriteFile(path, []byte("[policy]\ntag =\n    nosuchtest :: deny\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if line := h.Hup(); !strings.Contains(line, "configuration not reloaded") || !strings.Contains(line, "missing test handler: nosuchtest") {
		t.Fatalf("reload of a bad file: %s", line)
	}
	if out, _, code := h.Ctl(t, "check-policy", "tag", "tag=f40-updates"); code != 0 || !strings.Contains(out, "Result: allow") {
		t.Fatalf("policies after a refused reload: %d %s", code, out)
	}
}
