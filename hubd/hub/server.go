// Package hub is hubd: the API, every state transition and the events they
// emit. A main calls Run; tests start a Server in-process.
package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kojibus/kojibus/bridge/bridge"
	"github.com/kojibus/kojibus/bus"
	"github.com/kojibus/kojibus/hubd/internal/policy"
	"github.com/kojibus/kojibus/hubd/internal/registry"
	"github.com/kojibus/kojibus/hubd/internal/state"
)

// Version is reported by getKojiVersion and hello.
const Version = "1.35.3"

// Config configures a hub.
type Config struct {
	DataDir string
	// NATSURLs joins an existing NATS server or cluster; empty embeds one.
	NATSURLs  []string
	NATSUser  string
	NATSPass  string
	NATSCreds string
	NATSCA    string
	NATSCert  string
	NATSKey   string
	// CalloutKeyFile holds the account nkey seed the hub signs the auth
	// callout's answers with, for an external cluster whose callout names
	// its public key as issuer (created on first start; docs/security.md).
	// The embedded server keeps its own in nats-roles.json.
	CalloutKeyFile string
	// CalloutXKeyFile holds the curve nkey seed that callout requests are
	// encrypted to and answers encrypted with (created on first start; its
	// public key is the callout's xkey). Empty: not encrypted.
	CalloutXKeyFile string
	// BridgeSecret is the password protonmsg bridges connect with through
	// an external cluster's callout (the embedded server keeps its own).
	BridgeSecret string
	// Listen is the embedded server's host and port (default 127.0.0.1:4222; port -1 = any free port).
	ListenHost string
	ListenPort int
	// Durability of the embedded server (default sync).
	Durability   bus.Durability
	SyncInterval time.Duration
	Replicas     int
	// SessionLifetime bounds how long a login stays valid (default 24h).
	SessionLifetime time.Duration
	// ClientCAFile enables sslLogin with certificates signed by this CA,
	// and, with TLSCertFile, NATS connections authenticated by them.
	ClientCAFile string
	// TLSCertFile and TLSKeyFile make the embedded server's client port
	// TLS-only; TLSCAFile, the CA of that certificate, goes into the
	// bootstrap profile as serverca.
	TLSCertFile, TLSKeyFile, TLSCAFile string
	// HostTimeout is how long a ready host may go without a heartbeat before
	// its tasks are dispatched again (default 60s; Koji's HostTimeout is 900s).
	HostTimeout time.Duration
	// MaxTaskRetries bounds how often a task is re-dispatched after losing its host (default 3).
	MaxTaskRetries int
	// PluginConfigDir holds the plugins' configuration files (sidetag.conf);
	// default /etc/koji-hub/plugins.
	PluginConfigDir string
	// HubConf is Koji's hub.conf: [policy] and [hub] MissingPolicyOk,
	// Plugins. Empty: Koji's default policies.
	HubConf string
	// MinFreeDisk is how much of the data directory's filesystem is kept
	// free: below it writes are refused with InsufficientResources (see
	// diskguard.go). Default DefaultMinFreeDisk; "0" turns the guard off.
	MinFreeDisk string
	// Protonmsg, when set, runs the protonmsg bridge inside the hub
	// (queue in <data>/protonmsg-queue, consumer bridge-hubd).
	Protonmsg *bridge.Config
	Logger    *slog.Logger
}

// Server is a running hub.
type Server struct {
	cfg      Config
	log      *slog.Logger
	embedded *bus.Embedded
	callout  *calloutService
	// hostGrants closes a host's connections when its task queues change
	// (embedded server only; nil otherwise).
	hostGrants *hostGrantWatch
	nc         *nats.Conn
	js         jetstream.JetStream
	store      *state.Store
	relay      *state.Relay
	archive    *archiveService
	disk       *diskGuard
	janitor    *janitor
	// knownConsumers caches task queue consumers this hub knows to exist.
	knownConsumers sync.Map
	extraConns     []*nats.Conn // the store's and the relay's connections
	bridge         *bridge.Bridge

	// plugins enabled by hub.conf's [hub] Plugins (read at start)
	plugins    map[string]bool
	untagHooks []func(tx *state.Txn, c *registry.Call, t *tagRecord) error
	sidetag    *sidetagPlugin

	taskInfos taskInfoCache // getTaskInfo answers by task revision

	policyMu  sync.RWMutex
	policies  *policy.Set
	hubConf   *HubConf // as read by New; ReloadConfig reads the file again
	policyReg *policy.Registry

	handlesMu sync.Mutex
	uploads   jetstream.Stream      // the output store's stream, see uploadsStream
	outputs   jetstream.ObjectStore // task outputs, see outputStore
	monitor   *hostMonitor
	reg       *registry.Registry
	sub       *nats.Subscription
	repoSvc   *repoService
	// profileURL is the NATS URL written into kojictl.conf.
	profileURL string

	work  chan apiCall
	share *fairShare // see fairshare.go
	// sessions caches authenticated session headers (see authenticate).
	sessions sessionCache
	workers  sync.WaitGroup
	stopped  chan struct{}
	once     sync.Once
}

