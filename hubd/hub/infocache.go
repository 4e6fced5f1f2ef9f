package hub

import (
	"encoding/json"
	"sync"
)

// taskInfoCache keeps encoded getTaskInfo answers by task revision: clients
// ask for the same task again and again while they wait for it (watchers,
// build scripts, the web UI), and an answer depends only on the record at
// that revision, so a change makes a new key and never a stale answer.
// It holds at most two generations of taskInfoCacheSize answers.
type taskInfoCache struct {
	mu        sync.Mutex
	cur, prev map[taskInfoKey]json.RawMessage
}

type taskInfoKey struct {
	id          int64
	rev         uint64
	withRequest bool
}

const taskInfoCacheSize = 4096

func (c *taskInfoCache) get(k taskInfoKey) (json.RawMessage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b, ok := c.cur[k]; ok {
		return b, true
	}
	b, ok := c.prev[k]
	if ok {
		c.putLocked(k, b) // still in use: keep it through the next turnover
	}
	return b, ok
}

func (c *taskInfoCache) put(k taskInfoKey, b json.RawMessage) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(k, b)
}

func (c *taskInfoCache) putLocked(k taskInfoKey, b json.RawMessage) {
	if len(c.cur) >= taskInfoCacheSize || c.cur == nil {
		c.prev, c.cur = c.cur, make(map[taskInfoKey]json.RawMessage, taskInfoCacheSize)
	}
	c.cur[k] = b
}

// len is how many answers the cache holds.
func (c *taskInfoCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.cur) + len(c.prev)
}
