package admin_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/testkit"
)

// client sends admin API requests to a platform.
type client struct {
	t          *testing.T
	base       string
	user, pass string
	header     http.Header // added to every request
}

func adminClient(t *testing.T, p *testkit.Platform) *client {
	return &client{t: t, base: p.AdminURL, user: p.AdminUser, pass: p.AdminPassword}
}

func (c *client) as(user, pass string) *client {
	cp := *c
	cp.user, cp.pass = user, pass
	return &cp
}

type result struct {
	status int
	header http.Header
	body   []byte
}

func (r result) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r result) errorCode(t *testing.T) admin.Code {
	t.Helper()
	var e admin.ErrorBody
	r.decode(t, &e)
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Fatalf("error body lacks code or message: %s", r.body)
	}
	return e.Error.Code
}

func (c *client) do(method, path string, body any) result {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader:
		rd = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return result{resp.StatusCode, resp.Header, b}
}

// must sends a request and fails unless the status is want.
func (c *client) must(want int, method, path string, body any) result {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.status != want {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, want, r.body)
	}
	return r
}

// fails sends a request and checks the error status and code.
func (c *client) fails(status int, code admin.Code, method, path string, body any) {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.status != status {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	if got := r.errorCode(c.t); got != code {
		c.t.Fatalf("%s %s: code %q, want %q: %s", method, path, got, code, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		c.t.Fatalf("%s %s: error content type %q", method, path, ct)
	}
}

type tenantJSON struct {
	Name       string `json:"name"`
	Strict     bool   `json:"strict"`
	AutoCreate []struct {
		Pattern string `json:"pattern"`
		Type    string `json:"type"`
	} `json:"autoCreate"`
	Limits  map[string]int64 `json:"limits"`
	Created string           `json:"created"`
}

type addressJSON struct {
	Name   string          `json:"name"`
	Type   string          `json:"type"`
	Limits map[string]any  `json:"limits"`
	Stats  *map[string]any `json:"stats"`
}

func TestTenants(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)

	r := c.must(201, "POST", "/api/tenants", `{"name":"acme","strict":false,"autoCreate":[{"pattern":"jobs/#","type":"queue"}],"limits":{"maxAddresses":10}}`)
	if loc := r.header.Get("Location"); loc != "/api/tenants/acme" {
		t.Errorf("Location = %q", loc)
	}
	var created tenantJSON
	r.decode(t, &created)
	if created.Name != "acme" || len(created.AutoCreate) != 1 || created.AutoCreate[0].Type != "queue" ||
		created.Limits["maxAddresses"] != 10 || created.Created == "" {
		t.Fatalf("created = %+v", created)
	}

	var list []tenantJSON
	c.must(200, "GET", "/api/tenants", nil).decode(t, &list)
	if len(list) != 2 || list[0].Name != "acme" || list[1].Name != "default" {
		t.Fatalf("list = %+v", list)
	}

	var got tenantJSON
	c.must(200, "GET", "/api/tenants/acme", nil).decode(t, &got)
	if got.Name != "acme" || got.Strict {
		t.Fatalf("get = %+v", got)
	}

	// PUT replaces the settings; the name may be omitted.
	var upd tenantJSON
	c.must(200, "PUT", "/api/tenants/acme", `{"strict":true}`).decode(t, &upd)
	if !upd.Strict || len(upd.AutoCreate) != 0 || upd.Created != created.Created {
		t.Fatalf("updated = %+v (created %s)", upd, created.Created)
	}
	c.must(200, "GET", "/api/tenants/acme", nil).decode(t, &got)
	if !got.Strict {
		t.Fatal("update not visible")
	}
	c.fails(400, admin.CodeInvalid, "PUT", "/api/tenants/acme", `{"name":"other"}`)
	c.fails(404, admin.CodeNotFound, "PUT", "/api/tenants/nope", `{}`)

	c.fails(409, admin.CodeExists, "POST", "/api/tenants", `{"name":"acme"}`)
	c.fails(409, admin.CodeConflict, "DELETE", "/api/tenants/default", nil)

	c.must(204, "DELETE", "/api/tenants/acme", nil)
	c.fails(404, admin.CodeNotFound, "GET", "/api/tenants/acme", nil)
	c.fails(404, admin.CodeNotFound, "DELETE", "/api/tenants/acme", nil)
}

func TestAddresses(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	c.must(201, "POST", "/api/tenants", `{"name":"acme","limits":{"maxAddresses":3}}`)

	// Names with '/', spaces, dots, and characters that URLs treat specially.
	names := []string{"orders/eu", "sensor data.v1/room 4.2", "q?x=1&y=%20/ü.é"}
	types := []string{"queue", "topic", "anycast"}
	for i, n := range names {
		r := c.must(201, "POST", "/api/tenants/acme/addresses",
			map[string]any{"name": n, "type": types[i], "limits": map[string]any{"maxMessages": 100, "maxAge": "24h"}})
		var a addressJSON
		r.decode(t, &a)
		if a.Name != n || a.Type != types[i] || a.Limits["maxAge"] != "24h0m0s" {
			t.Fatalf("created %+v", a)
		}
		if loc := r.header.Get("Location"); loc != "/api/tenants/acme/addresses/"+url.PathEscape(n) {
			t.Errorf("Location = %q", loc)
		}
	}
	// The tenant allows 3 addresses.
	c.fails(409, admin.CodeLimitExceeded, "POST", "/api/tenants/acme/addresses", `{"name":"four","type":"queue"}`)
	c.fails(409, admin.CodeExists, "POST", "/api/tenants/acme/addresses", `{"name":"orders/eu","type":"topic"}`)

	var list []addressJSON
	c.must(200, "GET", "/api/tenants/acme/addresses", nil).decode(t, &list)
	if len(list) != 3 || list[0].Stats != nil {
		t.Fatalf("list = %+v", list)
	}
	c.must(200, "GET", "/api/tenants/acme/addresses?stats=true", nil).decode(t, &list)
	if len(list) != 3 || list[0].Stats == nil {
		t.Fatalf("list with stats = %+v", list)
	}

	for _, n := range names {
		// Escaped as a whole (/ as %2F) ...
		var a addressJSON
		c.must(200, "GET", "/api/tenants/acme/addresses/"+url.PathEscape(n), nil).decode(t, &a)
		if a.Name != n || a.Stats == nil {
			t.Fatalf("get %q = %+v", n, a)
		}
		for _, k := range []string{"backlog", "messagesIn", "messagesRejected", "bytesIn", "bytesOut"} {
			if _, ok := (*a.Stats)[k]; !ok {
				t.Fatalf("stats lack %s: %v", k, *a.Stats)
			}
		}
		// ... or level by level, keeping the slashes.
		levels := strings.Split(n, "/")
		for i := range levels {
			levels[i] = url.PathEscape(levels[i])
		}
		c.must(200, "GET", "/api/tenants/acme/addresses/"+strings.Join(levels, "/"), nil)
	}
	// Another tenant does not see them.
	c.fails(404, admin.CodeNotFound, "GET", "/api/tenants/default/addresses/orders%2Feu", nil)

	c.must(204, "DELETE", "/api/tenants/acme/addresses/orders/eu", nil)
	c.fails(404, admin.CodeNotFound, "GET", "/api/tenants/acme/addresses/orders/eu", nil)
	c.fails(404, admin.CodeNotFound, "DELETE", "/api/tenants/acme/addresses/orders/eu", nil)
	c.must(204, "DELETE", "/api/tenants/acme/addresses/"+url.PathEscape(names[1]), nil)
	c.must(200, "GET", "/api/tenants/acme/addresses", nil).decode(t, &list)
	if len(list) != 1 || list[0].Name != names[2] {
		t.Fatalf("after delete: %+v", list)
	}

	c.fails(404, admin.CodeNotFound, "GET", "/api/tenants/nope/addresses", nil)
	c.fails(404, admin.CodeNotFound, "POST", "/api/tenants/nope/addresses", `{"name":"x","type":"queue"}`)
	c.fails(404, admin.CodeNotFound, "GET", "/api/tenants/nope/addresses/x", nil)
}

func TestUsers(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	c.must(201, "POST", "/api/tenants", `{"name":"acme"}`)

	r := c.must(201, "POST", "/api/tenants/acme/users",
		`{"name":"app1","password":"pw-app1","roles":["app"],"permissions":[{"pattern":"orders/#","actions":["send","receive"]}]}`)
	if bytes.Contains(r.body, []byte("pw-app1")) || bytes.Contains(r.body, []byte("$2a$")) || bytes.Contains(r.body, []byte("password")) ||
		bytes.Contains(r.body, []byte("scram")) || bytes.Contains(r.body, []byte("storedKey")) {
		t.Fatalf("response leaks the password or hash: %s", r.body)
	}
	var u struct {
		Name        string   `json:"name"`
		Tenant      string   `json:"tenant"`
		Roles       []string `json:"roles"`
		Permissions []struct {
			Pattern string   `json:"pattern"`
			Actions []string `json:"actions"`
		} `json:"permissions"`
	}
	r.decode(t, &u)
	if u.Name != "app1" || u.Tenant != "acme" || len(u.Roles) != 1 || u.Permissions[0].Pattern != "orders/#" {
		t.Fatalf("user = %+v", u)
	}
	c.fails(409, admin.CodeExists, "POST", "/api/tenants/acme/users", `{"name":"app1","password":"x","roles":["app"]}`)

	lr := c.must(200, "GET", "/api/tenants/acme/users", nil)
	if bytes.Contains(lr.body, []byte("$2a$")) || bytes.Contains(lr.body, []byte("scram")) || !bytes.Contains(lr.body, []byte(`"app1"`)) {
		t.Fatalf("list: %s", lr.body)
	}
	gr := c.must(200, "GET", "/api/tenants/acme/users/app1", nil)
	if bytes.Contains(gr.body, []byte("$2a$")) || bytes.Contains(gr.body, []byte("scram")) {
		t.Fatalf("get leaks hash or verifier: %s", gr.body)
	}
	// The stored user has a hash and a SCRAM verifier, not the password.
	if su, ok := p.Store.User("acme", "app1"); !ok || su.PasswordHash == "" || su.PasswordHash == "pw-app1" ||
		su.Scram == nil || len(su.Scram.StoredKey) != 32 || len(su.Scram.Salt) != 16 {
		t.Fatalf("stored user %+v", su)
	}

	// An app user authenticates but is not an administrator.
	c.as("app1@acme", "pw-app1").fails(403, admin.CodeForbidden, "GET", "/api/tenants", nil)
	// The admin role is the platform administrator's: a tenant cannot
	// have one (issue 14 item 1), its administrator is a tenant-admin,
	// who administers its own tenant only.
	c.fails(400, admin.CodeInvalid, "POST", "/api/tenants/acme/users", `{"name":"boss","password":"pw-boss","roles":["admin"]}`)
	c.fails(400, admin.CodeInvalid, "POST", "/api/tenants/acme/users", `{"name":"boss","password":"pw-boss","roles":["app","admin"]}`)
	c.must(201, "POST", "/api/tenants/acme/users", `{"name":"ops","password":"pw-ops","roles":["tenant-admin"]}`)
	c.as("ops@acme", "pw-ops").fails(403, admin.CodeForbidden, "GET", "/api/tenants", nil)
	c.as("ops@acme", "pw-ops").must(200, "GET", "/api/tenants/acme/users", nil)
	// Nobody deletes the user they are authenticated as.
	c.as("ops@acme", "pw-ops").fails(409, admin.CodeConflict, "DELETE", "/api/tenants/acme/users/ops", nil)

	c.must(204, "DELETE", "/api/tenants/acme/users/app1", nil)
	c.fails(404, admin.CodeNotFound, "GET", "/api/tenants/acme/users/app1", nil)
	c.fails(404, admin.CodeNotFound, "DELETE", "/api/tenants/acme/users/app1", nil)
	c.as("app1@acme", "pw-app1").fails(401, admin.CodeUnauthorized, "GET", "/api/tenants", nil)
	c.fails(404, admin.CodeNotFound, "GET", "/api/tenants/nope/users", nil)
	c.fails(404, admin.CodeNotFound, "POST", "/api/tenants/nope/users", `{"name":"x","password":"x","roles":["app"]}`)
}

func TestErrors(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	c.must(201, "POST", "/api/tenants", `{"name":"acme"}`)
	c.must(201, "POST", "/api/tenants/acme/users", `{"name":"app1","password":"pw","roles":["app"]}`)

	big := `{"name":"acme2","pad":"` + strings.Repeat("x", admin.MaxBodyBytes) + `"}`
	cases := []struct {
		name         string
		cl           *client
		method, path string
		body         any
		status       int
		code         admin.Code
	}{
		// 400
		{"bad tenant name", c, "POST", "/api/tenants", `{"name":"Not Valid!"}`, 400, admin.CodeInvalid},
		{"bad auto-create type", c, "POST", "/api/tenants", `{"name":"t1","autoCreate":[{"pattern":"jobs/#","type":"bogus"}]}`, 400, admin.CodeInvalid},
		{"bad auto-create pattern", c, "POST", "/api/tenants", `{"name":"t1","autoCreate":[{"pattern":"jobs/#/x","type":"queue"}]}`, 400, admin.CodeInvalid},
		{"negative tenant limit", c, "POST", "/api/tenants", `{"name":"t1","limits":{"maxAddresses":-1}}`, 400, admin.CodeInvalid},
		{"unknown tenant field", c, "POST", "/api/tenants", `{"name":"t1","color":"red"}`, 400, admin.CodeInvalidBody},
		{"unknown nested field", c, "POST", "/api/tenants", `{"name":"t1","limits":{"maxFoo":1}}`, 400, admin.CodeInvalidBody},
		{"malformed json", c, "POST", "/api/tenants", `{"name":`, 400, admin.CodeInvalidBody},
		{"wrong json type", c, "POST", "/api/tenants", `{"name":5}`, 400, admin.CodeInvalidBody},
		{"empty body", c, "POST", "/api/tenants", ``, 400, admin.CodeInvalidBody},
		{"trailing data", c, "POST", "/api/tenants", `{"name":"t1"} {"name":"t2"}`, 400, admin.CodeInvalidBody},
		{"bad address name wildcard", c, "POST", "/api/tenants/acme/addresses", `{"name":"orders/#","type":"queue"}`, 400, admin.CodeInvalid},
		{"empty address name", c, "POST", "/api/tenants/acme/addresses", `{"name":"","type":"queue"}`, 400, admin.CodeInvalid},
		{"bad address type", c, "POST", "/api/tenants/acme/addresses", `{"name":"orders","type":"bogus"}`, 400, admin.CodeInvalid},
		{"negative address limit", c, "POST", "/api/tenants/acme/addresses", `{"name":"orders","type":"queue","limits":{"maxMessages":-5}}`, 400, admin.CodeInvalid},
		{"bad overflow for queue", c, "POST", "/api/tenants/acme/addresses", `{"name":"orders","type":"queue","limits":{"overflow":"drop-oldest"}}`, 400, admin.CodeInvalid},
		{"bad max age", c, "POST", "/api/tenants/acme/addresses", `{"name":"orders","type":"queue","limits":{"maxAge":"soon"}}`, 400, admin.CodeInvalidBody},
		{"unknown address field", c, "POST", "/api/tenants/acme/addresses", `{"name":"orders","type":"queue","durable":true}`, 400, admin.CodeInvalidBody},
		{"bad user name", c, "POST", "/api/tenants/acme/users", `{"name":"a@b","password":"x","roles":["app"]}`, 400, admin.CodeInvalid},
		{"user without password", c, "POST", "/api/tenants/acme/users", `{"name":"u1","roles":["app"]}`, 400, admin.CodeInvalid},
		{"user without role", c, "POST", "/api/tenants/acme/users", `{"name":"u1","password":"x"}`, 400, admin.CodeInvalid},
		{"bad role", c, "POST", "/api/tenants/acme/users", `{"name":"u1","password":"x","roles":["root"]}`, 400, admin.CodeInvalid},
		{"bad permission action", c, "POST", "/api/tenants/acme/users", `{"name":"u1","password":"x","roles":["app"],"permissions":[{"pattern":"a/#","actions":["fly"]}]}`, 400, admin.CodeInvalid},
		{"unknown user field", c, "POST", "/api/tenants/acme/users", `{"name":"u1","password":"x","roles":["app"],"passwordHash":"h"}`, 400, admin.CodeInvalidBody},
		// 401
		{"no credentials", c.as("", ""), "GET", "/api/tenants", nil, 401, admin.CodeUnauthorized},
		{"wrong password", c.as("admin", "wrong"), "GET", "/api/tenants", nil, 401, admin.CodeUnauthorized},
		{"unknown user", c.as("ghost", "x"), "GET", "/api/tenants", nil, 401, admin.CodeUnauthorized},
		{"unknown tenant in user name", c.as("admin@nowhere", p.AdminPassword), "GET", "/api/tenants", nil, 401, admin.CodeUnauthorized},
		{"metrics need credentials", c.as("", ""), "GET", "/metrics", nil, 401, admin.CodeUnauthorized},
		// 403
		{"not an admin", c.as("app1@acme", "pw"), "POST", "/api/tenants", `{"name":"t9"}`, 403, admin.CodeForbidden},
		// 404
		{"unknown tenant", c, "GET", "/api/tenants/nope", nil, 404, admin.CodeNotFound},
		{"unknown address", c, "GET", "/api/tenants/acme/addresses/nope/x", nil, 404, admin.CodeNotFound},
		{"unknown user", c, "GET", "/api/tenants/acme/users/nope", nil, 404, admin.CodeNotFound},
		{"unknown route", c, "GET", "/api/nothing", nil, 404, admin.CodeNotFound},
		// 405
		{"method not allowed", c, "PATCH", "/api/tenants", `{}`, 405, admin.CodeMethodNotAllowed},
		// 409
		{"tenant exists", c, "POST", "/api/tenants", `{"name":"acme"}`, 409, admin.CodeExists},
		{"user exists", c, "POST", "/api/tenants/acme/users", `{"name":"app1","password":"x","roles":["app"]}`, 409, admin.CodeExists},
		// 413, with and without a Content-Length
		{"body too large", c, "POST", "/api/tenants", big, 413, admin.CodeBodyTooLarge},
		{"chunked body too large", c, "POST", "/api/tenants", io.MultiReader(strings.NewReader(big)), 413, admin.CodeBodyTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl := *tc.cl
			cl.t = t
			cl.fails(tc.status, tc.code, tc.method, tc.path, tc.body)
		})
	}
	// 401 carries a Basic challenge.
	r := c.as("", "").do("GET", "/api/tenants", nil)
	if h := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Basic ") {
		t.Fatalf("WWW-Authenticate = %q", h)
	}
	// 405 says what is allowed.
	r = c.do("PATCH", "/api/tenants", nil)
	if a := r.header.Get("Allow"); !strings.Contains(a, "GET") || !strings.Contains(a, "POST") {
		t.Fatalf("Allow = %q", a)
	}
	// Nothing of the rejected requests was created.
	var list []tenantJSON
	c.must(200, "GET", "/api/tenants", nil).decode(t, &list)
	if len(list) != 2 {
		t.Fatalf("tenants after errors: %+v", list)
	}
}

func TestProbesMetricsStatus(t *testing.T) {
	p := testkit.Start(t)
	anon := adminClient(t, p).as("", "")
	anon.must(200, "GET", "/healthz", nil)
	anon.must(200, "GET", "/readyz", nil)

	r := anon.must(200, "GET", "/openapi.json", nil)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	r.decode(t, &doc)
	if !strings.HasPrefix(doc.OpenAPI, "3.") || doc.Paths["/api/tenants/{tenant}/addresses/{name}"]["get"] == nil {
		t.Fatalf("openapi: %s ...", r.body[:200])
	}

	c := adminClient(t, p)
	m := c.must(200, "GET", "/metrics", nil)
	for _, want := range []string{"go_goroutines", "process_", "throng_admin_requests_total"} {
		if !bytes.Contains(m.body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	c.must(201, "POST", "/api/tenants", `{"name":"acme"}`)
	c.must(201, "POST", "/api/tenants/acme/addresses", `{"name":"q","type":"queue"}`)
	var st admin.Status
	c.must(200, "GET", "/api/status", nil).decode(t, &st)
	if !st.Ready || st.Tenants != 2 || st.Addresses != 1 || st.Users != 1 || st.Version == "" {
		t.Fatalf("status = %+v", st)
	}
}
