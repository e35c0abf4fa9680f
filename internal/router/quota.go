package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/quota"
	"github.com/throngmq/throng/internal/tenant"
)

// Message rate limits (DESIGN.md §6, docs/security.md "Plans and
// quotas"): every message a client publishes through a Producer takes a
// token from its tenant's bucket (maxMessagesInPerSecond, burst) and,
// when the front-end gave the producer its connection's bucket
// (SetConn), from that (maxMessagesInPerSecondPerConnection). A refused
// message is never routed: the error wraps ErrLimitExceeded and a
// *quota.Error (which limit, when to retry), so each front-end answers
// its protocol's quota error. Messages the platform makes itself
// (Router.Publish: wills, Hono events; dead-lettering) are exempt.

// SetConn gives the producer its connection's rate bucket. Call it once,
// before the first Publish; a producer shared by connections has none.
func (p *Producer) SetConn(b *quota.Bucket) { p.conn = b }

// rates are a tenant's rate limits.
func rates(l tenant.Limits) quota.Rates {
	return quota.Rates{In: l.MaxMessagesInPerSecond, InBurst: float64(l.Burst), InPerConnection: l.MaxMessagesInPerSecondPerConnection}
}

// admit takes the message's tokens; a refusal is counted in
// throng_tenant_quota_refused_total.
func (p *Producer) admit(l *tenant.Limits) error {
	if p.exempt || l == nil {
		return nil
	}
	// l: the tenant's own limits over its plan's (EffectiveLimits).
	if l.MaxMessagesInPerSecond <= 0 && (l.MaxMessagesInPerSecondPerConnection <= 0 || p.conn == nil) {
		p.meters.in.Inc() // no clock read without a limit
		return nil
	}
	now := time.Now()
	err := p.r.quota.Admit(now, p.ts.name, rates(*l), p.conn)
	if err == nil {
		p.meters.in.Add(now)
		return nil
	}
	if qe, ok := err.(*quota.Error); ok {
		p.r.metrics.quotaRefused.WithLabelValues(p.ts.name, string(qe.Limit)).Inc()
	}
	return &limitError{err}
}

// CheckRate refuses as admit would when the tenant's message rate has
// no token now, taking none: the HTTP front-end asks before it reads a
// request's body (a refused publish costs no upload). A refusal wraps
// ErrLimitExceeded and a *quota.Error and is counted.
func (r *Router) CheckRate(tenantName string) error {
	t, ok := r.store.Tenant(tenantName)
	if !ok {
		return nil
	}
	l := t.EffectiveLimits()
	if l.MaxMessagesInPerSecond <= 0 {
		return nil
	}
	err := r.quota.Wait(time.Now(), tenantName, rates(*l))
	if err == nil {
		return nil
	}
	r.metrics.quotaRefused.WithLabelValues(tenantName, string(quota.MessagesIn)).Inc()
	return &limitError{err}
}

// limitError is ErrLimitExceeded with the quota's refusal, whose text is
// made only when asked for (an MQTT 5 reason string, a log line). A
// tenant flooding QoS 0 over its rate is refused by the hundred thousand
// a second and nobody reads those errors; formatting each one (with
// fmt.Errorf and quota.Error's Sprintf) took half the node's CPU
// (docs/benchmarks.md, "Tenant isolation").
type limitError struct{ err error }

func (e *limitError) Error() string   { return ErrLimitExceeded.Error() + ": " + e.err.Error() }
func (e *limitError) Unwrap() []error { return []error{ErrLimitExceeded, e.err} }

// tenantMeters measure a tenant's message rates on this node, for the
// admin API's usage (Router.Usage).
type tenantMeters struct{ in, out quota.Meter }

func (r *Router) meters(tenantName string) *tenantMeters {
	if m, ok := r.rates.Load(tenantName); ok {
		return m.(*tenantMeters)
	}
	m, _ := r.rates.LoadOrStore(tenantName, new(tenantMeters))
	return m.(*tenantMeters)
}

