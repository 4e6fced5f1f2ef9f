package hub

// The event archive: every event of KOJI_EVENTS, kept by each hubd in its own
// Pebble store (storage.Archive) under <data-dir>/archive, and the API methods
// that read it (getLastEvent, getEvent, queryEvents).
//
// Keys: none in the state bucket. Files in the data directory:
//
//	hub-id     this hub's id; names its durable consumer "archive-<hub id>" on KOJI_EVENTS
//	archive/   the Pebble store
//
// The consumer is durable and an event is acked only after it is stored and
// fsynced, so a restart resumes where the hub stopped; a redelivered event is
// harmless because storage.Archive.Put is idempotent by stream sequence. If
// the archive is behind what the consumer has acknowledged (the archive
// directory was lost), the consumer is recreated from the archive's last
// sequence.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
	"github.com/kojibus/kojibus/storage"
)

const (
	archiveConsumerPrefix = "archive-"
	archiveBatch          = 256
	// archiveInactive: a hub away longer than this loses its consumer and
	// resumes from its archive's last sequence (idempotent puts make that safe).
	archiveInactive = 7 * 24 * time.Hour
)

func init() { domainRegistrars = append(domainRegistrars, (*Server).registerArchive) }

// archiveService feeds the archive from KOJI_EVENTS.
type archiveService struct {
	js       jetstream.JetStream
	log      *slog.Logger
	dir      string // data directory
	consumer string

	// arc is the archive, nil while it failed and could not be opened
	// again; arcMu keeps it from being closed under a query (see use).
	arcMu sync.RWMutex
	arc   *storage.Archive
	// stall logs a batch that cannot be stored (a full disk) once, not per attempt.
	stall state.Stall
	// pulling is the pull from the consumer (see pullAgain).
	mu      sync.Mutex
	pulling jetstream.MessagesContext
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

func newArchiveService(js jetstream.JetStream, dataDir string, log *slog.Logger) *archiveService {
	return &archiveService{js: js, log: log, dir: dataDir, stall: state.Stall{Log: log, What: "archive: store events"}}
}

// hubID returns the id stored in the data directory, creating it on first use.
func loadHubID(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "hub-id")
	data, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(data))
		if id == "" || strings.ContainsAny(id, ".*> \t") {
			return "", fmt.Errorf("hub id in %s is malformed: %q", path, id)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("hub id: %w", err)
	}
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("hub id: %w", err)
	}
	id := hex.EncodeToString(b)
	if err := bus.WriteFileAtomic(path, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("hub id: %w", err)
	}
	return id, nil
}

// Start opens the archive and starts following KOJI_EVENTS.
func (a *archiveService) Start(ctx context.Context) error {
	id, err := loadHubID(a.dir)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	a.consumer = archiveConsumerPrefix + id
	arc, err := storage.Open(filepath.Join(a.dir, "archive"), a.log)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	cons, err := a.openConsumer(ctx, arc)
	if err != nil {
		_ = arc.Close()
		return fmt.Errorf("archive: %w", err)
	}
	a.arc = arc
	runCtx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.run(runCtx, cons)
	}()
	return nil
}

// openConsumer returns the hub's durable consumer, creating it (from the
// archive's last sequence) when missing or when the archive is behind it.
func (a *archiveService) openConsumer(ctx context.Context, arc *storage.Archive) (jetstream.Consumer, error) {
	lastSeq, err := arc.LastSeq()
	if err != nil {
		return nil, err
	}
	stream, err := a.js.Stream(ctx, bus.EventsStream)
	if err != nil {
		return nil, err
	}
	cons, err := stream.Consumer(ctx, a.consumer)
	switch {
	case err == nil:
		info := cons.CachedInfo()
		switch floor := info.AckFloor.Stream; {
		case floor > lastSeq:
			a.log.Warn("archive: behind its consumer; recreating it", "consumer", a.consumer, "archived", lastSeq, "acked", floor)
		case info.Config.AckPolicy != jetstream.AckAllPolicy:
			// An earlier version acked every event; the archive is the
			// consumer's position, so it resumes from there.
			a.log.Info("archive: recreating its consumer to ack a batch at once", "consumer", a.consumer, "archived", lastSeq)
		default:
			return cons, nil
		}
		if err := stream.DeleteConsumer(ctx, a.consumer); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, err
		}
	case !errors.Is(err, jetstream.ErrConsumerNotFound):
		return nil, err
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       a.consumer,
		Description:   "event archive of one hubd",
		FilterSubject: bus.EventPrefix + ">",
		// One ack per stored batch acks the events before it too.
		AckPolicy:         jetstream.AckAllPolicy,
		AckWait:           30 * time.Second,
		MaxAckPending:     4 * archiveBatch,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: archiveInactive,
	}
	if lastSeq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, lastSeq+1
	}
	return stream.CreateConsumer(ctx, cfg)
}

