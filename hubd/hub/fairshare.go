package hub

import (
	"strings"
	"sync"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
)

// fairShare keeps any one caller from holding more than its share of the
// API workers: a caller has at most limit calls in the workers at once;
// more wait in the caller's own queue (bounded in count and bytes, beyond
// which they are refused with TooManyRequests), and a worker that finishes
// one of the caller's calls takes the next. So a caller that floods the hub
// with slow calls slows only itself.
type fairShare struct {
	limit      int // calls of one caller in the workers at once
	queueCalls int // calls of one caller waiting at most
	queueBytes int // request bytes of one caller waiting at most

	mu      sync.Mutex
	callers map[string]*callerCalls
}

type callerCalls struct {
	running int
	waiting []apiCall
	bytes   int
}

func newFairShare(workers int) *fairShare {
	return &fairShare{
		limit:      max(4, workers/8),
		queueCalls: 256,
		queueBytes: 64 << 20,
		callers:    map[string]*callerCalls{},
	}
}

// admit counts a call of caller: run says to hand it to the workers now;
// otherwise it waits for one of the caller's running calls to finish (done
// returns it then), or, with an error, it is refused.
func (f *fairShare) admit(caller string, call apiCall) (run bool, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.callers[caller]
	if c == nil {
		c = &callerCalls{}
		f.callers[caller] = c
	}
	if c.running < f.limit {
		c.running++
		return true, nil
	}
	if len(c.waiting) >= f.queueCalls || c.bytes+len(call.msg.Data) > f.queueBytes {
		return false, bus.NewFault(bus.CodeTooManyRequests,
			"too many calls from this caller: %d running and %d waiting; wait for replies before sending more",
			c.running, len(c.waiting))
	}
	c.waiting = append(c.waiting, call)
	c.bytes += len(call.msg.Data)
	return false, nil
}

// done ends one running call of caller and returns the caller's next
// waiting call, which the same worker runs (ok false: none waits).
func (f *fairShare) done(caller string) (next apiCall, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.callers[caller]
	if len(c.waiting) > 0 {
		next = c.waiting[0]
		c.waiting[0] = apiCall{}
		c.waiting = c.waiting[1:]
		c.bytes -= len(next.msg.Data)
		return next, true
	}
	c.running--
	if c.running == 0 {
		delete(f.callers, caller)
	}
	return apiCall{}, false
}

// callerOf names who a request comes from, for the fair share: the NATS
// identity the server let publish on its subject (one per user or host, so
// all of a user's connections share one share and nothing a caller writes
// can make it two). Only the hub's own unbound identity is told apart by
// the session header, or else by its connection's reply inbox prefix.
func callerOf(identity string, m *nats.Msg) string {
	if identity != bus.UnboundIdentity {
		return "identity " + identity
	}
	if session := m.Header.Get(bus.HeaderSession); session != "" {
		return "session " + session
	}
	if i := strings.LastIndexByte(m.Reply, '.'); i > 0 {
		return "connection " + m.Reply[:i]
	}
	return "connection " + m.Reply
}
