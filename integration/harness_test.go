// Package integration holds end-to-end tests: they build the real hubd and
// kojictl binaries, run hubd as a process on a temporary data directory and
// drive it as users do, with kojictl and with bus.Client.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/bus/config"
)

// binDir holds the binaries TestMain builds.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "kojibus-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	for prog, pkg := range map[string]string{"hubd": "./hubd", "kojictl": "./kojictl", "builderd": "./builderd", "kojibridge": "./bridge"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, prog), pkg)
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", prog, err, out)
			return 1
		}
	}
	binDir = dir
	return m.Run()
}

// Hub is a hubd process on its own data directory.
type Hub struct {
	t       testing.TB
	Dir     string
	URL     string // NATS URL (the same across restarts)
	Profile string // the bootstrap admin's kojictl profile

	listen string
	extra  []string // more hubd arguments (StartHub's extraArgs)
	mu     sync.Mutex
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan struct{}
}

// syncBuffer collects a process's log; Changed lets a test wait for the
// next write instead of polling.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	changed chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Changed returns a channel closed by the next write.
func (s *syncBuffer) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.changed == nil {
		s.changed = make(chan struct{})
	}
	return s.changed
}

var readyURL = regexp.MustCompile(`msg="hubd ready".*\bnats=(\S+)`)

// StartHub starts `hubd --data-dir DIR --listen 127.0.0.1:-1 --durability
// sync [extraArgs...]` and waits for "hubd ready". Restarts pass the same
// extra arguments. The hub is stopped when the test ends; its log is
// printed if the test failed.
func StartHub(t testing.TB, extraArgs ...string) *Hub {
	t.Helper()
	h := &Hub{t: t, Dir: t.TempDir(), listen: "127.0.0.1:-1", log: &syncBuffer{}, extra: extraArgs}
	h.Profile = filepath.Join(h.Dir, "kojictl.conf")
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			t.Logf("hubd log:\n%s", h.log.String())
		}
	})
	h.start()
	// Restarts listen on the same port so that the profile stays valid.
	h.listen = strings.TrimPrefix(h.URL, "nats://")
	return h
}

func (h *Hub) start() {
	h.t.Helper()
	args := append([]string{"--data-dir", h.Dir, "--listen", h.listen, "--durability", "sync"}, h.extra...)
	cmd := exec.Command(filepath.Join(binDir, "hubd"), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		h.t.Fatal(err)
	}
	cmd.Stdout = h.log
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	exited := make(chan struct{})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(h.log, line)
			if m := readyURL.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(h.log, stderr)
		_ = cmd.Wait()
		close(exited)
	}()
	h.mu.Lock()
	h.cmd, h.exited = cmd, exited
	h.mu.Unlock()
	select {
	case url := <-ready:
		h.URL = url
	case <-exited:
		h.t.Fatalf("hubd exited before it was ready:\n%s", h.log.String())
	case <-time.After(60 * time.Second):
		h.t.Fatalf("hubd not ready after 60s:\n%s", h.log.String())
	}
}

// Hup sends SIGHUP (re-read hub.conf) and waits for the hub to log the
// outcome; it returns that log line.
func (h *Hub) Hup() string {
	h.t.Helper()
	h.mu.Lock()
	cmd := h.cmd
	h.mu.Unlock()
	before := strings.Count(h.log.String(), "configuration ")
	_ = cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.After(30 * time.Second)
	for {
		changed := h.log.Changed()
		if log := h.log.String(); strings.Count(log, "configuration ") > before {
			lines := strings.Split(strings.TrimSpace(log), "\n")
			for i := len(lines) - 1; i >= 0; i-- {
				if strings.Contains(lines[i], "configuration ") {
					return lines[i]
				}
			}
		}
		select {
		case <-changed:
		case <-deadline:
			h.t.Fatalf("no reload logged after SIGHUP:\n%s", h.log.String())
			return ""
		}
	}
}

// Kill9 kills hubd with SIGKILL and waits for it to be gone.
func (h *Hub) Kill9() {
	h.t.Helper()
	h.signal(syscall.SIGKILL)
}

// Restart starts hubd again on the same data directory and port.
func (h *Hub) Restart() {
	h.t.Helper()
	h.mu.Lock()
	running := h.cmd != nil
	h.mu.Unlock()
	if running {
		h.t.Fatal("Restart: hubd is still running")
	}
	fmt.Fprintf(h.log, "--- restart ---\n")
	h.start()
}

// Stop stops hubd with SIGTERM (SIGKILL after 30s). Safe to call twice.
func (h *Hub) Stop() { h.signal(syscall.SIGTERM) }