// pullAgain makes the archive pull from its consumer again, as
// state.Relay.PullAgain does the relay.
func (a *archiveService) pullAgain() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pulling != nil {
		a.pulling.Stop()
	}
}

// Stop stops following the stream and closes the archive. Safe on a nil or
// never started service.
func (a *archiveService) Stop() {
	if a == nil || a.cancel == nil {
		return
	}
	a.cancel()
	a.wg.Wait()
	a.arcMu.Lock()
	defer a.arcMu.Unlock()
	if a.arc == nil {
		return // failed and not opened again
	}
	if err := a.arc.Close(); err != nil {
		a.log.Error("archive: close", "err", err)
	}
}

func (a *archiveService) run(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		it, err := cons.Messages(jetstream.PullMaxMessages(archiveBatch))
		if err != nil {
			a.log.Error("archive: follow events", "err", err)
			bus.Sleep(ctx, time.Second)
			continue
		}
		a.mu.Lock()
		a.pulling = it
		a.mu.Unlock()
		stop := context.AfterFunc(ctx, it.Stop)
		for ctx.Err() == nil {
			m, err := it.Next()
			if err != nil {
				break
			}
			batch := []jetstream.Msg{m}
			// Take what is already there, so one fsync covers a burst.
			for len(batch) < archiveBatch {
				m, err := it.Next(jetstream.NextMaxWait(time.Millisecond))
				if err != nil {
					break
				}
				batch = append(batch, m)
			}
			a.store(ctx, batch)
		}
		stop()
		it.Stop()
	}
}

// store archives a batch, retrying until it succeeds or the hub stops, then
// acks it with one ack. Unacked messages are redelivered after a restart.
func (a *archiveService) store(ctx context.Context, batch []jetstream.Msg) {
	events := make([]storage.Event, 0, len(batch))
	// The consumer acks all: acking the newest message acks the batch (a
	// redelivered, older one may come last).
	newest, newestSeq := batch[len(batch)-1], uint64(0)
	for _, m := range batch {
		ev, err := archivedEvent(m)
		seq := ev.Seq
		if err != nil {
			// Not written by a relay; nothing to keep, but do not block on it.
			a.log.Error("archive: undecodable event skipped", "subject", m.Subject(), "err", err)
			if md, merr := m.Metadata(); merr == nil {
				seq = md.Sequence.Stream
			}
		} else {
			events = append(events, ev)
		}
		if seq > newestSeq {
			newest, newestSeq = m, seq
		}
	}
	for {
		err := a.put(events)
		if err == nil {
			a.stall.OK()
			break
		}
		if bus.Sleep(ctx, a.stall.Failed(err)); ctx.Err() != nil {
			return
		}
	}
	if err := newest.Ack(); err != nil {
		a.log.Warn("archive: ack", "err", err)
	}
}

// put stores events; an archive that failed a write (storage.ErrFailed: its
// disk was full) is closed and opened again, which succeeds once the disk
// has room. Its events stay unacked in the stream meanwhile.
func (a *archiveService) put(events []storage.Event) error {
	a.arcMu.RLock()
	arc := a.arc
	var err error
	if arc != nil {
		err = arc.PutBatch(events)
	}
	a.arcMu.RUnlock()
	if arc != nil && !errors.Is(err, storage.ErrFailed) {
		return err
	}
	a.arcMu.Lock()
	defer a.arcMu.Unlock()
	if a.arc != nil {
		_ = a.arc.Close() // reports the failed write again
		a.arc = nil       // queries answer ServerUnavailable until it opens
	}
	if a.arc, err = storage.Open(filepath.Join(a.dir, "archive"), a.log); err != nil {
		return err
	}
	a.log.Info("archive: opened again after a failed write")
	return a.arc.PutBatch(events)
}

