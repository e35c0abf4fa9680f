package admin

import (
	"net/http"

	"github.com/throngmq/throng/internal/history"
)

// Rates and history (docs/admin-api.md, "History"; docs/console.md):
// messages in and out per second and the backlog over the last 15
// minutes at 5 s resolution, per node, tenant, address and connection,
// from the node's in-memory rings (internal/history).

// History is what the history routes read (*history.Recorder).
type History interface {
	// Series returns the points of a series (history.NodeSeries,
	// TenantSeries, AddressSeries, ConnectionSeries), oldest first; an
	// unknown series has none.
	Series(key string) history.View
}

func init() {
	routes = append(routes,
		route{"GET", "/api/history", accessPlatform, (*Server).nodeHistory},
		route{"GET", "/api/tenants/{tenant}/history", accessTenant, (*Server).tenantHistory},
		route{"GET", "/api/tenants/{tenant}/history/{name...}", accessTenant, (*Server).addressHistory},
	)
}

// writeHistory answers with the series, or 404 when history is not wired.
func (s *Server) writeHistory(w http.ResponseWriter, key string) {
	if s.cfg.Observe.History == nil {
		writeError(w, CodeNotFound, "history is not available on this node")
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Observe.History.Series(key))
}

func (s *Server) nodeHistory(w http.ResponseWriter, r *http.Request) {
	s.writeHistory(w, history.NodeSeries())
}

func (s *Server) tenantHistory(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.lookupTenant(w, r); ok {
		s.writeHistory(w, history.TenantSeries(t.Name))
	}
}

func (s *Server) addressHistory(w http.ResponseWriter, r *http.Request) {
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	if a, ok := s.lookupAddress(w, r, t); ok {
		s.writeHistory(w, history.AddressSeries(t.Name, a.Name))
	}
}

func (s *Server) connectionHistory(w http.ResponseWriter, r *http.Request) {
	if s.forward(w, r, "history") { // another node's connection (connpeers.go)
		return
	}
	if e, ok := s.lookupConnection(w, r); ok {
		s.writeHistory(w, history.ConnectionSeries(s.cfg.Observe.Conns.ID(e)))
	}
}
