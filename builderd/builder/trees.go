package builder

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// treeReaper keeps the buildroot trees of failed tasks for a while (Koji's
// failed_buildroot_lifetime), so that save-failed-tree can still read them,
// then removes them. Each kept tree has an "expires" file with the Unix
// time it goes, so a restarted builderd picks the schedule up again.
type treeReaper struct {
	dir      string
	lifetime time.Duration
	log      *slog.Logger

	mu     sync.Mutex
	timers map[string]*time.Timer
	closed bool
	// removed, when set (tests), is told each tree removed.
	removed func(tree string)
}

const treeExpiresFile = "expires"

func newTreeReaper(dir string, lifetime time.Duration, log *slog.Logger) *treeReaper {
	return &treeReaper{dir: dir, lifetime: lifetime, log: log, timers: map[string]*time.Timer{}}
}

// Start schedules the removal of the trees an earlier builderd kept.
func (r *treeReaper) Start() {
	entries, _ := os.ReadDir(r.dir)
	for _, e := range entries {
		tree := filepath.Join(r.dir, e.Name())
		b, err := os.ReadFile(filepath.Join(tree, treeExpiresFile))
		if err != nil {
			// Not kept: left by a builderd that died during the run.
			r.remove(tree)
			continue
		}
		sec, err := strconv.ParseInt(string(b), 10, 64)
		if err != nil {
			r.remove(tree)
			continue
		}
		r.schedule(tree, time.Unix(sec, 0))
	}
}

// keep marks a tree kept until now + lifetime.
func (r *treeReaper) keep(tree string) {
	until := time.Now().Add(r.lifetime)
	if err := os.WriteFile(filepath.Join(tree, treeExpiresFile), []byte(strconv.FormatInt(until.Unix(), 10)), 0o644); err != nil {
		r.log.Warn("keep failed buildroot", "path", tree, "err", err)
		r.remove(tree)
		return
	}
	r.log.Info("failed buildroot kept", "path", tree, "until", until.Format(time.RFC3339))
	r.schedule(tree, until)
}

func (r *treeReaper) schedule(tree string, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return
	}
	if old := r.timers[tree]; old != nil {
		old.Stop()
	}
	r.timers[tree] = time.AfterFunc(time.Until(at), func() {
		r.mu.Lock()
		delete(r.timers, tree)
		r.mu.Unlock()
		r.remove(tree)
	})
}

func (r *treeReaper) remove(tree string) {
	if err := os.RemoveAll(tree); err != nil {
		r.log.Warn("remove buildroot", "path", tree, "err", err)
		return
	}
	r.log.Info("buildroot removed", "path", tree)
	if r.removed != nil {
		r.removed(tree)
	}
}

// Stop cancels the pending removals (the files say when, for the next start).
func (r *treeReaper) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	for _, t := range r.timers {
		t.Stop()
	}
	r.timers = map[string]*time.Timer{}
}
