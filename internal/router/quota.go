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
func (p *Producer) admit() error {
	if p.exempt {
		return nil
	}
	now := time.Now()
	t, ok := p.r.store.Tenant(p.ts.name)
	if !ok {
		return nil
	}
	rs := rates(t.Effective()) // own limits over the plan's
	if rs.In <= 0 && (rs.InPerConnection <= 0 || p.conn == nil) {
		p.r.meters(p.ts.name).in.Add(now)
		return nil
	}
	err := p.r.quota.Admit(now, p.ts.name, rs, p.conn)
	if err == nil {
		p.r.meters(p.ts.name).in.Add(now)
		return nil
	}
	if qe, ok := err.(*quota.Error); ok {
		p.r.metrics.quotaRefused.WithLabelValues(p.ts.name, string(qe.Limit)).Inc()
	}
	return fmt.Errorf("%w: %w", ErrLimitExceeded, err)
}

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
	limit := 0
	if t, ok := r.store.Tenant(tenantName); ok {
		limit = t.Effective().MaxConnections
	}
	if !r.conns.Acquire(tenantName, limit) {
		r.metrics.quotaRefused.WithLabelValues(tenantName, string(quota.Connections)).Inc()
		return nil, fmt.Errorf("%w: %w", ErrLimitExceeded, &quota.Error{Tenant: tenantName, Limit: quota.Connections, Max: int64(limit)})
	}
	var once sync.Once
	return func() { once.Do(func() { r.conns.Release(tenantName) }) }, nil
}

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
