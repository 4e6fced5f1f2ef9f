package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/kojibus/kojibus/bridge/rabbittest"
	"github.com/kojibus/kojibus/bus"
)

// writeProtonConf writes a protonmsg.conf for broker.
func writeProtonConf(t *testing.T, broker *rabbittest.Broker) string {
	t.Helper()
	conf := fmt.Sprintf(`[broker]
urls = %s
cert = %s
cacert = %s
topic_prefix = /topic/koji
connect_timeout = 5
send_timeout = 10

[queue]
enabled = true
batch_size = 4
max_age = 24
`, broker.URL(), broker.HubPEM, broker.CA)
	path := filepath.Join(t.TempDir(), "protonmsg.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// kojibridge is a kojibridge process.
type kojibridge struct {
	cmd     *exec.Cmd
	log     *syncBuffer
	metrics string
}

func startBridge(t *testing.T, h *Hub, conf, dataDir string) *kojibridge {
	t.Helper()
	b := &kojibridge{log: &syncBuffer{}, metrics: fmt.Sprintf("127.0.0.1:%d", rabbittest.FreePort(t))}
	b.cmd = exec.Command(filepath.Join(binDir, "kojibridge"), "--config", conf, "--data-dir", dataDir, "--nats", h.URL,
		"--metrics-listen", b.metrics)
	b.cmd.Env = append(os.Environ(), "KOJIBRIDGE_NATS_PASSWORD="+h.RoleSecret(t, bus.SecretBridge))
	b.cmd.Stdout, b.cmd.Stderr = b.log, b.log
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = b.cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("kojibridge log:\n%s", b.log.String())
		}
	})
	// A new bridge sends what happens after its consumer exists: wait for
	// it, or events the test makes right away may come before.
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(b.log.String(), "kojibridge ready") {
		select {
		case <-exited:
			t.Fatalf("kojibridge exited:\n%s", b.log.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kojibridge not ready after 30s:\n%s", b.log.String())
		}
	}
	return b
}

// bridgeStatus asks every bridge through kojictl.
func bridgeStatus(t *testing.T, h *Hub) []map[string]any {
	t.Helper()
	out, errOut, code := h.Ctl(t, "--json", "bridge-status", "--wait", "300ms")
	if code != 0 {
		return nil
	}
	var all []map[string]any
	if err := json.Unmarshal([]byte(out), &all); err != nil {
		t.Fatalf("bridge-status --json: %v\n%s%s", err, out, errOut)
	}
	return all
}

func waitBridge(t *testing.T, h *Hub, what string, ok func(map[string]any) bool) map[string]any {
	t.Helper()
	// bridge-status is a request; it is asked again until the deadline.
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, s := range bridgeStatus(t, h) {
			if ok(s) {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("bridge never %s: %v", what, bridgeStatus(t, h))
		}
	}
}

func collectIDs(t *testing.T, got <-chan *amqp.Message, n int) []string {
	t.Helper()
	var ids []string
	seen := map[string]bool{}
	for len(seen) < n {
		select {
		case m := <-got:
			id := fmt.Sprint(m.Properties.MessageID)
			ids = append(ids, id)
			seen[id] = true
		case <-time.After(90 * time.Second):
			t.Fatalf("%d distinct messages, want %d: %v", len(seen), n, ids)
		}
	}
	return ids
}

// The broker goes away, events keep coming and are queued; kojibridge is
// killed with SIGKILL and started again while the broker is still down;
// when the broker is back, every event arrives, queued ones first, in order.
func TestKojibridgeKill9DuringOutageLosesNothing(t *testing.T) {
	broker := rabbittest.Start(t)
	got := broker.Receive(t, "/amq/queue/"+rabbittest.AllQueue)
	h := StartHub(t)
	conf := writeProtonConf(t, broker)
	dataDir := t.TempDir()
	b := startBridge(t, h, conf, dataDir)
	admin := h.AdminClient(t)
	makeTasks := func(n int) {
		for i := 0; i < n; i++ {
			var id int64
			if err := admin.Call(t.Context(), "makeTask", []any{"sleep", []any{i}}, nil, &id); err != nil {
				t.Fatal(err)
			}
		}
	}
	makeTasks(5)
	first := collectIDs(t, got, 5)

	broker.Stop(t)
	makeTasks(10)
	waitBridge(t, h, "queued 10", func(s map[string]any) bool { return s["queue_depth"] == float64(10) })
	if resp, err := http.Get("http://" + b.metrics + "/metrics"); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(body), `kojibridge_queue_depth{bridge="kojibridge"} 10`) || !strings.Contains(string(body), `kojibridge_connected{bridge="kojibridge"} 0`) {
			t.Fatalf("metrics:\n%s", body)
		}
	}
	out, _, code := h.Ctl(t, "bridge-status")
	if code != 0 || !strings.Contains(out, "Broker: (not connected)") || !strings.Contains(out, "Queue: enabled, 10 messages, oldest") {
		t.Fatalf("bridge-status (%d):\n%s", code, out)
	}

	_ = b.cmd.Process.Kill() // SIGKILL
	makeTasks(5)             // while no bridge runs
	startBridge(t, h, conf, dataDir)
	waitBridge(t, h, "queued 15", func(s map[string]any) bool { return s["queue_depth"] == float64(15) })

	broker.Start(t)
	got = broker.Receive(t, "/amq/queue/"+rabbittest.AllQueue)
	rest := collectIDs(t, got, 15)
	all := append(first, rest...)
	var last uint64
	seen := map[string]bool{}
	for _, id := range all {
		if seen[id] {
			continue // a duplicate is allowed after a crash; its message-id tells
		}
		seen[id] = true
		var seq uint64
		fmt.Sscanf(id, "kojibus-%d", &seq)
		if seq <= last {
			t.Fatalf("out of order: %v", all)
		}
		last = seq
	}
	if len(seen) != 20 {
		t.Fatalf("%d distinct messages, want 20", len(seen))
	}
	waitBridge(t, h, "drained", func(s map[string]any) bool { return s["queue_depth"] == float64(0) && s["broker"] == broker.URL() })
}

// hubd --protonmsg-conf runs the same bridge inside the hub.
func TestHubdRunsTheBridge(t *testing.T) {
	broker := rabbittest.Start(t)
	got := broker.Receive(t, "/topic/koji.#")
	h := StartHub(t, "--protonmsg-conf", writeProtonConf(t, broker))
	var id int64
	if err := h.AdminClient(t).Call(t.Context(), "makeTask", []any{"sleep", []any{0}}, nil, &id); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.ApplicationProperties["id"] != id || m.ApplicationProperties["new"] != "FREE" {
			t.Fatalf("first message %v", m.ApplicationProperties)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no message from the hub's bridge")
	}
	waitBridge(t, h, "reported by hubd", func(s map[string]any) bool { return s["name"] == "hubd" && s["sent"] != float64(0) })
}
