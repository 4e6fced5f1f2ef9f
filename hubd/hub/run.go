package hub

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/kojibus/kojibus/bridge/bridge"
	"github.com/kojibus/kojibus/bus"
)

// Run is hubd's main: it parses args, runs the hub until SIGINT/SIGTERM and
// returns the exit code.
func Run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("hubd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data-dir", "", "directory for the hub's data (required)")
	natsURLs := fs.String("nats", "", "join an existing NATS server or cluster (comma-separated URLs); default: embed one")
	natsUser := fs.String("nats-user", "", "NATS user when joining a cluster")
	natsPass := fs.String("nats-password", "", "NATS password when joining a cluster")
	natsCreds := fs.String("nats-creds", "", "NATS credentials file when joining a cluster")
	natsCA := fs.String("nats-ca", "", "CA file to verify the NATS servers")
	natsCert := fs.String("nats-cert", "", "client certificate for NATS")
	natsKey := fs.String("nats-key", "", "client key for NATS")
	calloutKey := fs.String("nats-callout-key", "", "with --nats: account nkey seed file the hub signs auth callout answers with (created if missing; its public key is the cluster's auth_callout issuer)")
	calloutXKey := fs.String("nats-callout-xkey", "", "curve nkey seed file: the NATS servers encrypt auth callout requests to it and hubd its answers (created if missing; its public key is the auth_callout xkey)")
	listen := fs.String("listen", "127.0.0.1:4222", "host:port of the embedded NATS server (port -1: any free port)")
	durability := fs.String("durability", "sync", "embedded server fsync policy: sync (every write, default) or interval[:DURATION]")
	replicas := fs.Int("replicas", 1, "replicas of streams and buckets when joining a cluster")
	sessionLife := fs.Duration("session-lifetime", 24*time.Hour, "how long a login stays valid")
	clientCA := fs.String("client-ca", "", "CA file whose certificates may log in with sslLogin, and connect over TLS as their user (CN = user name)")
	tlsCert := fs.String("tls-cert", "", "certificate (PEM) of the embedded NATS server: its client port then speaks TLS only")
	tlsKey := fs.String("tls-key", "", "key (PEM) of --tls-cert (default: in the --tls-cert file)")
	tlsCA := fs.String("tls-ca", "", "CA of --tls-cert, written into the bootstrap kojictl profile as serverca")
	hostTimeout := fs.Duration("host-timeout", 60*time.Second, "a ready host silent this long loses its tasks to other builders")
	maxRetries := fs.Int("max-task-retries", 3, "how often a task is dispatched again after losing its host before it fails")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	hubConf := fs.String("config", "", "Koji's hub.conf: [policy] policies, [hub] MissingPolicyOk (re-read on SIGHUP)")
	pluginDir := fs.String("plugin-config-dir", "/etc/koji-hub/plugins", "directory of the plugins' configuration files (sidetag.conf)")
	minFreeDisk := fs.String("min-free-disk", DefaultMinFreeDisk, "keep this much of the data directory's filesystem free, refusing writes below it: a percentage (5%) or a size (2GiB); 0: off")
	protonConf := fs.String("protonmsg-conf", "", "Koji's protonmsg.conf: run the protonmsg bridge inside hubd (as kojibridge does)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: hubd --data-dir DIR [options]")
		fs.PrintDefaults()
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "hubd: --log-level: %v\n", err)
		return 2
	}
	dur, interval, err := bus.ParseDurability(*durability)
	if err != nil {
		fmt.Fprintf(stderr, "hubd: --durability: %v\n", err)
		return 2
	}
	if (*tlsKey != "" || *tlsCA != "") && *tlsCert == "" || *tlsCert != "" && *natsURLs != "" {
		fmt.Fprintln(stderr, "hubd: --tls-key and --tls-ca need --tls-cert, which is for the embedded server (not with --nats)")
		return 2
	}
	host, port, err := splitListen(*listen)
	if err != nil {
		fmt.Fprintf(stderr, "hubd: --listen: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	gcPercent, memLimit := bus.TuneGC()
	log.Debug("garbage collector", "gogc", gcPercent, "memory-limit", memLimit)
	cfg := Config{
		DataDir: *dataDir, NATSUser: *natsUser, NATSPass: *natsPass, NATSCreds: *natsCreds,
		NATSCA: *natsCA, NATSCert: *natsCert, NATSKey: *natsKey,
		CalloutKeyFile: *calloutKey, CalloutXKeyFile: *calloutXKey, BridgeSecret: os.Getenv("KOJIBUS_BRIDGE_SECRET"),
		ListenHost: host, ListenPort: port, Durability: dur, SyncInterval: interval,
		Replicas: *replicas, SessionLifetime: *sessionLife, ClientCAFile: *clientCA, Logger: log,
		TLSCertFile: *tlsCert, TLSKeyFile: *tlsKey, TLSCAFile: *tlsCA,
		HostTimeout: *hostTimeout, MaxTaskRetries: *maxRetries, HubConf: *hubConf,
		PluginConfigDir: *pluginDir, MinFreeDisk: *minFreeDisk,
	}
	if *protonConf != "" {
		pc, err := bridge.LoadConfig(*protonConf)
		if err != nil {
			fmt.Fprintf(stderr, "hubd: --protonmsg-conf: %v\n", err)
			return 2
		}
		cfg.Protonmsg = pc
	}
	if *natsURLs != "" {
		cfg.NATSURLs = strings.Split(*natsURLs, ",")
	}
	srv, err := New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "hubd: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	startCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = srv.Start(startCtx)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "hubd: %v\n", err)
		return 1
	}
	log.Info("hubd ready", "nats", srv.URL(), "data", *dataDir, "durability", string(dur), "profile", srv.ProfilePath())
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for done := false; !done; {
		select {
		case <-hup:
			_ = srv.ReloadConfig(ctx) // logged; a bad file leaves the running policies
		case <-ctx.Done():
			done = true
		}
	}
	log.Info("hubd stopping")
	srv.Stop()
	return 0
}

func splitListen(s string) (string, int, error) {
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return "", 0, fmt.Errorf("want host:port, got %q", s)
	}
	var port int
	if _, err := fmt.Sscanf(s[i+1:], "%d", &port); err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", s)
	}
	return s[:i], port, nil
}
