package hub

// The disk guard: writes are refused with InsufficientResources while the
// filesystem of the data directory has less free than --min-free-disk, so
// the NATS server's streams and the archive never run out of space. A
// stream whose file store once failed to write (ENOSPC) refuses every later
// write until the server restarts, and the archive's Pebble store retries
// its flushes without end; refusing before the disk is full is what lets
// the hub resume by itself once space is freed.
//
// The guard reads the filesystem (statfs) once a second, not per call, and
// counts what each admitted write will take (writeFootprint); once the
// writes admitted since the last reading could have taken a quarter of the
// room left above the threshold, it reads again before admitting more, so a
// burst of writes between two ticks cannot run far past the threshold.
// Sessions (login, logout) pass under a reserve of half the threshold, so
// logins keep working while other writes are refused; what is committed
// goes on to be relayed and archived, which the reserve leaves room for.

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kojibus/kojibus/bus"
)

// DefaultMinFreeDisk is the share of the data directory's filesystem kept free.
const DefaultMinFreeDisk = "5%"

// diskCheckEvery is how often the guard reads the filesystem.
const diskCheckEvery = time.Second

// writeFootprint is how many bytes of disk a committed byte takes in all:
// the transaction message, its written-out keys, its events and their
// archive copy.
const writeFootprint = 6

// FreeSpace is an amount of a filesystem to keep free: a share of its size,
// or bytes.
type FreeSpace struct {
	Percent float64
	Bytes   uint64
}

// ParseFreeSpace reads "5%", "512MiB", "2G", "1048576" or "0" (keep
// nothing free: the guard is off).
func ParseFreeSpace(s string) (FreeSpace, error) {
	s = strings.TrimSpace(s)
	if p, ok := strings.CutSuffix(s, "%"); ok {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 || v >= 100 {
			return FreeSpace{}, fmt.Errorf("free disk %q: want a percentage below 100", s)
		}
		return FreeSpace{Percent: v}, nil
	}
	units := []struct {
		suffix string
		mult   uint64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}}
	mult := uint64(1)
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = num, u.mult
			break
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return FreeSpace{}, fmt.Errorf("free disk %q: want a percentage (5%%) or a size (512MiB, 2G, bytes)", s)
	}
	return FreeSpace{Bytes: v * mult}, nil
}

// of is the bytes to keep free on a filesystem of total bytes.
func (f FreeSpace) of(total uint64) uint64 {
	if f.Percent > 0 {
		return uint64(float64(total) * f.Percent / 100)
	}
	return f.Bytes
}

func (f FreeSpace) String() string {
	if f.Percent > 0 {
		return strconv.FormatFloat(f.Percent, 'f', -1, 64) + "%"
	}
	return formatBytes(f.Bytes)
}

// diskReading is what the guard last read of the filesystem.
type diskReading struct {
	avail, total uint64
	// refusal is set when the NATS server refused a commit for lack of
	// space: every write is refused until the next reading.
	refusal error
}

// diskGuard is the hub's state.WriteGate.
type diskGuard struct {
	dir     string
	minFree FreeSpace
	log     *slog.Logger

	mu      sync.Mutex
	reading diskReading
	// spent is the footprint of the writes admitted since the last
	// reading; past recheck, the next write takes a new reading first.
	spent, recheck int64
	// full is set while writes other than sessions are refused (for the
	// log's state changes and for tests).
	full atomic.Bool

	// storeFailed and restart, with an embedded server (see watchServer).
	storeFailed func() bool
	restart     func()

	cancel context.CancelFunc
	done   chan struct{}
}

func newDiskGuard(dir string, minFree FreeSpace, log *slog.Logger) *diskGuard {
	return &diskGuard{dir: dir, minFree: minFree, log: log}
}

