// Package mqtt is throng's MQTT 3.1.1 and 5.0 server. It maps MQTT onto
// the router: topics are address names in the client's tenant, QoS 0 is
// at-most-once (live), QoS 1 and 2 are stored and acknowledged once the
// router has an outcome. Sessions, retained messages and delayed wills
// live in the engine (see docs/mqtt.md).
//
// Goroutines: a reader per connection only while it connects (CONNECT
// and session load); afterwards plain TCP connections on Linux are
// watched by a few epoll loops (one per four cores) and read, a turn at a
// time, by a bounded read pool whose goroutines exist only while there is
// work (evread.go); TLS and WebSocket connections keep their reader
// goroutine. The reader owns protocol decoding and the request/response
// side of the session. A writer exists only while a connection has bytes
// queued, and a session writer (persist.go) only while a persistent
// session has writes pending. Plus the accept loop of each listener and
// two background loops per server (sweeper for delayed wills, expired
// sessions, dead nodes' sessions and wills, and this node's lease
// heartbeat; $SYS statistics).
//
// Lock order: router consumer lock → conn.mu → connExtra.amu → conn.wmu;
// connExtra.svMu is held only to update its own fields, never while
// calling out. Server.mu is never held while taking a conn lock.
package mqtt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// Store is what the server needs from the tenant store.
type Store interface {
	Tenant(name string) (*tenant.Tenant, bool)
	Tenants() []*tenant.Tenant
}

// EnhancedAuth implements MQTT 5 enhanced authentication for one
// method: given the CONNECT's authentication method and data, it returns
// the principal (its Tenant decides the client's tenant) or an error
// (CONNACK 0x86). Single round trip only.
type EnhancedAuth func(ctx context.Context, method string, data []byte, clientID string) (*auth.Principal, error)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	Router  *router.Router
	Auth    *auth.Authenticator
	Store   Store
	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil: not registered

	// AllowAnonymous lets clients without a user name connect to the
	// default tenant, from loopback addresses only.
	AllowAnonymous bool
	// MaxPacketSize bounds packets in both directions (default 1 MiB).
	MaxPacketSize int
	// ReceiveMaximum bounds unacknowledged QoS 1/2 publishes from a client
	// (default 1024).
	ReceiveMaximum uint16
	// TopicAliasMaximum is the number of topic aliases a client may use
	// (default 64).
	TopicAliasMaximum uint16
	// MaxKeepAlive, if set, caps the keep-alive in seconds; MQTT 5 clients
	// asking for more (or none) are told the server keep-alive.
	MaxKeepAlive uint16
	// MaxSessionExpiry caps a session's expiry interval in seconds
	// (default 7 days).
	MaxSessionExpiry uint32
	// ConnectTimeout bounds the wait for CONNECT (default 10s).
	ConnectTimeout time.Duration
	// ReadTimeout bounds the time a started packet may take to arrive
	// whole (default 30s); keep-alive counts complete packets only.
	ReadTimeout time.Duration
	// MaxConnectSize bounds the CONNECT packet, read before the client is
	// authenticated (default 64 KiB; at most MaxPacketSize).
	MaxConnectSize int
	// MaxHandshakes bounds the connections between accept and the end of
	// CONNECT handling (default 4096); the listener accepts no more until
	// one finishes.
	MaxHandshakes int
	// HandshakeMemory bounds the bytes allocated for CONNECT packets of
	// connections in their handshake, all together (default 32 MiB); a
	// connection that would exceed it is closed.
	HandshakeMemory int
	// WriteQueueBytes bounds the bytes queued for a client; QoS 0
	// messages beyond it are dropped and counted (default 1 MiB). A client
	// whose control traffic exceeds four times it is disconnected.
	WriteQueueBytes int
	// SweepInterval is how often delayed wills are checked (default 1s);
	// expired sessions are swept every ten intervals.
	SweepInterval time.Duration
	// SysInterval is how often $SYS topics are published (default 10s;
	// negative disables).
	SysInterval time.Duration
	// EnhancedAuth, if set, handles CONNECTs with an authentication
	// method; without it they are refused with 0x8C.
	EnhancedAuth EnhancedAuth
	// Hono, when set, gives device principals Hono's MQTT adapter topics
	// (hono.go); nil: devices may connect and do nothing else (0x87).
	Hono *hono.Service
	// Audit receives logins, refused CONNECTs and permission denials
	// (nil: none are recorded).
	Audit *audit.Log
	// Conns is the node's connection registry (observe.go); nil: none.
	Conns *conns.Registry
	// NodeLease is how long this node's lease in the engine lasts without
	// a heartbeat (refreshed every third of it; default 15s). Sessions and
	// wills of a node whose lease ran out are taken over by the sweepers
	// of the others.
	NodeLease time.Duration
	// NodeName is the node's lasting name (the cluster's node name, else
	// the host name), which this process holds with its data directory:
	// its node id is NodeName '=' a random part, and a lease of an id
	// with the same name and another random part is a previous process
	// of this node, dead for sure (killed, or it would still hold the
	// data directory). Its sessions are taken over and its clients' wills
	// fire at once instead of after NodeLease. Empty: no such rule (tests
	// with several servers on one engine).
	NodeName string
	// ReadWorkers bounds the goroutines that read event-driven (plain
	// TCP) connections at once (default 256). A worker is held while a
	// packet is handled, including subscribe's engine round trips.
	ReadWorkers int
	// MaxQueuedMessages bounds, per live subscription (clean session, or
	// the live half of a persistent one), the QoS 1/2 messages that went
	// out unstored and wait in the router because the client is behind
	// (default router.DefaultLiveQueue). Their publishers' PUBACKs wait
	// meanwhile (back-pressure); this bound is the escape hatch, as
	// mosquitto's max_queued_messages and EMQX's max_mqueue_len.
	MaxQueuedMessages int
	// QueueOverflow is what happens to a live QoS 1/2 message beyond
	// MaxQueuedMessages (or beyond the 16 MiB such messages may take
	// while waiting in the connection): OverflowDrop (default: dropped,
	// counted as throng_mqtt_messages_dropped_total{reason="queue_full"}
	// or "queue_bytes") or OverflowDisconnect (dropped, counted, and the
	// subscriber disconnected with 0x97, so that it notices).
	QueueOverflow string
}

