package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
)

// ctl runs kojictl as the admin and fails the test on a non-zero exit.
func ctl(t *testing.T, h *Hub, args ...string) string {
	t.Helper()
	out, errOut, code := h.Ctl(t, args...)
	if code != 0 {
		t.Fatalf("kojictl %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// eventWatcher collects events from koji.event.> through a user connection.
type eventWatcher struct {
	ch chan *nats.Msg
}

func watchEvents(t *testing.T, h *Hub) *eventWatcher {
	t.Helper()
	c := h.AdminClient(t)
	w := &eventWatcher{ch: make(chan *nats.Msg, 1024)}
	sub, err := c.Conn().ChanSubscribe(bus.EventPrefix+">", w.ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := c.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

// await returns the first event with the address whose props include want.
func (w *eventWatcher) await(t *testing.T, address string, want map[string]string) *bus.Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-w.ch:
			ev, err := bus.EventFromMsg(m)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Address != address {
				continue
			}
			ok := true
			for k, v := range want {
				if m.Header.Get(bus.HeaderPropPrefix+k) != v {
					ok = false
				}
			}
			if ok {
				return ev
			}
		case <-deadline:
			t.Fatalf("no %s event with %v", address, want)
		}
	}
}

// A build engineer's first day, with the real binaries: hosts and channels,
// tag inheritance resolved by getBuildConfig, inherited group packages,
// tagging with its events, a repo regenerated and wait-repo returning.
func TestBuildEngineerJourney(t *testing.T) {
	h := StartHub(t)
	events := watchEvents(t, h)

	// Hosts and channels.
	creds := filepath.Join(t.TempDir(), "builder1.creds")
	out := ctl(t, h, "add-host", "--creds-out", creds, "builder1", "x86_64", "aarch64")
	if !strings.Contains(out, "builder1 added: id 1") {
		t.Fatalf("add-host output:\n%s", out)
	}
	if st, err := os.Stat(creds); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", st, err)
	}
	p, err := bus.LoadProfile(creds, "")
	if err != nil || p.User != "builder1" {
		t.Fatalf("credentials profile %+v %v", p, err)
	}
	ctl(t, h, "add-host-to-channel", "--new", "builder1", "runroot")
	out, errOut, code := h.Ctl(t, "add-host-to-channel", "builder1", "nosuch")
	if code == 0 || !strings.Contains(out+errOut, "No such channel: nosuch") {
		t.Fatalf("unknown channel: exit %d\n%s%s", code, out, errOut)
	}
	out = ctl(t, h, "list-hosts", "--channel", "runroot")
	if !strings.Contains(out, "builder1") {
		t.Fatalf("list-hosts --channel runroot:\n%s", out)
	}
	out = ctl(t, h, "hostinfo", "builder1")
	for _, want := range []string{"Name: builder1", "Arches: x86_64 aarch64", "default", "runroot"} {
		if !strings.Contains(out, want) {
			t.Errorf("hostinfo lacks %q:\n%s", want, out)
		}
	}
	// The host's credentials open a host session, refused admin calls.
	hostClient, err := p.Dial(context.Background(), "builder1")
	if err != nil {
		t.Fatal(err)
	}
	defer hostClient.Close()
	if err := p.Login(context.Background(), hostClient); err != nil {
		t.Fatal(err)
	}
	if err := hostClient.Call(context.Background(), "createUser", []any{"evil"}, nil, nil); err == nil || !strings.Contains(err.Error(), "ActionNotAllowed") {
		t.Fatalf("host calling createUser: %v", err)
	}

	// Tag inheritance: arches and extra come from the parents.
	ctl(t, h, "add-tag", "--arches", "x86_64 aarch64", "-x", "mock.package_manager=dnf", "-x", "rpm.macro.dist=.fc40", "base")
	ctl(t, h, "add-tag", "--parent", "base", "-x", "rpm.macro.dist=.fc41", "f41-build")
	ctl(t, h, "add-tag", "--parent", "f41-build", "-x", "repo.auto=True", "f41-side")
	out = ctl(t, h, "call", "--json-output", "getBuildConfig", "f41-side")
	var cfg struct {
		Arches string         `json:"arches"`
		Extra  map[string]any `json:"extra"`
	}
	if err := json.Unmarshal([]byte(out), &cfg); err != nil {
		t.Fatalf("getBuildConfig: %v\n%s", err, out)
	}
	if cfg.Arches != "x86_64 aarch64" || cfg.Extra["mock.package_manager"] != "dnf" || cfg.Extra["rpm.macro.dist"] != ".fc41" || cfg.Extra["repo.auto"] != true {
		t.Fatalf("inherited build config: %+v", cfg)
	}

	// Group packages inherited from the base tag.
	ctl(t, h, "add-group", "base", "build")
	ctl(t, h, "add-group-pkg", "base", "build", "bash", "coreutils")
	ctl(t, h, "add-group-pkg", "f41-build", "build", "gcc")
	out = ctl(t, h, "list-groups", "f41-side", "build")
	for _, pkg := range []string{"bash", "coreutils", "gcc"} {
		if !strings.Contains(out, pkg) {
			t.Errorf("list-groups f41-side lacks %s:\n%s", pkg, out)
		}
	}

	// Tag and untag a build; the events carry protonmsg's properties.
	ctl(t, h, "add-pkg", "--owner", "kojiadmin", "base", "hello")
	ctl(t, h, "import-build", "hello-2.12-1.fc41")
	ctl(t, h, "tag-build", "f41-side", "hello-2.12-1.fc41")
	ev := events.await(t, "build.tag", map[string]string{"tag": "f41-side", "name": "hello", "version": "2.12", "release": "1.fc41", "user": "kojiadmin"})
	if ev.Props["type"] != "Tag" {
		t.Fatalf("build.tag props %v", ev.Props)
	}
	out = ctl(t, h, "list-tagged", "f41-side")
	if !strings.Contains(out, "hello-2.12-1.fc41") {
		t.Fatalf("list-tagged:\n%s", out)
	}

	// repo.auto: the tag change produces a repo; wait-repo --build returns
	// once a repo with the build is READY, woken by events.
	waitCmd := exec.Command(filepath.Join(binDir, "kojictl"), "-c", h.Profile, "wait-repo", "--timeout", "1", "--build", "hello-2.13-1.fc41", "f41-side")
	waitCmd.Env = append(filteredEnv(), "HOME="+t.TempDir())
	var waitOut bytes.Buffer
	waitCmd.Stdout, waitCmd.Stderr = &waitOut, &waitOut
	if err := waitCmd.Start(); err != nil {
		t.Fatal(err)
	}
	ctl(t, h, "import-build", "hello-2.13-1.fc41")
	ctl(t, h, "tag-build", "f41-side", "hello-2.13-1.fc41")
	events.await(t, "repo.done", map[string]string{"tag": "f41-side"})
	done := make(chan error, 1)
	go func() { done <- waitCmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait-repo: %v\n%s", err, waitOut.String())
		}
	case <-time.After(30 * time.Second):
		_ = waitCmd.Process.Kill()
		t.Fatalf("wait-repo did not return after repo.done\n%s", waitOut.String())
	}
	if !strings.Contains(waitOut.String(), "f41-side") {
		t.Fatalf("wait-repo output:\n%s", waitOut.String())
	}

	ctl(t, h, "untag-build", "f41-side", "hello-2.12-1.fc41")
	events.await(t, "build.untag", map[string]string{"tag": "f41-side", "name": "hello", "release": "1.fc41"})
	out = ctl(t, h, "list-tagged", "f41-side")
	if strings.Contains(out, "hello-2.12-1.fc41") || !strings.Contains(out, "hello-2.13-1.fc41") {
		t.Fatalf("list-tagged after untag:\n%s", out)
	}
}
