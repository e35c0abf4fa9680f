// Package app is throng's composition root: it builds every part from a
// config.Config, starts them in order and stops them in reverse.
//
// Start order: data-directory lock → engine → tenant store (a system-account connection) →
// router (which ensures the default tenant and every tenant's engine
// account) → bootstrap of the admin user → admin HTTP listener → protocol
// listeners. Ready is closed when all of them are up.
//
// Shutdown order (each step finishes before the next starts):
//
//  1. listeners: stop accepting (admin HTTP server and protocol listeners);
//  2. drain connections: in-flight admin requests finish, protocol
//     connections are closed after settling what they can, bounded by the
//     shutdown context;
//  3. router: consumers stop and the router's engine connections close;
//  4. store: the KV watches stop and the system-account connection closes;
//  5. engine: JetStream flushes its stores and the server stops;
//  6. the data-directory lock is released.
package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/console"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/guard"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/metrics"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// Version is the build's version, set with
// -ldflags "-X github.com/throngmq/throng/internal/app.Version=v1.2.3";
// otherwise it is taken from the module build info.
var Version = ""

// BuildVersion returns the version of this build.
func BuildVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// AdminUser is the platform administrator created on first start, in the
// default tenant.
const AdminUser = "admin"

// ShutdownTimeout bounds the graceful shutdown that Run performs when its
// context ends.
const ShutdownTimeout = 30 * time.Second

// App is one throng node.
type App struct {
	cfg    *config.Config
	log    *slog.Logger
	stdout io.Writer

	audit      *audit.Log // nil: off
	auditGiven bool       // WithAudit: the caller owns it
	// generated is the admin password this start generated, shown once
	// the node is ready; a start that fails before removes the admin user
	// again, so that the next start generates (and shows) a new one.
	// Only the goroutine running Run uses it.
	generated string

	ready     chan struct{} // closed when everything is started
	stopped   chan struct{} // closed when Shutdown has finished
	startOnce sync.Once
	stopOnce  sync.Once
	// A Shutdown during the start cancels the start (a clustered node
	// may wait minutes for its peers) and waits for it to return before
	// it stops what the start left running and releases the data
	// directory. Set by Run under mu; startDone is closed when start
	// returns.
	cancelStart context.CancelFunc
	startDone   chan struct{}

	// Set during start (by the goroutine running Run) and read after Ready
	// or after Run returned; mu guards them against a concurrent Shutdown.
	mu       sync.Mutex
	registry *prometheus.Registry
	lock     *dirLock // the data directory's lock, held until the engine stopped
	eng      *engine.Engine
	sysConn  *nats.Conn
	store    *tenant.Store
	devices  *registry.Store // the device registry (a.registry is the metrics registry)
	hono     *hono.Service   // Hono's device side, for the front-ends
	router   *router.Router
	authn    *auth.Authenticator
	adminLn  net.Listener
	adminSrv *http.Server
	adminMux adminSwitch             // the admin listener's handler: probes, then the API (probes.go)
	pprofSrv *http.Server            // debug.pprof, nil when disabled
	serveErr chan error              // the admin server's Serve result
	closing  bool                    // Shutdown has begun; start stops where it is
	fronts   []*runningFront         // protocol front-ends, in start order
	lns      map[string]net.Listener // bound protocol listeners by setting name
	bridges  bridgeSet               // bridges.go
	guard    *guard.Guard            // admits new connections on every listener (frontends.go)
	reload   reloadable              // what SIGHUP re-reads (reload.go)
	obs      *observer               // connection registry and sampler (observe.go)
	silent   *silentStore            // the silent-device tracker's file (silentstore.go)
	engReady readyCache              // the engine's readiness, for /readyz (cluster.go)
}

// Option adjusts an App.
type Option func(*App)

// WithLogger sets the logger (default: built from cfg.Log, to stderr).
func WithLogger(l *slog.Logger) Option { return func(a *App) { a.log = l } }