func (c *Config) setDefaults() error {
	if c.Router == nil || c.Auth == nil || c.Store == nil {
		return errors.New("mqtt: Router, Auth and Store are required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.MaxPacketSize <= 0 {
		c.MaxPacketSize = 1 << 20
	}
	if c.MaxPacketSize > 268435455 {
		c.MaxPacketSize = 268435455
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = 1024
	}
	if c.TopicAliasMaximum == 0 {
		c.TopicAliasMaximum = 64
	}
	if c.MaxSessionExpiry == 0 {
		c.MaxSessionExpiry = 7 * 24 * 3600
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.MaxConnectSize <= 0 {
		c.MaxConnectSize = 64 << 10
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 4096
	}
	if c.HandshakeMemory <= 0 {
		c.HandshakeMemory = 32 << 20
	}
	if c.WriteQueueBytes <= 0 {
		c.WriteQueueBytes = 1 << 20
	}
	if c.SweepInterval <= 0 {
		c.SweepInterval = time.Second
	}
	if c.SysInterval == 0 {
		c.SysInterval = 10 * time.Second
	}
	if c.NodeLease <= 0 {
		c.NodeLease = 15 * time.Second
	}
	if c.ReadWorkers <= 0 {
		c.ReadWorkers = 256
	}
	if c.MaxQueuedMessages <= 0 {
		c.MaxQueuedMessages = router.DefaultLiveQueue
	}
	switch c.QueueOverflow {
	case "":
		c.QueueOverflow = OverflowDrop
	case OverflowDrop, OverflowDisconnect:
	default:
		return fmt.Errorf("mqtt: queue overflow action %q: want %q or %q", c.QueueOverflow, OverflowDrop, OverflowDisconnect)
	}
	return nil
}

// Server is an MQTT server. It serves any number of listeners.
type Server struct {
	anonymous *auth.Principal // the principal of every anonymous connection (read-only)
	cfg       Config
	r         *router.Router
	log       *slog.Logger
	m         *metrics
	started   time.Time
	node      string      // random id of this server in node leases and records
	halted    atomic.Bool // test hook: behave as a dead process (see halt)

	mu        sync.Mutex
	listeners map[net.Listener]struct{} // guarded by mu
	conns     map[*conn]struct{}        // connections not (yet) watched by a poller (poll_linux.go watch); guarded by mu
	clients   map[string]*conn          // tenant\x00client id → connection; guarded by mu
	tenants   map[string]*tenantInfo    // guarded by mu
	closing   bool                      // guarded by mu
	wg        sync.WaitGroup            // connections
	bg        sync.WaitGroup            // background loops
	stop      chan struct{}
	stopOnce  sync.Once

	pollers    []*poller // nil: reader goroutines only
	nextPoller int       // guarded by mu
	pool       *readPool

	handshakes chan struct{} // a slot per connection in its handshake (Config.MaxHandshakes)
	hsBudget   byteBudget    // CONNECT bodies of those (Config.HandshakeMemory)
	quit       chan struct{} // closed when Shutdown starts
	// authCtx is the parent of authentications' contexts (which may wait
	// for a bcrypt worker or the registry), cancelled when Shutdown starts.
	authCtx    context.Context
	authCancel context.CancelFunc
}

// tenantInfo is the server's per-tenant state: statistics and the
// engine state buckets (opened lazily).
type tenantInfo struct {
	connected      atomic.Int64
	received, sent atomic.Uint64
	// Prometheus children resolved once per tenant: WithLabelValues per
	// message was ~4 % of the QoS 0 publish path's CPU.
	mReceived, mSent, mDropSlow, mDropLarge, mDropBytes prometheus.Counter
	mu                                                  sync.Mutex
	sessions, wills, nodes                              *router.State // guarded by mu
	serving                                             bool          // lease written, takeover listener on; guarded by mu
	stopListen                                          func()        // guarded by mu
}

// New returns a server; it starts the background loops (sweeper, $SYS).
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{
		anonymous:  auth.Anonymous(tenant.Default),
		cfg:        cfg,
		r:          cfg.Router,
		log:        cfg.Logger.With("component", "mqtt"),
		m:          newMetrics(cfg.Metrics),
		started:    time.Now(),
		node:       nodeID(cfg.NodeName),
		listeners:  map[net.Listener]struct{}{},
		conns:      map[*conn]struct{}{},
		clients:    map[string]*conn{},
		tenants:    map[string]*tenantInfo{},
		stop:       make(chan struct{}),
		handshakes: make(chan struct{}, cfg.MaxHandshakes),
		quit:       make(chan struct{}),
	}
	s.authCtx, s.authCancel = context.WithCancel(context.Background())
	s.hsBudget.max = int64(cfg.HandshakeMemory)
	s.pool = newReadPool(cfg.ReadWorkers, s.stop, &s.bg)
	ps, err := newPollers(s)
	if err != nil {
		s.log.Warn("epoll unavailable; one reader goroutine per connection", "err", err)
	}
	s.pollers = ps
	s.bg.Add(2)
	go s.sweepLoop()
	go s.heartbeatLoop()
	if cfg.SysInterval > 0 {
		s.bg.Add(1)
		go s.sysLoop()
	}
	return s, nil
}

func (s *Server) tenantInfo(name string) *tenantInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	ti, ok := s.tenants[name]
	if !ok {
		ti = &tenantInfo{
			mReceived:  s.m.received.WithLabelValues(name),
			mSent:      s.m.sent.WithLabelValues(name),
			mDropSlow:  s.m.dropped.WithLabelValues(name, "slow_client"),
			mDropLarge: s.m.dropped.WithLabelValues(name, "too_large"),
			mDropBytes: s.m.dropped.WithLabelValues(name, "queue_bytes"),
		}
		s.tenants[name] = ti
	}
	return ti
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("mqtt: server closed")

// Serve accepts connections on l (plain TCP or TLS; the caller wraps the
// listener) until Shutdown or an accept error that is not temporary.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		if !s.enterHandshake(nil) {
			return ErrServerClosed
		}
		nc, err := l.Accept()
		if err != nil {
			s.leaveHandshake()
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || strings.Contains(err.Error(), "too many open files") {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.startConn(nc, remoteHost(nc.RemoteAddr()))
	}
}

