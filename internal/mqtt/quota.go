package mqtt

import (
	"context"

	"github.com/throngmq/throng/internal/quota"
)

// checkSessions applies the tenant's maxSessions (docs/security.md
// "Plans and quotas") to a connection that asks for a persistent
// session: one the tenant has stored already (resumed, or replaced by a
// clean start) is always allowed; a new one is refused when the tenant
// has maxSessions stored, connected or not, on any node (they are the
// keys of the tenant's sessions bucket). Listing the keys costs a
// request per new persistent session, for tenants with the limit only;
// sessions connecting at the same time may pass the limit by their
// number. An expired session counts until the sweeper removes it.
func (c *conn) checkSessions(ctx context.Context) error {
	t, ok := c.s.cfg.Store.Tenant(c.tenant())
	if !ok {
		return nil
	}
	limit := t.Effective().MaxSessions
	if limit <= 0 {
		return nil
	}
	sessions, _, err := c.s.buckets(ctx, c.tenant(), true)
	if err != nil {
		return err
	}
	keys, err := sessions.Keys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k == c.clientID {
			return nil
		}
	}
	if len(keys) < limit {
		return nil
	}
	return c.s.r.QuotaError(c.tenant(), quota.Sessions, int64(limit))
}
