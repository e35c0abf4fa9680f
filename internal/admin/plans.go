package admin

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/throngmq/throng/internal/tenant"
)

// Named plans (docs/security.md "Plans and quotas"): /api/plans, for the
// platform administrator only. A tenant names its plan in "plan"; its own
// limits override the plan's fields. Changing a plan applies to its
// tenants at once (the tenant store's watch).

// The routes are added to the table here, beside their handlers.
func init() {
	routes = append(routes,
		route{"GET", "/api/plans", accessPlatform, (*Server).listPlans},
		route{"POST", "/api/plans", accessPlatform, (*Server).createPlan},
		route{"GET", "/api/plans/{plan}", accessPlatform, (*Server).getPlan},
		route{"PUT", "/api/plans/{plan}", accessPlatform, (*Server).updatePlan},
		route{"DELETE", "/api/plans/{plan}", accessPlatform, (*Server).deletePlan},
	)
}

// planStore is the plans part of the store (*tenant.Store).
type planStore interface {
	Plan(name string) (*tenant.Plan, bool)
	Plans() []*tenant.Plan
	PutPlan(ctx context.Context, p *tenant.Plan, create bool) error
	DeletePlan(ctx context.Context, name string) error
}

// PlanRequest is the body of POST /api/plans and PUT /api/plans/{p}.
type PlanRequest struct {
	Name   string        `json:"name"`
	Limits tenant.Limits `json:"limits"`
}

// plans returns the plan store, or answers 404 when the store has none.
func (s *Server) plans(w http.ResponseWriter) (planStore, bool) {
	ps, ok := s.cfg.Store.(planStore)
	if !ok {
		writeError(w, CodeNotFound, "plans are not available")
	}
	return ps, ok
}

func (s *Server) listPlans(w http.ResponseWriter, r *http.Request) {
	ps, ok := s.plans(w)
	if !ok {
		return
	}
	out := ps.Plans()
	if out == nil {
		out = []*tenant.Plan{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createPlan(w http.ResponseWriter, r *http.Request) {
	ps, ok := s.plans(w)
	if !ok {
		return
	}
	var req PlanRequest
	if !decode(w, r, &req) {
		return
	}
	p := &tenant.Plan{Name: req.Name, Limits: req.Limits}
	if err := ps.PutPlan(r.Context(), p, true); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/plans/"+url.PathEscape(p.Name))
	writeJSON(w, http.StatusCreated, p)
}

func (s *Server) getPlan(w http.ResponseWriter, r *http.Request) {
	ps, ok := s.plans(w)
	if !ok {
		return
	}
	name := r.PathValue("plan")
	p, ok := ps.Plan(name)
	if !ok {
		writeError(w, CodeNotFound, fmt.Sprintf("plan %q not found", name))
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) updatePlan(w http.ResponseWriter, r *http.Request) {
	ps, ok := s.plans(w)
	if !ok {
		return
	}
	var req PlanRequest
	if !decode(w, r, &req) {
		return
	}
	name := r.PathValue("plan")
	if req.Name == "" {
		req.Name = name
	}
	if req.Name != name {
		writeError(w, CodeInvalid, fmt.Sprintf("the body names plan %q but the path %q; plans cannot be renamed", req.Name, name))
		return
	}
	p := &tenant.Plan{Name: name, Limits: req.Limits}
	if err := ps.PutPlan(r.Context(), p, false); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (s *Server) deletePlan(w http.ResponseWriter, r *http.Request) {
	ps, ok := s.plans(w)
	if !ok {
		return
	}
	if err := ps.DeletePlan(r.Context(), r.PathValue("plan")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