func remoteHost(a net.Addr) net.IP {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.IP
	case nil:
		return nil
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		host = a.String()
	}
	return net.ParseIP(host)
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

// startConn serves an accepted connection; the caller holds a handshake
// slot.
func (s *Server) startConn(nc net.Conn, ip net.IP) bool {
	c := newConn(s, nc, ip)
	c.pr.rc, c.poller = s.pollable(nc)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.leaveHandshake()
		_ = nc.Close()
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		if !c.serve() {
			s.connDone(c)
		}
	}()
	return true
}

// connDone forgets a connection that has finished its teardown.
func (s *Server) connDone(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// ServeWebSocket returns the handler for MQTT over WebSocket (mount it at
// /mqtt); it requires the "mqtt" subprotocol.
func (s *Server) ServeWebSocket() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
			Subprotocols:       []string{"mqtt"},
			InsecureSkipVerify: true, // devices send no Origin; authentication is MQTT's
		})
		if err != nil {
			return
		}
		if ws.Subprotocol() != "mqtt" {
			ws.Close(websocket.StatusPolicyViolation, "subprotocol mqtt required")
			return
		}
		ws.SetReadLimit(int64(s.cfg.MaxPacketSize) + 8)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if !s.enterHandshake(r.Context().Done()) {
			ws.Close(websocket.StatusTryAgainLater, "server shutting down")
			return
		}
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		nc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
		c := newConn(s, nc, net.ParseIP(host))
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			s.leaveHandshake()
			_ = nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		c.serve() // never handed off: no raw connection
		s.connDone(c)
	})
}

