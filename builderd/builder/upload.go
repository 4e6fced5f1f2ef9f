package builder

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/kojibus/kojibus/bus"
)

// liveFlush is how long written log output may wait before it is published.
const liveFlush = 200 * time.Millisecond

// liveUpload is an io.Writer whose output goes out while the task runs:
// buffered at most liveFlush (or until a chunk is full), then published;
// Close sends the rest as the final chunk.
type liveUpload struct {
	ctx context.Context
	log *slog.Logger

	mu     sync.Mutex
	up     *bus.Upload
	buf    []byte
	err    error
	closed bool

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newLiveUpload(ctx context.Context, up *bus.Upload, log *slog.Logger) *liveUpload {
	l := &liveUpload{
		ctx: ctx, log: log, up: up,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go l.flusher()
	return l
}

func (l *liveUpload) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return 0, errClosedLog
	}
	l.buf = append(l.buf, p...)
	if len(l.buf) >= bus.UploadChunk {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

var errClosedLog = bus.GenericError("task log is closed")

func (l *liveUpload) flusher() {
	defer close(l.done)
	t := time.NewTicker(liveFlush)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.kick:
		}
		l.flush(false)
	}
}

// flush publishes what was written; with final, also the final marker.
func (l *liveUpload) flush(final bool) {
	l.mu.Lock()
	data := l.buf
	l.buf = nil
	l.mu.Unlock()
	if len(data) == 0 && !final {
		return
	}
	if err := l.up.Publish(l.ctx, data, final); err != nil {
		l.mu.Lock()
		if l.err == nil {
			l.err = err
			l.log.Warn("live upload", "file", l.up.Name(), "err", err)
		}
		l.mu.Unlock()
	}
}

// Close publishes the remaining output with the final marker.
func (l *liveUpload) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return l.err
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.flush(true)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}
