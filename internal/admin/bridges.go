package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/throngmq/throng/internal/bridge"
)

// Bridges (docs/bridges.md): /api/tenants/{t}/bridges, for the tenant's
// administrators (reads also for its operators). Definitions are shown
// without their secrets (password, client key: "********"), with the
// bridge's state on the node that answers.

func init() {
	routes = append(routes,
		route{"GET", "/api/tenants/{tenant}/bridges", accessTenant, (*Server).listBridges},
		route{"POST", "/api/tenants/{tenant}/bridges", accessTenant, (*Server).createBridge},
		route{"GET", "/api/tenants/{tenant}/bridges/{name}", accessTenant, (*Server).getBridge},
		route{"PUT", "/api/tenants/{tenant}/bridges/{name}", accessTenant, (*Server).updateBridge},
		route{"DELETE", "/api/tenants/{tenant}/bridges/{name}", accessTenant, (*Server).deleteBridge},
	)
}

// BridgeService is the bridges part of the store (*bridge.Manager, which
// the composition root gives the API together with the tenant store).
type BridgeService interface {
	Bridge(tenantName, name string) (*bridge.Bridge, bool)
	Bridges(tenantName string) []*bridge.Bridge
	PutBridge(ctx context.Context, tenantName string, b *bridge.Bridge, create bool) error
	DeleteBridge(ctx context.Context, tenantName, name string) error
	BridgeStatus(tenantName, name string) bridge.Status
}

// BridgeView is a bridge as the API shows it.
type BridgeView struct {
	*bridge.Bridge
	Status bridge.Status `json:"status"`
}

func (s *Server) bridges(w http.ResponseWriter) (BridgeService, bool) {
	bs, ok := s.cfg.Store.(BridgeService)
	if !ok {
		writeError(w, CodeNotFound, "bridges are not available")
	}
	return bs, ok
}

func (s *Server) bridgeView(bs BridgeService, ten string, b *bridge.Bridge) BridgeView {
	return BridgeView{Bridge: b.Redacted(), Status: bs.BridgeStatus(ten, b.Name)}
}

func (s *Server) listBridges(w http.ResponseWriter, r *http.Request) {
	bs, ok := s.bridges(w)
	if !ok {
		return
	}
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	out := []BridgeView{}
	for _, b := range bs.Bridges(t.Name) {
		out = append(out, s.bridgeView(bs, t.Name, b))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createBridge(w http.ResponseWriter, r *http.Request) {
	bs, ok := s.bridges(w)
	if !ok {
		return
	}
	var b bridge.Bridge
	if !decode(w, r, &b) {
		return
	}
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	if err := bs.PutBridge(r.Context(), t.Name, &b, true); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/tenants/"+url.PathEscape(t.Name)+"/bridges/"+url.PathEscape(b.Name))
	writeJSON(w, http.StatusCreated, s.bridgeView(bs, t.Name, &b))
}

func (s *Server) lookupBridge(w http.ResponseWriter, r *http.Request) (BridgeService, string, *bridge.Bridge, bool) {
	bs, ok := s.bridges(w)
	if !ok {
		return nil, "", nil, false
	}
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return nil, "", nil, false
	}
	name := r.PathValue("name")
	b, ok := bs.Bridge(t.Name, name)
	if !ok {
		writeError(w, CodeNotFound, fmt.Sprintf("bridge %q not found in tenant %q", name, t.Name))
	}
	return bs, t.Name, b, ok
}

func (s *Server) getBridge(w http.ResponseWriter, r *http.Request) {
	if bs, ten, b, ok := s.lookupBridge(w, r); ok {
		writeJSON(w, http.StatusOK, s.bridgeView(bs, ten, b))
	}
}

// updateBridge replaces a definition; a password or client key left out
// (or sent back as "********") keeps the stored one.
func (s *Server) updateBridge(w http.ResponseWriter, r *http.Request) {
	var b bridge.Bridge
	if !decode(w, r, &b) {
		return
	}
	bs, ten, old, ok := s.lookupBridge(w, r)
	if !ok {
		return
	}
	if b.Name == "" {
		b.Name = old.Name
	}
	if b.Name != old.Name {
		writeError(w, CodeInvalid, fmt.Sprintf("the body names bridge %q but the path %q; bridges cannot be renamed", b.Name, old.Name))
		return
	}
	if b.Remote.Password == "" || b.Remote.Password == "********" {
		b.Remote.Password = old.Remote.Password
	}
	if b.Remote.ClientKey == "" || b.Remote.ClientKey == "********" {
		b.Remote.ClientKey = old.Remote.ClientKey
	}
	if err := bs.PutBridge(r.Context(), ten, &b, false); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.bridgeView(bs, ten, &b))
}

func (s *Server) deleteBridge(w http.ResponseWriter, r *http.Request) {
	bs, ten, b, ok := s.lookupBridge(w, r)
	if !ok {
		return
	}
	if err := bs.DeleteBridge(r.Context(), ten, b.Name); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
