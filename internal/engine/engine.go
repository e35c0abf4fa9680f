// Package engine embeds the NATS server with JetStream that stores and moves
// every message of throng. It is the only package that imports nats-server;
// everything else talks to the engine through nats.go connections obtained
// from Connect.
//
// Each tenant is a NATS account, registered at run time, with JetStream
// enabled on it. Isolation between tenants is therefore enforced by the
// engine itself: a connection bound to one account can neither publish into
// nor subscribe to another account's subjects, and streams of the same name
// in two accounts are distinct.
package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// SystemAccount is the account holding throng's own state (tenants, users,
// address definitions). Tenant accounts are named by AccountFor.
const SystemAccount = "throng"

// AccountFor returns the NATS account name that holds a tenant's data. The
// prefix keeps tenant accounts apart from the system account whatever the
// tenant is called.
func AccountFor(tenant string) string { return "tenant-" + tenant }

// Config configures the embedded engine.
type Config struct {
	// DataDir is the directory under which JetStream keeps its file store
	// (DataDir/jetstream).
	DataDir string
	// MaxMemory and MaxStore bound JetStream's memory and disk use; zero lets
	// the server pick (a share of RAM and of the disk).
	MaxMemory int64
	MaxStore  int64
	// SyncAlways makes JetStream fsync every write batch before it
	// acknowledges; otherwise data goes to the OS page cache and is synced
	// every SyncInterval (default 2 minutes), which survives a process
	// kill but not a power loss.
	SyncAlways   bool
	SyncInterval time.Duration
	// DiskFreeLimit is the free space of the data directory's file system
	// below which new stored messages are refused (disk.go); zero means
	// DefaultDiskFreeLimit, negative disables the guard.
	DiskFreeLimit int64
	// DiskFree measures free space; nil uses statfs. For tests.
	DiskFree func(dir string) (int64, error)
	// Logger receives the server's log lines; nil discards them.
	Logger *slog.Logger
	// Debug enables the server's debug logging.
	Debug bool
	// Cluster, when enabled, joins the engine to other nodes
	// (cluster.go); nil or empty is a single node.
	Cluster *Cluster
}

// Engine is a running embedded NATS server.
type Engine struct {
	srv    *server.Server
	secret string     // password of in-process connections; never leaves the process
	disk   *diskGuard // nil when disabled

	// Set by Start, read-only afterwards.
	dataDir      string
	cluster      *Cluster // nil: single node
	nodeName     string
	replicas     int
	log          *slog.Logger
	announceConn *nats.Conn // system-account connection of account announcements (cluster.go)

	mu        sync.Mutex
	accounts  map[string]*server.Account // guarded by mu
	announced map[string]chan struct{}   // by account: closed once announced to the cluster (cluster.go); guarded by mu
	peers     map[string]*atomic.Int64   // live peers by account (JoinPeers); guarded by mu
}

// ErrNotRunning is returned by Connect after Shutdown.
var ErrNotRunning = errors.New("engine: not running")

// Start starts the embedded server and waits until it accepts connections.
// A clustered node that learns accounts from the others once it has
// joined starts again, so that it declares them before its routes come
// up (cluster.go, learnAccounts).
func Start(cfg Config) (*Engine, error) { return StartContext(context.Background(), cfg) }

// StartContext is Start, given up when ctx ends while a clustered node
// waits for its cluster (which may take minutes: peers not up yet): the
// server is shut down, its stores closed, and the error wraps ctx's, so
// that a node asked to stop (SIGTERM) meanwhile stops at once.
func StartContext(ctx context.Context, cfg Config) (*Engine, error) {
	e, err := start(ctx, cfg)
	if err != nil || e.cluster == nil {
		return e, err
	}
	if learnt := e.learnAccounts(); len(learnt) > 0 {
		e.log.Info("accounts learnt from the cluster after joining it; starting the engine again so that the other nodes' interest in them reaches this node", "accounts", len(learnt))
		e.Shutdown()
		return start(ctx, cfg)
	}
	return e, nil
}