// New validates cfg and returns a hub that Start will run.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("hub: no data directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SessionLifetime == 0 {
		cfg.SessionLifetime = 24 * time.Hour
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	if cfg.HostTimeout == 0 {
		cfg.HostTimeout = 60 * time.Second
	}
	if cfg.MaxTaskRetries == 0 {
		cfg.MaxTaskRetries = 3
	}
	if cfg.MinFreeDisk == "" {
		cfg.MinFreeDisk = DefaultMinFreeDisk
	}
	minFree, err := ParseFreeSpace(cfg.MinFreeDisk)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, reg: registry.New(), stopped: make(chan struct{}), plugins: map[string]bool{}}
	s.disk = newDiskGuard(cfg.DataDir, minFree, cfg.Logger)
	hc, err := LoadHubConf(cfg.HubConf)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.hubConf = hc // read once: plugins now, policies at Start
	for _, p := range hc.Plugins {
		s.plugins[p] = true
	}
	if err := s.loadPlugins(); err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.registerAll()
	return s, nil
}

// Registry exposes the API registry (for the XML-RPC adapter and tests).
func (s *Server) Registry() *registry.Registry { return s.reg }

// Store exposes the state view (for tests).
func (s *Server) Store() *state.Store { return s.store }

// Conn is the hub's own NATS connection.
func (s *Server) Conn() *nats.Conn { return s.nc }

// URL is the NATS URL clients use.
func (s *Server) URL() string { return s.profileURL }

// Embedded is the embedded NATS server, nil when joining a cluster.
func (s *Server) Embedded() *bus.Embedded { return s.embedded }

// ProfilePath is where the bootstrap kojictl profile is written.
func (s *Server) ProfilePath() string { return filepath.Join(s.cfg.DataDir, "kojictl.conf") }

// Start brings the hub up: NATS, provisioning, state, relay, bootstrap, API.
func (s *Server) Start(ctx context.Context) error {
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := s.disk.Start(); err != nil {
		return err
	}
	cc := bus.ConnectConfig{
		Name: "hubd", URLs: s.cfg.NATSURLs, User: s.cfg.NATSUser, Password: s.cfg.NATSPass,
		CredsFile: s.cfg.NATSCreds, CAFile: s.cfg.NATSCA, CertFile: s.cfg.NATSCert, KeyFile: s.cfg.NATSKey,
	}
	xkey, xkeyPub, err := s.calloutXKey()
	if err != nil {
		return err
	}
	if len(s.cfg.NATSURLs) == 0 {
		e, err := bus.StartEmbedded(bus.EmbeddedConfig{
			DataDir: s.cfg.DataDir, Host: s.cfg.ListenHost, Port: s.cfg.ListenPort,
			Durability: s.cfg.Durability, SyncInterval: s.cfg.SyncInterval,
			TLSCertFile: s.cfg.TLSCertFile, TLSKeyFile: s.cfg.TLSKeyFile, ClientCAFile: s.cfg.ClientCAFile,
			CalloutXKey: xkeyPub,
		})
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		s.embedded = e
		s.disk.watchServer(e.StoreFailed, s.restartJetStream)
		cc.InProcess = e.Server
		cc.User, cc.Password = bus.RoleHub, e.Secrets[bus.RoleHub]
		s.profileURL = e.URL()
		key, err := e.Secrets.CalloutKey()
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		s.callout = &calloutService{key: key, xkey: xkey, bridgeSecret: e.Secrets[bus.SecretBridge]}
		s.hostGrants = newHostGrantWatch()
	} else {
		s.profileURL = s.cfg.NATSURLs[0]
		if s.cfg.CalloutKeyFile != "" {
			key, err := loadOrCreateNKey(s.cfg.CalloutKeyFile, bus.NewCalloutSeed)
			if err != nil {
				return fmt.Errorf("hub: %w", err)
			}
			issuer, _ := key.PublicKey()
			s.log.Info("auth callout: answering $SYS.REQ.USER.AUTH; configure the cluster's auth_callout issuer", "issuer", issuer)
			s.callout = &calloutService{key: key, xkey: xkey, bridgeSecret: s.cfg.BridgeSecret}
		}
	}
	if err := s.startServices(ctx, cc); err != nil {
		s.Stop()
		return err
	}
	return nil
}

