// Package amqp is throng's AMQP 1.0 server (DESIGN.md 4.1): connections,
// SASL, sessions and links over the protocol-neutral router. The type system
// and frame layer live in the leaf packages amqp/encoding and amqp/frames.
//
// Goroutines per connection (STYLE habits 4, 5 and 10):
//
//  1. the reader cuts frames out of the socket and hands them, in batches,
//     to the connection loop over a small channel (back-pressure: the reader
//     stops reading when the loop falls behind);
//  2. the connection loop (conn.run) owns every piece of connection,
//     session and link state in plain fields, without locks. Router
//     callbacks (deliveries, publish outcomes, consumer presence, drain
//     completion) never touch that state: they append an event to the
//     connection's event queue, which the loop drains;
//  3. the writer owns the socket for writing: the loop appends encoded
//     frames to a bounded buffer that the writer swaps out and writes in one
//     call (coalescing), and the writer sends heartbeats.
//
// Memory per connection is bounded by the link credit the server grants
// (incoming), the credit clients grant (outgoing, pulled from the router),
// max-message-size and the writer's buffer limit. See docs/amqp.md.
package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// Tenants is what the server needs from the tenant store: tenant lookup
// (open hostname, SASL) and, optionally, users (SASL EXTERNAL maps a client
// certificate to a stored user). *tenant.Store implements both.
type Tenants interface {
	Tenant(name string) (*tenant.Tenant, bool)
}

// Users is optionally implemented by Tenants.
type Users interface {
	User(tenant, name string) (*tenant.User, bool)
}

// Config configures a Server. Zero values take the defaults below.
type Config struct {
	Router  *router.Router
	Auth    *auth.Authenticator
	Tenants Tenants
	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil: not registered
	// Audit receives logins, refused ones and permission denials (nil:
	// none are recorded).
	Audit *audit.Log
	// Conns is the node's connection registry (observe.go); nil: none.
	Conns *conns.Registry

	// AllowAnonymous allows SASL ANONYMOUS (and connections without SASL)
	// from loopback addresses, to the default tenant.
	AllowAnonymous bool
	// TLSConfig enables TLS inside the AMQP protocol header exchange
	// (protocol id 2) and SASL EXTERNAL for connections whose client
	// certificate was verified. The listener may also be a TLS listener.
	TLSConfig *tls.Config
	// MaxFrameSize is the max-frame-size the server announces (default
	// 65536, at least 4096).
	MaxFrameSize uint32
	// MaxMessageSize bounds a message received on a link (default 64 MiB;
	// a tenant's maxMessageSize limit replaces it for its connections);
	// it is announced as max-message-size on attach, and larger messages
	// detach the link with amqp:link:message-size-exceeded.
	MaxMessageSize uint64
	// ChannelMax is the highest channel number (default 255).
	ChannelMax uint16
	// HandleMax is the highest link handle per session (default 1023).
	HandleMax uint32
	// IdleTimeout is the idle-time-out the server announces (default 60s;
	// negative disables). A peer silent for longer is closed with
	// amqp:resource-limit-exceeded.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds protocol header, SASL and open (default 10s).
	HandshakeTimeout time.Duration
	// ReadTimeout bounds the time a started frame may take to arrive
	// whole after open (default 30s); the idle-time-out counts complete
	// frames only.
	ReadTimeout time.Duration
	// MaxHandshakes bounds the connections between accept and the end of
	// open (default 4096); the listener accepts no more until one
	// finishes.
	MaxHandshakes int
	// HandshakeMemory bounds the bytes buffered by connections in their
	// handshake, all together (default 32 MiB); a connection that would
	// exceed it is closed. Each one's frames are also bounded by
	// MaxFrameSize.
	HandshakeMemory int
	// LinkCredit is the credit granted to each client sender link (default
	// 1000, as ActiveMQ Artemis). Incoming messages whose outcome is
	// pending count against it: with 256 a pipelining sender to a queue
	// waited on its own window (65-77k msg/s against 206k with 1000).
	LinkCredit uint32
	// SessionWindow is the incoming-window of each session in transfer
	// frames (default 2048).
	SessionWindow uint32
	// WriteBuffer bounds the bytes queued for the writer before the
	// connection loop waits for the socket (default 1 MiB).
	WriteBuffer int
	// ContainerID is the server's container-id (default "throng").
	ContainerID string
	// Commands, when set, routes a Hono command for a device that has no
	// command subscription of its own to its gateways
	// (*hono.Service); nil: such commands are released.
	Commands Commands
}

// Commands is what the server needs of the Hono layer for commands
// (hono.Service.ViaGateway).
type Commands interface {
	ViaGateway(ctx context.Context, tenantName, device string, m *message.Message) (router.Outcome, error)
}

