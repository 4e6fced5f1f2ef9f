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
	waiting []*nats.Msg
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
func (f *fairShare) admit(caller string, m *nats.Msg) (run bool, err error) {
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
	if len(c.waiting) >= f.queueCalls || c.bytes+len(m.Data) > f.queueBytes {
		return false, bus.NewFault(bus.CodeTooManyRequests,
			"too many calls from this caller: %d running and %d waiting; wait for replies before sending more",
			c.running, len(c.waiting))
	}
	c.waiting = append(c.waiting, m)
	c.bytes += len(m.Data)
	return false, nil
}

// done ends one running call of caller and returns the caller's next
// waiting call, which the same worker runs (nil: none waits).
func (f *fairShare) done(caller string) *nats.Msg {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.callers[caller]
	if len(c.waiting) > 0 {
		m := c.waiting[0]
		c.waiting[0] = nil
		c.waiting = c.waiting[1:]
		c.bytes -= len(m.Data)
		return m
	}
	c.running--
	if c.running == 0 {
		delete(f.callers, caller)
	}
	return nil
}

// callerOf names who a request comes from, for the fair share: its session
// header, as sent (a forged one gains nothing: it fails authentication at
// once and cannot count against a real session, whose key it lacks);
// without one, its connection, told by the reply subject's prefix (a NATS
// connection takes every reply on one inbox prefix, _INBOX.<id>.).
func callerOf(m *nats.Msg) string {
	if session := m.Header.Get(bus.HeaderSession); session != "" {
		return "session " + session
	}
	if i := strings.LastIndexByte(m.Reply, '.'); i > 0 {
		return "connection " + m.Reply[:i]
	}
	return "connection " + m.Reply
}
