package auth

import (
	"testing"

	"github.com/throngmq/throng/internal/tenant"
)

func TestRoles(t *testing.T) {
	roles := func(rs ...tenant.Role) []tenant.Role { return rs }
	platform := &Principal{Tenant: "default", User: "admin", Roles: roles(tenant.RoleAdmin)}
	// Stored before the admin role was refused outside the default
	// tenant: a tenant administrator, nothing more (issue 14 item 1).
	legacy := &Principal{Tenant: "acme", User: "boss", Roles: roles(tenant.RoleAdmin)}
	tadmin := &Principal{Tenant: "acme", User: "ta", Roles: roles(tenant.RoleTenantAdmin)}
	op := &Principal{Tenant: "acme", User: "op", Roles: roles(tenant.RoleOperator)}
	app := &Principal{Tenant: "acme", User: "app", Roles: roles(tenant.RoleApp)}
	dev := &Principal{Tenant: "default", Device: "d1", Roles: roles(tenant.RoleAdmin)} // roles of a device mean nothing
	cases := []struct {
		name                 string
		p                    *Principal
		admin, api           bool
		ownRead, ownWrite    bool
		otherRead, platScope bool
	}{
		{"platform", platform, true, true, true, true, true, true},
		{"legacy admin in a tenant", legacy, false, true, true, true, false, false},
		{"tenant-admin", tadmin, false, true, true, true, false, false},
		{"operator", op, false, true, true, false, false, false},
		{"app", app, false, false, false, false, false, false},
		{"device", dev, false, false, false, false, false, false},
		{"nil", nil, false, false, false, false, false, false},
	}
	for _, c := range cases {
		own := "acme"
		if c.p != nil && c.p.Tenant == "default" {
			own = "default"
		}
		got := []bool{
			c.p != nil && c.p.IsAdmin(), c.p.MayUseAdminAPI(),
			c.p.MayAdminister(own, ScopeTenantRead), c.p.MayAdminister(own, ScopeTenantWrite),
			c.p.MayAdminister("other", ScopeTenantRead), c.p.MayAdminister("", ScopePlatform),
		}
		want := []bool{c.admin, c.api, c.ownRead, c.ownWrite, c.otherRead, c.platScope}
		for i := range got {
			if got[i] != want[i] {
				t.Errorf("%s: [admin api ownRead ownWrite otherRead platform] = %v, want %v", c.name, got, want)
				break
			}
		}
	}
	// Every address of its tenant for a tenant administrator, none for a
	// device; an operator has its permissions only.
	if !Authorize(legacy, "x", tenant.ActionSend) || Authorize(dev, "x", tenant.ActionSend) || Authorize(op, "x", tenant.ActionSend) {
		t.Error("Authorize by role")
	}
}

func TestAdminRoleOnlyInDefault(t *testing.T) {
	u := &tenant.User{Name: "boss", Tenant: "acme", Roles: []tenant.Role{tenant.RoleAdmin}}
	if err := u.Validate(); err == nil {
		t.Fatal("role admin accepted in tenant acme")
	}
	u.Tenant = tenant.Default
	if err := u.Validate(); err != nil {
		t.Fatal(err)
	}
	u.Tenant, u.Roles = "acme", []tenant.Role{tenant.RoleOperator}
	if err := u.Validate(); err != nil {
		t.Fatal(err)
	}
}
