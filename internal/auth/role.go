package auth

import "github.com/throngmq/throng/internal/tenant"

// Roles are defined here once, for the admin API (/api and Hono's /v1),
// the CLI (which uses the API) and the protocol front-ends;
// docs/admin-api.md ("Roles") has the matrix. From the widest:
//
//   - platform administrator: role "admin" in tenant "default" (the user
//     "admin" created at first start). Every tenant, tenants' lifecycle,
//     platform status and metrics; through AMQP it may also serve other
//     IoT tenants' Hono northbound addresses.
//   - tenant administrator: role "tenant-admin". Its own tenant only:
//     addresses, users, devices, credentials, the tenant's settings
//     except its limits; every address of its tenant through the
//     protocols.
//   - tenant operator: role "operator". Reads (GET) its own tenant's
//     resources through the admin API; through the protocols only what
//     its permissions allow.
//   - application: role "app". No admin API; the addresses its
//     permissions allow.
//   - device: a device principal (Principal.Device). Its own Hono topics
//     only.
//
// The admin role is valid in tenant "default" only (tenant.User.Validate
// refuses it elsewhere). A user stored with it in another tenant before
// that rule is a tenant administrator of its tenant, nothing more: a
// tenant must not be able to mint a platform administrator.

// IsAdmin reports whether the principal is the platform administrator
// (role admin in the default tenant).
func (p *Principal) IsAdmin() bool {
	return p != nil && !p.IsDevice() && p.Tenant == tenant.Default && hasRole(p.Roles, tenant.RoleAdmin)
}

// IsTenantAdmin reports whether the principal administers its tenant (the
// platform administrator administers the default tenant too).
func (p *Principal) IsTenantAdmin() bool {
	return p != nil && !p.IsDevice() && (hasRole(p.Roles, tenant.RoleAdmin) || hasRole(p.Roles, tenant.RoleTenantAdmin))
}

// IsOperator reports whether the principal has the read-only operator
// role.
func (p *Principal) IsOperator() bool {
	return p != nil && !p.IsDevice() && hasRole(p.Roles, tenant.RoleOperator)
}

// The predicates are false for a nil principal (no one).

// Scope is how far an admin request reaches.
type Scope int

const (
	// ScopePlatform: all tenants (list, create, delete tenants; platform
	// status and metrics; tenant limits).
	ScopePlatform Scope = iota
	// ScopeTenantRead: read one tenant's resources.
	ScopeTenantRead
	// ScopeTenantWrite: change one tenant's resources.
	ScopeTenantWrite
)

// MayAdminister reports whether the principal may make an admin request
// of scope s on the tenant named tenantName (ignored for ScopePlatform).
// This is the one access rule of the admin API.
func (p *Principal) MayAdminister(tenantName string, s Scope) bool {
	if p == nil {
		return false
	}
	if p.IsAdmin() {
		return true
	}
	if s == ScopePlatform || p.Tenant != tenantName {
		return false
	}
	return p.IsTenantAdmin() || (s == ScopeTenantRead && p.IsOperator())
}

// MayUseAdminAPI reports whether the principal has a role of the admin
// API at all (platform or tenant administrator, operator).
func (p *Principal) MayUseAdminAPI() bool {
	return p != nil && (p.IsAdmin() || p.IsTenantAdmin() || p.IsOperator())
}

func hasRole(rs []tenant.Role, r tenant.Role) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}
