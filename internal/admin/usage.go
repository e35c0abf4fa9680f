package admin

import (
	"context"
	"net/http"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// Usage vs limit (docs/security.md "Plans and quotas"): GET
// /api/tenants/{t}?usage=true adds "usage" to the tenant, each figure
// next to its limit (0: unlimited).

// Amount is one used figure and its limit.
type Amount struct {
	Used  float64 `json:"used"`
	Limit float64 `json:"limit"`
}

// Usage is a tenant's use of its limits on this node.
type Usage struct {
	// Connections counts the tenant's connections on this node, every
	// protocol (HTTP: requests in progress), against maxConnections.
	Connections          Amount `json:"connections"`
	Addresses            Amount `json:"addresses"`
	Users                Amount `json:"users"`
	StoredBytes          Amount `json:"storedBytes"`
	MessagesInPerSecond  Amount `json:"messagesInPerSecond"`
	MessagesOutPerSecond Amount `json:"messagesOutPerSecond"`
	// Sessions counts the tenant's persistent MQTT sessions (all nodes).
	Sessions Amount `json:"sessions"`
	// Retained counts the tenant's retained messages (all nodes).
	Retained Amount `json:"retained"`
}

// tenantWithUsage is a tenant with its usage.
type tenantWithUsage struct {
	*tenant.Tenant
	Usage *Usage `json:"usage"`
}

// rater is the router's measured message rates (*router.Router).
type rater interface {
	Rates(tenantName string) router.Rates
}

// connCounter is the router's count of a tenant's connections
// (*router.Router).
type connCounter interface {
	Connections(tenantName string) int64
}

// storeCounter is the bytes a tenant stores (*router.Router).
type storeCounter interface {
	StoredBytes(tenantName string) int64
}

// stateCounter counts a tenant's stored MQTT sessions and retained
// messages (*router.Router).
type stateCounter interface {
	Sessions(ctx context.Context, tenantName string) (int, error)
	RetainedCount(ctx context.Context, tenantName string) (int64, error)
}

func (s *Server) usage(ctx context.Context, t *tenant.Tenant) *Usage {
	l := t.Effective() // own limits over the plan's
	u := &Usage{
		Connections:          Amount{Limit: float64(l.MaxConnections)},
		Addresses:            Amount{Used: float64(len(s.cfg.Store.Addresses(t.Name))), Limit: float64(l.MaxAddresses)},
		Users:                Amount{Used: float64(len(s.cfg.Store.Users(t.Name))), Limit: float64(l.MaxUsers)},
		StoredBytes:          Amount{Limit: float64(l.MaxStoredBytes)},
		MessagesInPerSecond:  Amount{Limit: l.MaxMessagesInPerSecond},
		MessagesOutPerSecond: Amount{Limit: l.MaxMessagesOutPerSecond},
		Sessions:             Amount{Limit: float64(l.MaxSessions)},
		Retained:             Amount{Limit: float64(l.MaxRetained)},
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if sb, ok := s.cfg.Router.(storeCounter); ok {
		// What maxStoredBytes bounds: the tenant's account's bytes.
		u.StoredBytes.Used = float64(sb.StoredBytes(t.Name))
	} else {
		for _, a := range s.cfg.Store.Addresses(t.Name) {
			if a.Type != address.Queue && a.Type != address.Topic {
				continue
			}
			if st, err := s.cfg.Router.AddressStats(ctx, t.Name, a.Name); err == nil {
				u.StoredBytes.Used += float64(st.Bytes)
			}
		}
	}
	if rt, ok := s.cfg.Router.(rater); ok {
		r := rt.Rates(t.Name)
		u.MessagesInPerSecond.Used, u.MessagesOutPerSecond.Used = r.In, r.Out
	}
	if sc, ok := s.cfg.Router.(stateCounter); ok {
		if n, err := sc.Sessions(ctx, t.Name); err == nil {
			u.Sessions.Used = float64(n)
		}
		if n, err := sc.RetainedCount(ctx, t.Name); err == nil {
			u.Retained.Used = float64(n)
		}
	}
	if cc, ok := s.cfg.Router.(connCounter); ok {
		u.Connections.Used = float64(cc.Connections(t.Name))
	}
	return u
}

// tenantBody is GET /api/tenants/{t}'s answer: with "usage" when asked.
func (s *Server) tenantBody(r *http.Request, t *tenant.Tenant) any {
	if r.URL.Query().Get("usage") != "true" {
		return tenantView(t)
	}
	return tenantWithUsage{Tenant: tenantView(t), Usage: s.usage(r.Context(), t)}
}
