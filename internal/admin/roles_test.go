package admin_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/testkit"
)

// Tests of the roles (auth/role.go, docs/admin-api.md "Roles"): every
// route of the admin API, /api and /v1, for every role, on its own
// tenant, another tenant that exists and one that does not.

// need is who may call a route, written here independently of the
// route table in admin.go: the matrix of docs/admin-api.md.
type need int

const (
	public   need = iota
	platform      // the platform administrator only
	tenantRW      // a tenant's resource: GET reads (operator too), other methods write (tenant admin)
)

var matrix = map[string]need{
	"GET /healthz":      public,
	"GET /readyz":       public,
	"GET /openapi.json": public,
	"GET /metrics":      platform,
	"GET /api/status":   platform,

	"POST /api/cluster/nodes/{node}/remove": platform,

	"GET /api/tenants":             platform,
	"POST /api/tenants":            platform,
	"GET /api/tenants/{tenant}":    tenantRW,
	"PUT /api/tenants/{tenant}":    tenantRW,
	"DELETE /api/tenants/{tenant}": platform,

	"GET /api/plans":           platform,
	"POST /api/plans":          platform,
	"GET /api/plans/{plan}":    platform,
	"PUT /api/plans/{plan}":    platform,
	"DELETE /api/plans/{plan}": platform,

	"GET /api/tenants/{tenant}/addresses":              tenantRW,
	"POST /api/tenants/{tenant}/addresses":             tenantRW,
	"GET /api/tenants/{tenant}/addresses/{name...}":    tenantRW,
	"PUT /api/tenants/{tenant}/addresses/{name...}":    tenantRW,
	"DELETE /api/tenants/{tenant}/addresses/{name...}": tenantRW,
	"GET /api/tenants/{tenant}/users":                  tenantRW,
	"POST /api/tenants/{tenant}/users":                 tenantRW,
	"GET /api/tenants/{tenant}/users/{name}":           tenantRW,
	"PUT /api/tenants/{tenant}/users/{name}":           tenantRW,
	"DELETE /api/tenants/{tenant}/users/{name}":        tenantRW,

	// Observation (connections.go, queues.go, history.go).
	"GET /api/connections":                               platform,
	"GET /api/connections/{id}":                          platform,
	"DELETE /api/connections/{id}":                       platform,
	"GET /api/connections/{id}/history":                  platform,
	"GET /api/history":                                   platform,
	"GET /api/anomalies":                                 platform,
	"GET /api/tenants/{tenant}/anomalies":                tenantRW,
	"GET /api/tenants/{tenant}/anomaly-thresholds":       tenantRW,
	"PUT /api/tenants/{tenant}/anomaly-thresholds":       tenantRW,
	"DELETE /api/tenants/{tenant}/anomaly-thresholds":    tenantRW,
	"GET /api/tenants/{tenant}/connections":              tenantRW,
	"GET /api/tenants/{tenant}/connections/{id}":         tenantRW,
	"DELETE /api/tenants/{tenant}/connections/{id}":      tenantRW,
	"GET /api/tenants/{tenant}/connections/{id}/history": tenantRW,
	"GET /api/tenants/{tenant}/history":                  tenantRW,
	"GET /api/tenants/{tenant}/history/{name...}":        tenantRW,
	"POST /api/tenants/{tenant}/purge/{name...}":         tenantRW,
	"GET /api/tenants/{tenant}/messages/{name...}":       tenantRW,
	"POST /api/tenants/{tenant}/move/{name...}":          tenantRW,

	// Bridges (bridges.go).
	"GET /api/tenants/{tenant}/bridges":           tenantRW,
	"POST /api/tenants/{tenant}/bridges":          tenantRW,
	"GET /api/tenants/{tenant}/bridges/{name}":    tenantRW,
	"PUT /api/tenants/{tenant}/bridges/{name}":    tenantRW,
	"DELETE /api/tenants/{tenant}/bridges/{name}": tenantRW,

	"POST /v1/tenants":              platform,
	"GET /v1/tenants":               platform,
	"POST /v1/tenants/{tenantId}":   platform,
	"GET /v1/tenants/{tenantId}":    tenantRW,
	"PUT /v1/tenants/{tenantId}":    tenantRW,
	"DELETE /v1/tenants/{tenantId}": platform,

	"POST /v1/devices/{tenantId}":               tenantRW,
	"GET /v1/devices/{tenantId}":                tenantRW,
	"DELETE /v1/devices/{tenantId}":             tenantRW,
	"POST /v1/devices/{tenantId}/{deviceId}":    tenantRW,
	"GET /v1/devices/{tenantId}/{deviceId}":     tenantRW,
	"PUT /v1/devices/{tenantId}/{deviceId}":     tenantRW,
	"DELETE /v1/devices/{tenantId}/{deviceId}":  tenantRW,
	"GET /v1/credentials/{tenantId}/{deviceId}": tenantRW,
	"PUT /v1/credentials/{tenantId}/{deviceId}": tenantRW,
}

