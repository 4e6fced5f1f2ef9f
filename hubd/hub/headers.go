package hub

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
)

// Bounds on the API request headers a client sets. A session header is
// "<id>:<key>" with a 32-character key; a request id is a NUID (22
// characters), stored as a key of the state bucket for an hour.
const (
	maxSessionHeader   = 128
	maxRequestIDHeader = 64
	// minRevWait bounds how long a call waits for this hub's view to reach
	// a revision the client saw on another hub (the stream holds it).
	minRevWait = 10 * time.Second
)

// checkHeaders refuses a request whose headers are out of bounds, before it
// takes a worker.
func checkHeaders(h nats.Header) error {
	if len(h) == 0 {
		return nil
	}
	if v := h.Get(bus.HeaderSession); len(v) > maxSessionHeader {
		return bus.AuthError("malformed session header: %d bytes, at most %d", len(v), maxSessionHeader)
	}
	if v := h.Get(bus.HeaderRequestID); len(v) > maxRequestIDHeader || !requestIDChars(v) {
		return bus.ParameterError("invalid %s header: at most %d letters, digits, '-', '_', '.' or ':'",
			bus.HeaderRequestID, maxRequestIDHeader)
	}
	if v := h.Get(bus.HeaderMinRev); v != "" {
		if _, err := strconv.ParseUint(v, 10, 64); err != nil {
			return bus.ParameterError("invalid %s header: not a revision number", bus.HeaderMinRev)
		}
	}
	return nil
}

func requestIDChars(id string) bool {
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '_', c == '.', c == ':':
		default:
			return false
		}
	}
	return true
}

// awaitMinRev gives read-your-writes across hubs: a call carrying the
// highest revision its client has seen (HeaderMinRev, checked by
// checkHeaders) waits until this hub's view has it, for at most minRevWait.
// A revision the state stream does not hold yet was never handed out by
// any hub: it is refused at once instead of waited for.
func (s *Server) awaitMinRev(ctx context.Context, method, header string) error {
	if header == "" {
		return nil
	}
	minRev, _ := strconv.ParseUint(header, 10, 64)
	held, last, err := s.store.Holds(ctx, minRev)
	if err != nil {
		s.log.Warn("api: cannot tell the state stream's last revision", "method", method, "err", err)
		return nil // answer from the view as it is
	}
	if !held {
		return bus.ParameterError("%s %d is ahead of every revision the hub has (%d)", bus.HeaderMinRev, minRev, last)
	}
	wctx, cancel := context.WithTimeout(ctx, minRevWait)
	defer cancel()
	if err := s.store.WaitApplied(wctx, minRev); err != nil {
		s.log.Warn("api: view behind the client", "method", method, "want", minRev, "err", err)
	}
	return nil
}