func (h *Hub) signal(sig syscall.Signal) {
	h.mu.Lock()
	cmd, exited := h.cmd, h.exited
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// Ctl runs kojictl with the admin profile.
func (h *Hub) Ctl(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return RunCtl(t, append([]string{"-c", h.Profile}, args...)...)
}

// RunCtl runs the kojictl binary with args, in an environment of its own
// (HOME and the session cache in a temporary directory).
func RunCtl(t testing.TB, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return RunCtlTimeout(t, 60*time.Second, args...)
}

// RunCtlTimeout is RunCtl for a command that may take longer than a minute.
func RunCtlTimeout(t testing.TB, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "kojictl"), args...)
	cmd.Env = append(filteredEnv(), "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("kojictl %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func filteredEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "HOME=") || strings.HasPrefix(kv, "XDG_CACHE_HOME=") || strings.HasPrefix(kv, "KOJIBUS_CONFIG=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// AdminClient returns a bus.Client logged in as the bootstrap admin. It
// reconnects forever, so it survives a restart of the hub.
func (h *Hub) AdminClient(t testing.TB) *bus.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p, err := bus.LoadProfile(h.Profile, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.Dial(ctx, "integration")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	if err := p.Login(ctx, c); err != nil {
		t.Fatal(err)
	}
	return c
}

// WriteProfile writes a kojictl profile for user (same server and NATS
// credentials as the admin's) and returns its path.
func (h *Hub) WriteProfile(t testing.TB, user, password string) string {
	t.Helper()
	p, err := bus.LoadProfile(h.Profile, "")
	if err != nil {
		t.Fatal(err)
	}
	data := config.Write(config.KV{Section: "koji", Pairs: [][2]string{
		{"server", p.Server},
		{"authtype", "password"}, {"user", user}, {"password", password},
	}})
	path := filepath.Join(t.TempDir(), user+".conf")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// RoleSecret returns a NATS role's password from the hub's data directory.
func (h *Hub) RoleSecret(t testing.TB, role string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.Dir, "nats-roles.json"))
	if err != nil {
		t.Fatal(err)
	}
	var secrets bus.RoleSecrets
	if err := json.Unmarshal(data, &secrets); err != nil {
		t.Fatal(err)
	}
	return secrets[role]
}

// HubConn connects with the hub role's NATS credentials (from the data
// directory), which may read the state bucket: tests use it to see the outbox.
func (h *Hub) HubConn(t testing.TB) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := bus.Connect(ctx, bus.ConnectConfig{Name: "integration-hub-role", URLs: []string{h.URL}, User: bus.RoleHub, Password: h.RoleSecret(t, bus.RoleHub)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// WaitRelayDrained waits until the state bucket holds no outbox entry: every
// committed change has been published to KOJI_EVENTS.
func (h *Hub) WaitRelayDrained(t testing.TB, nc *nats.Conn, timeout time.Duration) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	subject := "$KV." + bus.StateBucket + ".outbox.>"
	for {
		s, err := js.Stream(ctx, "KV_"+bus.StateBucket)
		if err == nil {
			var info *jetstream.StreamInfo
			info, err = s.Info(ctx, jetstream.WithSubjectFilter(subject))
			if err == nil && len(info.State.Subjects) == 0 {
				return
			}
			if err == nil {
				err = fmt.Errorf("%d outbox entries left", len(info.State.Subjects))
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("relay not drained after %v: %v", timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// streamEvent is an event read back from KOJI_EVENTS.
type streamEvent struct {
	*bus.Event
	Time time.Time
}

// ReadEvents replays KOJI_EVENTS (events matching filter, e.g.
// "koji.event.tag.create") from the start with an ordered consumer, up to the
// stream's last message at the time of the call.
func ReadEvents(t testing.TB, nc *nats.Conn, filter string) []streamEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, bus.EventsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, n := range info.State.Subjects {
		want += int(n)
	}
	if want == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		t.Fatal(err)
	}
	var out []streamEvent
	for len(out) < want {
		batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			ev, err := bus.EventFromMsg(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			if err != nil {
				t.Fatal(err)
			}
			ev.Seq = md.Sequence.Stream
			out = append(out, streamEvent{Event: ev, Time: md.Timestamp})
		}
		if batch.Error() != nil && !errors.Is(batch.Error(), jetstream.ErrNoMessages) {
			t.Fatal(batch.Error())
		}
		if n == 0 && ctx.Err() != nil {
			t.Fatalf("read %d of %d events from %s", len(out), want, bus.EventsStream)
		}
	}
	return out
}

// callWithID sends one API call with an explicit Koji-Request-Id, as a
// client retrying a call it got no answer for does. bus.Client picks its own
// request ids, so the fault test speaks the wire contract directly.
func callWithID(ctx context.Context, c *bus.Client, method, requestID string, args []any, kwargs map[string]any, out any) error {
	body, err := bus.NewRequest(args, kwargs)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(bus.IdentityAPISubject(bus.ConnIdentity(c.Conn()), method))
	msg.Data = body
	msg.Header.Set(bus.HeaderRequestID, requestID)
	msg.Header.Set(bus.HeaderSession, c.Session())
	resp, err := c.Conn().RequestMsgWithContext(ctx, msg)
	if err != nil {
		return err
	}
	var r bus.Response
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("%s: bad response: %w", method, err)
	}
	if r.Error != nil {
		return r.Error
	}
	if out != nil {
		return json.Unmarshal(r.Result, out)
	}
	return nil
}

// progress wakes a test waiting on its background workers: each worker
// ticks after a step, and waitOn re-checks its condition on every tick
// instead of polling.
type progress chan struct{}

func newProgress() progress { return make(chan struct{}, 1) }

func (p progress) tick() {
	select {
	case p <- struct{}{}:
	default:
	}
}

// waitOn waits until cond holds, re-checking it when p (or also, if not
// nil) signals; after d it runs onFail and fails the test.
func waitOn(t testing.TB, d time.Duration, what string, cond func() bool, onFail func(), p progress, also <-chan struct{}) {
	t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-p:
		case <-also:
		case <-deadline.C:
			if onFail != nil {
				onFail()
			}
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