// Shutdown stops accepting connections, disconnects every client with
// reason 0x8B (server shutting down) and waits for connections to finish
// their cleanup (consumers closed so unacknowledged messages are released
// for redelivery; sessions and delayed wills stored) or for ctx.
//
// Order: 1. listeners, 2. connections, 3. background loops (sweeper,
// $SYS, epoll loops, idle read-pool workers).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		close(s.quit)
		s.authCancel()
	}
	s.closing = true
	for l := range s.listeners {
		_ = l.Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	// After s.conns: a connection the poller takes meanwhile is in its
	// map by then (watch).
	conns = s.polledConns(conns)
	for _, c := range conns {
		c.kick(rcServerShuttingDown, "server shutting down")
	}
	defer func() {
		s.mu.Lock()
		tis := make([]*tenantInfo, 0, len(s.tenants))
		for _, ti := range s.tenants {
			tis = append(tis, ti)
		}
		s.mu.Unlock()
		for _, ti := range tis {
			ti.mu.Lock()
			if ti.stopListen != nil {
				ti.stopListen()
				ti.stopListen = nil
			}
			ti.mu.Unlock()
		}
	}()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		s.stopOnce.Do(func() { close(s.stop) })
		for _, p := range s.pollers {
			p.wake()
		}
		s.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		for _, c := range s.polledConns(conns) {
			c.closeNet()
		}
		return ctx.Err()
	}
}

// register makes c the connection of its client id and returns the
// connection it takes over, if any.
func (s *Server) register(c *conn) (old *conn, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return nil, reason(rcServerShuttingDown, "server shutting down", nil)
	}
	old = s.clients[c.key]
	s.clients[c.key] = c
	return old, nil
}

func (s *Server) unregister(c *conn) {
	s.mu.Lock()
	if s.clients[c.key] == c {
		delete(s.clients, c.key)
	}
	s.mu.Unlock()
	s.cfg.Auth.Live().Unregister(c, c.principal)
	s.cfg.Conns.Unregister(c.ce.Load())
}

// Clients returns the number of connected clients.
func (s *Server) Clients() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.clients)
}
