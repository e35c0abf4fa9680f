// Package httpapi serves the HTTP listener (DESIGN.md §4.3): Eclipse
// Hono's HTTP adapter for devices (docs/hono.md, "HTTP adapter"):
// telemetry and events in, commands out in the response of a request
// that waits for one (hono-ttd), command responses in. The Hono mapping
// itself (gateways, properties, request ids) is package hono's, as for
// MQTT devices; this package turns HTTP requests into its calls and its
// errors into Hono's status codes.
//
// Under /api/v1/ the same listener serves the plain REST messaging API of
// DESIGN.md §4.3 for applications (messaging*.go, docs/http-messaging.md):
// publish to an address, receive and lock from queues, stream topics.
package httpapi

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = http.ErrServerClosed

// Router is what the adapter needs from the router (*router.Router).
type Router interface {
	Producer(ctx context.Context, tenantName, name string) (*router.Producer, error)
	Consume(ctx context.Context, tenantName, name string, opts router.ConsumeOptions, deliver func(*router.Delivery)) (*router.Consumer, error)
}

// connCounter is optionally implemented by Router (*router.Router): a
// request counts as one of its tenant's connections while it is served
// (maxConnections, docs/security.md "Plans and quotas").
type connCounter interface {
	OpenConn(tenantName string) (release func(), err error)
}

// openConn counts a request of tenantName against its maxConnections
// once it is authenticated; release when the answer is written.
func (s *Server) openConn(tenantName string) (release func(), err error) {
	if cc, ok := s.cfg.Router.(connCounter); ok {
		return cc.OpenConn(tenantName)
	}
	return func() {}, nil
}

// Tenants is what the adapter needs from the tenant store (*tenant.Store).
type Tenants interface {
	Tenant(name string) (*tenant.Tenant, bool)
}

// Devices is what the adapter needs from the device registry
// (*registry.Store): unauthenticated devices are looked up by id.
type Devices interface {
	Device(ctx context.Context, tenantName, id string) (*registry.Device, string, error)
}

// Config configures the server. Router, Auth, Hono and Tenants are
// required.
type Config struct {
	Router  Router
	Auth    *auth.Authenticator
	Hono    *hono.Service
	Tenants Tenants
	Devices Devices // nil: unauthenticated devices are refused
	Logger  *slog.Logger
	Metrics prometheus.Registerer

	// MaxMessageSize bounds a request body unless the tenant sets its
	// own maxMessageSize (default 64 MiB).
	MaxMessageSize int64
	// ReadHeaderTimeout bounds the request line and headers (default
	// 10 s); ReadTimeout the body (default 30 s); IdleTimeout a kept-alive
	// connection between requests (default 90 s).
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration
	// MaxTTD caps hono-ttd unless the tenant's hono-http adapter sets
	// "max-ttd" in its ext (Hono's default: 60 s).
	MaxTTD time.Duration
	// AuthCacheTTL is how long a connection reuses the principal its
	// last Authorization header authenticated (default 10 s; negative:
	// never). A kept-alive device then costs one registry lookup per
	// period, not per request. A change of the device, its credentials or
	// its tenant ends the reuse at once when Tenants and Devices report
	// their changes (*tenant.Store, *registry.Store: authcache.go).
	AuthCacheTTL time.Duration
	// Audit receives devices' logins (each authentication, not each
	// request of the cache period) and refusals (nil: none are recorded).
	Audit *audit.Log
}

// Server is Hono's HTTP adapter.
type Server struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	srv *http.Server

	pmu       sync.Mutex
	producers map[string]cachedProducer // tenant \x00 address; guarded by pmu

	closing   chan struct{} // closed by Shutdown: long polls answer at once
	closeOnce sync.Once

	msg *messaging // the messaging API's receivers and locks (messaging_pool.go)

	changes changes // what invalidates connections' cached principals (authcache.go)
}

type cachedProducer struct {
	p  *router.Producer
	at time.Time
}

