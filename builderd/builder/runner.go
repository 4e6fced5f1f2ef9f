package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// runner is one run (task id + attempt) on this builder.
type runner struct {
	b       *Builder
	id      int64
	attempt int64
	method  string
	weight  float64
	msg     jetstream.Msg
	handler *Handler
	info    bus.Task
	request []json.RawMessage

	ctx     context.Context
	cancel  context.CancelCauseFunc
	waiting atomic.Bool

	uploads *bus.Uploads // the run's output files

	mu   sync.Mutex
	pids map[int]bool // process groups of the run's commands
}

// kill ends the run: its context is canceled with the cause, which makes
// every command of the run kill its process group.
func (r *runner) kill(cause error) { r.cancel(cause) }

// PIDs lists the process group leaders the run currently has.
func (r *runner) PIDs() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]int, 0, len(r.pids))
	for p := range r.pids {
		out = append(out, p)
	}
	return out
}

func (r *runner) run() {
	b := r.b
	log := b.log.With("task", r.id, "attempt", r.attempt, "method", r.method)
	defer func() {
		b.mu.Lock()
		delete(b.running, r.id)
		b.mu.Unlock()
		r.cancel(nil)
		b.tasks.Done()
		b.signal()
	}()

	// Keep the queue message ours while the task runs.
	progressDone := make(chan struct{})
	var progressWG sync.WaitGroup
	progressWG.Add(1)
	go func() {
		defer progressWG.Done()
		t := time.NewTicker(b.cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-progressDone:
				return
			case <-t.C:
				_ = r.msg.InProgress()
			}
		}
	}()
	defer func() { close(progressDone); progressWG.Wait() }()

	dir := b.taskDir(r.id, r.attempt)
	var t *Task
	result, runErr := func() (any, error) {
		up, err := r.uploads.Start(r.method + ".log")
		if err != nil {
			return nil, err
		}
		lw := newLiveUpload(b.ctx, up, b.log)
		t = &Task{ID: r.id, Attempt: r.attempt, Method: r.method, Info: r.info, dir: dir, Log: lw, Logger: log, r: r}
		res, err := callHandler(r.ctx, r.handler, t, parseArgs(r.request))
		if err != nil && !errors.Is(err, errTaskGone) && !errors.Is(err, errShutdown) {
			fmt.Fprintf(lw, "task failed: %v\n", err)
		}
		if cerr := lw.Close(); cerr != nil {
			log.Warn("upload log", "err", cerr)
		}
		return res, err
	}()
	if t != nil && t.made.Load() { // t is nil when the log upload could not start
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("remove task work directory", "err", err)
		}
	}

	switch cause := context.Cause(r.ctx); {
	case errors.Is(cause, errTaskGone):
		// The hub already moved the task (canceled or freed): no result.
		log.Info("run ended: task taken away by the hub")
		_ = r.msg.Term()
		return
	case errors.Is(cause, errShutdown):
		return // Stop frees the task and terminates the message
	}

	ctx, cancel := context.WithTimeout(b.ctx, 2*time.Minute)
	defer cancel()
	outputs := map[string]any{"outputs": r.uploads.Files()}
	report := func() error {
		if runErr != nil {
			f := bus.AsFault(runErr)
			return b.client.Call(ctx, "host.failTask", []any{r.id, r.attempt, bus.TaskFault{FaultCode: f.Code, FaultString: f.Message}}, outputs, nil)
		}
		return b.client.Call(ctx, "host.closeTask", []any{r.id, r.attempt, result}, outputs, nil)
	}
	if runErr != nil {
		log.Info("task failed", "err", runErr)
	} else {
		log.Info("task closed")
	}
	// A result the hub could not take (it is restarting, overloaded) is
	// offered again until it is accepted or refused as stale: a task must not
	// stay OPEN on a host that has finished it.
	err := report()
	if runErr == nil && errors.Is(err, bus.ErrParameter) {
		// The hub refused the result itself (beyond its MaxResultSize, say):
		// offered again it would be refused again, so the task fails with
		// the reason instead.
		log.Warn("task result refused; failing the task", "err", err)
		runErr = err
		err = report()
	}
	for backoff := 200 * time.Millisecond; err != nil && !errors.Is(err, bus.ErrTaskAttemptStale) && !errors.Is(err, bus.ErrParameter) && ctx.Err() == nil; {
		log.Warn("report task result, retrying", "err", err, "in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
		err = report()
	}
	switch {
	case err == nil:
		// Acked only now that the hub has accepted the result.
		if aerr := r.msg.DoubleAck(ctx); aerr != nil {
			log.Warn("ack task message", "err", aerr)
		}
	case errors.Is(err, bus.ErrTaskAttemptStale):
		log.Info("result discarded: a later attempt owns the task", "err", err)
		_ = r.msg.Term()
	default:
		// Left unacked: redelivered after AckWait; fencing decides.
		log.Error("report task result", "err", err)
	}
}