func (s *Server) startServices(ctx context.Context, cc bus.ConnectConfig) error {
	s.policyReg = newPolicyRegistry()
	if err := s.applyPolicies(s.hubConf); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	nc, err := bus.Connect(ctx, cc)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	s.nc = nc
	s.js, err = jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := bus.Provision(ctx, s.js, s.cfg.Replicas); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	// The store (commits and the view) and the relay each get their own
	// connection: the server reads each connection in one goroutine, and one
	// shared socket would serialize the API, commits and relay behind each other.
	stateJS, err := s.extraConn(ctx, cc, "hubd-state")
	if err != nil {
		return err
	}
	s.store = state.New(stateJS.Conn(), stateJS, s.log)
	s.store.SetWriteGate(s.disk)
	s.store.Index("task", taskGroups)
	s.store.Index("tagged", taggedBuildGroup)
	s.store.Index("build", buildGroups)
	s.store.Index("tag", repoAutoTagGroups)
	s.store.Index("taginh", inheritanceParentGroups)
	s.store.Index("repo", repoGroups)
	s.store.Index("repoqueue", repoRequestGroups)
	if err := s.store.Start(ctx); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	relayJS, err := s.extraConn(ctx, cc, "hubd-relay")
	if err != nil {
		return err
	}
	s.relay = state.NewRelay(relayJS.Conn(), relayJS, s.store, s.log)
	if err := s.relay.Start(ctx); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if s.callout != nil {
		if err := s.startCallout(); err != nil {
			return err
		}
	}
	if s.hostGrants != nil {
		s.hostGrants.started = true
		go s.watchHostGrants()
	}
	s.archive = newArchiveService(s.js, s.cfg.DataDir, s.log)
	if err := s.archive.Start(ctx); err != nil {
		return fmt.Errorf("hub: %w", err)
	}
	if err := s.bootstrap(ctx); err != nil {
		return fmt.Errorf("hub: bootstrap: %w", err)
	}
	if err := s.startRepoService(ctx); err != nil {
		return err
	}
	s.janitor = &janitor{s: s, interval: 10 * time.Minute}
	if err := s.janitor.Start(ctx); err != nil {
		return err
	}
	s.monitor = &hostMonitor{s: s, timeout: s.cfg.HostTimeout, maxRetries: s.cfg.MaxTaskRetries}
	if err := s.monitor.Start(ctx); err != nil {
		return err
	}
	s.startSidetagCleanup()
	if s.cfg.Protonmsg != nil {
		b, err := bridge.New(s.nc, s.js, bridge.Options{Config: s.cfg.Protonmsg, Name: "hubd",
			QueueDir: filepath.Join(s.cfg.DataDir, "protonmsg-queue"), Logger: s.log})
		if err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		if err := b.Start(ctx); err != nil {
			return fmt.Errorf("hub: %w", err)
		}
		s.bridge = b
	}
	return s.serveAPI()
}

// extraConn opens another connection of the hub, closed by Stop.
func (s *Server) extraConn(ctx context.Context, cc bus.ConnectConfig, name string) (jetstream.JetStream, error) {
	cc.Name = name
	nc, err := bus.Connect(ctx, cc)
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	s.extraConns = append(s.extraConns, nc)
	// A publish the server never answers (it does not answer one its store
	// failed to write) fails after a while instead of holding the relay.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	return js, nil
}

// Stop stops serving and releases everything Start acquired. It is safe to
// call more than once and after a failed Start.
func (s *Server) Stop() {
	s.once.Do(func() {
		close(s.stopped)
		if s.sub != nil {
			_ = s.sub.Drain()
			// Drain returns at once; wait for in-flight messages to be handed over.
			for s.sub.IsValid() {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if s.work != nil {
			close(s.work)
			s.workers.Wait()
		}
		s.repoSvc.Stop()
		if s.janitor != nil {
			s.janitor.Stop()
		}
		if s.monitor != nil {
			s.monitor.Stop()
		}
		if s.bridge != nil {
			s.bridge.Stop()
		}
		s.sidetag.stop()
		if s.relay != nil {
			s.relay.Stop()
		}
		s.archive.Stop()
		if s.store != nil {
			s.store.Stop()
		}
		for _, nc := range s.extraConns {
			nc.Close()
		}
		if s.nc != nil {
			s.nc.Close()
		}
		if s.embedded != nil {
			s.embedded.Stop()
		}
		s.disk.Stop()
		if s.hostGrants != nil && s.hostGrants.started {
			<-s.hostGrants.done
		}
	})
}
