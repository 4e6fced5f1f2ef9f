package hub

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestCalloutXKeyEncryptsRequests: with a callout xkey the server seals
// each callout request (password included) to the hub's curve key, and the
// hub's sealed answers let the connection in.
func TestCalloutXKeyEncryptsRequests(t *testing.T) {
	xkeyFile := filepath.Join(t.TempDir(), "callout.xk")
	h := StartTestHub(t, func(c *Config) { c.CalloutXKeyFile = xkeyFile })
	if fi, err := os.Stat(xkeyFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("xkey file: %v %v, want mode 0600", fi, err)
	}
	// A second subscriber sees what travels on the callout subject.
	seen := make(chan *nats.Msg, 16)
	spy, err := h.nc.ChanSubscribe(calloutSubject, seen)
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Unsubscribe()
	if err := h.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	h.UserClient(t, "alice") // connects through the callout, and logs in
	select {
	case m := <-seen:
		if m.Header.Get(server.AuthRequestXKeyHeader) == "" {
			t.Errorf("callout request without the server's xkey header")
		}
		if bytes.HasPrefix(m.Data, []byte("eyJ")) || bytes.Contains(m.Data, []byte("pw-alice-secret")) {
			t.Errorf("callout request in the clear: %.60q", m.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no callout request seen")
	}
}