// role is one principal of the matrix and the tenants it is tried on.
type role struct {
	name       string
	user, pass string
	own        string // its tenant
	other      string // another tenant that exists (may be spent: deleted)
	admin      bool   // the platform administrator
	write      bool   // writes its own tenant
	read       bool   // reads its own tenant
}

func (ro role) allowed(n need, method, target string) bool {
	switch n {
	case public:
		return true
	case platform:
		return ro.admin
	}
	if ro.admin {
		return true
	}
	if target != ro.own {
		return false
	}
	if method == http.MethodGet {
		return ro.read
	}
	return ro.write
}

func TestRoleMatrix(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	for _, ten := range []string{"acme", "other", "spare"} {
		c.must(201, "POST", "/api/tenants", fmt.Sprintf(`{"name":%q}`, ten))
	}
	// A device of an IoT tenant authenticates to the admin API too, as a
	// device principal.
	c.must(201, "POST", "/v1/tenants/iot", nil)
	c.must(201, "POST", "/v1/devices/iot/d1", nil)
	c.must(204, "PUT", "/v1/credentials/iot/d1", `[{"type": "hashed-password", "auth-id": "d1", "secrets": [{"pwd-plain": "pw-d1"}]}]`)
	users := []struct{ tenant, name, role string }{
		{"acme", "boss", "tenant-admin"}, {"acme", "watch", "operator"}, {"acme", "app", "app"},
		{"default", "dboss", "tenant-admin"}, {"default", "dwatch", "operator"},
	}
	for _, u := range users {
		c.must(201, "POST", "/api/tenants/"+u.tenant+"/users",
			fmt.Sprintf(`{"name":%q,"password":"pw-%s","roles":[%q]}`, u.name, u.name, u.role))
	}
	roles := []role{
		{name: "tenant-admin", user: "boss@acme", pass: "pw-boss", own: "acme", other: "other", read: true, write: true},
		{name: "operator", user: "watch@acme", pass: "pw-watch", own: "acme", other: "other", read: true},
		{name: "app", user: "app@acme", pass: "pw-app", own: "acme", other: "other"},
		{name: "device", user: "d1@iot", pass: "pw-d1", own: "iot", other: "acme"},
		{name: "default-tenant-admin", user: "dboss", pass: "pw-dboss", own: "default", other: "acme", read: true, write: true},
		{name: "default-operator", user: "dwatch", pass: "pw-dwatch", own: "default", other: "acme", read: true},
		// Last: its requests may delete "spare".
		{name: "platform-admin", user: p.AdminUser, pass: p.AdminPassword, own: "default", other: "spare", admin: true, read: true, write: true},
	}

	keys := admin.RouteKeys()
	for _, k := range keys {
		if _, ok := matrix[k]; !ok {
			t.Errorf("route %s is not in the role matrix (here and in docs/admin-api.md)", k)
		}
	}
	if len(keys) != len(matrix) {
		t.Errorf("the matrix has %d routes, the table %d", len(matrix), len(keys))
	}

	for _, ro := range roles {
		cl := c.as(ro.user, ro.pass)
		for _, k := range keys {
			method, pattern, _ := strings.Cut(k, " ")
			for _, target := range []string{ro.own, ro.other, "ghost"} {
				path := strings.NewReplacer("{tenant}", target, "{tenantId}", target,
					"{name...}", "nope", "{name}", "nope", "{deviceId}", "nope").Replace(pattern)
				var body any
				if method == "POST" || method == "PUT" {
					// Invalid, so that a request let through changes nothing.
					body = "{"
				}
				r := cl.doIfMatch(method, path, body, "no-such-version")
				want := ro.allowed(matrix[k], method, target)
				switch {
				case want && (r.status == 401 || r.status == 403):
					t.Errorf("%s: %s %s: %d, want it allowed: %s", ro.name, method, path, r.status, r.body)
				case !want && r.status != 403:
					t.Errorf("%s: %s %s: %d, want 403: %s", ro.name, method, path, r.status, r.body)
				}
				if !strings.Contains(pattern, "{") {
					break // no tenant in the path: once is enough
				}
			}
		}
	}

	// Crafted paths reach no other tenant.
	boss := c.as("boss@acme", "pw-boss")
	for _, path := range []string{
		"/api/tenants/acme%2F..%2Fother/users", "/api/tenants/other%2F..%2Facme/users",
		"/api/tenants/acme/../other/users", "/api/tenants/ACME/users", "/api/tenants/acme%00/users",
	} {
		if r := boss.do("GET", path, nil); r.status != 403 && r.status != 404 && r.status != 400 {
			t.Errorf("GET %s: %d %s", path, r.status, r.body)
		} else if r.status == 200 || strings.Contains(string(r.body), "watch") {
			t.Errorf("GET %s leaks: %s", path, r.body)
		}
	}
}

