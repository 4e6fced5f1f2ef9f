package bridge_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kojibus/kojibus/bridge/bridge"
	"github.com/kojibus/kojibus/bridge/rabbittest"
	"github.com/kojibus/kojibus/hubd/hub"
)

// endpointMsg is what testdata/amqp_endpoint.py prints per message.
type endpointMsg struct {
	Address    string            `json:"address"`
	Properties map[string]any    `json:"properties"`
	PropTypes  map[string]string `json:"property_types"`
	Body       any               `json:"body"`
	BodyType   string            `json:"body_type"`
	ID         any               `json:"id"`
	TTL        float64           `json:"ttl"`
}

// startEndpoint runs the proton test endpoint on a free port (args:
// amqp_endpoint.py's options after the URL).
func startEndpoint(t *testing.T, args ...string) (string, <-chan endpointMsg) {
	t.Helper()
	url := fmt.Sprintf("amqp://127.0.0.1:%d", rabbittest.FreePort(t))
	cmd := exec.Command("/usr/bin/python3", append([]string{filepath.Join("testdata", "amqp_endpoint.py"), url}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("python3-qpid-proton endpoint (go tool task deps installs it): %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	msgs := make(chan endpointMsg, 100)
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var m endpointMsg
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			if m.Address == "" {
				close(ready) // {"listening": ...}
				continue
			}
			msgs <- m
		}
	}()
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("endpoint did not start")
	}
	return url, msgs
}

// bridgeToEndpoint starts a hub and a bridge sending to a proton test
// endpoint (started with args) with topic_prefix koji; conf follows
// connect_timeout in the [broker] section.
func bridgeToEndpoint(t *testing.T, conf string, args ...string) (*hub.TestHub, *bridge.Bridge, <-chan endpointMsg) {
	t.Helper()
	url, msgs := startEndpoint(t, args...)
	h := hub.StartTestHub(t, nil)
	cfg, err := bridge.ParseConfig("protonmsg.conf", []byte(fmt.Sprintf("[broker]\nurls = %s\ntopic_prefix = koji\nconnect_timeout = 5\n%s", url, conf)))
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{hub: h, dir: t.TempDir()}
	return h, s.start(t, cfg, nil), msgs
}

// protonmsg's default prefix form, topic://koji, against an AMQP 1.0 peer
// that accepts it (RabbitMQ refuses topic:// addresses; Debian's ActiveMQ
// has no AMQP transport): a proton endpoint receives the bridge's message.
func TestTopicPrefixForm(t *testing.T) {
	h, _, msgs := bridgeToEndpoint(t, "send_timeout = 10\n[message]\nttl = 60\n")
	var id int64
	call(t, "makeTask", h.Admin, []any{"sleep", []any{0}}, nil, &id)
	select {
	case m := <-msgs:
		if m.Address != "topic://koji.task.free" {
			t.Errorf("address %q, want topic://koji.task.free", m.Address)
		}
		if m.Properties["type"] != "TaskStateChange" || m.Properties["id"] != float64(id) || m.Properties["new"] != "FREE" {
			t.Errorf("properties %v", m.Properties)
		}
		if m.PropTypes["id"] != "int" || m.PropTypes["parent"] != "NoneType" {
			t.Errorf("property types %v: id must arrive as a Python int, parent as None", m.PropTypes)
		}
		if m.BodyType != "str" || m.TTL != 60 || fmt.Sprint(m.ID) == "" {
			t.Errorf("body type %s ttl %v id %v, want str, 60, kojibus-<seq>", m.BodyType, m.TTL, m.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the endpoint got nothing")
	}
}

// A peer that attaches the link but never grants credit: go-amqp reports
// the send as amqp:link:transfer-limit-exceeded when send_timeout ends it.
// The bridge names the cause, counts the failure and queues the event.
func TestBridgeNamesAnExpiredSendTimeout(t *testing.T) {
	h, b, msgs := bridgeToEndpoint(t, "send_timeout = 1\n[queue]\nenabled = true\n", "no-credit")
	call(t, "makeTask", h.Admin, []any{"sleep", []any{0}}, nil, nil)
	waitStatus(t, b, func(st bridge.Status) bool { return st.Failed > 0 && st.QueueDepth > 0 })
	st := b.Status()
	if !strings.Contains(st.LastError, "send_timeout (1s) expired with 0 of 1 messages accepted") {
		t.Errorf("last error %q does not name the expired send_timeout", st.LastError)
	}
	select {
	case m := <-msgs:
		t.Fatalf("a peer granting no credit received %+v", m)
	default:
	}
}
