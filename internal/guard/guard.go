// Package guard admits new connections before any protocol sees them: a
// token bucket of new connections per source address, and caps on the
// connections still in their handshake (accepted, no MQTT CONNECT or AMQP
// open handled yet; for HTTP, no byte received yet), per node and per
// source address. A refused connection is closed at once, with the
// protocol's answer where there is one to give before the client has
// said anything (HTTP 429, the AMQP protocol header), and counted in
// throng_connections_refused_total{protocol,reason}.
//
// It is a net.Listener wrapper (Guard.Listener), so it composes with the
// front-ends' own accept loops and limits: those see only admitted
// connections. One Guard serves every listener of a node, so the caps
// count all protocols together.
//
// A connection stays "in its handshake" until the front-end reports the
// handshake over (HandshakeDone, called where MQTT and AMQP release their
// handshake slot, whatever the outcome) or, for HTTP listeners, until its
// first byte arrives. A connection never reported is forgotten after
// the handshake timeout (plus a second): the front-ends close it by then.
//
// MQTT and AMQP connections are handed on unwrapped (the MQTT front-end
// moves plain TCP sockets to epoll and needs the *net.TCPConn): the guard
// keeps them in a table until HandshakeDone. HTTP connections are
// wrapped to see their first byte.
package guard

import (
	"log/slog"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Config sets the limits. Zero values turn a limit off.
type Config struct {
	// RatePerSource is the new connections a source address may open per
	// second, on all listeners together, and BurstPerSource how many at
	// once after a quiet spell (default: twice the rate, at least 1).
	RatePerSource  float64
	BurstPerSource int
	// MaxHalfOpen bounds the connections in their handshake on the node;
	// MaxHalfOpenPerSource those of one source address.
	MaxHalfOpen          int
	MaxHalfOpenPerSource int
	// Exempt lists source prefixes the per-source limits do not apply to
	// (local tools, a load balancer); the node's cap still does.
	Exempt []netip.Prefix
	// HandshakeTimeout is the front-ends' handshake timeout: a connection
	// not reported done is forgotten a second after it.
	HandshakeTimeout time.Duration
	Metrics          prometheus.Registerer
	Logger           *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Reasons of a refusal, the reason label of
// throng_connections_refused_total.
const (
	ReasonRate              = "rate"                 // the source's connection rate
	ReasonHalfOpen          = "half_open"            // the node's cap on connections in their handshake
	ReasonHalfOpenPerSource = "half_open_per_source" // the source's cap
)

// maxSources bounds the sources tracked; beyond it, new sources share one
// entry (their limits together), so a flood from many (or spoofed)
// addresses stays bounded in memory.
const maxSources = 1 << 16

// sweepEvery is how often expired handshakes and idle sources are
// dropped (in the accept path; no goroutine).
const sweepEvery = time.Second

// Guard holds the counts of one node.
type Guard struct {
	cfg     Config
	refused *prometheus.CounterVec
	log     *slog.Logger

	mu        sync.Mutex
	sources   map[netip.Addr]*source // guarded by mu
	overflow  *source                // shared by sources beyond maxSources; guarded by mu
	pending   map[net.Conn]*pend     // connections in their handshake; guarded by mu
	halfOpen  int                    // len(pending) plus wrapped HTTP conns before their first byte; guarded by mu
	lastSweep time.Time              // guarded by mu
	lastWarn  time.Time              // guarded by mu
}

type source struct {
	tokens   float64
	last     time.Time
	halfOpen int
}

type pend struct {
	src     *source // nil when exempt
	expires time.Time
}

// New returns a guard with cfg's limits.
func New(cfg Config) *Guard {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RatePerSource > 0 && cfg.BurstPerSource <= 0 {
		cfg.BurstPerSource = max(1, int(2*cfg.RatePerSource))
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Guard{
		cfg: cfg,
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_connections_refused_total",
			Help: "New connections refused before their handshake, by protocol (mqtt, amqp, http, admin) and reason (rate: the source's connection rate; half_open: the node's connections in their handshake; half_open_per_source: the source's).",
		}, []string{"protocol", "reason"}),
		log:     cfg.Logger.With("component", "guard"),
		sources: map[netip.Addr]*source{},
		pending: map[net.Conn]*pend{},
	}
	if cfg.Metrics != nil {
		if err := cfg.Metrics.Register(g.refused); err != nil {
			if are, ok := err.(prometheus.AlreadyRegisteredError); ok {
				g.refused = are.ExistingCollector.(*prometheus.CounterVec)
			}
		}
	}
	return g
}

// SetLimits replaces the limits (RatePerSource, BurstPerSource,
// MaxHalfOpen, MaxHalfOpenPerSource, Exempt) of a running guard: the
// next connection is admitted by the new ones (SIGHUP). Sources keep
// their tokens (capped by the new burst) and their connections in their
// handshake; the other fields of cfg are ignored.
func (g *Guard) SetLimits(cfg Config) {
	if cfg.RatePerSource > 0 && cfg.BurstPerSource <= 0 {
		cfg.BurstPerSource = max(1, int(2*cfg.RatePerSource))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cfg.RatePerSource, g.cfg.BurstPerSource = cfg.RatePerSource, cfg.BurstPerSource
	g.cfg.MaxHalfOpen, g.cfg.MaxHalfOpenPerSource = cfg.MaxHalfOpen, cfg.MaxHalfOpenPerSource
	g.cfg.Exempt = cfg.Exempt
	for _, s := range g.sources {
		s.tokens = min(s.tokens, float64(cfg.BurstPerSource))
	}
}

// Limits returns the limits in force.
func (g *Guard) Limits() Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg
}

// Refused returns the refusal counter (tests read it).
func (g *Guard) Refused() *prometheus.CounterVec { return g.refused }

// HalfOpen returns the connections in their handshake now.
func (g *Guard) HalfOpen() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.halfOpen
}

