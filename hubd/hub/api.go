package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// apiQueue is the queue group of every hubd's API subscription: several hubd
// share the load, each request is answered once.
const apiQueue = "hubd"

func (s *Server) serveAPI() error {
	// A write spends most of its time waiting for its commit to be stored
	// and applied, so the pool is sized for calls in flight, not for CPUs.
	workers := 16 * runtime.GOMAXPROCS(0)
	if workers < 128 {
		workers = 128
	}
	s.work = make(chan *nats.Msg, 1024)
	for range workers {
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			for m := range s.work {
				s.handle(m)
			}
		}()
	}
	sub, err := s.nc.QueueSubscribe(bus.APIPrefix+">", apiQueue, func(m *nats.Msg) { s.work <- m })
	if err != nil {
		return fmt.Errorf("hub: subscribe API: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return fmt.Errorf("hub: subscribe API: %w", err)
	}
	s.sub = sub
	return s.nc.Flush()
}

func (s *Server) handle(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	identity, method, ok := bus.SplitAPISubject(m.Subject)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = withConnIdentity(ctx, identity) // checked by authenticate
	session := ""
	requestID := ""
	if m.Header != nil {
		session = m.Header.Get(bus.HeaderSession)
		requestID = m.Header.Get(bus.HeaderRequestID)
	}
	// Read your writes across hubs: wait until this hub's view has what the
	// client has already seen from another.
	if minRev, perr := strconv.ParseUint(m.Header.Get(bus.HeaderMinRev), 10, 64); perr == nil && minRev > 0 {
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		if werr := s.store.WaitApplied(wctx, minRev); werr != nil {
			s.log.Warn("api: view behind the client", "method", method, "want", minRev, "err", werr)
		}
		wcancel()
	}
	result, err := s.Dispatch(ctx, method, session, requestID, m.Data)
	var out []byte
	if err == nil {
		var b []byte
		var merr error
		if raw, ok := result.(json.RawMessage); ok && len(raw) > 0 {
			b = raw // encoded by the hub itself: no need to check and compact it again
		} else {
			b, merr = json.Marshal(result)
		}
		if merr != nil {
			err = bus.GenericError("cannot encode result of %s: %v", method, merr)
		} else {
			out = bus.EncodeResult(b)
		}
	}
	if err != nil {
		resp := bus.Response{Error: bus.AsFault(err)}
		if resp.Error.Code == bus.CodeGenericError && !isFault(err) {
			s.log.Error("api: internal error", "method", method, "err", err)
		}
		out, _ = json.Marshal(resp)
	}
	reply := nats.NewMsg(m.Reply)
	reply.Data = out
	reply.Header.Set(bus.HeaderRev, strconv.FormatUint(s.store.Applied(), 10))
	if err := m.RespondMsg(reply); err != nil {
		s.log.Warn("api: respond", "method", method, "err", err)
	}
}

func isFault(err error) bool {
	var f *bus.Fault
	return errors.As(err, &f)
}

// Dispatch runs one API call: decode, bind, authenticate, authorise, run.
// The NATS subscription, the XML-RPC endpoint and in-process tests all come here.
func (s *Server) Dispatch(ctx context.Context, method, session, requestID string, body []byte) (any, error) {
	m, ok := s.reg.Lookup(method)
	if !ok {
		return nil, bus.GenericError("Invalid method: %s", method)
	}
	req, err := bus.DecodeRequest(body)
	if err != nil {
		return nil, err
	}
	args, err := m.Bind(req)
	if err != nil {
		return nil, err
	}
	caller, err := s.authenticate(ctx, session)
	if err != nil {
		return nil, err
	}
	if err := s.authorize(m, caller); err != nil {
		return nil, err
	}
	if !m.Write || m.AnswersRepeats {
		requestID = ""
	}
	result, err := m.Invoke(ctx, caller, requestID, args)
	if err != nil {
		return nil, err
	}
	if rr, ok := result.(*state.Result); ok {
		if rr.Replayed {
			return rr.Raw, nil
		}
		return rr.Value, nil
	}
	return result, nil
}

func (s *Server) authorize(m *registry.Method, caller *registry.Caller) error {
	switch m.Access {
	case registry.LoggedIn:
		if caller == nil {
			return bus.ActionNotAllowed("you must be logged in for this operation")
		}
	case registry.HostOnly:
		if caller == nil || caller.HostID == 0 {
			return bus.ActionNotAllowed("host session required")
		}
	}
	if m.Perm != "" {
		if caller == nil || caller.UserID == 0 {
			return bus.ActionNotAllowed("%s permission required (user not logged in)", m.Perm)
		}
		if !s.hasPerm(caller.UserID, m.Perm, true) {
			return bus.ActionNotAllowed("%s permission required (logged in as %s)", m.Perm, caller.UserName)
		}
	}
	return nil
}

// update runs a state transaction for a call, honouring its request id.
func (s *Server) update(ctx context.Context, c *registry.Call, fn state.UpdateFunc) (any, error) {
	res, err := s.store.Update(ctx, c.RequestID, fn)
	if err != nil {
		return nil, err
	}
	return res, nil
}
