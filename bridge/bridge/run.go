package bridge

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bus"
)

// Run is kojibridge's main: it mirrors events to the brokers of a
// protonmsg.conf until SIGINT or SIGTERM and returns the exit code.
func Run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("kojibridge", flag.ContinueOnError)
	fs.SetOutput(stderr)
	confPath := fs.String("config", "/etc/koji-hub/plugins/protonmsg.conf", "Koji's protonmsg.conf")
	name := fs.String("name", "kojibridge", "bridge name: its durable consumer is bridge-NAME")
	dataDir := fs.String("data-dir", "", "directory for the fallback queue (required)")
	natsURLs := fs.String("nats", "nats://127.0.0.1:4222", "NATS URLs, comma-separated")
	natsPass := fs.String("nats-password", "", "the hub's bridge secret (<hub data>/nats-roles.json, \"bridge\"); or $KOJIBRIDGE_NATS_PASSWORD")
	natsCreds := fs.String("nats-creds", "", "NATS credentials file")
	natsCA := fs.String("nats-ca", "", "CA file to verify the NATS servers")
	metrics := fs.String("metrics-listen", "", "host:port serving Prometheus metrics at /metrics (default: none)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: kojibridge --data-dir DIR [--config protonmsg.conf] [--nats URL] [options]")
		fs.PrintDefaults()
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "kojibridge: --log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	gcPercent, memLimit := bus.TuneGC()
	log.Debug("garbage collector", "gogc", gcPercent, "memory-limit", memLimit)
	cfg, err := LoadConfig(*confPath)
	if err != nil {
		fmt.Fprintf(stderr, "kojibridge: %v\n", err)
		return 2
	}
	pass := *natsPass
	if pass == "" {
		pass = os.Getenv("KOJIBRIDGE_NATS_PASSWORD")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	cc := bus.BridgeConnectConfig(*name, pass, strings.Split(*natsURLs, ","))
	cc.CredsFile, cc.CAFile = *natsCreds, *natsCA
	nc, err := bus.Connect(cctx, cc)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "kojibridge: %v\n", err)
		return 1
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		fmt.Fprintf(stderr, "kojibridge: %v\n", err)
		return 1
	}
	b, err := New(nc, js, Options{Config: cfg, Name: *name, QueueDir: *dataDir, Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "kojibridge: %v\n", err)
		return 2
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	err = b.Start(sctx)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "kojibridge: %v\n", err)
		return 1
	}
	defer b.Stop()
	if *metrics != "" {
		ln, err := net.Listen("tcp", *metrics)
		if err != nil {
			fmt.Fprintf(stderr, "kojibridge: --metrics-listen: %v\n", err)
			return 2
		}
		srv := &http.Server{Handler: b.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("kojibridge: metrics", "err", err)
			}
		}()
		defer func() { _ = srv.Close() }()
	}
	log.Info("kojibridge ready", "name", *name, "brokers", strings.Join(cfg.URLs, " "), "topic_prefix", cfg.TopicPrefix, "queue", cfg.QueueEnabled)
	<-ctx.Done()
	return 0
}

// MetricsHandler serves the status as Prometheus metrics.
func (b *Bridge) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = io.WriteString(w, b.Status().Prometheus())
	})
	return mux
}

// Prometheus renders the status in Prometheus' text format.
func (s Status) Prometheus() string {
	var w strings.Builder
	label := fmt.Sprintf("{bridge=%q}", s.Name)
	metric := func(name, kind, help string, v any) {
		fmt.Fprintf(&w, "# HELP %s %s\n# TYPE %s %s\n%s%s %v\n", name, help, name, kind, name, label, v)
	}
	connected := 0
	if s.Broker != "" {
		connected = 1
	}
	metric("kojibridge_connected", "gauge", "1 when a broker connection is open", connected)
	metric("kojibridge_queue_depth", "gauge", "messages in the fallback queue", s.QueueDepth)
	metric("kojibridge_queue_oldest_age_seconds", "gauge", "age of the oldest queued message", s.OldestQueued)
	metric("kojibridge_sent_total", "counter", "messages accepted by a broker", s.Sent)
	metric("kojibridge_failed_total", "counter", "send attempts that failed", s.Failed)
	metric("kojibridge_expired_total", "counter", "queued messages dropped after max_age", s.Expired)
	metric("kojibridge_skipped_total", "counter", "events protonmsg has no message for", s.Skipped)
	metric("kojibridge_last_seq", "gauge", "stream sequence of the last event handled", s.LastSeq)
	return w.String()
}