// WithStdout sets where the generated admin password is printed (default
// os.Stdout). It is the only thing throng writes there.
func WithStdout(w io.Writer) Option { return func(a *App) { a.stdout = w } }

// WithAudit sets the audit log (docs/security.md, "Audit log"); nil
// turns it off. The caller closes it after Run. Without this option the
// App opens the one cfg.Log.Audit names ("stderr": through the logger's
// handler, so with the diagnostic log and whatever its level) and closes
// it when it stops.
func WithAudit(l *audit.Log) Option { return func(a *App) { a.audit, a.auditGiven = l, true } }

// New checks the configuration and returns an App ready to Run.
func New(cfg *config.Config, opts ...Option) (*App, error) {
	if cfg == nil {
		return nil, errors.New("app: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	a := &App{
		cfg:      cfg.Clone(),
		stdout:   os.Stdout,
		ready:    make(chan struct{}),
		stopped:  make(chan struct{}),
		serveErr: make(chan error, 1),
	}
	for _, o := range opts {
		o(a)
	}
	if a.log == nil {
		l, err := NewLogger(cfg.Log, os.Stderr)
		if err != nil {
			return nil, err
		}
		a.log = l
	}
	return a, nil
}

// NewLogger builds the slog logger described by the log settings.
func NewLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	lv := strings.ToLower(c.Level)
	if lv == "warning" {
		lv = "warn"
	}
	if err := level.UnmarshalText([]byte(lv)); err != nil {
		return nil, fmt.Errorf("log.level: %w", err)
	}
	o := &slog.HandlerOptions{Level: level}
	switch c.Format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, o)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(w, o)), nil
	}
	return nil, fmt.Errorf("log.format: %q (want text or json)", c.Format)
}

// Ready is closed once every part has started.
func (a *App) Ready() <-chan struct{} { return a.ready }

