// Package builder is builderd, the kojibus build host daemon: it logs in as
// its host, heartbeats, pulls one task per free slot from the task queues of
// its channels and arches, runs the task's handler and reports the result,
// fenced by the task's attempt number.
//
// The loop, compared with kojid's (koji-behaviour.md 2.3): nothing polls. An
// idle builder waits for a core NATS wake-up on the queues' notify subjects
// (a safety timer covers a lost one); a parent task waits for its children on
// koji.event.task.*; a canceled task's processes are killed when
// koji.event.task.canceled names it, not on the next loop.
package builder

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// Config says how a builder runs.
type Config struct {
	// Profile is the host's credentials (kojictl add-host --creds-out).
	Profile *bus.Profile
	// WorkDir holds one directory per running task, removed when it ends.
	WorkDir string
	// Heartbeat is the interval of host.updateHost (default 5s).
	Heartbeat time.Duration
	// ShutdownTimeout is how long Stop lets running tasks finish before it
	// kills them and gives them back with host.freeTasks (default 5m).
	ShutdownTimeout time.Duration
	// MaxJobs caps the number of running tasks (kojid's maxjobs, default 10).
	MaxJobs int
	// Handlers are the task methods this builder runs (default: DefaultRegistry()).
	Handlers *Registry
	Logger   *slog.Logger

	// SafetyWake bounds an idle builder's wait for a wake-up (default 30s).
	SafetyWake time.Duration
	// ProgressEvery is the InProgress interval of a running task's queue
	// message: by default a third of the queue consumers' AckWait (bus.TaskAckWait).
	ProgressEvery time.Duration
	// KillGrace is the time between SIGTERM and SIGKILL of a canceled task's
	// process group (default 500ms, so a cancel kills within a second).
	KillGrace time.Duration

	// Plugins are the builder plugins enabled (kojid.conf's plugin option):
	// "runroot".
	Plugins []string
	// PluginConfigDir holds the plugins' configuration, e.g. runroot.conf
	// (default /etc/kojid/plugins).
	PluginConfigDir string
	// FailedBuildrootLifetime is how long a failed task's buildroot tree
	// stays on disk (kojid's failed_buildroot_lifetime, default 4h).
	FailedBuildrootLifetime time.Duration
	// Self is the builderd executable, re-executed to enter a buildroot
	// (default /proc/self/exe; its main must call buildroot.MaybeInit).
	Self string
}

// Delays of a queue message the builder does not take (Nak: another builder,
// or this one later, gets it; fencing decides who runs it).
const (
	nakNoHandler = 10 * time.Second
	nakCapacity  = 2 * time.Second
	nakError     = time.Second
)

var (
	errTaskGone = errors.New("task was canceled or freed by the hub")
	errShutdown = errors.New("builder is shutting down")
)

// Builder is one build host.
type Builder struct {
	cfg    Config
	log    *slog.Logger
	reg    *Registry
	hinted map[string]bool // consumers named by wake-ups since their last pull (see fetch)
	client *bus.Client
	nc     *nats.Conn
	js     jetstream.JetStream
	hostID int64

	mu       sync.Mutex
	host     bus.Host
	running  map[int64]*runner
	claiming map[int64]float64 // tasks being claimed (host.openTask in flight): their weight
	// empty holds the queues a pull found empty since the last wake-up that
	// named them (or any wake-up, the safety timer, a capacity retry): the
	// dispatcher skips them instead of asking again for every task it takes.
	empty     map[string]bool
	queues    []*queue
	consumers map[string]bool // consumer names of queues
	channels  map[int64]bool  // enabled channels of the host
	arches    map[string]bool // the host's arches + noarch
	draining  bool
	closing   bool // no more goroutines may start

	wake    chan struct{}
	refresh atomic.Bool

	ctx      context.Context // the builder's life; canceled last in Stop
	cancel   context.CancelFunc
	taskCtx  context.Context // parent of every task's context
	taskStop context.CancelFunc
	loops    sync.WaitGroup
	tasks    sync.WaitGroup
	subs     []*nats.Subscription
	runroot  *runrootPlugin
	started  bool
	stopOnce sync.Once
}

type queue struct {
	bus.TaskQueue
	cons jetstream.Consumer
}