func (g *Guard) exempt(a netip.Addr) bool {
	for _, p := range g.cfg.Exempt {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// admit decides on a new connection from a; on success the connection
// counts as in its handshake (the caller records where). It returns the
// refusal reason ("" admitted), the source entry (nil when exempt) and,
// for a rate refusal, when the source may try again.
func (g *Guard) admit(a netip.Addr) (reason string, src *source, retry time.Duration) {
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.lastSweep) >= sweepEvery {
		g.sweepLocked(now)
	}
	if !g.exempt(a) && (g.cfg.RatePerSource > 0 || g.cfg.MaxHalfOpenPerSource > 0) {
		src = g.sources[a]
		if src == nil {
			if len(g.sources) >= maxSources {
				if g.overflow == nil {
					g.overflow = &source{tokens: float64(g.cfg.BurstPerSource), last: now}
				}
				src = g.overflow
			} else {
				src = &source{tokens: float64(g.cfg.BurstPerSource), last: now}
				g.sources[a] = src
			}
		}
		if r := g.cfg.RatePerSource; r > 0 {
			src.tokens = min(float64(g.cfg.BurstPerSource), src.tokens+now.Sub(src.last).Seconds()*r)
			src.last = now
			if src.tokens < 1 {
				return ReasonRate, nil, time.Duration((1 - src.tokens) / r * float64(time.Second))
			}
		}
		if m := g.cfg.MaxHalfOpenPerSource; m > 0 && src.halfOpen >= m {
			return ReasonHalfOpenPerSource, nil, 0
		}
	}
	if m := g.cfg.MaxHalfOpen; m > 0 && g.halfOpen >= m {
		return ReasonHalfOpen, nil, 0
	}
	if src != nil {
		if g.cfg.RatePerSource > 0 {
			src.tokens--
		}
		src.halfOpen++
	}
	g.halfOpen++
	return "", src, 0
}

// track records an admitted MQTT or AMQP connection until HandshakeDone.
func (g *Guard) track(c net.Conn, src *source) {
	g.mu.Lock()
	g.pending[c] = &pend{src: src, expires: g.cfg.Now().Add(g.cfg.HandshakeTimeout + time.Second)}
	g.mu.Unlock()
	tracked.Store(c, g)
}

// release ends the handshake of an admitted connection.
func (g *Guard) release(src *source) {
	g.mu.Lock()
	g.releaseLocked(src)
	g.mu.Unlock()
}

func (g *Guard) releaseLocked(src *source) {
	g.halfOpen--
	if src != nil {
		src.halfOpen--
	}
}

// done ends the handshake of a tracked connection (HandshakeDone).
func (g *Guard) done(c net.Conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.pending[c]; ok {
		delete(g.pending, c)
		g.releaseLocked(p.src)
	}
}

// sweepLocked forgets handshakes past their time and sources with
// nothing to remember (a full bucket, no handshake).
func (g *Guard) sweepLocked(now time.Time) {
	g.lastSweep = now
	for c, p := range g.pending {
		if now.After(p.expires) {
			delete(g.pending, c)
			tracked.Delete(c)
			g.releaseLocked(p.src)
		}
	}
	full := float64(g.cfg.BurstPerSource)
	for a, s := range g.sources {
		if s.halfOpen == 0 && (g.cfg.RatePerSource <= 0 || s.tokens+now.Sub(s.last).Seconds()*g.cfg.RatePerSource >= full) {
			delete(g.sources, a)
		}
	}
}

// tracked maps each MQTT or AMQP connection in its handshake to its
// guard, for HandshakeDone (called by front-ends that do not know the
// guard).
var tracked sync.Map // net.Conn → *Guard

// HandshakeDone reports that nc's handshake is over, successful or not
// (a *tls.Conn is unwrapped to the connection the listener accepted). It
// does nothing for connections no guard admitted.
func HandshakeDone(nc any) {
	for {
		if nc == nil || !reflect.TypeOf(nc).Comparable() {
			return // not a map key (and so not one the guard tracks)
		}
		if g, ok := tracked.LoadAndDelete(nc); ok {
			g.(*Guard).done(nc.(net.Conn))
			return
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return
		}
		nc = u.NetConn()
	}
}

// sourceOf returns the remote address's IP (unmapped), or the zero Addr.
func sourceOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	if ap, err := netip.ParseAddrPort(a.String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}