// Run starts the platform, blocks until ctx ends (or the admin server
// fails), then shuts down gracefully within ShutdownTimeout. It returns
// the start-up or serving error, if any; nil when ctx ended during the
// start (the start is given up). Run may be called once.
func (a *App) Run(ctx context.Context) error {
	err := errors.New("app: Run called twice")
	a.startOnce.Do(func() { err = nil })
	if err != nil {
		return err
	}
	sctx, cancelStart := context.WithCancel(ctx)
	defer cancelStart()
	startDone := make(chan struct{})
	a.mu.Lock()
	a.cancelStart, a.startDone = cancelStart, startDone
	a.mu.Unlock()
	err = a.start(sctx)
	close(startDone)
	if err != nil {
		a.forgetGenerated()
		sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
		defer cancel()
		a.Shutdown(sctx)
		if ctx.Err() != nil {
			// Asked to stop during the start (SIGTERM while a clustered
			// node waits for its peers): a stop, not a failure.
			a.log.Info("stopped during the start", "component", "app", "err", err)
			return nil
		}
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
	case <-a.stopped:
	case runErr = <-a.serveErr:
		a.log.Error("admin server failed", "component", "app", "err", runErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	a.Shutdown(sctx)
	return runErr
}

func (a *App) start(ctx context.Context) error {
	log := a.log.With("component", "app")
	cfg := a.cfg
	log.Info("starting throng", "version", BuildVersion(), "data_dir", cfg.DataDir)
	if err := a.openAudit(); err != nil {
		return err
	}

	// The lock comes first: a second node must not even start an engine on
	// a store that another one is writing.
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	if !a.set(func() { a.lock = lock }) {
		lock.unlock()
		return errors.New("app: shut down during start")
	}

	reg := metrics.NewRegistry()
	// The guard comes before any listener (frontends.go).
	unlimited, _ := config.Prefixes(a.cfg.Connections.UnlimitedSources) // validated
	a.newGuard(reg, unlimited)
	// The admin listener answers the liveness probe from now on, while
	// the engine may wait minutes for its cluster (probes.go).
	if err := a.listenAdmin(); err != nil {
		return err
	}
	cluster, err := a.engineCluster() // nil: a single node (cluster.go)
	if err != nil {
		return err
	}
	// ctx: a node asked to stop while it waits for its peers stops at once.
	eng, err := engine.StartContext(ctx, engine.Config{
		DataDir:    cfg.DataDir,
		MaxMemory:  int64(cfg.Engine.MaxMemory),
		MaxStore:   int64(cfg.Engine.MaxStore),
		SyncAlways: cfg.Engine.SyncAlways,
		Logger:     slog.New(newEngineLogFilter(a.log.Handler())), // no banner (enginelog.go)

		DiskFreeLimit: int64(cfg.Engine.DiskFreeLimit),
		Cluster:       cluster,
	})
	if err != nil {
		return err
	}
	if !a.set(func() { a.registry, a.eng = reg, eng }) {
		eng.Shutdown()
		return errors.New("app: shut down during start")
	}

	nc, err := eng.Connect(engine.SystemAccount, nats.Name("throng-store"))
	if err != nil {
		return fmt.Errorf("app: store connection: %w", err)
	}
	if !a.set(func() { a.sysConn = nc }) {
		nc.Close()
		return errors.New("app: shut down during start")
	}
	store, err := retryInCluster(ctx, a, "tenant store", func(ctx context.Context) (*tenant.Store, error) {
		return tenant.Open(ctx, nc, a.log.With("component", "tenant"), tenant.WithReplicas(eng.Replicas()))
	})
	if err != nil {
		return fmt.Errorf("app: tenant store: %w", err)
	}
	if !a.set(func() { a.store = store }) {
		store.Close()
		return errors.New("app: shut down during start")
	}
	a.followTenants(eng, store)
	devices, err := retryInCluster(ctx, a, "device registry", func(ctx context.Context) (*registry.Store, error) {
		return registry.Open(ctx, nc, store, a.log.With("component", "registry"), registry.WithReplicas(eng.Replicas()))
	})
	if err != nil {
		return fmt.Errorf("app: device registry: %w", err)
	}
	if !a.set(func() { a.devices = devices }) {
		devices.Close()
		return errors.New("app: shut down during start")
	}

	rt, err := router.New(ctx, router.Config{Engine: eng, Store: store, Logger: a.log, Metrics: reg,
		Implicit: hono.ImplicitType}) // Hono's addresses of IoT-enabled tenants (docs/hono.md)
	if err != nil {
		return fmt.Errorf("app: router: %w", err)
	}
	authn := auth.New(store, auth.WithDevices(devices), auth.WithMetrics(reg), auth.WithLogger(a.log),
		auth.WithLoginBackoff(auth.Backoff{Max: time.Duration(a.cfg.Connections.LoginBackoff), Exempt: unlimited}))
	honoSvc := hono.New(devices, rt, a.log)
	if !a.set(func() { a.router, a.authn, a.hono = rt, authn, honoSvc }) {
		rt.Close()
		return errors.New("app: shut down during start")
	}
	a.startObserver(rt)
	a.startSilentStore()
	if err := a.serveConnPeers(); err != nil { // connections across nodes (connpeers.go)
		return err
	}
	if err := a.serveObservePeers(); err != nil { // anomalies, histories across nodes (anomalypeers.go)
		return err
	}

	if err := a.startBridges(ctx); err != nil { // bridges.go
		return err
	}
	if err := a.bootstrapAdmin(ctx); err != nil {
		return err
	}
	if err := a.startAdmin(); err != nil {
		return err
	}
	if err := a.startPprof(); err != nil {
		return err
	}
	if err := a.startFrontEnds(); err != nil {
		return err
	}
	go trimMemory(a.stopped, debug.FreeOSMemory) // memtrim.go

	if addr := a.AdminAddr(); addr != nil {
		// The console's address (issue 15): on stdout with the password it
		// needs when one was generated (stdout stays empty otherwise).
		if a.generated != "" {
			fmt.Fprintf(a.stdout, "console: %s (log in as %q with the generated password below)\n", ConsoleURL(addr), AdminUser)
		}
		log.Info("console", "url", ConsoleURL(addr))
	}
	if a.generated != "" {
		// Shown only now: a start that fails before never shows a password
		// that nobody could use (issue 14 item 10).
		fmt.Fprintf(a.stdout, "generated admin password: %s\n"+
			"(user %q of tenant %q; shown only this once, stored hashed; set adminPassword to choose one, or use throng admin reset-password)\n",
			a.generated, AdminUser, tenant.Default)
		a.generated = ""
	}
	close(a.ready)
	log.Info("throng ready")
	return nil
}

// openAudit opens the audit log cfg.Log.Audit names, unless WithAudit
// gave one.
func (a *App) openAudit() error {
	if a.auditGiven {
		return nil
	}
	var l *audit.Log
	switch dest := a.cfg.Log.Audit; dest {
	case "stderr":
		l = audit.New(a.log.Handler().WithAttrs([]slog.Attr{slog.String("component", "audit")}), audit.Options{})
	default:
		var err error
		if l, err = audit.Open(dest, a.cfg.Log.Format, os.Stderr, audit.Options{}); err != nil {
			return fmt.Errorf("app: log.audit: %w", err)
		}
	}
	if !a.set(func() { a.audit = l }) {
		_ = l.Close()
		return errors.New("app: shut down during start")
	}
	return nil
}

// forgetGenerated removes the admin user that a failed start created with
// a generated password it never showed, so that the next start generates
// one again; if that fails, throng admin reset-password is the way in.
func (a *App) forgetGenerated() {
	if a.generated == "" {
		return
	}
	a.generated = ""
	log := a.log.With("component", "app")
	a.mu.Lock()
	store := a.store
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := store.DeleteUser(ctx, tenant.Default, AdminUser); err != nil {
		log.Error("the start failed after creating the admin user, whose generated password was not shown; "+
			"run 'throng admin reset-password' to set one", "err", err)
		return
	}
	log.Warn("the start failed: the admin user it created was removed again, the next start generates its password")
}

// set runs f under the lock unless shutdown has begun.
func (a *App) set(f func()) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closing {
		return false
	}
	f()
	return true
}

// bootstrapAdmin makes sure the platform administrator exists. On first
// start it is created with the configured password, or a generated one
// that is printed once and stored only as a bcrypt hash and a SCRAM
// verifier (auth.SetPassword). When a password is configured, both follow
// it; an admin stored before SCRAM support gets its verifier then.
func (a *App) bootstrapAdmin(ctx context.Context) error {
	log := a.log.With("component", "app")
	pw := a.cfg.AdminPassword
	u, ok := a.store.User(tenant.Default, AdminUser)
	if !ok {
		generated := pw == ""
		if generated {
			b := make([]byte, 18)
			if _, err := rand.Read(b); err != nil {
				return err
			}
			pw = base64.RawURLEncoding.EncodeToString(b)
		}
		nu := &tenant.User{Name: AdminUser, Tenant: tenant.Default, Roles: []tenant.Role{tenant.RoleAdmin}}
		if err := auth.SetPassword(nu, pw); err != nil {
			return err
		}
		// Asked again on a transient failure (a cluster starting: the
		// users bucket may have no leader yet); "exists" is an answer.
		exists, err := retryInCluster(ctx, a, "admin user", func(ctx context.Context) (bool, error) {
			err := a.store.PutUser(ctx, nu, true)
			if errors.Is(err, tenant.ErrExists) {
				return true, nil
			}
			return false, err
		})
		if exists {
			err = tenant.ErrExists
		}
		switch {
		case err == nil:
			if generated {
				a.generated = pw // shown when the node is ready
			}
			log.Info("created admin user", "user", AdminUser, "tenant", tenant.Default, "generated_password", generated)
			return nil
		case errors.Is(err, tenant.ErrExists):
			// Another node created it meanwhile; sync below. This
			// node's copy of the users (a watch of the replicated
			// bucket) may not have it yet: a cluster's nodes starting
			// together had one exit with "user already exists" (CI).
			deadline := time.Now().Add(30 * time.Second)
			for u, ok = a.store.User(tenant.Default, AdminUser); !ok; u, ok = a.store.User(tenant.Default, AdminUser) {
				if time.Now().After(deadline) {
					return fmt.Errorf("app: admin user: %w", err)
				}
				select {
				case <-ctx.Done():
					return fmt.Errorf("app: admin user: %w", err)
				case <-time.After(100 * time.Millisecond):
				}
			}
			if generated {
				// Not configured: the node that created it generated and
				// shows the password — this node, if a first attempt
				// whose answer was lost did it; never overwritten here.
				if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(pw)) == nil {
					a.generated = pw
				}
				return nil
			}
		default:
			return fmt.Errorf("app: create admin user: %w", err)
		}
	}
	if pw == "" {
		return nil
	}
	hashOK := bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(pw)) == nil
	// An admin stored before SCRAM support has no verifier: it gets one.
	scramOK := auth.ScramMatches(u.Scram, pw)
	roleOK := u.HasRole(tenant.RoleAdmin)
	if hashOK && scramOK && roleOK {
		return nil
	}
	nu := *u
	if !hashOK || !scramOK {
		if err := auth.SetPassword(&nu, pw); err != nil {
			return err
		}
	}
	if !roleOK {
		nu.Roles = append(append([]tenant.Role{}, u.Roles...), tenant.RoleAdmin)
	}
	if _, err := retryInCluster(ctx, a, "admin user update", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, a.store.PutUser(ctx, &nu, false)
	}); err != nil {
		return fmt.Errorf("app: update admin user: %w", err)
	}
	log.Info("admin user synced with the configured password", "user", AdminUser, "password_changed", !hashOK, "scram_verifier_set", !scramOK, "role_restored", !roleOK)
	return nil
}

