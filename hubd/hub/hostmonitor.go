package hub

import (
	"context"
	"sync"
	"time"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// hostMonitor notices builders whose heartbeats stopped: such a host is
// marked not ready, and its OPEN tasks are freed and dispatched again under a
// new attempt (so a late result of the lost run is refused), at most
// maxRetries times; then the task fails with the reason. Absence of a
// heartbeat can only be seen on a clock, so this is a timer; several hubd may
// run it, their writes are compare-and-set.
type hostMonitor struct {
	s          *Server
	timeout    time.Duration
	maxRetries int
	cancel     context.CancelFunc
	wg         sync.WaitGroup
}

func (m *hostMonitor) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.timeout / 4)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				if err := m.check(runCtx, time.Now()); err != nil && runCtx.Err() == nil {
					m.s.log.Warn("host monitor", "err", err)
				}
			}
		}
	}()
	return nil
}

func (m *hostMonitor) Stop() {
	if m.cancel != nil {
		m.cancel()
		m.wg.Wait()
	}
}

// check handles every host silent for longer than the timeout at now.
func (m *hostMonitor) check(ctx context.Context, now time.Time) error {
	deadline := float64(now.Add(-m.timeout).UnixMicro()) / 1e6
	var lost []int64
	_ = m.s.store.Read(func(v state.View) error {
		forEachHost(v, func(h *hostRecord) {
			if h.Ready && h.UpdateTS != nil && *h.UpdateTS < deadline {
				lost = append(lost, h.ID)
			}
		})
		return nil
	})
	for _, id := range lost {
		if err := m.hostLost(ctx, id, deadline); err != nil {
			return err
		}
	}
	return nil
}

func (m *hostMonitor) hostLost(ctx context.Context, hostID int64, deadline float64) error {
	_, err := m.s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		h, ok := lookupHost(tx.View, registry.Ref{ID: hostID})
		if !ok || !h.Ready || h.UpdateTS == nil || *h.UpdateTS >= deadline {
			return nil, nil // came back, or another hub handled it
		}
		h.Ready = false
		h.TaskLoad = 0
		if err := tx.Put(hostKey(h.ID), h); err != nil {
			return nil, err
		}
		props := hostEventProps("HostReady", &h.Host)
		props["ready"], props["reason"] = false, "heartbeat lost"
		tx.Emit("host.ready", props, map[string]any{"host": h.Host, "reason": "no heartbeat for " + m.timeout.String()})
		for _, tp := range hostTasks(tx.View, hostID) {
			t := *tp
			if t.State != bus.TaskOpen {
				continue
			}
			t.Retries++
			if t.Retries > m.maxRetries {
				f := bus.GenericError("task %d lost its host %s %d times; giving up", t.ID, h.Name, t.Retries)
				t.Result, _ = jsonMarshal(f)
				if err := setTaskState(tx, &t, bus.TaskFailed); err != nil {
					return nil, err
				}
				continue
			}
			if err := requeueTx(tx, &t); err != nil {
				return nil, err
			}
		}
		return nil, nil
	})
	return err
}
