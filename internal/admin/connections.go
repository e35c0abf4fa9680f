package admin

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/throngmq/throng/internal/conns"
)

// Connections (docs/admin-api.md, "Connections"): the live connections of
// this node from the registry the front-ends keep (internal/conns), and
// closing one. The platform administrator sees every tenant's under
// /api/connections; a tenant's administrators and operators see their
// own under /api/tenants/{t}/connections (the same access rule as every
// tenant resource: operators read, tenant administrators also close).
// A connection id of another tenant is 404 on a tenant's path, as is an
// id that does not exist: nothing is learned about other tenants.

// Observe wires the observation routes (connections, queue actions,
// history) to the platform; a nil part answers 404 on its routes.
type Observe struct {
	Conns   *conns.Registry
	Queues  Queues  // queues.go
	History History // history.go
	// Anomalies is the anomaly finder (anomalies.go).
	Anomalies Anomalies
	// Peers asks the other nodes of a cluster about their connections
	// (connpeers.go); nil on a single node.
	Peers ConnPeers
}

// The routes are added to the table here, beside their handlers.
func init() {
	routes = append(routes,
		route{"GET", "/api/connections", accessPlatform, (*Server).listConnections},
		route{"GET", "/api/connections/{id}", accessPlatform, (*Server).getConnection},
		route{"DELETE", "/api/connections/{id}", accessPlatform, (*Server).closeConnection},
		route{"GET", "/api/connections/{id}/history", accessPlatform, (*Server).connectionHistory},
		route{"GET", "/api/tenants/{tenant}/connections", accessTenant, (*Server).listConnections},
		route{"GET", "/api/tenants/{tenant}/connections/{id}", accessTenant, (*Server).getConnection},
		route{"DELETE", "/api/tenants/{tenant}/connections/{id}", accessTenant, (*Server).closeConnection},
		route{"GET", "/api/tenants/{tenant}/connections/{id}/history", accessTenant, (*Server).connectionHistory},
	)
}

// ConnectionList is the answer of the connection lists.
type ConnectionList struct {
	Connections []conns.Snapshot `json:"connections"`
	// Next is the after of the next page; empty on the last.
	Next string `json:"next,omitempty"`
	// Missing names the nodes of a cluster that did not answer (or are
	// offline): their connections are not in this page.
	Missing []string `json:"missing,omitempty"`
}

const (
	defaultConnLimit = 100
	maxConnLimit     = 1000
)

// queryLimit reads ?limit= (def when absent), 1..max; false: 400 written.
func queryLimit(w http.ResponseWriter, r *http.Request, def, max int) (int, bool) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		writeError(w, CodeInvalid, fmt.Sprintf("limit: a whole number from 1 to %d", max))
		return 0, false
	}
	return n, true
}

func (s *Server) listConnections(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := conns.Filter{Tenant: q.Get("tenant"), Protocol: q.Get("protocol"), User: q.Get("user"),
		Device: q.Get("device"), ClientID: q.Get("clientId")}
	if r.PathValue("tenant") != "" {
		t, ok := s.lookupTenant(w, r)
		if !ok {
			return
		}
		f.Tenant = t.Name
	}
	switch f.Protocol {
	case "", conns.AMQP, conns.MQTT3, conns.MQTT5:
	default:
		writeError(w, CodeInvalid, fmt.Sprintf("protocol %q: one of amqp, mqtt3, mqtt5", f.Protocol))
		return
	}
	limit, ok := queryLimit(w, r, defaultConnLimit, maxConnLimit)
	if !ok {
		return
	}
	if peers := s.cfg.Observe.Peers; peers != nil {
		writeJSON(w, http.StatusOK, s.listAcross(r.Context(), peers, f, q.Get("after"), limit))
		return
	}
	reg := s.cfg.Observe.Conns
	page, next := reg.List(f, q.Get("after"), limit)
	out := ConnectionList{Connections: make([]conns.Snapshot, 0, len(page)), Next: next}
	for _, e := range page {
		out.Connections = append(out.Connections, reg.Snapshot(e, false))
	}
	writeJSON(w, http.StatusOK, out)
}

// lookupConnection finds the path's {id}: on a tenant's path only a
// connection of that tenant. It writes 404 otherwise.
func (s *Server) lookupConnection(w http.ResponseWriter, r *http.Request) (*conns.Entry, bool) {
	id := r.PathValue("id")
	e, ok := s.cfg.Observe.Conns.Get(id)
	if ok && r.PathValue("tenant") != "" && e.Info().Tenant != r.PathValue("tenant") {
		ok = false
	}
	if !ok {
		writeError(w, CodeNotFound, fmt.Sprintf("connection %q not found", id))
	}
	return e, ok
}

func (s *Server) getConnection(w http.ResponseWriter, r *http.Request) {
	if s.forwarded(w, r, false) { // another node's id (connpeers.go)
		return
	}
	if e, ok := s.lookupConnection(w, r); ok {
		writeJSON(w, http.StatusOK, s.cfg.Observe.Conns.Snapshot(e, true))
	}
}

// closeConnection asks the front-end to close the connection and answers
// at once: the close is under way (the client gets its close frame or
// DISCONNECT within milliseconds; the registry drops the connection when
// the front-end has torn it down).
func (s *Server) closeConnection(w http.ResponseWriter, r *http.Request) {
	if s.forwarded(w, r, true) { // another node's id (connpeers.go)
		return
	}
	e, ok := s.lookupConnection(w, r)
	if !ok {
		return
	}
	by := "an administrator"
	if p := principal(r); p != nil {
		by = p.User + "@" + p.Tenant
	}
	s.log.Info("closing connection", "id", s.cfg.Observe.Conns.ID(e), "tenant", e.Info().Tenant, "by", by)
	e.Close("closed by " + by)
	w.WriteHeader(http.StatusNoContent)
}
