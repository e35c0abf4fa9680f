package router

import (
	"fmt"
	"time"

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