// use returns the archive for a query and a release to call when the query
// is done (the archive is not closed under it), or ServerUnavailable.
func (a *archiveService) use() (*storage.Archive, func(), error) {
	if a == nil {
		return nil, nil, bus.NewFault(bus.CodeServerUnavailable, "the event archive is not running")
	}
	a.arcMu.RLock()
	if a.arc == nil {
		a.arcMu.RUnlock()
		return nil, nil, bus.NewFault(bus.CodeServerUnavailable, "the event archive is not open: it failed a write on a full disk")
	}
	return a.arc, a.arcMu.RUnlock, nil
}

func archivedEvent(m jetstream.Msg) (storage.Event, error) {
	md, err := m.Metadata()
	if err != nil {
		return storage.Event{}, err
	}
	h := m.Headers()
	ev := storage.Event{
		Seq: md.Sequence.Stream, Address: bus.EventAddress(m.Subject()), Body: bytes.Clone(m.Data()),
		Time: md.Timestamp, Props: map[string]any{},
	}
	if !json.Valid(ev.Body) {
		b, _ := json.Marshal(string(ev.Body))
		ev.Body = b
	}
	if addr := h.Get(bus.HeaderAddress); addr != "" {
		ev.Address = addr
	}
	if id := h.Get(bus.HeaderEventID); id != "" {
		if ev.ID, err = strconv.ParseUint(id, 10, 64); err != nil {
			return storage.Event{}, fmt.Errorf("bad %s %q", bus.HeaderEventID, id)
		}
	}
	if p := h.Get(bus.HeaderPropsJSON); p != "" {
		dec := json.NewDecoder(strings.NewReader(p))
		dec.UseNumber()
		if err := dec.Decode(&ev.Props); err != nil {
			return storage.Event{}, fmt.Errorf("bad %s: %w", bus.HeaderPropsJSON, err)
		}
	}
	return ev, nil
}

func archiveTS(t time.Time) float64 { return float64(t.UnixMicro()) / 1e6 }

func archiveTime(ts float64) time.Time {
	sec, frac := math.Modf(ts)
	return time.Unix(int64(sec), int64(math.Round(frac*1e6))*1e3)
}

func eventInfo(ev storage.Event) bus.EventInfo {
	return bus.EventInfo{ID: ev.ID, TS: archiveTS(ev.Time)}
}

// pyTypeName names the Python type of a JSON value, as Koji's messages print it.
func pyTypeName(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "<class 'NoneType'>"
	}
	switch raw[0] {
	case '"':
		return "<class 'str'>"
	case 't', 'f':
		return "<class 'bool'>"
	case '[':
		return "<class 'list'>"
	case '{':
		return "<class 'dict'>"
	case 'n':
		return "<class 'NoneType'>"
	}
	if bytes.ContainsAny(raw, ".eE") {
		return "<class 'float'>"
	}
	return "<class 'int'>"
}

func (s *Server) registerArchive() {
	noRows := func() error { return bus.GenericError("query returned no rows") }
	s.reg.Register(
		registry.Method{
			Name: "getLastEvent", Doc: "Get the id and timestamp of the last event, optionally the last one before a time (seconds since the epoch)",
			Params: []registry.Param{registry.Opt("before", nil), registry.Opt("strict", true)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				var before *float64
				if !c.IsNull("before") {
					f, err := c.Float("before")
					if err != nil {
						var raw json.RawMessage
						_ = c.Decode("before", &raw)
						return nil, bus.GenericError("Invalid type for before: %s", pyTypeName(raw))
					}
					before = &f
				}
				arc, release, err := s.archive.use()
				if err != nil {
					return nil, err
				}
				defer release()
				var ev storage.Event
				var ok bool
				if before != nil {
					ev, ok, err = arc.LastBefore(archiveTime(*before))
				} else {
					ev, ok, err = arc.Last()
				}
				if err != nil {
					return nil, err
				}
				if !ok {
					if strict {
						return nil, noRows()
					}
					return nil, nil
				}
				return eventInfo(ev), nil
			},
		},
		registry.Method{
			Name: "getEvent", Doc: "Get the id and timestamp of an event (kojibus: event ids are commit sequences, not dense)",
			Params: []registry.Param{registry.P("id"), registry.Opt("strict", false)},
			Handler: func(ctx context.Context, c *registry.Call) (any, error) {
				id, err := c.Int("id")
				if err != nil {
					return nil, err
				}
				strict, err := c.Bool("strict")
				if err != nil {
					return nil, err
				}
				arc, release, err := s.archive.use()
				if err != nil {
					return nil, err
				}
				defer release()
				var ev storage.Event
				ok := false
				if id > 0 {
					if ev, ok, err = arc.FirstOfID(uint64(id)); err != nil {
						return nil, err
					}
				}
				if !ok {
					if strict {
						return nil, noRows()
					}
					return nil, nil
				}
				return eventInfo(ev), nil
			},
		},
		registry.Method{
			Name: "queryEvents",
			Doc: "kojibus: page through archived events. address: exact, fnmatch glob or prefix ending in '>'; " +
				"after/before: exclusive event id bounds; props: {name: value} all equal; since_ts (inclusive)/until_ts (exclusive): " +
				"seconds since the epoch; order: 'asc' or 'desc'; cursor: from the previous page",
			Params: []registry.Param{
				registry.Opt("address", nil), registry.Opt("after", nil), registry.Opt("before", nil), registry.Opt("props", nil),
				registry.Opt("since_ts", nil), registry.Opt("until_ts", nil), registry.Opt("limit", 100),
				registry.Opt("order", "asc"), registry.Opt("cursor", nil),
			},
			Handler: s.queryEvents,
		},
	)
}

