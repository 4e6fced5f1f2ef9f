package state

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// WriteGate decides whether the store may commit now: the hub's disk guard
// refuses writes while the disk of its data directory is nearly full,
// before the filesystem (and with it the NATS server's streams) runs out.
type WriteGate interface {
	// Admit returns the fault refusing a transaction of about size bytes,
	// or nil. reserve marks a transaction the hub lets through under a
	// smaller reserve (a login's session), so that logins keep working while
	// other writes are refused.
	Admit(size int, reserve bool) error
	// Refused is told that the server refused a commit for lack of space
	// (IsNoSpace) and returns the error the caller gets.
	Refused(err error) error
}

// SetWriteGate makes every later Update ask g before it commits. Call it
// before the store takes writes.
func (s *Store) SetWriteGate(g WriteGate) { s.gate = g }

// UseReserve marks the transaction as one the write gate lets through under
// its smaller reserve: a session written by a login or removed by a logout,
// small writes that keep the hub usable while the disk is too full for others.
func (tx *Txn) UseReserve() { tx.reserve = true }

// admit asks the write gate, if any, whether tx may be committed.
func (s *Store) admit(tx *Txn) error {
	if s.gate == nil {
		return nil
	}
	n := 0
	for _, w := range tx.writes {
		n += len(w.key) + len(w.val)
	}
	for _, e := range tx.events {
		n += len(e.Address) + len(e.Props) + len(e.Body)
	}
	return s.gate.Admit(n, tx.reserve)
}

// refused turns a failed commit into the gate's fault when the server
// refused it for lack of space, or when it failed (the server does not
// answer a write its store failed) while the gate refuses even sessions.
func (s *Store) refused(err error) error {
	switch {
	case s.gate == nil || err == nil:
		return err
	case IsNoSpace(err):
		return s.gate.Refused(err)
	}
	if full := s.gate.Admit(0, true); full != nil {
		return full
	}
	return err
}

// JetStream's error codes for a server out of storage.
const (
	errCodeInsufficientResources    = 10023 // JSInsufficientResourcesErr: a write over the server's max store
	errCodeStorageResourcesExceeded = 10047 // JSStorageResourcesExceededErr
)

// IsNoSpace reports whether err says the NATS server (or a file) is out of
// storage: JetStream's insufficient resources, or ENOSPC passed through.
func IsNoSpace(err error) bool {
	if err == nil {
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errCodeInsufficientResources, errCodeStorageResourcesExceeded:
			return true
		}
	}
	return strings.Contains(err.Error(), "no space left") || strings.Contains(err.Error(), "insufficient resources")
}

// Stall is the log of a writer that keeps trying to store something it
// cannot (the relay, the archive, while the disk is full): one line when it
// starts failing and one when it succeeds again, not one per attempt, and
// the time to wait before the next attempt, growing up to a second.
// Only its writer's goroutine uses it.
type Stall struct {
	Log  *slog.Logger
	What string // what fails: "archive: store events"

	since time.Time // zero while not failing
	wait  time.Duration
}

// Failed notes a failed attempt and returns how long to wait before the next.
func (st *Stall) Failed(err error) time.Duration {
	if st.since.IsZero() {
		st.since, st.wait = time.Now(), 50*time.Millisecond
		st.Log.Error(st.What+": failing; retrying quietly until it succeeds", "err", err, "no_space", IsNoSpace(err))
	}
	st.wait = min(2*st.wait, time.Second)
	return st.wait
}

// OK notes a successful attempt.
func (st *Stall) OK() {
	if !st.since.IsZero() {
		st.Log.Info(st.What+": succeeding again", "after", time.Since(st.since).Round(time.Millisecond))
		st.since = time.Time{}
	}
}