// startPprof serves net/http/pprof on debug.pprof: profiles of a running
// node are how hot-path work is chosen (docs/benchmarks.md). The handlers
// are registered on a private mux, not http.DefaultServeMux.
func (a *App) startPprof() error {
	addr := a.cfg.Debug.Pprof
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("app: pprof listener: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if !a.set(func() { a.pprofSrv = srv }) {
		ln.Close()
		return errors.New("app: shut down during start")
	}
	go func() { _ = srv.Serve(ln) }()
	a.log.Warn("pprof listening (unauthenticated)", "component", "app", "addr", ln.Addr().String())
	return nil
}

func (a *App) startAdmin() error {
	addr := a.cfg.Listeners.Admin
	if addr == "" {
		a.log.Info("admin listener disabled", "component", "admin")
		return nil
	}
	// The web console (internal/console) is served by the admin API at
	// "/" and calls it, audited, as its logged-in user.
	var api http.Handler
	cons, err := console.New(console.Config{
		API:       http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { api.ServeHTTP(w, r) }),
		Auth:      a.authn,
		Producers: a.router,
		Audit:     a.audit,
		DataDir:   a.cfg.DataDir,
		Version:   BuildVersion(),
		Logger:    a.log,
	})
	if err != nil {
		return err
	}
	h, err := admin.New(admin.Config{
		Console:    cons,
		Router:     a.router,
		Store:      a.adminStore(), // tenants and bridges (bridges.go)
		Registry:   a.devices,
		Auth:       a.authn,
		Gatherer:   a.registry,
		Registerer: a.registry,
		Ready:      a.isReady,
		Cluster:    a.clusterStatus,
		RemoveNode: a.removeNode(), // nil: a single node (cluster.go)
		Version:    BuildVersion(),
		Logger:     a.log,
		Observe:    a.connsAcrossNodes(a.obs.adminConfig()), // + the other nodes' (connpeers.go)
	})
	if err != nil {
		return err
	}
	api = admin.Audited(h, a.audit) // admin changes, refusals, denials
	// The listener has served the probes since the start (probes.go);
	// from now on it serves the whole API.
	a.adminMux.set(api)
	if addr := a.AdminAddr(); addr != nil {
		a.log.Info("admin listening", "component", "admin", "addr", addr.String())
	}
	return nil
}