func (s *Server) queryEvents(ctx context.Context, c *registry.Call) (any, error) {
	var f storage.Filter
	addr, err := c.OptString("address")
	if err != nil {
		return nil, err
	}
	if addr != nil {
		f.Address = *addr
	}
	for _, b := range []struct {
		name string
		dst  *uint64
	}{{"after", &f.AfterID}, {"before", &f.BeforeID}} {
		v, err := c.OptInt(b.name)
		if err != nil {
			return nil, err
		}
		if v != nil {
			if *v < 0 {
				return nil, bus.ParameterError("queryEvents(): '%s' must not be negative", b.name)
			}
			*b.dst = uint64(*v)
		}
	}
	props, err := c.Map("props")
	if err != nil {
		return nil, err
	}
	if len(props) > 0 {
		f.Props = make(map[string]string, len(props))
		for k, v := range props {
			switch v.(type) {
			case string, json.Number, bool, nil:
			default:
				return nil, bus.ParameterError("queryEvents(): property %s: want a string, number, boolean or None", k)
			}
			f.Props[k] = storage.PropString(v)
		}
	}
	for _, b := range []struct {
		name string
		dst  *time.Time
	}{{"since_ts", &f.Since}, {"until_ts", &f.Until}} {
		v, err := c.OptFloat(b.name)
		if err != nil {
			return nil, err
		}
		if v != nil {
			*b.dst = archiveTime(*v)
		}
	}
	limit, err := c.Int("limit")
	if err != nil {
		return nil, err
	}
	if limit < 1 || limit > storage.MaxLimit {
		return nil, bus.ParameterError("queryEvents(): limit must be between 1 and %d, got %d", storage.MaxLimit, limit)
	}
	f.Limit = int(limit)
	order, err := c.String("order")
	if err != nil {
		return nil, err
	}
	switch order {
	case "asc":
	case "desc":
		f.Order = storage.Desc
	default:
		return nil, bus.ParameterError("queryEvents(): order must be 'asc' or 'desc', got %q", order)
	}
	cursor, err := c.OptString("cursor")
	if err != nil {
		return nil, err
	}
	if cursor != nil {
		f.Cursor = *cursor
	}
	arc, release, err := s.archive.use()
	if err != nil {
		return nil, err
	}
	defer release()
	events, next, err := arc.Query(f)
	if errors.Is(err, storage.ErrBadCursor) {
		return nil, bus.ParameterError("queryEvents(): invalid cursor %q", f.Cursor)
	}
	if err != nil {
		if errors.Is(err, storage.ErrBadAddress) {
			return nil, bus.ParameterError("queryEvents(): %v", err)
		}
		return nil, err
	}
	page := bus.EventPage{Events: make([]bus.ArchivedEvent, 0, len(events))}
	for _, ev := range events {
		page.Events = append(page.Events, bus.ArchivedEvent{
			ID: ev.ID, Seq: ev.Seq, Address: ev.Address, Props: ev.Props, Body: ev.Body, TS: archiveTS(ev.Time),
		})
	}
	if next != "" {
		page.Cursor = &next
	}
	return page, nil
}