// New checks the configuration and applies defaults.
func New(cfg Config) (*Builder, error) {
	if cfg.Profile == nil {
		return nil, errors.New("builder: no credentials profile")
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 5 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 5 * time.Minute
	}
	if cfg.MaxJobs <= 0 {
		cfg.MaxJobs = 10
	}
	if cfg.SafetyWake <= 0 {
		cfg.SafetyWake = 30 * time.Second
	}
	if cfg.ProgressEvery <= 0 {
		cfg.ProgressEvery = bus.TaskAckWait / 3
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = 500 * time.Millisecond
	}
	if cfg.Handlers == nil {
		cfg.Handlers = DefaultRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WorkDir == "" {
		return nil, errors.New("builder: no work directory")
	}
	if cfg.PluginConfigDir == "" {
		cfg.PluginConfigDir = "/etc/kojid/plugins"
	}
	if cfg.FailedBuildrootLifetime <= 0 {
		cfg.FailedBuildrootLifetime = 4 * time.Hour
	}
	if cfg.Self == "" {
		cfg.Self = "/proc/self/exe"
	}
	b := &Builder{
		cfg: cfg, log: cfg.Logger, reg: cfg.Handlers,
		running: map[int64]*runner{}, claiming: map[int64]float64{}, empty: map[string]bool{}, consumers: map[string]bool{},
		wake: make(chan struct{}, 1),
	}
	for _, p := range cfg.Plugins {
		switch p {
		case "runroot":
			if err := b.enableRunroot(); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("builder: unknown plugin %q (kojibus builders have: runroot)", p)
		}
	}
	return b, nil
}

// HostID is the id of the builder's host (after Start).
func (b *Builder) HostID() int64 { return b.hostID }

// Start logs in as the host, subscribes to wake-ups and cancellations,
// registers with a first heartbeat and starts pulling tasks. ctx bounds the
// start only; the builder runs until Stop.
func (b *Builder) Start(ctx context.Context) (err error) {
	if err := os.MkdirAll(b.cfg.WorkDir, 0o755); err != nil {
		return fmt.Errorf("builder: work directory: %w", err)
	}
	b.removeLeftoverRuns()
	name := b.cfg.Profile.Host
	if name == "" {
		name = b.cfg.Profile.User
	}
	c, err := b.cfg.Profile.Dial(ctx, "builderd-"+name)
	if err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	b.client, b.nc = c, c.Conn()
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.taskCtx, b.taskStop = context.WithCancel(b.ctx)
	defer func() {
		if err != nil {
			b.closeConn()
		}
	}()
	if err := b.cfg.Profile.Login(ctx, c); err != nil {
		return fmt.Errorf("builder: login: %w", err)
	}
	if err := c.Call(ctx, "host.getID", nil, nil, &b.hostID); err != nil {
		return fmt.Errorf("builder: host.getID: %w", err)
	}
	b.log = b.log.With("host", name, "host_id", b.hostID)
	if b.js, err = jetstream.New(b.nc); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	// Subscribe before the first look at the queues, so that no wake-up or
	// cancellation between the two is lost.
	for _, s := range []struct {
		subj string
		cb   nats.MsgHandler
	}{
		{bus.NotifyPrefix + "tasks.>", b.onNotify},
		{bus.EventPrefix + "task.canceled", b.onTaskMoved},
		{bus.EventPrefix + "task.free", b.onTaskMoved},
		{bus.EventPrefix + "task.assigned", b.onTaskMoved}, // a freed pinned task goes back to ASSIGNED
	} {
		sub, err := b.nc.Subscribe(s.subj, s.cb)
		if err != nil {
			return fmt.Errorf("builder: subscribe %s: %w", s.subj, err)
		}
		b.subs = append(b.subs, sub)
	}
	// The hub closes a host's connections when its channels or arches
	// change: the reconnect brings the new grants, so look at its queues
	// again (and at what a wake-up lost meanwhile would have said).
	b.nc.SetReconnectHandler(func(*nats.Conn) {
		b.refresh.Store(true)
		b.mayHaveWork()
		b.signal()
	})
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	if err := b.refreshHost(ctx); err != nil {
		return err
	}
	if err := b.refreshQueues(ctx); err != nil {
		return err
	}
	if err := b.heartbeat(ctx); err != nil {
		return err
	}
	if b.runroot != nil {
		b.runroot.trees.Start()
	}
	b.started = true
	b.loops.Add(2)
	go b.heartbeatLoop()
	go b.dispatchLoop()
	b.log.Info("builder started", "arches", b.host.Arches, "capacity", b.host.Capacity, "methods", b.reg.Methods())
	return nil
}

func (b *Builder) closeConn() {
	for _, s := range b.subs {
		_ = s.Unsubscribe()
	}
	b.subs = nil
	if b.cancel != nil {
		b.cancel()
	}
	if b.client != nil {
		b.client.Close()
	}
}

// Stop takes nothing new, lets running tasks finish for up to
// ShutdownTimeout, then kills the rest and gives them back to the hub with
// host.freeTasks, reports the host not ready and disconnects.
func (b *Builder) Stop() {
	b.stopOnce.Do(func() {
		if !b.started {
			return
		}
		b.mu.Lock()
		b.draining = true
		n := len(b.running)
		b.mu.Unlock()
		b.signal()
		b.log.Info("builder stopping", "running", n)
		done := make(chan struct{})
		go func() { b.tasks.Wait(); close(done) }()
		timer := time.NewTimer(b.cfg.ShutdownTimeout)
		select {
		case <-done:
			timer.Stop()
		case <-timer.C:
			b.abandonRunning()
			<-done
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if err := b.client.Call(ctx, "host.updateHost", []any{0.0, false}, nil, nil); err != nil {
			b.log.Warn("final host.updateHost", "err", err)
		}
		cancel()
		b.mu.Lock()
		b.closing = true
		b.mu.Unlock()
		b.cancel()
		b.loops.Wait()
		b.closeConn()
		if b.runroot != nil {
			b.runroot.trees.Stop()
		}
		b.log.Info("builder stopped")
	})
}

// abandonRunning kills every running task and frees it on the hub; their
// queue messages are terminated once the hub has dispatched them anew.
func (b *Builder) abandonRunning() {
	b.mu.Lock()
	rs := make([]*runner, 0, len(b.running))
	for _, r := range b.running {
		rs = append(rs, r)
	}
	b.mu.Unlock()
	ids := make([]int64, 0, len(rs))
	for _, r := range rs {
		ids = append(ids, r.id)
		r.kill(errShutdown)
	}
	b.tasks.Wait()
	if len(ids) == 0 {
		return
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	b.log.Warn("shutdown timeout: freeing running tasks", "tasks", ids)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.client.Call(ctx, "host.freeTasks", []any{ids}, nil, nil); err != nil {
		// The queue messages stay unacked: redelivered after AckWait, and
		// the hub's fencing decides what becomes of the runs.
		b.log.Error("host.freeTasks", "tasks", ids, "err", err)
		return
	}
	for _, r := range rs {
		_ = r.msg.Term()
	}
}

// signal wakes the dispatcher (never blocks; wake-ups coalesce).
// hintWait bounds the blocking pull after a wake-up (see fetch).
const hintWait = 250 * time.Millisecond

func (b *Builder) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// load is Koji's task_load: the weights of running tasks that are not
// waiting for subtasks.
func (b *Builder) loadLocked() float64 {
	var l float64
	for _, r := range b.running {
		if !r.waiting.Load() {
			l += r.weight
		}
	}
	for _, w := range b.claiming {
		l += w
	}
	return l
}

func (b *Builder) freeSlotLocked() bool {
	return !b.draining && len(b.running)+len(b.claiming) < b.cfg.MaxJobs && b.host.Capacity-b.loadLocked() > 0
}

// mayHaveWork forgets which queues were found empty: a wake-up without a
// queue, the safety timer or a retry may mean any of them has a task.
func (b *Builder) mayHaveWork() {
	b.mu.Lock()
	clear(b.empty)
	b.mu.Unlock()
}

// Load reports the host's current task load.
func (b *Builder) Load() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.loadLocked()
}

func (b *Builder) refreshHost(ctx context.Context) error {
	var h bus.Host
	if err := b.client.Call(ctx, "host.getHost", nil, nil, &h); err != nil {
		return fmt.Errorf("builder: host.getHost: %w", err)
	}
	var chans []bus.Channel
	if err := b.client.Call(ctx, "listChannels", nil, map[string]any{"hostID": b.hostID}, &chans); err != nil {
		return fmt.Errorf("builder: listChannels: %w", err)
	}
	arches := map[string]bool{"noarch": true}
	for _, a := range splitArches(h.Arches) {
		arches[a] = true
	}
	channels := map[int64]bool{}
	for _, c := range chans {
		if c.Enabled {
			channels[c.ID] = true
		}
	}
	b.mu.Lock()
	grew := h.Capacity > b.host.Capacity
	b.host, b.arches, b.channels = h, arches, channels
	b.mu.Unlock()
	if grew {
		b.signal()
	}
	return nil
}

// refreshQueues asks the hub which queues this host may pull from and binds
// to the new ones.
func (b *Builder) refreshQueues(ctx context.Context) error {
	var list []bus.TaskQueue
	if err := b.client.Call(ctx, "host.getTaskQueues", nil, nil, &list); err != nil {
		return fmt.Errorf("builder: host.getTaskQueues: %w", err)
	}
	b.mu.Lock()
	old := make(map[string]*queue, len(b.queues))
	for _, q := range b.queues {
		old[q.Consumer] = q
	}
	b.mu.Unlock()
	qs := make([]*queue, 0, len(list))
	names := make(map[string]bool, len(list))
	changed := len(list) != len(old)
	for _, tq := range list {
		if q, ok := old[tq.Consumer]; ok {
			// A new value, not an update of q: other goroutines read q.
			qs = append(qs, &queue{TaskQueue: tq, cons: q.cons})
			names[tq.Consumer] = true
			continue
		}
		changed = true
		cons, err := b.js.Consumer(ctx, bus.TasksStream, tq.Consumer)
		if err != nil {
			b.log.Warn("bind task queue", "consumer", tq.Consumer, "err", err)
			continue
		}
		qs = append(qs, &queue{TaskQueue: tq, cons: cons})
		names[tq.Consumer] = true
	}
	// The hub orders them already (pinned queue first, then by priority);
	// a stable sort keeps that and guards against an unordered answer.
	sort.SliceStable(qs, func(i, j int) bool { return qs[i].Priority < qs[j].Priority })
	b.mu.Lock()
	b.queues, b.consumers = qs, names
	b.mu.Unlock()
	if changed {
		b.signal()
	}
	return nil
}

// onNotify handles a wake-up: a task was queued. A wake-up for a queue the
// builder does not know yet but may pull from (its channel and arch, or its
// pinned queue) makes it refresh the queue list first.
func (b *Builder) onNotify(m *nats.Msg) {
	var d bus.TaskDispatch
	_ = json.Unmarshal(m.Data, &d)
	b.mu.Lock()
	known := d.Consumer == "" || b.consumers[d.Consumer]
	if d.Consumer != "" {
		if b.hinted == nil {
			b.hinted = map[string]bool{}
		}
		b.hinted[d.Consumer] = true
		delete(b.empty, d.Consumer)
	} else {
		clear(b.empty)
	}
	mine := m.Subject == bus.NotifyPrefix+"tasks.host."+strconv.FormatInt(b.hostID, 10) ||
		b.channels[d.ChannelID] && b.arches[d.Arch]
	b.mu.Unlock()
	switch {
	case known && d.Consumer != "":
		b.signal()
	case mine:
		b.refresh.Store(true)
		b.mayHaveWork()
		b.signal()
	case d.Consumer == "":
		b.signal()
	}
}

// onTaskMoved handles task.canceled, task.free and task.assigned: the hub
// took a task away from whoever ran it. If this builder runs it, its
// processes are killed and the run ends without a result.
func (b *Builder) onTaskMoved(m *nats.Msg) {
	ev, err := bus.EventFromMsg(m)
	if err != nil {
		return
	}
	id, ok := propInt(ev.Props["id"])
	if !ok {
		return
	}
	b.mu.Lock()
	r := b.running[id]
	b.mu.Unlock()
	if r == nil {
		return
	}
	if ev.Address == "task.canceled" {
		b.log.Info("task canceled", "task", id)
		r.kill(errTaskGone)
		return
	}
	// A free/assign event may be an old one, from before this builder opened
	// the current attempt: ask the hub whether our attempt still runs here.
	b.mu.Lock()
	if b.closing {
		b.mu.Unlock()
		return
	}
	b.loops.Add(1) // under mu, ordered with Stop's closing flag
	b.mu.Unlock()
	go func() {
		defer b.loops.Done()
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		defer cancel()
		var tasks []struct {
			ID      int64 `json:"id"`
			State   int   `json:"state"`
			Attempt int64 `json:"attempt"`
		}
		if err := b.client.Call(ctx, "host.getHostTasks", nil, nil, &tasks); err != nil {
			b.log.Warn("host.getHostTasks", "err", err)
			return
		}
		for _, t := range tasks {
			if t.ID == id && t.State == bus.TaskOpen && t.Attempt == r.attempt {
				return
			}
		}
		b.log.Info("task freed by the hub", "task", id, "attempt", r.attempt)
		r.kill(errTaskGone)
	}()
}

func propInt(v any) (int64, bool) {
	switch x := v.(type) {
	case float64:
		return int64(x), true
	case json.Number:
		n, err := x.Int64()
		return n, err == nil
	case int64:
		return x, true
	case int:
		return int64(x), true
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		return n, err == nil
	}
	return 0, false
}

func (b *Builder) heartbeat(ctx context.Context) error {
	b.mu.Lock()
	load := b.loadLocked()
	ready := b.freeSlotLocked()
	running := make([]int64, 0, len(b.running))
	for id := range b.running {
		running = append(running, id)
	}
	b.mu.Unlock()
	// tasks: what this builder runs, so the hub can give back a task it
	// believes OPEN here but the builder lost (as kojid frees stale tasks).
	data := map[string]any{"methods": b.reg.Methods(), "maxjobs": b.cfg.MaxJobs, "tasks": running}
	if err := b.client.Call(ctx, "host.updateHost", []any{load, ready}, map[string]any{"data": data}, nil); err != nil {
		return fmt.Errorf("builder: host.updateHost: %w", err)
	}
	return nil
}

// heartbeatLoop reports load and readiness every Heartbeat and picks up
// changes of the host record (capacity, arches, channels) and its queues.
func (b *Builder) heartbeatLoop() {
	defer b.loops.Done()
	t := time.NewTimer(b.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(b.ctx, b.cfg.Heartbeat+10*time.Second)
		for _, f := range []func(context.Context) error{b.refreshHost, b.refreshQueues, b.heartbeat} {
			if err := f(ctx); err != nil && b.ctx.Err() == nil {
				b.log.Warn("heartbeat", "err", err)
			}
		}
		cancel()
		t.Reset(b.cfg.Heartbeat)
	}
}

// dispatchLoop takes tasks while there are free slots, then waits for a
// wake-up: a notify message, a finished task, a capacity change.
func (b *Builder) dispatchLoop() {
	defer b.loops.Done()
	timer := time.NewTimer(b.cfg.SafetyWake)
	defer timer.Stop()
	for {
		if b.ctx.Err() != nil {
			return
		}
		if b.refresh.Swap(false) {
			ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
			if err := b.refreshQueues(ctx); err != nil && b.ctx.Err() == nil {
				b.log.Warn("refresh queues", "err", err)
			}
			cancel()
		}
		retry := b.pass()
		// The safety timer only covers a lost core-NATS wake-up (they are
		// fire-and-forget); a message Nak'ed for lack of capacity comes back
		// after its delay without a wake-up, so then the wait is that delay.
		wait := b.cfg.SafetyWake
		if retry > 0 && retry < wait {
			wait = retry
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		select {
		case <-b.ctx.Done():
			return
		case <-b.wake:
		case <-timer.C:
			b.mayHaveWork()
		}
	}
}

type outcome int

const (
	none outcome = iota
	taken
	nakedCapacity
	skipped
)

// pass tries the queues in order while there is a free slot, starting over
// from the most urgent queue after each task taken. It returns the delay
// after which a Nak'ed message is back (0: none).
func (b *Builder) pass() time.Duration {
	var retry time.Duration
	for restart := true; restart; {
		restart = false
		b.mu.Lock()
		qs := append([]*queue(nil), b.queues...)
		b.mu.Unlock()
	queues:
		for _, q := range qs {
			for skips := 0; skips < 64; {
				b.mu.Lock()
				free := b.freeSlotLocked()
				empty := b.empty[q.Consumer]
				b.mu.Unlock()
				if !free || b.ctx.Err() != nil {
					return retry
				}
				if empty {
					break
				}
				msg := b.fetch(q)
				if msg == nil {
					break
				}
				switch b.consider(msg) {
				case taken:
					restart = true
					break queues
				case nakedCapacity:
					retry = nakCapacity + 100*time.Millisecond
					skips++
				default:
					skips++
				}
			}
		}
	}
	return retry
}

func (b *Builder) fetch(q *queue) jetstream.Msg {
	// A wake-up can outrun the consumer: the server counts a stored message
	// as pending a moment after acking its publish, so a no-wait pull right
	// after a notify may find nothing. A queue named by a wake-up therefore
	// gets a short blocking pull, which answers as soon as the message is
	// there (one round trip); any other queue a no-wait pull.
	b.mu.Lock()
	hinted := b.hinted[q.Consumer]
	delete(b.hinted, q.Consumer)
	b.mu.Unlock()
	var batch jetstream.MessageBatch
	var err error
	if hinted {
		batch, err = q.cons.Fetch(1, jetstream.FetchMaxWait(hintWait))
	} else {
		batch, err = q.cons.FetchNoWait(1)
	}
	if err != nil {
		if b.ctx.Err() == nil {
			b.log.Warn("fetch", "consumer", q.Consumer, "err", err)
			if errors.Is(err, jetstream.ErrConsumerNotFound) {
				b.refresh.Store(true)
			}
		}
		return nil
	}
	var msg jetstream.Msg
	for m := range batch.Messages() {
		if msg == nil {
			msg = m
		} else {
			_ = m.Nak() // never more than one: MaxRequestBatch is 1
		}
	}
	err = batch.Error()
	if err != nil && msg == nil && b.ctx.Err() == nil && !errors.Is(err, nats.ErrTimeout) {
		b.log.Debug("fetch", "consumer", q.Consumer, "err", err)
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
			b.refresh.Store(true)
		}
	}
	if msg == nil && (err == nil || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages)) {
		// Empty until a wake-up names it; one that came meanwhile wins.
		b.mu.Lock()
		if !b.hinted[q.Consumer] {
			b.empty[q.Consumer] = true
		}
		b.mu.Unlock()
	}
	return msg
}

// renotify wakes the other builders of a queue when a message this builder
// declined is due again, so they need not wait for their safety timer.
func (b *Builder) renotify(msg jetstream.Msg, after time.Duration) {
	subject := notifySubject(msg.Subject())
	if subject == "" {
		return
	}
	nc := b.client.Conn()
	time.AfterFunc(after, func() { _ = nc.Publish(subject, nil) })
}

// notifySubject maps a queue subject (koji.tasks.<channel>.<arch>.p<N> or
// koji.tasks.host.<id>) to its wake-up subject.
func notifySubject(queueSubject string) string {
	rest, ok := strings.CutPrefix(queueSubject, bus.TaskPrefix)
	if !ok {
		return ""
	}
	parts := strings.Split(rest, ".")
	switch {
	case len(parts) == 2 && parts[0] == "host":
		return bus.NotifyPrefix + "tasks.host." + parts[1]
	case len(parts) == 3:
		return bus.NotifyPrefix + "tasks." + parts[0] + "." + parts[1]
	}
	return ""
}

// consider decides about one queue message: Nak it when this builder has no
// handler or no room for it, Term it when the hub says the attempt is stale,
// otherwise claim it with host.openTask and start the run.
func (b *Builder) consider(msg jetstream.Msg) outcome {
	h := msg.Headers()
	id, err1 := strconv.ParseInt(h.Get(bus.HeaderTaskID), 10, 64)
	attempt, err2 := strconv.ParseInt(h.Get(bus.HeaderTaskAttempt), 10, 64)
	method := h.Get(bus.HeaderTaskMethod)
	if err1 != nil || err2 != nil || method == "" {
		var d bus.TaskDispatch
		if json.Unmarshal(msg.Data(), &d) != nil || d.TaskID == 0 {
			b.log.Error("malformed task message", "headers", h)
			_ = msg.Term()
			return skipped
		}
		id, attempt, method = d.TaskID, d.Attempt, d.Method
	}
	log := b.log.With("task", id, "attempt", attempt, "method", method)
	handler := b.reg.Lookup(method)
	if handler == nil {
		log.Debug("no handler: leaving the task to other builders")
		_ = msg.NakWithDelay(nakNoHandler)
		b.renotify(msg, nakNoHandler)
		return skipped
	}
	b.mu.Lock()
	load := b.loadLocked()
	free := b.host.Capacity - load
	// An idle host takes a task heavier than its capacity (as Koji's
	// CapacityOvercommit), or such a task would never run anywhere.
	if free < handler.Weight && load > 0 {
		b.mu.Unlock()
		log.Debug("no room", "free", free, "weight", handler.Weight)
		_ = msg.NakWithDelay(nakCapacity)
		b.renotify(msg, nakCapacity)
		return nakedCapacity
	}
	if b.draining {
		b.mu.Unlock()
		_ = msg.Nak()
		return skipped
	}
	// The slot is taken now; the claim runs beside the next pulls, so a
	// busy hub's answer does not hold up the tasks behind this one.
	b.claiming[id] = handler.Weight
	b.tasks.Add(1) // under mu, ordered with Stop's draining flag
	b.mu.Unlock()
	go b.claim(msg, id, attempt, method, handler, log)
	return taken
}

// claim claims a task with host.openTask and starts the run; a task it
// cannot claim leaves its slot again.
func (b *Builder) claim(msg jetstream.Msg, id, attempt int64, method string, handler *Handler, log *slog.Logger) {
	started := false
	defer func() {
		if !started {
			b.mu.Lock()
			delete(b.claiming, id)
			b.mu.Unlock()
			b.tasks.Done()
			b.signal()
		}
	}()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	var opened bus.OpenedTask
	if err := b.client.Call(ctx, "host.openTask", []any{id, attempt}, nil, &opened); err != nil {
		if errors.Is(err, bus.ErrTaskAttemptStale) {
			log.Debug("stale attempt", "err", err)
			_ = msg.Term()
			return
		}
		log.Warn("host.openTask", "err", err)
		if _, ok := err.(*bus.Fault); ok {
			_ = msg.NakWithDelay(nakNoHandler)
		} else {
			_ = msg.NakWithDelay(nakError)
		}
		return
	}
	r := &runner{b: b, id: id, attempt: attempt, method: method, weight: handler.Weight, msg: msg, handler: handler, info: opened.Task, request: opened.Request,
		uploads: bus.NewUploads(b.js, b.hostID, id, attempt)}
	r.ctx, r.cancel = context.WithCancelCause(b.taskCtx)
	b.mu.Lock()
	if b.draining {
		// Stop began while the task was being claimed: give it back.
		b.mu.Unlock()
		if err := b.client.Call(ctx, "host.freeTasks", []any{[]int64{id}}, nil, nil); err != nil {
			log.Warn("host.freeTasks", "err", err)
		} else {
			_ = msg.Term()
		}
		return
	}
	delete(b.claiming, id)
	b.running[id] = r
	started = true // the run's end releases the slot and b.tasks
	b.mu.Unlock()
	if handler.Weight != opened.Task.Weight { // the hub already has it otherwise
		if err := b.client.Call(ctx, "host.setTaskWeight", []any{id, attempt, handler.Weight}, nil, nil); err != nil {
			log.Warn("host.setTaskWeight", "err", err)
		}
	}
	log.Info("task opened", "weight", handler.Weight)
	go r.run()
}

// removeLeftoverRuns removes the run directories a previous builderd left
// behind (killed before its runs ended): no run of this one has started
// yet, and a work directory serves one builderd.
func (b *Builder) removeLeftoverRuns() {
	dir := filepath.Join(b.cfg.WorkDir, "tasks")
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		b.log.Warn("read task work directories", "dir", dir, "err", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			b.log.Warn("remove leftover task work directory", "dir", e.Name(), "err", err)
			continue
		}
		b.log.Info("removed leftover task work directory", "dir", e.Name())
	}
}

// taskDir is the work directory of a run.
func (b *Builder) taskDir(id, attempt int64) string {
	return filepath.Join(b.cfg.WorkDir, "tasks", strconv.FormatInt(id, 10)+"-"+strconv.FormatInt(attempt, 10))
}

func splitArches(s string) []string {
	var out []string
	start := -1
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ' ' || s[i] == '\t' || s[i] == ',' {
			if start >= 0 {
				out = append(out, s[start:i])
				start = -1
			}
		} else if start < 0 {
			start = i
		}
	}
	return out
}
