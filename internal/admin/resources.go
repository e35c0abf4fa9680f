package admin

import (
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// ---- tenants

// TenantRequest is the body of POST /api/tenants and PUT /api/tenants/{t}.
type TenantRequest struct {
	Name       string                  `json:"name"`
	Strict     bool                    `json:"strict"`
	AutoCreate []tenant.AutoCreateRule `json:"autoCreate"`
	Limits     tenant.Limits           `json:"limits"`
	Plan       string                  `json:"plan,omitempty"` // plans.go
}

func (tr *TenantRequest) tenant() *tenant.Tenant {
	rules := tr.AutoCreate
	if rules == nil {
		rules = []tenant.AutoCreateRule{}
	}
	return &tenant.Tenant{Name: tr.Name, Strict: tr.Strict, AutoCreate: rules, Limits: tr.Limits, Plan: tr.Plan}
}

func tenantView(t *tenant.Tenant) *tenant.Tenant {
	cp := *t
	if cp.AutoCreate == nil {
		cp.AutoCreate = []tenant.AutoCreateRule{}
	}
	return &cp
}

func (s *Server) listTenants(w http.ResponseWriter, r *http.Request) {
	ts := s.cfg.Store.Tenants()
	out := make([]*tenant.Tenant, 0, len(ts))
	for _, t := range ts {
		out = append(out, tenantView(t))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createTenant(w http.ResponseWriter, r *http.Request) {
	var req TenantRequest
	if !decode(w, r, &req) {
		return
	}
	t := req.tenant()
	if err := t.Validate(); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Router.CreateTenant(r.Context(), t); err != nil {
		s.fail(w, r, err)
		return
	}
	if stored, ok := s.cfg.Store.Tenant(t.Name); ok {
		t = stored
	}
	w.Header().Set("Location", "/api/tenants/"+url.PathEscape(t.Name))
	writeJSON(w, http.StatusCreated, tenantView(t))
}

// lookupTenant returns the tenant named in the path, or writes 404.
func (s *Server) lookupTenant(w http.ResponseWriter, r *http.Request) (*tenant.Tenant, bool) {
	name := r.PathValue("tenant")
	t, ok := s.cfg.Store.Tenant(name)
	if !ok {
		writeError(w, CodeNotFound, fmt.Sprintf("tenant %q not found", name))
	}
	return t, ok
}

func (s *Server) getTenant(w http.ResponseWriter, r *http.Request) {
	if t, ok := s.lookupTenant(w, r); ok {
		writeJSON(w, http.StatusOK, s.tenantBody(r, t)) // usage.go
	}
}

func (s *Server) updateTenant(w http.ResponseWriter, r *http.Request) {
	var req TenantRequest
	if !decode(w, r, &req) {
		return
	}
	name := r.PathValue("tenant")
	if req.Name == "" {
		req.Name = name
	}
	if req.Name != name {
		writeError(w, CodeInvalid, fmt.Sprintf("the body names tenant %q but the path %q; tenants cannot be renamed", req.Name, name))
		return
	}
	old, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	t := req.tenant()
	// The Hono settings are managed under /v1 (hono.go), the anomaly
	// thresholds under their own path (anomalies.go): kept here.
	t.IoT, t.AnomalyThresholds = old.IoT, old.AnomalyThresholds
	if p := principal(r); !p.IsAdmin() && (!reflect.DeepEqual(t.Limits, old.Limits) || t.Plan != old.Plan) {
		// A tenant's limits are its plan: the platform's to set.
		writeError(w, CodeForbidden, "only the platform administrator may change a tenant's limits or plan")
		return
	}
	if err := t.Validate(); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Router.UpdateTenant(r.Context(), t); err != nil {
		s.fail(w, r, err)
		return
	}
	if stored, ok := s.cfg.Store.Tenant(t.Name); ok {
		t = stored
	}
	writeJSON(w, http.StatusOK, tenantView(t))
}

func (s *Server) deleteTenant(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("tenant")
	if name == tenant.Default {
		writeError(w, CodeConflict, "the default tenant cannot be deleted")
		return
	}
	if _, ok := s.cfg.Store.Tenant(name); ok {
		if err := s.deleteTenantDevices(r.Context(), name); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if err := s.cfg.Router.DeleteTenant(r.Context(), name); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- addresses

// AddressRequest is the body of POST /api/tenants/{t}/addresses.
type AddressRequest struct {
	Name       string         `json:"name"`
	Type       address.Type   `json:"type"`
	Limits     address.Limits `json:"limits"`
	DeadLetter string         `json:"deadLetter,omitempty"`
	Topic      string         `json:"topic,omitempty"`
}

// AddressView is an address definition as the API returns it; Stats is
// present on GET of one address, and on lists with ?stats=true.
type AddressView struct {
	*address.Address
	Stats *address.Stats `json:"stats,omitempty"`
}

func (s *Server) listAddresses(w http.ResponseWriter, r *http.Request) {
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	withStats := r.URL.Query().Get("stats") == "true"
	as := s.cfg.Store.Addresses(t.Name)
	out := make([]AddressView, 0, len(as))
	for _, a := range as {
		v := AddressView{Address: a}
		if withStats {
			if st, err := s.cfg.Router.AddressStats(r.Context(), t.Name, a.Name); err == nil {
				v.Stats = &st
			}
		}
		out = append(out, v)
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createAddress(w http.ResponseWriter, r *http.Request) {
	var req AddressRequest
	if !decode(w, r, &req) {
		return
	}
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	a := &address.Address{Name: req.Name, Type: req.Type, Limits: req.Limits, DeadLetter: req.DeadLetter, Topic: req.Topic}
	if err := a.Validate(); err != nil {
		writeError(w, CodeInvalid, err.Error())
		return
	}
	if _, exists := s.cfg.Store.Address(t.Name, a.Name); exists {
		// Reported before a tenant limit, which says less.
		writeError(w, CodeExists, fmt.Sprintf("address %q already exists in tenant %q", a.Name, t.Name))
		return
	}
	if msg := s.checkReferences(t, a); msg != "" {
		writeError(w, CodeInvalid, msg)
		return
	}
	if err := s.cfg.Router.CreateAddress(r.Context(), t.Name, a); err != nil {
		s.fail(w, r, err)
		return
	}
	if stored, ok := s.cfg.Store.Address(t.Name, a.Name); ok {
		a = stored
	}
	w.Header().Set("Location", "/api/tenants/"+url.PathEscape(t.Name)+"/addresses/"+url.PathEscape(a.Name))
	writeJSON(w, http.StatusCreated, AddressView{Address: a})
}

// checkReferences checks the addresses a new address names: its
// dead-letter address and a subscription's topic must exist (otherwise
// dead letters would go nowhere, and a subscription would silently
// collect from the topic space instead of the topic meant). The router
// resolves both at use, when a mistake is only a log line.
func (s *Server) checkReferences(t *tenant.Tenant, a *address.Address) string {
	if dl := a.DeadLetter; dl != "" {
		d, ok := s.cfg.Store.Address(t.Name, dl)
		_, byRule := t.Rule(dl)
		switch {
		case dl == a.Name:
			return fmt.Sprintf("address %q cannot be its own dead-letter address", a.Name)
		case !ok && !byRule:
			return fmt.Sprintf("dead-letter address %q does not exist in tenant %q: create it first (a queue, usually)", dl, t.Name)
		case ok && d.Type == address.Anycast:
			return fmt.Sprintf("dead-letter address %q is anycast: dead letters need an address that keeps or fans out messages (a queue, usually)", dl)
		}
	}
	if a.Type == address.Subscription {
		top, ok := s.cfg.Store.Address(t.Name, a.Topic)
		switch {
		case !ok:
			return fmt.Sprintf("topic %q does not exist in tenant %q: create it first (type topic); a client consumes the topic space durably as \"TOPIC::NAME\" without defining anything", a.Topic, t.Name)
		case top.Type != address.Topic:
			return fmt.Sprintf("%q is a %s, not a topic: a subscription subscribes to a topic address", a.Topic, top.Type)
		}
	}
	return ""
}

// lookupAddress finds the address {name} of tenant t, or answers 404.
func (s *Server) lookupAddress(w http.ResponseWriter, r *http.Request, t *tenant.Tenant) (*address.Address, bool) {
	name := r.PathValue("name")
	a, ok := s.cfg.Store.Address(t.Name, name)
	if !ok {
		writeError(w, CodeNotFound, fmt.Sprintf("address %q not found in tenant %q", name, t.Name))
	}
	return a, ok
}

func (s *Server) getAddress(w http.ResponseWriter, r *http.Request) {
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	a, ok := s.lookupAddress(w, r, t)
	if !ok {
		return
	}
	name := r.PathValue("name")
	st, err := s.cfg.Router.AddressStats(r.Context(), t.Name, name)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, AddressView{Address: a, Stats: &st})
}

func (s *Server) deleteAddress(w http.ResponseWriter, r *http.Request) {
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	if _, ok := s.lookupAddress(w, r, t); !ok {
		return
	}
	name := r.PathValue("name")
	if !s.mayDeleteAddress(w, r, t.Name, name) {
		return
	}
	if err := s.cfg.Router.DeleteAddress(r.Context(), t.Name, name); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// ---- users

// UserRequest is the body of POST /api/tenants/{t}/users.
type UserRequest struct {
	Name        string              `json:"name"`
	Password    string              `json:"password"`
	Roles       []tenant.Role       `json:"roles"`
	Permissions []tenant.Permission `json:"permissions"`
}

// UserView is a user as the API returns it: never the password, its hash
// or its SCRAM verifier.
type UserView struct {
	Name        string              `json:"name"`
	Tenant      string              `json:"tenant"`
	Roles       []tenant.Role       `json:"roles"`
	Permissions []tenant.Permission `json:"permissions"`
	Created     time.Time           `json:"created"`
}

func userView(u *tenant.User) UserView {
	v := UserView{Name: u.Name, Tenant: u.Tenant, Roles: u.Roles, Permissions: u.Permissions, Created: u.Created}
	if v.Roles == nil {
		v.Roles = []tenant.Role{}
	}
	if v.Permissions == nil {
		v.Permissions = []tenant.Permission{}
	}
	return v
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	us := s.cfg.Store.Users(t.Name)
	out := make([]UserView, 0, len(us))
	for _, u := range us {
		out = append(out, userView(u))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) {
	var req UserRequest
	if !decode(w, r, &req) {
		return
	}
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	u := &tenant.User{Name: req.Name, Tenant: t.Name, Roles: req.Roles, Permissions: req.Permissions}
	if err := u.Validate(); err != nil {
		s.fail(w, r, err)
		return
	}
	if u.HasRole(tenant.RoleAdmin) && !principal(r).IsAdmin() {
		// The default tenant's own administrators must not mint platform
		// administrators either.
		writeError(w, CodeForbidden, "only the platform administrator may give the admin role")
		return
	}
	if req.Password == "" {
		writeError(w, CodeInvalid, "a password is required")
		return
	}
	if len(req.Password) > 72 {
		// bcrypt uses at most 72 bytes; refuse rather than truncate.
		writeError(w, CodeInvalid, "the password is longer than 72 bytes")
		return
	}
	if _, exists := s.cfg.Store.User(t.Name, u.Name); exists {
		// Checked before hashing, which is slow; PutUser checks again.
		writeError(w, CodeExists, fmt.Sprintf("user %q already exists in tenant %q", u.Name, t.Name))
		return
	}
	if err := s.cfg.SetPassword(u, req.Password); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.cfg.Store.PutUser(r.Context(), u, true); err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/tenants/"+url.PathEscape(t.Name)+"/users/"+url.PathEscape(u.Name))
	writeJSON(w, http.StatusCreated, userView(u))
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) {
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	u, ok := s.cfg.Store.User(t.Name, name)
	if !ok {
		writeError(w, CodeNotFound, fmt.Sprintf("user %q not found in tenant %q", name, t.Name))
		return
	}
	writeJSON(w, http.StatusOK, userView(u))
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) {
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if p := principal(r); p != nil && p.Tenant == t.Name && p.User == name {
		writeError(w, CodeConflict, "you cannot delete the user you are authenticated as")
		return
	}
	if u, ok := s.cfg.Store.User(t.Name, name); ok && u.HasRole(tenant.RoleAdmin) && !principal(r).IsAdmin() {
		writeError(w, CodeForbidden, "only the platform administrator may delete a user with the admin role")
		return
	}
	if err := s.cfg.Store.DeleteUser(r.Context(), t.Name, name); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