func (a *App) isReady() bool {
	select {
	case <-a.ready:
		select {
		case <-a.stopped:
			return false
		default:
		}
		a.mu.Lock()
		closing := a.closing
		a.mu.Unlock()
		return !closing && a.engineReady()
	default:
		return false
	}
}

// ConsoleURL is the web console's URL on the admin listener addr: a
// wildcard host is shown as localhost.
func ConsoleURL(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return "http://" + addr.String() + "/"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// AdminAddr returns the bound address of the admin listener, or nil if it
// is disabled or not started.
func (a *App) AdminAddr() net.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.adminLn == nil {
		return nil
	}
	return a.adminLn.Addr()
}

// Router returns the router (nil before start).
func (a *App) Router() *router.Router {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.router
}

// Store returns the tenant store (nil before start).
func (a *App) Store() *tenant.Store {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.store
}

// DeviceRegistry returns the device registry store (nil before start).
func (a *App) DeviceRegistry() *registry.Store {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.devices
}

// Registry returns the metrics registry (nil before start).
func (a *App) Registry() *prometheus.Registry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.registry
}

// Shutdown stops the platform in the documented order (see the package
// comment). It waits for each step; when ctx ends, the remaining
// connections are closed without waiting further, but the router, store and
// engine are still stopped so that the data directory is left consistent.
// It is idempotent and may be called concurrently with Run; during the
// start it cancels the start and waits for it to return (Run then returns
// the start's error), so that nothing started runs on after the data
// directory is released.
func (a *App) Shutdown(ctx context.Context) {
	a.stopOnce.Do(func() {
		defer close(a.stopped)
		a.mu.Lock()
		a.closing = true
		cancelStart, startDone := a.cancelStart, a.startDone
		a.mu.Unlock()
		if startDone != nil {
			select {
			case <-startDone:
			default: // still starting: give it up, and wait for what it started to be in the fields
				cancelStart()
				<-startDone
			}
		}
		a.mu.Lock()
		srv, rt, store, devices, nc, eng, lock := a.adminSrv, a.router, a.store, a.devices, a.sysConn, a.eng, a.lock
		auditLog := a.audit
		if a.pprofSrv != nil {
			_ = a.pprofSrv.Close()
		}
		fronts, obs, silent := a.fronts, a.obs, a.silent
		a.mu.Unlock()
		log := a.log.With("component", "app")
		log.Info("shutting down")
		a.stopFrontEnds(ctx, fronts)
		obs.stop()
		silent.stop() // the front-ends' last sightings written

		// 1 and 2: stop accepting and drain connections.
		if srv != nil {
			if err := srv.Shutdown(ctx); err != nil {
				log.Warn("admin connections did not drain in time; closing them", "err", err)
				_ = srv.Close()
			}
		}
		a.stopBridges() // they use the router (bridges.go)
		// 3: router.
		if rt != nil {
			rt.Close()
		}
		// 4: stores.
		if devices != nil {
			devices.Close()
		}
		if store != nil {
			store.Close()
		}
		if nc != nil {
			nc.Close()
		}
		// 5: engine.
		if eng != nil {
			eng.Shutdown()
		}
		// 6: only now may another node use the data directory.
		lock.unlock()
		if !a.auditGiven {
			_ = auditLog.Close() // writes the last "suppressed" summaries
		}
		log.Info("stopped")
	})
	<-a.stopped
}
