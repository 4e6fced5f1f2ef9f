package hub

import (
	"slices"
	"sync"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// A host may pull any task queue but those that existed at its connect and
// were not its own (bus.HostGrants: NATS grants subjects at connect only,
// and a consumer name is one subject token, so no wildcard can follow the
// priority part of a queue's name). Which of those queues are its own
// changes when the host joins or leaves a channel, when its arches change or
// a channel is enabled or disabled. The hub remembers what it granted each
// host and closes the host's connections when one of the queues it knew of
// changed sides: a queue left is then denied, a queue joined no longer is.
// builderd reconnects and looks at its queues again. Only the embedded
// server's connections can be closed (disconnectIdentity).

// grantedQueues are the queues a host identity was last granted.
type grantedQueues struct {
	hostID int64
	mine   map[string]bool // its own queues then
	known  []string        // every queue then: its own and those denied
	at     time.Time
}

type hostGrantWatch struct {
	mu      sync.Mutex
	granted map[string]grantedQueues // by the host's user name
	poke    chan struct{}
	started bool // watchHostGrants runs; it closes done when it returns
	done    chan struct{}
}

func newHostGrantWatch() *hostGrantWatch {
	return &hostGrantWatch{granted: map[string]grantedQueues{}, poke: make(chan struct{}, 1), done: make(chan struct{})}
}

// hostQueueNames are the consumers of a host's own queues now, sorted.
func hostQueueNames(v state.View, h *hostRecord) []string {
	qs := hostQueues(v, h)
	out := make([]string, 0, len(qs))
	for _, q := range qs {
		out = append(out, q.Consumer)
	}
	slices.Sort(out)
	return out
}

// record notes the queues a host is granted, its own and those denied (a
// nil watch: the hub cannot close connections).
func (w *hostGrantWatch) record(name string, hostID int64, mine, notMine []string) {
	if w == nil {
		return
	}
	g := grantedQueues{hostID: hostID, mine: make(map[string]bool, len(mine)), known: append(slices.Clone(mine), notMine...), at: time.Now()}
	for _, q := range mine {
		g.mine[q] = true
	}
	w.mu.Lock()
	w.granted[name] = g
	w.mu.Unlock()
	// The state may have moved since the callout read it.
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// changedSides reports whether one of the queues known at the grant is the
// host's own now and was not then, or the other way round.
func (g grantedQueues) changedSides(now []string) bool {
	mineNow := make(map[string]bool, len(now))
	for _, q := range now {
		mineNow[q] = true
	}
	for _, q := range g.known {
		if mineNow[q] != g.mine[q] {
			return true
		}
	}
	return false
}

// hostGrantKinds are the state kinds a host's queue list is computed from.
var hostGrantKinds = []string{"taskqueue", "hostchannel", "host", "channel"}

// watchHostGrants closes the connections of hosts whose own queues changed,
// until the hub stops.
func (s *Server) watchHostGrants() {
	w := s.hostGrants
	defer close(w.done)
	var seen uint64
	force := false
	for {
		changed, _ := s.store.Changed()
		var rev uint64
		_ = s.store.Read(func(v state.View) error { rev = v.KindsRev(hostGrantKinds...); return nil })
		retry := false
		if rev != seen || force {
			seen = rev
			retry = s.closeStaleHostGrants()
		}
		force = false
		var again <-chan time.Time
		if retry {
			again = time.After(100 * time.Millisecond)
		}
		select {
		case <-s.stopped:
			return
		case <-changed:
		case <-w.poke:
			force = true
		case <-again:
			force = true
		}
	}
}

// closeStaleHostGrants disconnects every host one of whose known queues
// changed sides. A connection whose callout answer is out but which
// the server has not registered yet cannot be found: its record stays, and
// retry says to look again shortly.
func (s *Server) closeStaleHostGrants() (retry bool) {
	w := s.hostGrants
	w.mu.Lock()
	granted := make(map[string]grantedQueues, len(w.granted))
	for name, g := range w.granted {
		granted[name] = g
	}
	w.mu.Unlock()
	var stale []string
	_ = s.store.Read(func(v state.View) error {
		for name, g := range granted {
			h, ok := lookupHost(v, registry.Ref{ID: g.hostID})
			if !ok || g.changedSides(hostQueueNames(v, h)) {
				stale = append(stale, name)
			}
		}
		return nil
	})
	for _, name := range stale {
		closed := s.disconnectIdentity(name)
		w.mu.Lock()
		if g, ok := w.granted[name]; ok && g.at.Equal(granted[name].at) {
			if closed == 0 && time.Since(g.at) < bus.AuthTimeout {
				retry = true
			} else {
				delete(w.granted, name)
			}
		}
		w.mu.Unlock()
		if closed > 0 {
			s.log.Info("host's task queues changed: connections closed to grant them anew", "host", name, "closed", closed)
		}
	}
	return retry
}
