package auth

import (
	"context"
	"fmt"
	"runtime"

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
type pool struct {
	slots chan struct{}
	m     *authMetrics
}

func newPool(n int, m *authMetrics) *pool {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return &pool{slots: make(chan struct{}, n), m: m}
}

// compare reports whether password matches the bcrypt hash, after
// waiting for a worker; an error only if ctx ends first (the wait is
// counted as ErrUnavailable: the client may retry).
func (p *pool) compare(ctx context.Context, hash []byte, password string) (bool, error) {
	p.m.queued.Inc()
	select {
	case p.slots <- struct{}{}:
		p.m.queued.Dec()
	case <-ctx.Done():
		p.m.queued.Dec()
		return false, fmt.Errorf("%w: waiting for a bcrypt worker: %v", ErrUnavailable, ctx.Err())
	}
	defer func() { <-p.slots }()
	p.m.bcrypts.Inc()
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil, nil
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
	}
}

func (m *authMetrics) register(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range []prometheus.Collector{m.deviceOK, m.deviceFail, m.bcrypts, m.cacheHits, m.queued, m.revoked, m.delayed} {
		_ = reg.Register(c)
	}
}