func (c *Config) setDefaults() error {
	if c.Router == nil {
		return errors.New("amqp: Config.Router is required")
	}
	if c.Tenants == nil {
		return errors.New("amqp: Config.Tenants is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxFrameSize == 0 {
		c.MaxFrameSize = 65536
	}
	if c.MaxFrameSize < 4096 {
		return errors.New("amqp: MaxFrameSize must be at least 4096")
	}
	if c.MaxMessageSize == 0 {
		c.MaxMessageSize = 64 << 20
	}
	if c.ChannelMax == 0 {
		c.ChannelMax = 255
	}
	if c.HandleMax == 0 {
		c.HandleMax = 1023
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.IdleTimeout < 0 {
		c.IdleTimeout = 0
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 4096
	}
	if c.HandshakeMemory <= 0 {
		c.HandshakeMemory = 32 << 20
	}
	if c.LinkCredit == 0 {
		c.LinkCredit = 1000
	}
	if c.SessionWindow == 0 {
		c.SessionWindow = 2048
	}
	if c.WriteBuffer <= 0 {
		c.WriteBuffer = 1 << 20
	}
	if c.ContainerID == "" {
		c.ContainerID = "throng"
	}
	return nil
}

// Server is an AMQP 1.0 server.
type Server struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu
	conns     map[*conn]struct{}        // guarded by mu
	closing   bool                      // guarded by mu
	wg        sync.WaitGroup            // one per connection goroutine set

	handshakes chan struct{} // a slot per connection in its handshake (Config.MaxHandshakes)
	hsUsed     atomic.Int64  // bytes buffered by those (Config.HandshakeMemory)
	quit       chan struct{} // closed when Shutdown starts
	// authCtx is the parent of authentications' contexts (which may wait
	// for a bcrypt worker or the registry), cancelled when Shutdown starts.
	authCtx    context.Context
	authCancel context.CancelFunc
	// waivers: does a tenant let devices connect without credentials
	// (unauth.go)?
	waivers waivers
}

// New builds a server.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:        cfg,
		log:        cfg.Logger.With("component", "amqp"),
		m:          newMetrics(cfg.Metrics),
		listeners:  map[net.Listener]struct{}{},
		conns:      map[*conn]struct{}{},
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		quit:       make(chan struct{}),
	}
	s.authCtx, s.authCancel = context.WithCancel(context.Background())
	return s, nil
}

// enterHandshake takes a handshake slot, waiting while MaxHandshakes
// connections are in theirs (released by conn.serve); false if the
// server shuts down or done closes first.
func (s *Server) enterHandshake(done <-chan struct{}) bool {
	select {
	case s.handshakes <- struct{}{}:
		return true
	case <-s.quit:
	case <-done:
	}
	return false
}

func (s *Server) leaveHandshake() { <-s.handshakes }

// chargeHandshake takes n bytes of the handshake memory budget (n < 0
// gives them back); false if that would exceed it.
func (s *Server) chargeHandshake(n int) bool {
	if s.hsUsed.Add(int64(n)) > int64(s.cfg.HandshakeMemory) && n > 0 {
		s.hsUsed.Add(-int64(n))
		return false
	}
	return true
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("amqp: server closed")

// Serve accepts connections on ln until Shutdown or an accept error.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		if !s.enterHandshake(nil) {
			return ErrServerClosed
		}
		nc, err := ln.Accept()
		if err != nil {
			s.leaveHandshake()
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.serveConn(nc, nc.RemoteAddr())
	}
}

// ServeWebSocket returns a handler that accepts AMQP over WebSocket
// (binary messages, subprotocol "amqp").
func (s *Server) ServeWebSocket() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		wc, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"amqp"}, InsecureSkipVerify: true})
		if err != nil {
			return
		}
		if wc.Subprotocol() != "amqp" {
			wc.Close(websocket.StatusPolicyViolation, "subprotocol amqp required")
			return
		}
		if !s.enterHandshake(r.Context().Done()) {
			wc.Close(websocket.StatusTryAgainLater, "server shutting down")
			return
		}
		nc := websocket.NetConn(context.Background(), wc, websocket.MessageBinary)
		var remote net.Addr
		if ap, err := netipAddrPort(r.RemoteAddr); err == nil {
			remote = ap
		}
		c := s.serveConn(nc, remote)
		if c != nil {
			<-c.closed // the handler must not return while the connection lives
		}
	})
}

// serveConn serves an accepted connection; the caller holds a handshake
// slot.
func (s *Server) serveConn(nc net.Conn, remote net.Addr) *conn {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.leaveHandshake()
		nc.Close()
		return nil
	}
	c := newConn(s, nc, remote)
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	return c
}

// Shutdown stops accepting, then asks every connection to finish: each
// stops granting credit, waits for the outcomes of messages being
// published, releases unsettled deliveries and closes with
// amqp:connection:forced. Connections still open when ctx ends are cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.quit)
		s.authCancel()
	}
	s.closing = true
	for ln := range s.listeners {
		ln.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.shutdown()
	}
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, c := range conns {
			c.nc.Close()
		}
		<-done
		return ctx.Err()
	}
}

// Connections returns the number of open connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

type metrics struct {
	conns    prometheus.Gauge
	msgsIn   prometheus.Counter
	msgsOut  prometheus.Counter
	errors   *prometheus.CounterVec
	authFail prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "throng_amqp_connections", Help: "Open AMQP connections."}),
		msgsIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throng_amqp_messages_in_total", Help: "Messages received from AMQP clients."}),
		msgsOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throng_amqp_messages_out_total", Help: "Messages sent to AMQP clients."}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_amqp_errors_total", Help: "AMQP errors sent to clients, by scope and condition."},
			[]string{"scope", "condition"}),
		authFail: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throng_amqp_auth_failures_total", Help: "Failed SASL authentications."}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.conns, m.msgsIn, m.msgsOut, m.errors, m.authFail} {
			_ = reg.Register(c)
		}
	}
	return m
}
