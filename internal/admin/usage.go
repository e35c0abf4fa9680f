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
	// MQTTConnections counts the tenant's MQTT connections on this node
	// (maxConnections applies to MQTT).
	MQTTConnections      Amount `json:"mqttConnections"`
	Addresses            Amount `json:"addresses"`
	Users                Amount `json:"users"`
	StoredBytes          Amount `json:"storedBytes"`
	MessagesInPerSecond  Amount `json:"messagesInPerSecond"`
	MessagesOutPerSecond Amount `json:"messagesOutPerSecond"`
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

func (s *Server) usage(ctx context.Context, t *tenant.Tenant) *Usage {
	l := t.Effective() // own limits over the plan's
	u := &Usage{
		MQTTConnections:      Amount{Limit: float64(l.MaxConnections)},
		Addresses:            Amount{Used: float64(len(s.cfg.Store.Addresses(t.Name))), Limit: float64(l.MaxAddresses)},
		Users:                Amount{Used: float64(len(s.cfg.Store.Users(t.Name))), Limit: float64(l.MaxUsers)},
		StoredBytes:          Amount{Limit: float64(l.MaxStoredBytes)},
		MessagesInPerSecond:  Amount{Limit: l.MaxMessagesInPerSecond},
		MessagesOutPerSecond: Amount{},
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, a := range s.cfg.Store.Addresses(t.Name) {
		if a.Type != address.Queue && a.Type != address.Topic {
			continue
		}
		if st, err := s.cfg.Router.AddressStats(ctx, t.Name, a.Name); err == nil {
			u.StoredBytes.Used += float64(st.Bytes)
		}
	}
	if rt, ok := s.cfg.Router.(rater); ok {
		r := rt.Rates(t.Name)
		u.MessagesInPerSecond.Used, u.MessagesOutPerSecond.Used = r.In, r.Out
	}
	if s.cfg.Gatherer != nil {
		if mfs, err := s.cfg.Gatherer.Gather(); err == nil {
			for _, mf := range mfs {
				if mf.GetName() != "throng_mqtt_connections" {
					continue
				}
				for _, m := range mf.GetMetric() {
					for _, lp := range m.GetLabel() {
						if lp.GetName() == "tenant" && lp.GetValue() == t.Name {
							u.MQTTConnections.Used += m.GetGauge().GetValue()
						}
					}
				}
			}
		}
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