// Rates are a tenant's message rates on this node: messages admitted
// from its clients and deliveries to its consumers in the last whole
// second.
type Rates struct {
	In  float64 `json:"in"`
	Out float64 `json:"out"`
}

// Rates measures a tenant's current message rates on this node.
func (r *Router) Rates(tenantName string) Rates {
	m := r.meters(tenantName)
	now := time.Now()
	return Rates{In: m.in.Rate(now), Out: m.out.Rate(now)}
}

// OpenConn counts a connection of the tenant against its maxConnections
// on this node, whatever its protocol: the front-ends call it once the
// connection's tenant is known (AMQP open, MQTT CONNECT, an HTTP request
// once authenticated) and call release when it ends (release may be
// called more than once). Over the limit the error wraps
// ErrLimitExceeded and a *quota.Error with Limit quota.Connections, and
// the refusal is counted in throng_tenant_quota_refused_total.
func (r *Router) OpenConn(tenantName string) (release func(), err error) {
	if err := r.AcquireConn(tenantName); err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(func() { r.ReleaseConn(tenantName) }) }, nil
}

// AcquireConn is OpenConn for a front-end that calls ReleaseConn exactly
// once itself when the connection ends: no closure is kept per
// connection (MQTT keeps an idle connection small; docs/mqtt.md).
func (r *Router) AcquireConn(tenantName string) error {
	limit := 0
	if t, ok := r.store.Tenant(tenantName); ok {
		limit = t.Effective().MaxConnections
	}
	if !r.conns.Acquire(tenantName, limit) {
		r.metrics.quotaRefused.WithLabelValues(tenantName, string(quota.Connections)).Inc()
		return fmt.Errorf("%w: %w", ErrLimitExceeded, &quota.Error{Tenant: tenantName, Limit: quota.Connections, Max: int64(limit)})
	}
	return nil
}

// ReleaseConn uncounts a connection that AcquireConn counted.
func (r *Router) ReleaseConn(tenantName string) { r.conns.Release(tenantName) }

// Connections is the number of the tenant's connections on this node
// counted by OpenConn.
func (r *Router) Connections(tenantName string) int64 { return r.conns.Count(tenantName) }

// QuotaError is the error of a limit on a count that a front-end checks
// itself (MQTT sessions): it wraps ErrLimitExceeded and a *quota.Error,
// and the refusal is counted in throng_tenant_quota_refused_total.
func (r *Router) QuotaError(tenantName string, l quota.Limit, max int64) error {
	r.metrics.quotaRefused.WithLabelValues(tenantName, string(l)).Inc()
	return fmt.Errorf("%w: %w", ErrLimitExceeded, &quota.Error{Tenant: tenantName, Limit: l, Max: max})
}

// SessionsBucket is the state bucket (StateBucket) of the MQTT front-end's
// persistent sessions, one key per session: the admin API's usage counts
// its keys.
const SessionsBucket = "mqtt_sessions"

// Sessions counts the tenant's persistent MQTT sessions (the keys of
// SessionsBucket; 0 when it does not exist).
func (r *Router) Sessions(ctx context.Context, tenantName string) (int, error) {
	st, err := r.StateBucket(ctx, tenantName, SessionsBucket, false)
	if errors.Is(err, ErrNoState) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	keys, err := st.Keys(ctx)
	return len(keys), err
}

