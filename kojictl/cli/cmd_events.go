package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kojibus/kojibus/bus"
)

func (a *app) eventCommands() []*cobra.Command {
	return []*cobra.Command{a.watchEventsCmd()}
}

// eventFilter turns an address glob into a NATS filter subject when NATS
// wildcards express it (whole-token '*', trailing '>'); otherwise the stream
// is read unfiltered and the glob applied with fnmatch. "" matches everything.
func eventFilter(glob string) (subject string, clientGlob string) {
	if glob == "" || glob == "*" || glob == ">" {
		return bus.EventPrefix + ">", ""
	}
	tokens := strings.Split(glob, ".")
	natsOK := true
	for i, t := range tokens {
		switch {
		case t == "":
			natsOK = false
		case t == ">" && i == len(tokens)-1, t == "*":
		case strings.ContainsAny(t, "*?[>"):
			natsOK = false
		}
	}
	if natsOK {
		return bus.EventPrefix + glob, ""
	}
	return bus.EventPrefix + ">", glob
}

func (a *app) watchEventsCmd() *cobra.Command {
	var filter, sinceTime string
	var since uint64
	var last int
	var follow bool
	cmd := &cobra.Command{
		Use:   "watch-events [options]",
		Short: "Print kojibus events (every state change) from the event stream",
		Long: `Print events from the ` + bus.EventsStream + ` stream: event id, address and
properties (with --json one JSON object per line, with the body).

--filter takes an address glob: "build.tag", "task.*", "repo.>" or an fnmatch
pattern such as "*.tag". Start with --since SEQ (stream sequence), --since-time
RFC3339 or --last N; without one, all retained events are printed (or, with
--follow, only new ones). Without --follow the command exits once it has
printed the events stored so far.`,
		Args: exactArgs(0, "This command takes no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			f := cmd.Flags()
			starts := 0
			for _, n := range []string{"since", "since-time", "last"} {
				if f.Changed(n) {
					starts++
				}
			}
			if starts > 1 {
				return usagef(cmd, "Please specify only one of --since, --since-time and --last")
			}
			if f.Changed("last") && last <= 0 {
				return usagef(cmd, "--last must be positive")
			}
			subject, glob := eventFilter(filter)
			cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
			switch {
			case f.Changed("since"):
				cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, since
			case f.Changed("since-time"):
				ts, err := parseTimeOpt(sinceTime)
				if err != nil {
					return usagef(cmd, "option --since-time: %s", err)
				}
				t := time.UnixMicro(int64(ts * 1e6))
				cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
			case f.Changed("last"):
				if glob == "" && subject == bus.EventPrefix+">" {
					// whole stream: start at the N-th message from the end
					cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
				}
			case follow:
				cfg.DeliverPolicy = jetstream.DeliverNewPolicy
			}
			c, err := a.anon(ctx)
			if err != nil {
				return err
			}
			js, err := jetstream.New(c.Conn())
			if err != nil {
				return err
			}
			stream, err := js.Stream(ctx, bus.EventsStream)
			if err != nil {
				return fmt.Errorf("event stream %s: %w", bus.EventsStream, err)
			}
			if cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && f.Changed("last") {
				info, err := stream.Info(ctx)
				if err != nil {
					return err
				}
				first := info.State.FirstSeq
				if info.State.LastSeq >= uint64(last) && info.State.LastSeq-uint64(last)+1 > first {
					first = info.State.LastSeq - uint64(last) + 1
				}
				cfg.OptStartSeq = max(first, 1)
			}
			cons, err := stream.OrderedConsumer(ctx, cfg)
			if err != nil {
				return fmt.Errorf("event consumer: %w", err)
			}
			w := &eventPrinter{a: a, glob: glob}
			if f.Changed("last") {
				w.ring = last
			}
			return w.run(ctx, cons, follow)
		},
	}
	f := cmd.Flags()
	f.StringVar(&filter, "filter", "", "address glob of the events to print (default: all)")
	f.Uint64Var(&since, "since", 0, "start at this stream sequence")
	f.StringVar(&sinceTime, "since-time", "", "start at this time: a unix timestamp or YYYY-MM-DD[ HH:MM[:SS]] or RFC3339")
	f.IntVar(&last, "last", 0, "start with the last N matching events")
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events as they happen")
	return cmd
}

type eventPrinter struct {
	a    *app
	glob string
	// ring > 0 holds back output until the stored events are read, keeping
	// only the last ring of them (--last with a filter NATS cannot express).
	ring    int
	pending []*bus.Event
}

func (w *eventPrinter) run(ctx context.Context, cons jetstream.Consumer, follow bool) error {
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("event consumer: %w", err)
	}
	caughtUp := info.NumPending == 0
	if caughtUp {
		w.flush()
		if !follow {
			return nil
		}
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("event consumer: %w", err)
	}
	defer it.Stop()
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			return fmt.Errorf("event consumer: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		ev, err := bus.EventFromMsg(&nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()})
		if err != nil {
			w.a.warn("skipping event %d: %v", md.Sequence.Stream, err)
		} else {
			ev.Seq = md.Sequence.Stream
			if w.glob == "" || fnmatch(ev.Address, w.glob) {
				if err := w.emit(ev, caughtUp); err != nil {
					return err
				}
			}
		}
		if !caughtUp && md.NumPending == 0 {
			caughtUp = true
			w.flush()
			if !follow {
				return nil
			}
		}
	}
}

func (w *eventPrinter) emit(ev *bus.Event, caughtUp bool) error {
	if w.ring > 0 && !caughtUp {
		w.pending = append(w.pending, ev)
		if len(w.pending) > w.ring {
			w.pending = w.pending[1:]
		}
		return nil
	}
	return w.print(ev)
}

func (w *eventPrinter) flush() {
	for _, ev := range w.pending {
		_ = w.print(ev)
	}
	w.pending = nil
	w.ring = 0
}

func (w *eventPrinter) print(ev *bus.Event) error {
	a := w.a
	if a.jsonOut {
		out := map[string]any{"id": ev.ID, "seq": ev.Seq, "address": ev.Address, "props": ev.Props}
		var body any
		if len(ev.Body) > 0 && decodeJSON(ev.Body, &body) == nil {
			out["body"] = body
		} else {
			out["body"] = string(ev.Body)
		}
		if out["props"] == nil {
			out["props"] = map[string]any{}
		}
		b, err := json.Marshal(out)
		if err != nil {
			return err
		}
		a.println(string(b))
		return nil
	}
	keys := make([]string, 0, len(ev.Props))
	for k := range ev.Props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{fmt.Sprint(ev.ID), ev.Address}
	for _, k := range keys {
		parts = append(parts, k+"="+bus.PropString(ev.Props[k]))
	}
	a.println(strings.Join(parts, " "))
	return nil
}
