package bus

import (
	"fmt"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// StoreFailed reports whether a stream's file store failed to write (the
// disk was full) since the server started or JetStream was last restarted.
// Such a stream refuses, or leaves unanswered, every later write until
// JetStream starts again: its store keeps the error.
func (e *Embedded) StoreFailed() bool { return e.storeFailed.Load() }

// RestartJetStream stops JetStream and starts it again from its files, as a
// restart of the server would, but with the server and its connections
// kept: the streams come back without the write error their stores kept.
// Pull requests waiting on the server are gone; their consumers pull again.
func (e *Embedded) RestartJetStream() error {
	cfg := e.Server.JetStreamConfig()
	if cfg == nil {
		return fmt.Errorf("embedded NATS: JetStream is not running")
	}
	if err := e.Server.ShutdownJetStream(); err != nil {
		return fmt.Errorf("embedded NATS: stop JetStream: %w", err)
	}
	e.storeFailed.Store(false)
	cfg.StoreDir = e.storeDir // EnableJetStream adds "jetstream" to it again
	if err := e.Server.EnableJetStream(cfg); err != nil {
		return fmt.Errorf("embedded NATS: start JetStream: %w", err)
	}
	return nil
}

// storeFailureLog is the embedded server's logger: it logs nothing (the
// server runs with NoLog) but notes a file store's write error.
type storeFailureLog struct{ e *Embedded }

var _ server.Logger = storeFailureLog{}

func (l storeFailureLog) Errorf(format string, v ...any) {
	if strings.Contains(strings.ToLower(fmt.Sprintf(format, v...)), "critical write error") {
		l.e.storeFailed.Store(true)
	}
}
func (storeFailureLog) Noticef(string, ...any) {}
func (storeFailureLog) Warnf(string, ...any)   {}
func (storeFailureLog) Fatalf(string, ...any)  {}
func (storeFailureLog) Debugf(string, ...any)  {}
func (storeFailureLog) Tracef(string, ...any)  {}
