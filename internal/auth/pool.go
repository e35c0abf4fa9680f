package auth

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/crypto/bcrypt"
)

// pool bounds the bcrypt comparisons running at once. A comparison costs
// tens of milliseconds of one core; 10k devices reconnecting after an
// outage would otherwise start 10k of them together, each connection
// waiting as long as all of them take. With the pool they queue and are
// served about GOMAXPROCS at a time, in arrival order, and the first
// connections are through in milliseconds.
//
// Callers wait in their own goroutine: every front-end authenticates in
// the goroutine of the connection's handshake (which holds one of the
// server's handshake slots), never in a read loop shared with other
// connections, so queueing here delays only connections that are
// authenticating.
//
// Checks of a user or source address with recent failures (suspect, from
// the login backoff) first take a place in a narrower lane: at most half
// the workers (at least one) run them at once, so a password-guessing
// storm, however many users and addresses it spreads over, never holds
// every core; clean logins keep the other workers.
type pool struct {
	slots   chan struct{}
	suspect chan struct{}
	m       *authMetrics
	took    atomic.Int64 // a comparison's usual duration (ns, moving average)
}

func newPool(n int, m *authMetrics) *pool {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	p := &pool{slots: make(chan struct{}, n), suspect: make(chan struct{}, max(1, n/2)), m: m}
	p.took.Store(int64(dummyHashTook))
	return p
}

// acquire takes a place in ch, or fails with ErrUnavailable when ctx
// ends first.
func (p *pool) acquire(ctx context.Context, ch chan struct{}) error {
	p.m.queued.Inc()
	defer p.m.queued.Dec()
	select {
	case ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: waiting for a bcrypt worker: %v", ErrUnavailable, ctx.Err())
	}
}

// compare reports whether password matches the bcrypt hash, after
// waiting for a worker (and, if suspect, for a place in the suspects'
// lane); an error only if ctx ends first (the wait is counted as
// ErrUnavailable: the client may retry).
func (p *pool) compare(ctx context.Context, hash []byte, password string, suspect bool) (bool, error) {
	if suspect {
		if err := p.acquire(ctx, p.suspect); err != nil {
			return false, err
		}
		defer func() { <-p.suspect }()
	}
	if err := p.acquire(ctx, p.slots); err != nil {
		return false, err
	}
	defer func() { <-p.slots }()
	p.m.bcrypts.Inc()
	t0 := time.Now()
	ok := bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
	// A moving average (1/8 of the new duration) of what a comparison
	// takes, for imitate.
	d := int64(time.Since(t0))
	old := p.took.Load()
	p.took.CompareAndSwap(old, old+(d-old)/8)
	return ok, nil
}

// typical is a comparison's usual duration.
func (p *pool) typical() time.Duration { return time.Duration(p.took.Load()) }

// imitate takes about as long as compare, without computing: it queues
// like a comparison (taking and at once giving back its places, so that
// a queue of real comparisons delays it as it would delay one), then
// sleeps a comparison's usual duration, ±5 %. Unknown users and devices
// are answered so: a refusal that would cost a bcrypt of CPU costs a
// timer. The error is compare's.
func (p *pool) imitate(ctx context.Context, suspect bool) error {
	if suspect {
		if err := p.acquire(ctx, p.suspect); err != nil {
			return err
		}
		<-p.suspect
	}
	if err := p.acquire(ctx, p.slots); err != nil {
		return err
	}
	<-p.slots
	p.m.imitated.Inc()
	d := p.typical()
	d += time.Duration(rand.Int64N(int64(d)/10+1)) - d/20
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

// authMetrics are the authenticator's Prometheus metrics. They exist
// (and count) whether or not they are registered.
type authMetrics struct {
	deviceOK   *prometheus.CounterVec // throng_auth_device_successes_total{adapter,method}
	deviceFail *prometheus.CounterVec // throng_auth_device_failures_total{adapter,reason}
	bcrypts    prometheus.Counter     // throng_auth_bcrypt_comparisons_total
	cacheHits  prometheus.Counter     // throng_auth_cache_hits_total
	queued     prometheus.Gauge       // throng_auth_bcrypt_queued
	revoked    *prometheus.CounterVec // throng_auth_revocations_total{cause}
	delayed    prometheus.Counter     // throng_auth_login_delays_total
	imitated   prometheus.Counter     // throng_auth_bcrypt_imitated_total
	knownWrong prometheus.Counter     // throng_auth_known_wrong_total
}

func newAuthMetrics() *authMetrics {
	return &authMetrics{
		deviceOK: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_auth_device_successes_total",
			Help: "Device authentications that succeeded, by protocol adapter (hono-mqtt, hono-amqp; empty when none was named) and method (password, x509-cert).",
		}, []string{"adapter", "method"}),
		deviceFail: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_auth_device_failures_total",
			Help: "Device authentications refused, by protocol adapter and reason: unknown-auth-id, wrong-secret, device-disabled, credential-disabled, credential-expired, tenant-disabled, adapter-disabled, untrusted-certificate, registry-error.",
		}, []string{"adapter", "reason"}),
		bcrypts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throng_auth_bcrypt_comparisons_total",
			Help: "Bcrypt comparisons run (users and devices; a cache hit runs none).",
		}),
		cacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throng_auth_cache_hits_total",
			Help: "Password checks answered from the verification cache.",
		}),
		queued: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "throng_auth_bcrypt_queued",
			Help: "Password checks waiting for a bcrypt worker.",
		}),
		revoked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "throng_auth_revocations_total",
			Help: "Live connections closed because a change took their access away, by cause (user deleted, user changed, tenant deleted, tenant disabled, adapter disabled, device revoked).",
		}, []string{"cause"}),
		delayed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throng_auth_login_delays_total",
			Help: "Refused logins answered after the login backoff's delay (repeated failures of a user or source address).",
		}),
		imitated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throng_auth_bcrypt_imitated_total",
			Help: "Password checks of unknown users or devices answered after a comparison's usual time without computing one.",
		}),
		knownWrong: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "throng_auth_known_wrong_total",
			Help: "Password checks refused without a bcrypt comparison because the same password had failed against the same stored hash before.",
		}),
	}
}

func (m *authMetrics) register(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{m.deviceOK, m.deviceFail, m.bcrypts, m.cacheHits, m.queued, m.revoked, m.delayed, m.imitated, m.knownWrong} {
		_ = reg.Register(c)
	}
}
