package hub

import (
	"slices"
	"sync"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// A host may pull exactly the task queues it was granted at connect
// (bus.HostGrants): its pinned queue and the queues of its channels and
// arches. That list changes when a queue is first used (a new channel, arch
// or priority), when the host joins or leaves a channel, when its arches
// change or a channel is enabled or disabled. The hub remembers what it
// granted each host and closes the host's connections when the list is no
// longer what the state says: builderd reconnects and gets the new list.
// Only the embedded server's connections can be closed (disconnectIdentity).

// grantedQueues are the queues a host identity was last granted.
type grantedQueues struct {
	hostID int64
	queues []string // sorted consumer names
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

// hostQueueNames are the consumers of the queues a host may pull from now, sorted.
func hostQueueNames(v state.View, h *hostRecord) []string {
	qs := hostQueues(v, h)
	out := make([]string, 0, len(qs))
	for _, q := range qs {
		out = append(out, q.Consumer)
	}
	slices.Sort(out)
	return out
}

// record notes the queues the callout grants a host (a nil watch: the hub
// cannot close connections, and grants no exact list).
func (w *hostGrantWatch) record(name string, hostID int64, queues []string) {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.granted[name] = grantedQueues{hostID: hostID, queues: queues, at: time.Now()}
	w.mu.Unlock()
	// The state may have moved since the callout read it.
	select {
	case w.poke <- struct{}{}:
	default:
	}
}

// grantedTo returns the queues granted to a host identity, ok false when
// this hub does not know (then the host may pull what the state says).
func (w *hostGrantWatch) grantedTo(name string) (map[string]bool, bool) {
	if w == nil {
		return nil, false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	g, ok := w.granted[name]
	if !ok {
		return nil, false
	}
	set := make(map[string]bool, len(g.queues))
	for _, q := range g.queues {
		set[q] = true
	}
	return set, true
}

// hostGrantKinds are the state kinds a host's queue list is computed from.
var hostGrantKinds = []string{"taskqueue", "hostchannel", "host", "channel"}

// watchHostGrants closes the connections of hosts whose queue list changed,
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

// closeStaleHostGrants disconnects every host whose granted queues differ
// from its queues now. A connection whose callout answer is out but which
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
			if !ok || !slices.Equal(hostQueueNames(v, h), g.queues) {
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