// callHandler runs a handler, turning a panic into a task failure.
func callHandler(ctx context.Context, h *Handler, t *Task, a Args) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = bus.GenericError("handler %s panicked: %v\n%s", h.Method, p, debug.Stack())
		}
	}()
	res, err = h.Run(ctx, t, a)
	if cause := context.Cause(ctx); cause != nil && (errors.Is(cause, errTaskGone) || errors.Is(cause, errShutdown)) {
		return nil, cause
	}
	return res, err
}

// Task is what a handler gets: the run, its work directory, its live log and
// the host session's calls a handler needs.
type Task struct {
	ID      int64
	Attempt int64
	Method  string
	Info    bus.Task
	// dir is the run's private directory (see WorkDir).
	dir     string
	dirOnce sync.Once
	dirErr  error
	made    atomic.Bool
	// Log is the handler's output log "<method>.log", streamed live to the hub.
	Log    io.Writer
	Logger *slog.Logger
	r      *runner
}

// WorkDir returns the run's private directory, made on first use (most
// runs need none) and removed when the run ends.
func (t *Task) WorkDir() (string, error) {
	t.dirOnce.Do(func() {
		if t.dirErr = os.MkdirAll(t.dir, 0o755); t.dirErr != nil {
			t.dirErr = fmt.Errorf("task work directory: %w", t.dirErr)
		}
		t.made.Store(true)
	})
	return t.dir, t.dirErr
}

// Session is the host's API client.
func (t *Task) Session() *bus.Client { return t.r.b.client }

// Command runs a program in the work directory, its output going to the
// task log, in a process group of its own: when the task is canceled the
// whole tree gets SIGTERM, then SIGKILL after the kill grace.
func (t *Task) Command(ctx context.Context, name string, args ...string) error {
	dir, err := t.WorkDir()
	if err != nil {
		return err
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = t.Log, t.Log
	// Its own process group, so cancel kills the whole tree; and SIGKILL if
	// builderd dies (kill -9), so no build runs on unsupervised while the hub
	// hands the task to another builder.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = t.Run(ctx, cmd, nil)
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	if err != nil {
		return bus.GenericError("%s failed: %v", name, err)
	}
	return nil
}

// Run starts cmd, which must have SysProcAttr.Setpgid, calls started (if
// any) right after the start, and waits for it. When ctx ends the process
// group gets SIGTERM, then SIGKILL after the kill grace; leftovers of the
// group are killed when the command exits. It returns Start's or Wait's error.
func (t *Task) Run(ctx context.Context, cmd *exec.Cmd, started func()) error {
	cmd.WaitDelay = 2 * time.Second // a grandchild holding the output pipe does not hold the task
	err := cmd.Start()
	if started != nil {
		started()
	}
	if err != nil {
		return fmt.Errorf("%s: %w", cmd.Path, err)
	}
	pgid := cmd.Process.Pid
	r := t.r
	r.mu.Lock()
	if r.pids == nil {
		r.pids = map[int]bool{}
	}
	r.pids[pgid] = true
	r.mu.Unlock()
	done := make(chan struct{})
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		grace := time.NewTimer(r.b.cfg.KillGrace)
		defer grace.Stop()
		select {
		case <-done:
		case <-grace.C:
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
		}
	}()
	err = cmd.Wait()
	close(done)
	<-killed
	// Leftovers of the group (background children of the command) go too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	r.mu.Lock()
	delete(r.pids, pgid)
	r.mu.Unlock()
	return err
}

// SubtaskOpts are host.subtask's options.
type SubtaskOpts struct {
	Label    string
	Priority *int
	Arch     string
	Channel  string
	Weight   *float64
}

// Subtask creates a child task of this run and returns its id.
func (t *Task) Subtask(ctx context.Context, method string, args []any, o SubtaskOpts) (int64, error) {
	kw := map[string]any{}
	if o.Label != "" {
		kw["label"] = o.Label
	}
	if o.Priority != nil {
		kw["priority"] = *o.Priority
	}
	if o.Arch != "" {
		kw["arch"] = o.Arch
	}
	if o.Channel != "" {
		kw["channel"] = o.Channel
	}
	if o.Weight != nil {
		kw["weight"] = *o.Weight
	}
	if args == nil {
		args = []any{}
	}
	var id int64
	err := t.Session().Call(ctx, "host.subtask", []any{method, args, t.ID, t.Attempt}, kw, &id)
	return id, err
}

// Upload sends a file of the work directory to the hub as task output name.
func (t *Task) Upload(ctx context.Context, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	u, err := t.r.uploads.Start(name)
	if err != nil {
		return err
	}
	buf := make([]byte, bus.UploadChunk)
	for {
		n, rerr := io.ReadFull(f, buf)
		final := errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF)
		if rerr != nil && !final {
			return rerr
		}
		if err := u.Publish(ctx, buf[:n], final); err != nil {
			return err
		}
		if final {
			return nil
		}
	}
}