// New validates cfg, fills its defaults and returns the server.
func New(cfg Config) (*Server, error) {
	if cfg.Router == nil || cfg.Auth == nil || cfg.Hono == nil || cfg.Tenants == nil {
		return nil, errors.New("httpapi: Router, Auth, Hono and Tenants are required")
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 64 << 20
	}
	if cfg.ReadHeaderTimeout <= 0 {
		cfg.ReadHeaderTimeout = 10 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 30 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 90 * time.Second
	}
	if cfg.MaxTTD <= 0 {
		cfg.MaxTTD = 60 * time.Second
	}
	if cfg.AuthCacheTTL == 0 {
		cfg.AuthCacheTTL = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("component", "http"), m: newMetrics(cfg.Metrics),
		producers: map[string]cachedProducer{}, closing: make(chan struct{})}
	s.msg = newMessaging(s, cfg.Metrics)
	s.changes.watch(cfg.Tenants, cfg.Devices)
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.route), // /api/: messaging.go; else Hono's adapter
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		// The body's deadline is set per request (ReadTimeout), and the
		// write deadline covers the request's hono-ttd: no fixed server
		// ReadTimeout/WriteTimeout, which would cut long polls.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, &connState{})
		},
		ErrorLog: slog.NewLogLogger(cfg.Logger.With("component", "http").Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Serve accepts connections on ln (wrapped in TLS by the caller for the
// TLS listener) until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	return s.srv.Serve(ln)
}

// Shutdown stops accepting, ends the waits of long polls (hono-ttd: they
// are answered 202 at once, as if the ttd had passed), lets requests in
// progress finish until ctx ends, then closes what is left.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() { close(s.closing) })
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	return err
}

// connKey keys a connection's *connState in request contexts.
type connKey struct{}

// connState is what a kept-alive connection remembers between requests:
// the principal of its last Authorization header or client certificate.
// Requests on one connection are sequential (HTTP/1.1), but the state is
// locked anyway: nothing forbids a handler goroutine outliving its turn.
type connState struct {
	mu        sync.Mutex
	authz     string // the Authorization header that authenticated p
	p         *auth.Principal
	at        time.Time
	stamp     stamp           // p is reused only while it is current
	certP     *auth.Principal // the client certificate's device
	certErr   error           // or why it was refused
	certAt    time.Time
	certStamp stamp
}

// producer returns a cached producer for telemetry/T and event/T (a
// bounded set); others are resolved each time. Cached ones are resolved
// again after a minute, so a deleted and re-created tenant is seen.
func (s *Server) producer(ctx context.Context, tenantName, addr string, cache bool) (*router.Producer, error) {
	if !cache {
		return s.cfg.Router.Producer(ctx, tenantName, addr)
	}
	key := tenantName + "\x00" + addr
	now := time.Now()
	s.pmu.Lock()
	cp, ok := s.producers[key]
	s.pmu.Unlock()
	if ok && now.Sub(cp.at) < time.Minute {
		return cp.p, nil
	}
	p, err := s.cfg.Router.Producer(ctx, tenantName, addr)
	if err != nil {
		return nil, err
	}
	s.pmu.Lock()
	if len(s.producers) >= 4096 {
		s.producers = map[string]cachedProducer{}
	}
	s.producers[key] = cachedProducer{p: p, at: now}
	s.pmu.Unlock()
	return p, nil
}

// publish sends m and, unless wait is false, waits for its outcome.
func (s *Server) publish(ctx context.Context, tenantName, addr string, m *message.Message, wait, cache bool) error {
	p, err := s.producer(ctx, tenantName, addr, cache)
	if err != nil {
		return err
	}
	if !wait {
		p.Publish(m, func(router.Outcome, error) {})
		return nil
	}
	o, err := p.PublishSync(ctx, m)
	if err != nil {
		return err
	}
	if o.Kind != router.Accepted {
		return &outcomeError{o}
	}
	return nil
}

// outcomeError is a consumer's settlement other than accepted.
type outcomeError struct{ o router.Outcome }

func (e *outcomeError) Error() string {
	s := "message " + e.o.Kind.String() + " by the consumer"
	if e.o.Description != "" {
		s += ": " + e.o.Description
	}
	return s
}

// tlsState returns the request's TLS state, nil over plain TCP.
func tlsState(r *http.Request) *tls.ConnectionState { return r.TLS }

// auditAuth records a device's login (p) or a refused request (err) in
// the audit log: 401 and 403 answers to credentials, a certificate or an
// unauthenticated device that the adapter refused.
func (s *Server) auditAuth(r *http.Request, p *auth.Principal, err error) {
	if s.cfg.Audit == nil {
		return
	}
	e := audit.Event{Kind: audit.Login, Protocol: audit.HTTP, Remote: r.RemoteAddr}
	if p != nil {
		e.Tenant, e.User, e.Device, e.Mechanism = p.Tenant, p.User+p.AuthID, p.Device, p.AuthType
	}
	if err != nil {
		e.Kind, e.Reason, e.Detail = audit.LoginFailed, "bad_credentials", err.Error()
		switch statusOf(err) {
		case http.StatusForbidden:
			e.Reason = "not_authorized"
		case http.StatusServiceUnavailable:
			e.Reason = "unavailable"
		}
		if name, _, ok := r.BasicAuth(); ok {
			e.User = name
		}
	}
	s.cfg.Audit.Record(e)
}
