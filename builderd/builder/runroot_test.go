package builder

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/builderd/internal/buildroot"
	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/hub"
)

// runrootSetup starts a hub with the runroot plugin, a builder with it in
// the runroot channel, and a tag rr-build whose buildroots come from a
// busybox root (a READY repo made).
func runrootSetup(t testing.TB) (*hub.TestHub, *Builder) {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "hub.conf")
	if err := os.WriteFile(conf, []byte("[hub]\nPlugins = runroot_hub\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "runroot.conf"), []byte("[paths]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := buildroot.MakeBusyboxRoot(rootfs, buildroot.BusyboxPath); err != nil {
		t.Fatalf("%v (go tool task deps installs busybox-static)", err)
	}
	h := hub.StartTestHub(t, func(c *hub.Config) { c.HubConf = conf })
	creds := addHost(t, h, "rr1", "x86_64")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		method string
		args   []any
		kw     map[string]any
	}{
		{"addHostToChannel", []any{"rr1", "runroot"}, map[string]any{"create": true}},
		{"createTag", []any{"rr-build"}, map[string]any{"arches": "x86_64", "extra": map[string]any{buildroot.ExtraRootfs: rootfs}}},
		{"createTag", []any{"other"}, map[string]any{"arches": "x86_64"}},
	} {
		if err := h.Admin.Call(ctx, c.method, c.args, c.kw, nil); err != nil {
			t.Fatal(err)
		}
	}
	b := startBuilder(t, creds, func(c *Config) {
		c.Plugins, c.PluginConfigDir, c.MaxJobs = []string{"runroot"}, dir, 16
		if c.Logger == nil {
			c.Logger = testLogger(t)
		}
	})
	return h, b
}

// runrootResult runs a runroot call to its end and returns the task and its
// result or fault.
func runrootResult(t testing.TB, h *hub.TestHub, w *taskEvents, args []any, kw map[string]any) (int64, json.RawMessage, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var id int64
	if err := h.Admin.Call(ctx, "runroot", args, kw, &id); err != nil {
		t.Fatal(err)
	}
	tt, ok := t.(*testing.T)
	if !ok {
		panic("runrootResult needs a *testing.T")
	}
	w.waitFor(tt, 60*time.Second, "runroot task finished", func(evs []*bus.Event) bool {
		return hasState(evs, id, "task.closed") || hasState(evs, id, "task.failed")
	})
	var res json.RawMessage
	err := h.Admin.Call(ctx, "getTaskResult", []any{id}, nil, &res)
	return id, res, err
}

func TestRunrootHandler(t *testing.T) {
	h, _ := runrootSetup(t)
	w := watchTasks(t, h)
	ctx := t.Context()
	// A repo of another tag, for the repo_id check.
	done := make(chan *nats.Msg, 8)
	sub, err := h.Admin.Conn().ChanSubscribe(bus.EventPrefix+"repo.done", done)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := h.Admin.Call(ctx, "newRepo", []any{"other"}, nil, nil); err != nil {
		t.Fatal(err)
	}
	var otherRepo int64
	select {
	case m := <-done:
		ev, err := bus.EventFromMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		otherRepo, _ = propInt(ev.Props["repo_id"])
	case <-time.After(30 * time.Second):
		t.Fatal("no repo for other")
	}
	cases := []struct {
		name   string
		args   []any
		kw     map[string]any
		result string // the result, or the fault's text
		code   int
	}{
		{"string command", []any{"rr-build", "x86_64", "echo hi > /builddir/extra.log"}, map[string]any{"upload_logs": []string{"/builddir/extra.log"}, "weight": 0.1},
			`"echo completed successfully"`, 0},
		{"assignments skipped in the result", []any{"rr-build", "x86_64", "FOO=1 /bin/true"}, nil, `"true completed successfully"`, 0},
		{"failure", []any{"rr-build", "x86_64", "exit 7"}, nil, "exit exited with status 7", bus.CodeBuildrootError},
		{"unknown option", []any{"rr-build", "x86_64", "true"}, map[string]any{"bogus": 1}, "runroot got an unexpected keyword argument 'bogus'", bus.CodeParameterError},
		{"bad packages", []any{"rr-build", "x86_64", "true"}, map[string]any{"packages": "notalist"}, "parameter packages", bus.CodeParameterError},
		{"packages without a package manager", []any{"rr-build", "x86_64", "true"}, map[string]any{"packages": []string{"make"}},
			"cannot install make: the buildroot has no package manager (apt-get)", bus.CodeBuildrootError},
		{"repo of another tag", []any{"rr-build", "x86_64", "true"}, map[string]any{"repo_id": otherRepo},
			"build tag (rr-build) does not match repo tag (other)", bus.CodeBuildError},
		{"no rootfs source", []any{"other", "x86_64", "true"}, nil, "tag other: no buildroot source", bus.CodeBuildrootError},
		{"mount not configured", []any{"rr-build", "x86_64", "true"}, map[string]any{"mounts": []string{"/mnt/x"}},
			"read-write mount point is not safe: /mnt/x", bus.CodeGenericError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, res, err := runrootResult(t, h, w, tc.args, tc.kw)
			if tc.code == 0 {
				if err != nil || string(res) != tc.result {
					t.Fatalf("result %s %v, want %s", res, err, tc.result)
				}
				return
			}
			var f *bus.Fault
			if !errors.As(err, &f) || f.Code != tc.code || !strings.Contains(f.Message, tc.result) {
				t.Fatalf("task %d: %v, want %s: %s", id, err, bus.FaultName(tc.code), tc.result)
			}
		})
	}
	// upload_logs and the weight of the first case.
	var files []string
	if err := h.Admin.Call(ctx, "listTaskOutput", []any{1}, nil, &files); err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(files, "extra.log") || !slices.Contains(files, "runroot.log") {
		t.Fatalf("task output %v, want runroot.log and the upload_logs extra.log", files)
	}
	if info := taskInfo(t, h, 1); info.Weight != 0.5 {
		t.Fatalf("weight 0.1 set as %g, want max(weight, 0.5)", info.Weight)
	}
}
