package hub

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/kojibus/kojibus/bus"
)

// Callout encryption (the callout's xkey): a server configured with the
// public curve key of the hub's callout service seals each request to it,
// naming its own curve key in a header, and the hub seals its answer to
// that key. Requests then carry passwords and certificates unreadable to
// anyone on the cluster's internal subjects but the hub.

// calloutXKey loads (creating it on first start) the callout's curve key,
// when configured.
func (s *Server) calloutXKey() (nkeys.KeyPair, string, error) {
	if s.cfg.CalloutXKeyFile == "" {
		return nil, "", nil
	}
	kp, err := loadOrCreateNKey(s.cfg.CalloutXKeyFile, bus.NewCurveSeed)
	if err != nil {
		return nil, "", fmt.Errorf("hub: callout xkey: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, "", fmt.Errorf("hub: callout xkey: %w", err)
	}
	s.log.Info("auth callout: requests encrypted; configure the cluster's auth_callout xkey", "xkey", pub)
	return kp, pub, nil
}

// open returns a callout request's claims and the server's curve key to
// answer to ("" for a request in the clear).
func (c *calloutService) open(m *nats.Msg) (string, string, error) {
	serverXKey := m.Header.Get(server.AuthRequestXKeyHeader)
	if serverXKey == "" {
		return string(m.Data), "", nil
	}
	if c.xkey == nil {
		return "", "", fmt.Errorf("encrypted request, but the hub has no callout xkey (--nats-callout-xkey)")
	}
	data, err := c.xkey.Open(m.Data, serverXKey)
	if err != nil {
		return "", "", fmt.Errorf("decrypt: %w", err)
	}
	return string(data), serverXKey, nil
}

// seal encrypts an answer to the server that sent an encrypted request.
func (c *calloutService) seal(answer, serverXKey string) ([]byte, error) {
	if serverXKey == "" {
		return []byte(answer), nil
	}
	return c.xkey.Seal([]byte(answer), serverXKey)
}
