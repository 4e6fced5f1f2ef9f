package hub

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/kojibus/kojibus/hubd/internal/state"
)

// janitor removes expired sessions and used sslLogin challenges. Expiry is
// time-driven, so a timer is the right tool; several hubd may run it at once
// (their deletes are compare-and-set and the loser's retry finds nothing).
type janitor struct {
	s        *Server
	interval time.Duration
	cancel   context.CancelFunc
	wg       sync.WaitGroup
}

func (j *janitor) Start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	j.cancel = cancel
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		t := time.NewTicker(j.interval)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				if n, err := j.sweep(runCtx, time.Now()); err != nil {
					j.s.log.Warn("janitor: sweep", "err", err)
				} else if n > 0 {
					j.s.log.Debug("janitor: removed expired records", "count", n)
				}
			}
		}
	}()
	return nil
}

func (j *janitor) Stop() {
	if j.cancel != nil {
		j.cancel()
		j.wg.Wait()
	}
}

// sweep deletes what expired before now, at most 500 records per transaction.
func (j *janitor) sweep(ctx context.Context, now time.Time) (int, error) {
	ts := float64(now.UnixMicro()) / 1e6
	res, err := j.s.store.Update(ctx, "", func(tx *state.Txn) (any, error) {
		n := 0
		for _, k := range tx.Keys("session", "session.") {
			var sess sessionRecord
			if ok, _ := tx.GetJSON(k, &sess); ok && sess.Expires < ts {
				tx.Delete(k)
				n++
			}
			if n >= 500 {
				return n, nil
			}
		}
		for _, k := range tx.Keys("sslnonce", "sslnonce.") {
			var exp float64
			if ok, _ := tx.GetJSON(k, &exp); ok && exp < ts && strings.HasPrefix(k, "sslnonce.") {
				tx.Delete(k)
				n++
			}
			if n >= 500 {
				break
			}
		}
		return n, nil
	})
	if err != nil {
		return 0, err
	}
	return res.Value.(int), nil
}