// checkRetained refuses a retained message that would add one beyond
// the tenant's maxRetained; one that replaces a retained message (its
// subject holds one) is not counted, nor are the server's own "$SYS/…"
// ones (the MQTT front-end's statistics). It costs two stream info
// requests, for tenants with the limit only. Two publishes racing for the
// last place may both get it: the limit can be passed by the publishes in
// flight.
func (r *Router) checkRetained(ctx context.Context, ts *tenantState, subj string) error {
	t, ok := r.store.Tenant(ts.name)
	if !ok {
		return nil
	}
	limit := t.Effective().MaxRetained
	if limit <= 0 || strings.HasPrefix(subj, retainedSys+".") {
		return nil
	}
	s, err := ts.js.Stream(ctx, retainedStream)
	if err != nil {
		return fmt.Errorf("router: retained stream: %w", err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(subj))
	if err != nil {
		return fmt.Errorf("router: retained stream: %w", err)
	}
	if _, ok := info.State.Subjects[subj]; ok || info.State.Msgs < uint64(limit) {
		return nil
	}
	n, err := tenantRetained(ctx, s, info.State.Msgs)
	if err != nil {
		return fmt.Errorf("router: retained stream: %w", err)
	}
	if n < uint64(limit) {
		return nil
	}
	return r.QuotaError(ts.name, quota.Retained, int64(limit))
}

// retainedSys is the subject prefix of the "$SYS/…" retained messages.
var retainedSys = address.Subject("r", "$SYS")

// tenantRetained is the number of the tenant's retained messages: the
// stream's total less the "$SYS/…" ones.
func tenantRetained(ctx context.Context, s jetstream.Stream, total uint64) (uint64, error) {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(retainedSys+".>"))
	if err != nil {
		return 0, err
	}
	var sys uint64
	for _, n := range info.State.Subjects {
		sys += n
	}
	return total - min(sys, total), nil
}

// RetainedCount is the number of the tenant's retained messages.
func (r *Router) RetainedCount(ctx context.Context, tenantName string) (int64, error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return 0, err
	}
	s, err := ts.js.Stream(ctx, retainedStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := tenantRetained(ctx, s, s.CachedInfo().State.Msgs)
	return int64(n), err
}

// Stored bytes (maxStoredBytes). Two bounds:
//
//   - the router refuses a stored message (publishStored, the queue
//     batcher, Retain) once the tenant's account stores maxStoredBytes
//     (checkStored): the account's figure is read from the engine at most
//     once a second while it is far from the limit, and at every message
//     near it. Progress records and dead-letter bookkeeping are not
//     checked (only the second bound applies to them);
//   - the engine refuses any write beyond maxStoredBytes plus a reserve
//     (storeReserve): the account's JetStream MaxStore (engine/limits.go),
//     set when the router first uses the account on this node and
//     whenever the tenant's effective limits change (its own, or its
//     plan's: the store's watch, on every node). It catches messages
//     racing past the first bound, and the reserve keeps room for the
//     front-ends' state in the same account (MQTT node leases, sessions,
//     wills), which must still be written when the tenant's messages fill
//     its quota.
//
// storeError turns the engine's refusal into the same quota error.

// storeReserve is the room above maxStoredBytes left for the front-ends'
// state: a tenth of the limit, at least 1 MiB.
func storeReserve(limit int64) int64 { return max(limit/10, 1<<20) }

// applyStoreLimit sets the tenant's account MaxStore on this node. An
// account not used here yet gets it when it is (Router.tenant).
func (r *Router) applyStoreLimit(tenantName string) {
	t, ok := r.store.Tenant(tenantName)
	if !ok {
		return
	}
	hard := t.Effective().MaxStoredBytes
	if hard > 0 {
		hard += storeReserve(hard)
	}
	if err := r.eng.SetStoreLimit(engine.AccountFor(tenantName), hard); err != nil {
		r.log.Debug("store limit not applied", "tenant", tenantName, "err", err)
	}
	r.stored.Delete(tenantName) // read the figure again at the next message
}

func (r *Router) tenantLimitsChanged(tenantName string) {
	r.mu.Lock()
	_, used := r.tenants[tenantName]
	r.mu.Unlock()
	if used {
		r.applyStoreLimit(tenantName)
	}
}

// storeGauge is the router's view of a tenant's stored bytes: the
// engine's figure when it was read, plus what was stored since.
type storeGauge struct {
	mu    sync.Mutex
	at    time.Time // when used was read; zero: never
	used  int64
	since int64 // bytes of the messages admitted since
}

