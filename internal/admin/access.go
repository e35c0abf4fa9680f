package admin

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// access is who may call a route: the route table names it, and
// requireAccess (for /api) or the /v1 handlers' allow apply the one rule
// of auth.Principal.MayAdminister (roles: auth/role.go; the matrix:
// docs/admin-api.md, "Roles").
type access int

const (
	accessPublic   access = iota // probes and the OpenAPI document
	accessPlatform               // the platform administrator only
	// accessTenant: the path's {tenant}; GET reads (operators too), any
	// other method changes it (tenant administrators).
	accessTenant
	accessV1 // Hono's /v1: authenticated here, each handler calls allow
)

// scopeOf is the scope of a tenant request by its method.
func scopeOf(method string) auth.Scope {
	if method == http.MethodGet || method == http.MethodHead {
		return auth.ScopeTenantRead
	}
	return auth.ScopeTenantWrite
}

// refusal says why the principal may not make a request of scope s on
// tenantName, or "" if it may. The text names nothing about other
// tenants, not even whether they exist.
func refusal(p *auth.Principal, tenantName string, s auth.Scope) string {
	switch {
	case p.MayAdminister(tenantName, s):
		return ""
	case !p.MayUseAdminAPI():
		return "the admin API needs the admin, tenant-admin or operator role"
	case s == auth.ScopePlatform:
		return "only the platform administrator (role admin in tenant default) may do this"
	case p.Tenant != tenantName:
		return fmt.Sprintf("user %s@%s may only administer tenant %q", p.User, p.Tenant, p.Tenant)
	default:
		return "the operator role is read-only"
	}
}

// sourceAuthenticator is an Authenticator that takes the login's source
// address (*auth.Authenticator).
type sourceAuthenticator interface {
	AuthenticateFor(ctx context.Context, adapter, tenantName, user, password string) (*auth.Principal, error)
}

// authenticate checks the request's HTTP Basic credentials ("name" in the
// default tenant or "name@tenant").
func (s *Server) authenticate(r *http.Request) (*auth.Principal, bool) {
	name, password, ok := r.BasicAuth()
	if !ok {
		return nil, false
	}
	user, ten := auth.SplitUser(name, tenant.Default)
	var p *auth.Principal
	var err error
	if af, ok := s.cfg.Auth.(sourceAuthenticator); ok {
		// The source address counts in the login backoff (auth/backoff.go).
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		p, err = af.AuthenticateFor(auth.WithSourceAddr(ctx, r.RemoteAddr), "", ten, user, password)
		cancel()
	} else {
		p, err = s.cfg.Auth.Authenticate(ten, user, password)
	}
	if err != nil {
		s.log.Info("admin authentication failed", "user", name, "remote", r.RemoteAddr)
		return nil, false
	}
	return p, true
}

// requireAccess authenticates an /api request and lets through those
// whose role allows it: need is accessPlatform or accessTenant.
func (s *Server) requireAccess(need access, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := principal(r), true // WithPrincipal: authenticated in-process
		if p == nil {
			p, ok = s.authenticate(r)
		}
		if !ok {
			msg := ""
			if _, _, given := r.BasicAuth(); given {
				msg = "bad user name or password"
			}
			writeError(w, CodeUnauthorized, msg)
			return
		}
		scope, ten := auth.ScopePlatform, ""
		if need == accessTenant {
			scope, ten = scopeOf(r.Method), r.PathValue("tenant")
		}
		if msg := refusal(p, ten, scope); msg != "" {
			writeError(w, CodeForbidden, msg)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	})
}