// doIfMatch is do with an If-Match header (so that /v1 updates and deletes
// let through fail on the version and change nothing).
func (c *client) doIfMatch(method, path string, body any, ifMatch string) result {
	c.t.Helper()
	cp := *c
	cp.header = http.Header{"If-Match": {ifMatch}}
	return cp.do(method, path, body)
}

// TestNoPlatformAdminFromATenant (issue 14 item 1): only the platform
// administrator makes platform administrators, and a tenant's
// administrator changes neither its tenant's limits nor other tenants.
func TestNoPlatformAdminFromATenant(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	c.must(201, "POST", "/api/tenants", `{"name":"acme","limits":{"maxUsers":10}}`)
	c.must(201, "POST", "/api/tenants", `{"name":"other"}`)
	// Not in a tenant, whoever asks.
	c.fails(400, admin.CodeInvalid, "POST", "/api/tenants/acme/users", `{"name":"boss","password":"pw","roles":["admin"]}`)
	c.must(201, "POST", "/api/tenants/acme/users", `{"name":"boss","password":"pw-boss","roles":["tenant-admin"]}`)
	boss := c.as("boss@acme", "pw-boss")
	boss.fails(400, admin.CodeInvalid, "POST", "/api/tenants/acme/users", `{"name":"boss2","password":"pw","roles":["admin"]}`)
	boss.fails(403, admin.CodeForbidden, "GET", "/api/tenants", nil)
	boss.fails(403, admin.CodeForbidden, "GET", "/api/tenants/other/users", nil)
	boss.fails(403, admin.CodeForbidden, "POST", "/api/tenants/other/users", `{"name":"x","password":"pw","roles":["tenant-admin"]}`)
	boss.fails(403, admin.CodeForbidden, "DELETE", "/api/tenants/acme", nil)
	boss.fails(403, admin.CodeForbidden, "POST", "/api/tenants", `{"name":"mine"}`)
	boss.fails(403, admin.CodeForbidden, "GET", "/api/status", nil)
	// Its own tenant: addresses, users, stats, settings but not limits.
	boss.must(201, "POST", "/api/tenants/acme/addresses", `{"name":"orders","type":"queue"}`)
	boss.must(200, "GET", "/api/tenants/acme/addresses/orders", nil)
	boss.must(200, "GET", "/api/tenants/acme/addresses?stats=true", nil)
	boss.must(201, "POST", "/api/tenants/acme/users", `{"name":"w","password":"pw-w","roles":["operator"]}`)
	boss.must(200, "PUT", "/api/tenants/acme", `{"strict":true,"limits":{"maxUsers":10}}`)
	boss.fails(403, admin.CodeForbidden, "PUT", "/api/tenants/acme", `{"limits":{"maxUsers":1000}}`)
	boss.fails(403, admin.CodeForbidden, "PUT", "/api/tenants/acme", `{}`)
	c.must(200, "PUT", "/api/tenants/acme", `{"limits":{"maxUsers":1000}}`)
	// The operator reads only.
	w := c.as("w@acme", "pw-w")
	w.must(200, "GET", "/api/tenants/acme/addresses/orders", nil)
	w.must(200, "GET", "/api/tenants/acme/users", nil)
	w.fails(403, admin.CodeForbidden, "DELETE", "/api/tenants/acme/addresses/orders", nil)
	w.fails(403, admin.CodeForbidden, "POST", "/api/tenants/acme/users", `{"name":"y","password":"pw","roles":["app"]}`)
	w.fails(403, admin.CodeForbidden, "GET", "/api/tenants/other", nil)

	// The default tenant's tenant-admin neither makes nor removes
	// platform administrators.
	c.must(201, "POST", "/api/tenants/default/users", `{"name":"dboss","password":"pw-dboss","roles":["tenant-admin"]}`)
	dboss := c.as("dboss", "pw-dboss")
	dboss.fails(403, admin.CodeForbidden, "POST", "/api/tenants/default/users", `{"name":"root","password":"pw","roles":["admin"]}`)
	dboss.fails(403, admin.CodeForbidden, "DELETE", "/api/tenants/default/users/"+p.AdminUser, nil)
	dboss.fails(403, admin.CodeForbidden, "GET", "/api/tenants/acme", nil)
	dboss.must(200, "GET", "/api/tenants/default/users", nil)
	// The platform administrator does.
	c.must(201, "POST", "/api/tenants/default/users", `{"name":"root","password":"pw-root","roles":["admin"]}`)
	c.as("root", "pw-root").must(200, "GET", "/api/tenants", nil)
	c.must(204, "DELETE", "/api/tenants/default/users/root", nil)
}
