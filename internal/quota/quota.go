// Package quota holds throng's message-rate limits: token buckets per
// tenant and per connection (DESIGN.md §6, "Plans and quotas"). It has
// no clock of its own: every call takes the time, so tests drive it
// without sleeping and the router passes its clock.
package quota

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Bucket is a token bucket. The rate and burst are passed on each call,
// so a changed limit applies at the next message. The zero Bucket is
// ready and starts full. Safe for concurrent use.
type Bucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
	init   bool
}

// Take takes one token at now from a bucket refilled at rate tokens per
// second up to burst (burst < 1 means one second's worth, at least one
// token). rate <= 0 is unlimited. When no token is left it takes nothing
// and returns how long until one is there.
func (b *Bucket) Take(now time.Time, rate, burst float64) (ok bool, wait time.Duration) {
	if rate <= 0 {
		return true, 0
	}
	if burst < 1 {
		burst = math.Max(rate, 1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.init {
		b.tokens, b.last, b.init = burst, now, true
	} else if d := now.Sub(b.last); d > 0 {
		b.tokens += d.Seconds() * rate
		b.last = now
	}
	if b.tokens > burst {
		b.tokens = burst // a lowered burst applies at once
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - b.tokens) / rate * float64(time.Second)))
}

// Wait is how long until the bucket has a token at now (0: it has one),
// taking none: a front-end refuses a request before reading its body.
func (b *Bucket) Wait(now time.Time, rate, burst float64) time.Duration {
	if rate <= 0 {
		return 0
	}
	if burst < 1 {
		burst = math.Max(rate, 1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.init {
		return 0 // starts full
	}
	tokens := min(b.tokens+max(now.Sub(b.last).Seconds(), 0)*rate, burst)
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) / rate * float64(time.Second)))
}

// Limit names a refused limit in errors and in the metric
// throng_tenant_quota_refused_total{limit}.
type Limit string

const (
	// MessagesIn is the tenant's maxMessagesInPerSecond.
	MessagesIn Limit = "messagesIn"
	// MessagesInPerConnection is maxMessagesInPerSecondPerConnection.
	MessagesInPerConnection Limit = "messagesInPerConnection"
	// Connections is maxConnections: the tenant's connections on a node,
	// all protocols together (HTTP: requests in progress).
	Connections Limit = "connections"
	// Sessions is maxSessions: the tenant's persistent MQTT sessions.
	Sessions Limit = "sessions"
	// Retained is maxRetained: the tenant's retained messages.
	Retained Limit = "retained"
	// MessagesOut is maxMessagesOutPerSecond (a live at-most-once
	// delivery dropped; the metric's reason "rate_out").
	MessagesOut Limit = "messagesOut"
	// StoredBytes is maxStoredBytes: the bytes the tenant stores.
	StoredBytes Limit = "storedBytes"
)

// Error is a refusal: which limit, and when to retry.
type Error struct {
	Tenant string
	Limit  Limit
	Rate   float64 // messages per second allowed (rate limits)
	// Max is the count allowed (limits on counts: connections, sessions,
	// retained messages, stored bytes).
	Max        int64
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	switch e.Limit {
	case MessagesIn, MessagesInPerConnection:
	default:
		return fmt.Sprintf("tenant %q: %s limit of %d reached", e.Tenant, e.Limit, e.Max)
	}
	what := "the tenant's"
	if e.Limit == MessagesInPerConnection {
		what = "the connection's"
	}
	return fmt.Sprintf("tenant %q: message rate over %s limit of %g/s (retry in %s)", e.Tenant, what, e.Rate, e.RetryAfter.Round(time.Millisecond))
}

// RetryAfterSeconds is RetryAfter rounded up to whole seconds, at least
// one (HTTP Retry-After).
func (e *Error) RetryAfterSeconds() int {
	s := int(math.Ceil(e.RetryAfter.Seconds()))
	if s < 1 {
		s = 1
	}
	return s
}

// Rates are the limits a Limiter applies (from the tenant's plan).
type Rates struct {
	// In and InBurst: the tenant's messages in per second and burst.
	In, InBurst float64
	// InPerConnection: messages in per second per connection (burst one
	// second's worth).
	InPerConnection float64
}

// Limiter owns the per-tenant buckets of one node.
type Limiter struct {
	tenants sync.Map // tenant name → *Bucket (messages in)
	outs    sync.Map // tenant name → *Bucket (deliveries out)
}

// Admit takes a token for one message of tenant from the connection's
// bucket (nil: none) and from the tenant's. The connection's is asked
// first, so that a connection at its own limit does not use up the
// tenant's tokens. A refusal is an *Error.
func (l *Limiter) Admit(now time.Time, tenant string, r Rates, conn *Bucket) error {
	if conn != nil && r.InPerConnection > 0 {
		if ok, wait := conn.Take(now, r.InPerConnection, 0); !ok {
			return &Error{Tenant: tenant, Limit: MessagesInPerConnection, Rate: r.InPerConnection, RetryAfter: wait}
		}
	}
	if r.In > 0 {
		b, ok := l.tenants.Load(tenant)
		if !ok {
			b, _ = l.tenants.LoadOrStore(tenant, new(Bucket))
		}
		if ok, wait := b.(*Bucket).Take(now, r.In, r.InBurst); !ok {
			return &Error{Tenant: tenant, Limit: MessagesIn, Rate: r.In, RetryAfter: wait}
		}
	}
	return nil
}

// Wait reports, as Admit's *Error, that tenant's bucket has no token at
// now, taking none (nil: Admit may pass).
func (l *Limiter) Wait(now time.Time, tenant string, r Rates) error {
	if r.In <= 0 {
		return nil
	}
	b, ok := l.tenants.Load(tenant)
	if !ok {
		return nil
	}
	if wait := b.(*Bucket).Wait(now, r.In, r.InBurst); wait > 0 {
		return &Error{Tenant: tenant, Limit: MessagesIn, Rate: r.In, RetryAfter: wait}
	}
	return nil
}

// TakeOut takes a token for one delivery to tenant's consumers from its
// maxMessagesOutPerSecond bucket (burst one second's worth; rate <= 0:
// unlimited). When none is left it takes nothing and says how long until
// one is there.
func (l *Limiter) TakeOut(now time.Time, tenant string, rate float64) (ok bool, wait time.Duration) {
	if rate <= 0 {
		return true, 0
	}
	b, found := l.outs.Load(tenant)
	if !found {
		b, _ = l.outs.LoadOrStore(tenant, new(Bucket))
	}
	return b.(*Bucket).Take(now, rate, 0)
}

// Forget drops a tenant's buckets (the tenant was deleted).
func (l *Limiter) Forget(tenant string) {
	l.tenants.Delete(tenant)
	l.outs.Delete(tenant)
}
