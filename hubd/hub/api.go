package hub

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
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
	s.share = newFairShare(workers)
	s.work = make(chan apiCall, 1024)
	for range workers {
		s.workers.Add(1)
		go func() {
			defer s.workers.Done()
			for c := range s.work {
				// A worker that finishes a caller's call takes that
				// caller's next waiting one, if any (see fairShare).
				for ok := true; ok; c, ok = s.share.done(c.caller) {
					s.handle(c)
				}
			}
		}()
	}
	sub, err := s.nc.QueueSubscribe(bus.APIPrefix+">", apiQueue, s.admit)
	if err != nil {
		return fmt.Errorf("hub: subscribe API: %w", err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		return fmt.Errorf("hub: subscribe API: %w", err)
	}
	s.sub = sub
	return s.nc.Flush()
}

// apiCall is a request handed to the workers: the identity that sent it (from
// its subject), its method, and the caller it counts against.
type apiCall struct {
	msg      *nats.Msg
	identity string
	method   string
	caller   string
}

// admit runs on the subscription's goroutine: it checks the headers and
// hands the request to the workers within its caller's fair share, queues
// it behind the caller's running calls, or refuses it.
func (s *Server) admit(m *nats.Msg) {
	if m.Reply == "" {
		return
	}
	identity, method, ok := bus.SplitAPISubject(m.Subject)
	if !ok {
		s.respond(m, strings.TrimPrefix(m.Subject, bus.APIPrefix), nil, bus.GenericError("Invalid method: %s", strings.TrimPrefix(m.Subject, bus.APIPrefix)))
		return
	}
	if err := checkHeaders(m.Header); err != nil {
		s.respond(m, method, nil, err)
		return
	}
	c := apiCall{msg: m, identity: identity, method: method, caller: callerOf(identity, m)}
	run, err := s.share.admit(c.caller, c)
	switch {
	case err != nil:
		s.respond(m, method, nil, err)
	case run:
		s.work <- c
	}
}

func (s *Server) handle(c apiCall) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ctx = withConnIdentity(ctx, c.identity) // checked by authenticate
	var result any
	err := s.awaitMinRev(ctx, c.method, c.msg.Header.Get(bus.HeaderMinRev))
	if err == nil {
		result, err = s.Dispatch(ctx, c.method, c.msg.Header.Get(bus.HeaderSession), c.msg.Header.Get(bus.HeaderRequestID), c.msg.Data)
	}
	s.respond(c.msg, c.method, result, err)
}

// respond sends the reply to a call: its result, or its fault. A reply over
// the connection's payload limit is answered with a ReplyTooLarge fault
// naming both sizes, so the caller learns to page instead of timing out.
func (s *Server) respond(m *nats.Msg, method string, result any, err error) {
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
		out = s.encodeFault(method, err)
	}
	reply := nats.NewMsg(m.Reply)
	reply.Data = out
	reply.Header.Set(bus.HeaderRev, strconv.FormatUint(s.store.Applied(), 10))
	err = m.RespondMsg(reply)
	if errors.Is(err, nats.ErrMaxPayload) {
		reply.Data = s.encodeFault(method, bus.NewFault(bus.CodeReplyTooLarge,
			"the reply to %s is %d bytes, over the %d-byte message limit: ask for less at a time "+
				"(queryOpts limit and offset, or queryEvents' limit and cursor)", method, len(out), s.nc.MaxPayload()))
		err = m.RespondMsg(reply)
	}
	if err != nil {
		s.log.Warn("api: respond", "method", method, "err", err)
	}
}

// encodeFault encodes err as a fault reply, logging what is not a fault.
func (s *Server) encodeFault(method string, err error) []byte {
	resp := bus.Response{Error: bus.AsFault(err)}
	if resp.Error.Code == bus.CodeGenericError && !isFault(err) {
		s.log.Error("api: internal error", "method", method, "err", err)
	}
	out, _ := json.Marshal(resp)
	return out
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
	req, err := bus.DecodeRequest(body, s.hubConf.Limits.RequestLimits)
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
