package builder

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// liveFlush is how long written log output may wait before it is published.
const liveFlush = 200 * time.Millisecond

// uploader publishes one task file of one run in chunks of at most
// uploadChunk bytes to bus.UploadSubject; the hub assembles them when it
// accepts the run's result.
type uploader struct {
	js      jetstream.JetStream
	taskID  int64
	attempt int64
	name    string
	offset  int64
}

func (u *uploader) publish(ctx context.Context, data []byte, final bool) error {
	for {
		n := len(data)
		if n > uploadChunk {
			n = uploadChunk
		}
		last := final && n == len(data)
		m := nats.NewMsg(bus.UploadSubject(u.taskID, u.attempt, u.name))
		m.Data = data[:n]
		m.Header.Set(bus.HeaderUploadName, u.name)
		if last {
			m.Header.Set(bus.HeaderUploadFinal, "1")
		}
		m.Header.Set(jetstream.MsgIDHeader, strconv.FormatInt(u.taskID, 10)+"-"+strconv.FormatInt(u.attempt, 10)+"-"+
			bus.EscapeToken(u.name)+"-"+strconv.FormatInt(u.offset, 10))
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := u.js.PublishMsg(pctx, m)
		cancel()
		if err != nil {
			return err
		}
		u.offset += int64(n)
		data = data[n:]
		if len(data) == 0 {
			return nil
		}
	}
}

// liveUpload is an io.Writer whose output goes out while the task runs:
// buffered at most liveFlush (or until a chunk is full), then published;
// Close sends the rest as the final chunk.
type liveUpload struct {
	ctx context.Context
	log *slog.Logger

	mu     sync.Mutex
	up     *uploader
	buf    []byte
	err    error
	closed bool

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newLiveUpload(ctx context.Context, js jetstream.JetStream, taskID, attempt int64, name string, log *slog.Logger) *liveUpload {
	l := &liveUpload{
		ctx: ctx, log: log, up: &uploader{js: js, taskID: taskID, attempt: attempt, name: name},
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
	if len(l.buf) >= uploadChunk {
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
	if err := l.up.publish(l.ctx, data, final); err != nil {
		l.mu.Lock()
		if l.err == nil {
			l.err = err
			l.log.Warn("live upload", "file", l.up.name, "err", err)
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