// checkStored admits a stored message of about n bytes, or refuses it
// with the tenant's maxStoredBytes quota error.
func (ts *tenantState) checkStored(n int) error {
	t, ok := ts.store.Tenant(ts.name)
	if !ok {
		return nil
	}
	limit := t.Effective().MaxStoredBytes
	if limit <= 0 {
		return nil
	}
	r := ts.r
	v, ok := r.stored.Load(ts.name)
	if !ok {
		v, _ = r.stored.LoadOrStore(ts.name, new(storeGauge))
	}
	g := v.(*storeGauge)
	now := time.Now()
	g.mu.Lock()
	if now.Sub(g.at) > time.Second || g.used+g.since+int64(n) > limit {
		g.used, g.since, g.at = r.StoredBytes(ts.name), 0, now
	}
	over := g.used+int64(n) > limit
	if !over {
		g.since += int64(n)
	}
	g.mu.Unlock()
	if !over {
		return nil
	}
	r.metrics.quotaRefused.WithLabelValues(ts.name, string(quota.StoredBytes)).Inc()
	return fmt.Errorf("%w: %w", ErrLimitExceeded, &quota.Error{Tenant: ts.name, Limit: quota.StoredBytes, Max: limit})
}

// storeError maps a stored message's engine error: the account's limit
// is the tenant's maxStoredBytes (counted in
// throng_tenant_quota_refused_total{limit="storedBytes"}); others as
// mapStoreError.
func (ts *tenantState) storeError(code int, desc string) error {
	if code != engine.ErrAccountLimit {
		return mapStoreError(code, desc)
	}
	var limit int64
	if t, ok := ts.store.Tenant(ts.name); ok {
		limit = t.Effective().MaxStoredBytes
	}
	ts.r.metrics.quotaRefused.WithLabelValues(ts.name, string(quota.StoredBytes)).Inc()
	return fmt.Errorf("%w: %w", ErrLimitExceeded, &quota.Error{Tenant: ts.name, Limit: quota.StoredBytes, Max: limit})
}

// StoredBytes is what the tenant's account stores on this node: its
// messages and the front-ends' state, the figure maxStoredBytes bounds.
func (r *Router) StoredBytes(tenantName string) int64 {
	return r.eng.StoreUsed(engine.AccountFor(tenantName))
}

// Message rate out (maxMessagesOutPerSecond): every delivery to the
// tenant's consumers takes a token from its out bucket (burst one
// second's worth). Stored deliveries are slowed down, never dropped: a
// feed whose tenant has no token left keeps its ready messages, in
// order, and runs again when the bucket has one (feed.pauseOutLocked).
// Live at-most-once deliveries (multicast, non-durable topic-space
// messages: MQTT QoS 0) beyond it are dropped and counted in
// throng_router_messages_dropped_total{reason="rate_out"}. Live durable
// topic-space deliveries (MQTT QoS 1/2 to connected subscribers without
// a stored subscription) and anycast are not limited: their publishers
// wait for them, so slowing them would slow the publishers down
// (docs/security.md).

// outRate is the tenant's maxMessagesOutPerSecond (0: unlimited).
func (r *Router) outRate(tenantName string) float64 {
	if t, ok := r.store.Tenant(tenantName); ok {
		return t.Effective().MaxMessagesOutPerSecond
	}
	return 0
}

// admitLiveOut takes a token for a live at-most-once delivery; rate is
// the tenant's limit (outRate), -1 to read it here.
func (r *Router) admitLiveOut(tenantName string, rate float64) bool {
	if rate < 0 {
		rate = r.outRate(tenantName)
	}
	if rate <= 0 {
		return true
	}
	ok, _ := r.quota.TakeOut(time.Now(), tenantName, rate)
	return ok
}

// takeOutLocked takes a token for a stored delivery of the feed (rate >
// 0); without one it arms the feed's pause and reports false. f.mu held.
func (f *feed) takeOutLocked(now time.Time, rate float64) bool {
	ok, wait := f.r.quota.TakeOut(now, f.ts.name, rate)
	if ok {
		return true
	}
	if !f.outPaused {
		f.outPaused = true
		time.AfterFunc(wait, func() {
			f.mu.Lock()
			f.outPaused = false
			f.mu.Unlock()
			f.run()
		})
	}
	return false
}