// Start reads the filesystem and goes on reading it every diskCheckEvery.
func (g *diskGuard) Start() error {
	if err := g.check(); err != nil {
		return fmt.Errorf("hub: disk guard: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel, g.done = cancel, make(chan struct{})
	go func() {
		defer close(g.done)
		for bus.Sleep(ctx, diskCheckEvery); ctx.Err() == nil; bus.Sleep(ctx, diskCheckEvery) {
			if err := g.check(); err != nil {
				g.log.Warn("disk guard: read filesystem", "dir", g.dir, "err", err)
			}
		}
	}()
	return nil
}

// Stop stops reading; safe on a nil or unstarted guard.
func (g *diskGuard) Stop() {
	if g == nil || g.cancel == nil {
		return
	}
	g.cancel()
	<-g.done
}

// watchServer has the guard refuse writes while a stream of the embedded
// server keeps a failed write (the disk filled up all the same: something
// else filled it), and call restart once the disk has room again.
func (g *diskGuard) watchServer(storeFailed func() bool, restart func()) {
	g.mu.Lock()
	g.storeFailed, g.restart = storeFailed, restart
	g.mu.Unlock()
}

// check takes a new reading.
func (g *diskGuard) check() error {
	g.mu.Lock()
	err := g.readLocked()
	full := g.refusal(g.reading, 0, false) != nil
	storeFailed, restart := g.storeFailed, g.restart
	g.mu.Unlock()
	if err != nil {
		return err
	}
	if storeFailed != nil && storeFailed() {
		if !full {
			restart()
		}
		full = full || storeFailed()
	}
	g.noteState(full)
	return nil
}

// readLocked reads the filesystem; g.mu is held.
func (g *diskGuard) readLocked() error {
	var st unix.Statfs_t
	if err := unix.Statfs(g.dir, &st); err != nil {
		return err
	}
	r := diskReading{avail: st.Bavail * uint64(st.Bsize), total: st.Blocks * uint64(st.Bsize)}
	g.reading, g.spent = r, 0
	room := int64(r.avail) - int64(g.minFree.of(r.total))
	g.recheck = max(room/4, 64<<10)
	return nil
}

// noteState logs when writes start or stop being refused.
func (g *diskGuard) noteState(full bool) {
	if g.full.Swap(full) == full {
		return
	}
	g.mu.Lock()
	r := g.reading
	g.mu.Unlock()
	if full {
		g.log.Error("disk guard: refusing writes until space is freed", "dir", g.dir,
			"free", formatBytes(r.avail), "size", formatBytes(r.total), "keep_free", g.minFree.String())
	} else {
		g.log.Info("disk guard: accepting writes again", "dir", g.dir, "free", formatBytes(r.avail))
	}
}

// refusal is the fault refusing a write of footprint bytes on reading r, or
// nil. g.mu is held.
func (g *diskGuard) refusal(r diskReading, footprint int64, reserve bool) error {
	if r.refusal != nil {
		return r.refusal
	}
	need := g.minFree.of(r.total)
	if need == 0 {
		return nil
	}
	kept := need
	if reserve {
		kept = need / 2
	}
	left := int64(r.avail) - g.spent - footprint
	if left >= int64(kept) {
		return nil
	}
	pct := 0.0
	if r.total > 0 {
		pct = 100 * float64(max(left, 0)) / float64(r.total)
	}
	return bus.NewFault(bus.CodeInsufficientResources,
		"disk of the hub's data directory has %.0f%% free (%s of %s), below the %s kept free; writes resume once space is freed",
		pct, formatBytes(uint64(max(left, 0))), formatBytes(r.total), g.minFree)
}

// Admit implements state.WriteGate.
func (g *diskGuard) Admit(size int, reserve bool) error {
	footprint := int64(size) * writeFootprint
	g.mu.Lock()
	if g.spent+footprint > g.recheck {
		if err := g.readLocked(); err != nil {
			g.log.Warn("disk guard: read filesystem", "dir", g.dir, "err", err)
		}
	}
	err := g.refusal(g.reading, footprint, reserve)
	if err == nil && g.storeFailed != nil && g.storeFailed() {
		err = bus.NewFault(bus.CodeInsufficientResources,
			"the hub's NATS server failed to write to the disk of its data directory; writes resume once space is freed")
	}
	if err == nil {
		g.spent += footprint
	}
	g.mu.Unlock()
	if err != nil && !reserve {
		g.noteState(true)
	}
	return err
}

// Refused implements state.WriteGate: the NATS server refused a commit for
// lack of space, so every write is refused until the next reading.
func (g *diskGuard) Refused(err error) error {
	f := bus.NewFault(bus.CodeInsufficientResources,
		"the hub's NATS server refused the write for lack of space (%v); writes resume once space is freed", err)
	g.mu.Lock()
	g.reading.refusal = f
	g.mu.Unlock()
	g.noteState(true)
	return f
}

// restartJetStream restarts the embedded server's JetStream, whose store
// failed a write while the disk was full, now that the disk has room: its
// streams take writes again, and the relay and the archive pull anew.
func (s *Server) restartJetStream() {
	s.log.Warn("disk guard: the disk has room again; restarting JetStream, whose store failed a write while it was full")
	if err := s.embedded.RestartJetStream(); err != nil {
		s.log.Error("disk guard: restart JetStream", "err", err)
		return
	}
	if s.relay != nil {
		s.relay.PullAgain()
	}
	if s.archive != nil {
		s.archive.pullAgain()
	}
}

// formatBytes prints a size in binary units: "1.9 MiB".
func formatBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatUint(n, 10) + " B"
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
