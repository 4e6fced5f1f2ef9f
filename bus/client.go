package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
)

// Client is the typed API client kojictl, builderd and tests use.
type Client struct {
	nc      *nats.Conn
	session string
	// identity is the connection's token, part of every request subject.
	identity string
	// Timeout bounds one request (default 30s).
	Timeout time.Duration
	// Retries is how often a call that got no answer is sent again with the
	// same request id (default 2); the hub acts on it at most once.
	Retries int
	closeNC bool
	// seenRev is the highest state revision a reply carried (HeaderRev),
	// shared with the copies WithSession makes.
	seenRev *atomic.Uint64
}

// NewClient wraps a connection.
func NewClient(nc *nats.Conn) *Client {
	return &Client{nc: nc, identity: ConnIdentity(nc), Timeout: 30 * time.Second, Retries: 2, seenRev: new(atomic.Uint64)}
}

// Conn returns the underlying connection.
func (c *Client) Conn() *nats.Conn { return c.nc }

// Close closes the connection if the client opened it.
func (c *Client) Close() {
	if c.closeNC {
		c.nc.Close()
	}
}

// SetSession sets the Koji-Session header sent with every call ("" = anonymous).
func (c *Client) SetSession(header string) { c.session = header }

// Session returns the current session header.
func (c *Client) Session() string { return c.session }

// WithSession returns a copy of the client using another session, sharing the connection.
func (c *Client) WithSession(header string) *Client {
	cp := *c
	cp.session = header
	cp.closeNC = false
	return &cp
}

// Login opens a password session and uses it for later calls.
func (c *Client) Login(ctx context.Context, user, password string) error {
	var s Session
	if err := c.Call(ctx, "login", []any{user, password}, nil, &s); err != nil {
		return err
	}
	c.session = s.Header()
	return nil
}

// Call invokes method with positional and keyword arguments and decodes the
// result into out (which may be nil). A hub fault comes back as *Fault.
func (c *Client) Call(ctx context.Context, method string, args []any, kwargs map[string]any, out any) error {
	raw, err := c.CallRaw(ctx, method, args, kwargs)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s: decode result: %w", method, err)
	}
	return nil
}

// CallRaw invokes method and returns the raw JSON result.
func (c *Client) CallRaw(ctx context.Context, method string, args []any, kwargs map[string]any) (json.RawMessage, error) {
	body, err := NewRequest(args, kwargs)
	if err != nil {
		return nil, err
	}
	return c.CallBody(ctx, method, body)
}

// CallBody sends an already encoded request body.
func (c *Client) CallBody(ctx context.Context, method string, body []byte) (json.RawMessage, error) {
	if !validMethodName(method) {
		// The server would refuse to route it (a permissions violation,
		// no reply): say what the hub says of an unknown method.
		return nil, GenericError("Invalid method: %s", method)
	}
	msg := nats.NewMsg(IdentityAPISubject(c.identity, method))
	msg.Data = body
	msg.Header.Set(HeaderRequestID, nuid.Next())
	if c.session != "" {
		msg.Header.Set(HeaderSession, c.session)
	}
	if rev := c.seenRev.Load(); rev > 0 {
		msg.Header.Set(HeaderMinRev, strconv.FormatUint(rev, 10))
	}
	var lastErr error
	for attempt := 0; attempt <= c.Retries; attempt++ {
		rctx, cancel := context.WithTimeout(ctx, c.Timeout)
		stop := c.cancelOnReconnect(cancel)
		resp, err := c.nc.RequestMsgWithContext(rctx, msg)
		stop()
		cancel()
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return nil, fmt.Errorf("%s: %w", method, ctx.Err())
			}
			if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.Canceled) {
				select {
				case <-time.After(time.Duration(attempt+1) * 200 * time.Millisecond):
				case <-ctx.Done():
					return nil, fmt.Errorf("%s: %w", method, ctx.Err())
				}
				continue
			}
			return nil, fmt.Errorf("%s: %w", method, err)
		}
		rev, revErr := strconv.ParseUint(resp.Header.Get(HeaderRev), 10, 64)
		if revErr == nil {
			for cur := c.seenRev.Load(); rev > cur && !c.seenRev.CompareAndSwap(cur, rev); cur = c.seenRev.Load() {
			}
		}
		result, err := DecodeResponse(resp.Data)
		var fault *Fault
		if errors.As(err, &fault) {
			if minRevRefused(fault) && msg.Header.Get(HeaderMinRev) != "" && revErr == nil {
				// The hubs' state is older than what this client saw (made
				// again, restored): go on from where it is.
				c.seenRev.Store(rev)
				msg.Header.Del(HeaderMinRev)
				lastErr = fault
				continue
			}
			return nil, fault
		}
		if err != nil {
			return nil, fmt.Errorf("%s: bad response: %w", method, err)
		}
		return result, nil
	}
	if errors.Is(lastErr, nats.ErrNoResponders) {
		return nil, NewFault(CodeServerOffline, "no hub is answering on %s", c.nc.ConnectedUrlRedacted())
	}
	return nil, fmt.Errorf("%s: %w", method, lastErr)
}

// minRevRefused tells the hub's refusal of a HeaderMinRev beyond every
// revision its state stream holds.
func minRevRefused(f *Fault) bool {
	return f.Code == CodeParameterError && strings.HasPrefix(f.Message, HeaderMinRev+" ")
}

// validMethodName reports whether method makes a routable subject: dotted
// tokens, none empty, without wildcards or white space.
func validMethodName(method string) bool {
	for tok := range strings.SplitSeq(method, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}

// reconnectCheck is how often a waiting request looks whether its
// connection reconnected.
const reconnectCheck = time.Second

// cancelOnReconnect cancels a request whose connection reconnected while it
// waited: the reply went to the old connection and is lost (the hub closes
// a host's connections when its grants change), so it is sent again now
// rather than after Timeout. stop ends the watch.
func (c *Client) cancelOnReconnect(cancel context.CancelFunc) (stop func()) {
	start := c.nc.Stats().Reconnects
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(reconnectCheck, func() {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case stopped:
		case c.nc.Stats().Reconnects != start:
			cancel()
		default:
			t.Reset(reconnectCheck)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}