func start(ctx context.Context, cfg Config) (*Engine, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("engine: data directory is required")
	}
	secret := make([]byte, 24)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	logger := slog.New(slog.DiscardHandler)
	if cfg.Logger != nil {
		logger = cfg.Logger.With("component", "engine")
	}
	e := &Engine{secret: hex.EncodeToString(secret), accounts: map[string]*server.Account{}, peers: map[string]*atomic.Int64{},
		announced: map[string]chan struct{}{}, dataDir: cfg.DataDir, nodeName: "throng", replicas: 1, log: logger}
	opts := &server.Options{
		ServerName: "throng",
		// No network listener: every client is in-process.
		DontListen:                 true,
		JetStream:                  true,
		StoreDir:                   filepath.Join(cfg.DataDir, "jetstream"),
		JetStreamMaxMemory:         cfg.MaxMemory,
		JetStreamMaxStore:          cfg.MaxStore,
		SyncAlways:                 cfg.SyncAlways,
		SyncInterval:               cfg.SyncInterval,
		NoSigs:                     true,
		NoSystemAccount:            false,
		MaxPayload:                 16 << 20,
		CustomClientAuthentication: authenticator{e},
		Debug:                      cfg.Debug,
	}
	var known []string
	if cfg.Cluster.Enabled() {
		c := *cfg.Cluster
		c.Peers = slices.Clone(c.Peers)
		e.cluster, e.nodeName, e.replicas = &c, c.NodeName, c.replicas()
		var err error
		if known, err = clusterOptions(opts, &c, cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if cfg.DiskFreeLimit >= 0 {
		limit := cfg.DiskFreeLimit
		if limit == 0 {
			if err := os.MkdirAll(opts.StoreDir, 0o755); err != nil {
				return nil, fmt.Errorf("engine: %w", err)
			}
			limit = DefaultDiskFreeLimit(opts.StoreDir)
		}
		log := slog.New(slog.DiscardHandler)
		if cfg.Logger != nil {
			log = cfg.Logger.With("component", "engine")
		}
		g, err := startDiskGuard(cfg.DataDir, opts.StoreDir, limit, cfg.DiskFree, log)
		if err != nil {
			return nil, err
		}
		e.disk = g
		defer func() {
			if e.srv == nil || !e.srv.Running() {
				g.close()
			}
		}()
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	// The server reports a failure to start (JetStream's store above all:
	// a data directory it cannot use) only through its logger's Fatalf,
	// then never gets ready: the adapter keeps the first one, so that
	// Start fails at once and says why instead of waiting out its timeout.
	fatal := new(firstFatal)
	srv.SetLoggerV2(slogAdapter{l: logger, fatal: fatal}, cfg.Debug, false, false)
	e.srv = srv
	srv.Start()
	for deadline := time.Now().Add(30 * time.Second); ; {
		ready := srv.ReadyForConnections(50 * time.Millisecond)
		if msg := fatal.get(); msg != "" {
			srv.Shutdown()
			return nil, fmt.Errorf("engine: %s", msg)
		}
		if ready {
			break
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			return nil, errors.New("engine: server did not become ready in 30s")
		}
	}
	// Accounts registered before the start (a clustered node's known
	// accounts) have JetStream already; they only need to be looked up.
	for _, a := range known {
		if _, err := e.registerLocal(a); err != nil {
			srv.Shutdown()
			return nil, err
		}
	}
	if err := e.EnsureAccount(SystemAccount); err != nil {
		srv.Shutdown()
		return nil, err
	}
	if e.cluster != nil {
		stop := func() {
			if e.announceConn != nil {
				e.announceConn.Close()
			}
			srv.Shutdown()
			srv.WaitForShutdown() // the disk guard is closed by the deferred function
		}
		if err := e.startAnnouncements(); err != nil {
			stop()
			return nil, fmt.Errorf("engine: %w", err)
		}
		if err := e.waitForCluster(ctx, e.cluster.JoinTimeout); err != nil {
			stop()
			return nil, err
		}
	}
	return e, nil
}

// Replicas is the replica count of every stream and bucket: 1 on a
// single node; in a cluster the configured count, else min(3, nodes).
// Every creation of a stream or bucket takes it from here (router,
// tenant and registry stores).
func (e *Engine) Replicas() int { return e.replicas }

// NodeName is the node's name ("throng" for a single node).
func (e *Engine) NodeName() string { return e.nodeName }

// JoinPeers registers one more node exchanging live (core, unstored)
// messages in the account through this engine, and returns a function
// counting them and one to leave. A router publishes its live messages to
// the engine only when it has peers: its own consumers get them directly,
// and the engine's interest count cannot tell its subscriptions from
// another node's (Account.Interest stops at the first match). On a
// standalone engine the peers are the routers sharing it (tests run
// several). A clustered engine always counts the other nodes as one more
// peer, connected or not: a route may come up at any moment, and a node
// that believed itself alone would skip the engine copy that the other
// nodes' consumers need, and reclaim deliveries in progress on them
// (docs/cluster.md).
func (e *Engine) JoinPeers(account string) (count func() int, leave func()) {
	e.mu.Lock()
	n, ok := e.peers[account]
	if !ok {
		n = new(atomic.Int64)
		e.peers[account] = n
	}
	e.mu.Unlock()
	n.Add(1)
	others := int64(0)
	if e.cluster != nil {
		others = 1
	}
	var once sync.Once
	return func() int { return int(n.Load() + others) }, func() { once.Do(func() { n.Add(-1) }) }
}

// EnsureAccount registers the named account (if needed) and enables
// JetStream on it. Enabling JetStream recovers the account's streams and
// consumers from disk, so after a restart an account must be ensured before
// its data is used. It is idempotent and safe for concurrent use.
//
// On a clustered engine, the first EnsureAccount of an account in this
// process also announces it to the other nodes and returns once every
// node online registered it (or after announceTimeout): streams created
// in it afterwards may be placed on any of them (cluster.go).
func (e *Engine) EnsureAccount(name string) error {
	if _, err := e.registerLocal(name); err != nil {
		return err
	}
	if e.cluster == nil || name == SystemAccount {
		return nil
	}
	// Once per account and process, whoever registered it here: the
	// replicated tenant list may have registered it on this node before
	// the other nodes' lists had it.
	e.mu.Lock()
	ch, ok := e.announced[name]
	if !ok {
		ch = make(chan struct{})
		e.announced[name] = ch
		e.mu.Unlock()
		e.announce(name)
		close(ch)
		return nil
	}
	e.mu.Unlock()
	<-ch // another caller is announcing it
	return nil
}

// RegisterAccount registers the account on this node only: for an
// account another node announced, or that the replicated tenant list
// names.
func (e *Engine) RegisterAccount(name string) error {
	_, err := e.registerLocal(name)
	return err
}

// registerLocal registers the account here and enables JetStream on it;
// isNew says this call did it.
func (e *Engine) registerLocal(name string) (isNew bool, err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.accounts[name]; ok {
		return false, nil
	}
	acc, err := e.srv.LookupAccount(name)
	if err != nil {
		acc, err = e.srv.RegisterAccount(name)
		if err != nil {
			return false, fmt.Errorf("engine: register account %q: %w", name, err)
		}
		if e.cluster != nil {
			// Registered before the server starts next time (cluster.go).
			if err := e.rememberAccount(name); err != nil {
				return false, err
			}
		}
	}
	if !acc.JetStreamEnabled() {
		// Dynamic limits: the account may use what the server has; per-tenant
		// quotas are enforced above the engine and by stream limits.
		limits := map[string]server.JetStreamAccountLimits{
			"": {MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: -1},
		}
		if err := acc.EnableJetStream(limits, nil); err != nil {
			return false, fmt.Errorf("engine: enable jetstream for %q: %w", name, err)
		}
	}
	e.accounts[name] = acc
	return true, nil
}

// Connect opens an in-process client connection bound to the account, which
// must have been ensured. Extra nats options (name, handlers) may be given.
func (e *Engine) Connect(account string, opts ...nats.Option) (*nats.Conn, error) {
	if !e.srv.Running() {
		return nil, ErrNotRunning
	}
	e.mu.Lock()
	_, ok := e.accounts[account]
	e.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("engine: account %q not ensured", account)
	}
	all := append([]nats.Option{
		nats.InProcessServer(e.srv),
		nats.UserInfo(account, e.secret),
		// The server may close an in-process connection too (a slow
		// consumer under a flood of at-most-once messages): reconnect at
		// once and for ever; owners close their connections on shutdown.
		nats.MaxReconnects(-1),
		nats.ReconnectWait(10 * time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.ReconnectBufSize(64 << 20),
		nats.MaxPingsOutstanding(10),
	}, opts...)
	return nats.Connect("", all...)
}

// DisconnectClients closes every client connection bound to the account,
// as the server does to a slow consumer; it returns how many it closed.
// Operators use it to cut a tenant off; tests use it to check recovery.
func (e *Engine) DisconnectClients(account string) (int, error) {
	cz, err := e.srv.Connz(&server.ConnzOptions{Account: account, Limit: 1 << 20})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range cz.Conns {
		if e.srv.DisconnectClientByID(c.Cid) == nil {
			n++
		}
	}
	return n, nil
}

// Running reports whether the server is up.
func (e *Engine) Running() bool { return e.srv.Running() }

// Shutdown stops the server; JetStream flushes its stores. It blocks until
// the server has stopped.
func (e *Engine) Shutdown() {
	if e.announceConn != nil {
		e.announceConn.Close()
	}
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
	if e.disk != nil {
		e.disk.close()
	}
}

// authenticator binds each in-process connection to the account named by its
// user name, provided it presents the engine's secret. Nothing outside this
// process knows the secret, and there is no network listener anyway.
type authenticator struct{ e *Engine }

func (a authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || o.Password != a.e.secret {
		return false
	}
	a.e.mu.Lock()
	acc, ok := a.e.accounts[o.Username]
	a.e.mu.Unlock()
	if !ok {
		return false
	}
	c.RegisterUser(&server.User{Username: o.Username, Account: acc})
	return true
}

// slogAdapter adapts slog to the nats-server Logger interface; fatal
// keeps the first Fatalf message (a server that will not run).
type slogAdapter struct {
	l     *slog.Logger
	fatal *firstFatal
}

func (s slogAdapter) Noticef(format string, v ...any) { s.l.Info(fmt.Sprintf(format, v...)) }
func (s slogAdapter) Warnf(format string, v ...any)   { s.l.Warn(fmt.Sprintf(format, v...)) }
func (s slogAdapter) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if s.fatal != nil {
		s.fatal.set(msg)
	}
	s.l.Error(msg)
}
func (s slogAdapter) Errorf(format string, v ...any) { s.l.Error(fmt.Sprintf(format, v...)) }
func (s slogAdapter) Debugf(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }
func (s slogAdapter) Tracef(format string, v ...any) { s.l.Debug(fmt.Sprintf(format, v...)) }

// firstFatal holds the first fatal message of the server.
type firstFatal struct {
	mu  sync.Mutex
	msg string // guarded by mu
}

func (f *firstFatal) set(msg string) {
	f.mu.Lock()
	if f.msg == "" {
		f.msg = msg
	}
	f.mu.Unlock()
}

func (f *firstFatal) get() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.msg
}
