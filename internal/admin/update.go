package admin

import (
	"fmt"
	"net/http"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// Changes without delete (issue 14.5) and deleting an address in use
// (issue 14.4). What a change does to live connections is the router's
// (addresses: router/lifecycle.go) and auth.Live's (users, tenants):
// docs/security.md, "Changes on live connections".

// ---- users

// UserUpdateRequest is the body of PUT /api/tenants/{t}/users/{name}:
// the fields given replace the user's, those left out are kept (the
// password is never returned, so a full replacement could not be sent
// back). An empty body changes nothing.
type UserUpdateRequest struct {
	// Name, if given, must be the path's: users cannot be renamed.
	Name        string               `json:"name,omitempty"`
	Password    *string              `json:"password,omitempty"`
	Roles       *[]tenant.Role       `json:"roles,omitempty"`
	Permissions *[]tenant.Permission `json:"permissions,omitempty"`
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request) {
	var req UserUpdateRequest
	if !decode(w, r, &req) {
		return
	}
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if req.Name != "" && req.Name != name {
		writeError(w, CodeInvalid, fmt.Sprintf("the body names user %q but the path %q; users cannot be renamed", req.Name, name))
		return
	}
	old, ok := s.cfg.Store.User(t.Name, name)
	if !ok {
		writeError(w, CodeNotFound, fmt.Sprintf("user %q not found in tenant %q", name, t.Name))
		return
	}
	p := principal(r)
	if old.HasRole(tenant.RoleAdmin) && !p.IsAdmin() {
		writeError(w, CodeForbidden, "only the platform administrator may change a user with the admin role")
		return
	}
	u := *old
	if req.Roles != nil {
		u.Roles = *req.Roles
	}
	if req.Permissions != nil {
		u.Permissions = *req.Permissions
	}
	if err := u.Validate(); err != nil {
		s.fail(w, r, err)
		return
	}
	if u.HasRole(tenant.RoleAdmin) && !p.IsAdmin() {
		writeError(w, CodeForbidden, "only the platform administrator may give the admin role")
		return
	}
	if req.Password != nil {
		switch pw := *req.Password; {
		case pw == "":
			writeError(w, CodeInvalid, "the password must not be empty (leave it out to keep the current one)")
			return
		case len(pw) > 72:
			writeError(w, CodeInvalid, "the password is longer than 72 bytes")
			return
		}
		if err := s.cfg.SetPassword(&u, *req.Password); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	if err := s.cfg.Store.PutUser(r.Context(), &u, false); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, userView(&u))
}

// ---- addresses

// updateAddress is PUT /api/tenants/{t}/addresses/{name}: the body is an
// address request; name, type and topic may be left out (kept) but not
// changed. Limits and the dead-letter address are replaced as given (a
// limit left out is none); the stream and its messages stay.
func (s *Server) updateAddress(w http.ResponseWriter, r *http.Request) {
	var req AddressRequest
	if !decode(w, r, &req) {
		return
	}
	t, ok := s.lookupTenant(w, r)
	if !ok {
		return
	}
	old, ok := s.lookupAddress(w, r, t)
	if !ok {
		return
	}
	name := r.PathValue("name")
	switch {
	case req.Name != "" && req.Name != name:
		writeError(w, CodeInvalid, fmt.Sprintf("the body names address %q but the path %q; addresses cannot be renamed", req.Name, name))
		return
	case req.Type != "" && req.Type != old.Type:
		writeError(w, CodeInvalid, fmt.Sprintf("address %q is a %s; its type cannot change (delete it and create it again)", name, old.Type))
		return
	case req.Topic != "" && req.Topic != old.Topic:
		writeError(w, CodeInvalid, fmt.Sprintf("subscription %q is on topic %q; its topic cannot change", name, old.Topic))
		return
	}
	a := &address.Address{Name: name, Type: old.Type, Limits: req.Limits, DeadLetter: req.DeadLetter, Topic: old.Topic}
	if err := a.Validate(); err != nil {
		writeError(w, CodeInvalid, err.Error())
		return
	}
	if msg := s.checkReferences(t, a); msg != "" {
		writeError(w, CodeInvalid, msg)
		return
	}
	if err := s.cfg.Router.UpdateAddress(r.Context(), t.Name, a); err != nil {
		s.fail(w, r, err)
		return
	}
	if stored, ok := s.cfg.Store.Address(t.Name, name); ok {
		a = stored
	}
	writeJSON(w, http.StatusOK, AddressView{Address: a})
}

// mayDeleteAddress applies ?force to DELETE of an address: without it an
// address with consumers attached (on this node: the router's count) is
// refused with 409 in_use and their number; with force=true the router
// detaches them with an error (router/lifecycle.go). It writes the error
// and reports false when the delete must not go on.
func (s *Server) mayDeleteAddress(w http.ResponseWriter, r *http.Request, tenantName, name string) bool {
	force := false
	switch v := r.URL.Query().Get("force"); v {
	case "", "false":
	case "true":
		force = true
	default:
		writeError(w, CodeInvalid, fmt.Sprintf("force=%q: want true or false", v))
		return false
	}
	if force {
		return true
	}
	st, err := s.cfg.Router.AddressStats(r.Context(), tenantName, name)
	if err != nil {
		s.fail(w, r, err)
		return false
	}
	if st.Consumers > 0 {
		writeErrorBody(w, CodeInUse, fmt.Sprintf("address %q has %d consumer(s) attached; delete with ?force=true to detach them (AMQP links get amqp:resource-deleted, MQTT clients DISCONNECT 0x8F)", name, st.Consumers),
			func(b *ErrorBody) { b.Error.Consumers = st.Consumers })
		return false
	}
	return true
}
