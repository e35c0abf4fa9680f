package admin_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/admin"
	"github.com/throngmq/throng/internal/testkit"
)

// Tests of Hono's Device Registry Management API under /v1 (hono.go),
// end to end against the real tenant and registry stores.

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// hfails sends a request and checks a /v1 error: the status and Hono's
// error body {"error": "..."}; it returns the message.
func (c *client) hfails(status int, method, path string, body any) string {
	c.t.Helper()
	r := c.do(method, path, body)
	if r.status != status {
		c.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	var e map[string]any
	if err := json.Unmarshal(r.body, &e); err != nil {
		c.t.Fatalf("%s %s: error body %q: %v", method, path, r.body, err)
	}
	msg, ok := e["error"].(string)
	if !ok || msg == "" {
		c.t.Fatalf("%s %s: not Hono's error shape: %s", method, path, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		c.t.Fatalf("%s %s: error content type %q", method, path, ct)
	}
	if status == 401 && r.header.Get("WWW-Authenticate") == "" {
		c.t.Fatalf("%s %s: 401 without WWW-Authenticate", method, path)
	}
	return msg
}

// created checks a Hono create answer: 201, Location, an unquoted ETag and
// {"id"}; it returns the id and the ETag.
func (c *client) created(path string, r result, locPrefix string) (string, string) {
	c.t.Helper()
	var body struct {
		ID string `json:"id"`
	}
	r.decode(c.t, &body)
	if body.ID == "" {
		c.t.Fatalf("POST %s: no id in %s", path, r.body)
	}
	if loc := r.header.Get("Location"); loc != locPrefix+url.PathEscape(body.ID) {
		c.t.Fatalf("POST %s: Location %q, want %q", path, loc, locPrefix+body.ID)
	}
	etag := r.header.Get("ETag")
	if etag == "" || strings.Contains(etag, `"`) {
		c.t.Fatalf("POST %s: ETag %q (want Hono's unquoted version)", path, etag)
	}
	return body.ID, etag
}

// withIfMatch sends a request with an If-Match header.
func (c *client) withIfMatch(method, path, ifMatch string, body string) result {
	c.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("If-Match", ifMatch)
	req.SetBasicAuth(c.user, c.pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp.StatusCode, resp.Header, b}
}

// certificate makes a certificate signed by parent (self-signed if nil).
func certificate(t *testing.T, subject pkix.Name, isCA bool, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               subject,
		NotBefore:             time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  isCA,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// fresh empties *v for the next decoding (json.Unmarshal would merge into
// the maps and slice elements it holds).
func fresh[T any](v *T) *T {
	var zero T
	*v = zero
	return v
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestV1Tenants(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)

	c.as("", "").hfails(401, "GET", "/v1/tenants/default", nil)
	c.as("admin", "wrong").hfails(401, "POST", "/v1/tenants", nil)

	// A generated id is a lower-case UUID: a valid throng tenant name.
	r := c.must(201, "POST", "/v1/tenants", `{"ext": {"messaging-type": "kafka"}}`)
	gen, etag := c.created("/v1/tenants", r, "/v1/tenants/")
	if !uuidRE.MatchString(gen) {
		t.Fatalf("generated tenant id %q", gen)
	}
	// An ordinary throng tenant, its Hono settings in "iot".
	var tj map[string]any
	c.must(200, "GET", "/api/tenants/"+gen, nil).decode(t, &tj)
	if iot, _ := tj["iot"].(map[string]any); iot == nil || iot["ext"].(map[string]any)["messaging-type"] != "kafka" {
		t.Fatalf("/api/tenants/%s = %v", gen, tj)
	}
	g := c.must(200, "GET", "/v1/tenants/"+gen, nil)
	if g.header.Get("ETag") != etag {
		t.Fatalf("GET ETag %q, create ETag %q", g.header.Get("ETag"), etag)
	}
	if ct := g.header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Fatalf("content type %q", ct)
	}

	// With an id; a second create conflicts; ids throng refuses are 400.
	r = c.must(201, "POST", "/v1/tenants/acme", nil)
	if id, _ := c.created("/v1/tenants/acme", r, "/v1/tenants/"); id != "acme" {
		t.Fatalf("id %q", id)
	}
	c.hfails(409, "POST", "/v1/tenants/acme", `{}`)
	if msg := c.hfails(400, "POST", "/v1/tenants/DEFAULT_TENANT", nil); !strings.Contains(msg, "lower-case") {
		t.Fatalf("message %q does not explain the tenant id rule", msg)
	}
	c.hfails(400, "POST", "/v1/tenants/acme2", `{"enabled": true, "bogus": 1}`)
	c.hfails(400, "POST", "/v1/tenants/acme2", `{"adapters": []}`)
	c.hfails(400, "POST", "/v1/tenants/acme2", `{"adapters": [{"type": "hono-mqtt"}, {"type": "hono-mqtt"}]}`)
	c.hfails(400, "POST", "/v1/tenants/acme2", `{"alias": "Not An LDH"}`)
	c.hfails(400, "POST", "/v1/tenants/acme2", `{"minimum-message-size": -1}`)
	c.hfails(400, "POST", "/v1/tenants/acme2", `{"resource-limits": {"max-connections": -2}}`)
	c.hfails(400, "POST", "/v1/tenants/acme2", `{"enabled": tru`)
	c.hfails(413, "POST", "/v1/tenants/acme2", `{"ext":{"x":"`+strings.Repeat("x", admin.MaxBodyBytes)+`"}}`)
	c.hfails(404, "GET", "/v1/tenants/nope", nil)
	c.hfails(404, "PUT", "/v1/tenants/nope", `{}`)
	c.hfails(404, "DELETE", "/v1/tenants/nope", nil)
	c.hfails(405, "PATCH", "/v1/tenants/acme", `{}`)

	// Defaults for a tenant without Hono settings.
	var dt map[string]any
	d := c.must(200, "GET", "/v1/tenants/default", nil)
	d.decode(t, &dt)
	if len(dt) != 1 || dt["enabled"] != true || d.header.Get("ETag") == "" {
		t.Fatalf("default tenant %s", d.body)
	}

	// Update: If-Match, 204 with the new ETag; PUT needs a body.
	old := c.must(200, "GET", "/v1/tenants/acme", nil).header.Get("ETag")
	body := `{"enabled": false, "adapters": [{"type": "hono-mqtt", "enabled": true}], "registration-limits": {"max-devices": 100},
		"resource-limits": {"max-connections": 10, "max-ttl": 60}, "minimum-message-size": 4096, "ext": {"owner": "ops"}}`
	c.hfails(400, "PUT", "/v1/tenants/acme", nil)
	if r := c.withIfMatch("PUT", "/v1/tenants/acme", "not-the-version", body); r.status != 412 {
		t.Fatalf("PUT with a stale If-Match: %d %s", r.status, r.body)
	}
	r = c.withIfMatch("PUT", "/v1/tenants/acme", old, body)
	if r.status != 204 || len(r.body) != 0 {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	nu := r.header.Get("ETag")
	if nu == "" || nu == old {
		t.Fatalf("PUT ETag %q (old %q)", nu, old)
	}
	// A quoted If-Match (RFC 9110 clients) names the same version.
	if r := c.withIfMatch("PUT", "/v1/tenants/acme", `"`+old+`"`, body); r.status != 412 {
		t.Fatalf("PUT with the old quoted version: %d", r.status)
	}
	if r := c.withIfMatch("PUT", "/v1/tenants/acme", `"`+nu+`"`, body); r.status != 204 {
		t.Fatalf("PUT with the current quoted version: %d %s", r.status, r.body)
	}
	var got map[string]any
	g = c.must(200, "GET", "/v1/tenants/acme", nil)
	g.decode(t, &got)
	if g.header.Get("ETag") != nu || got["enabled"] != false || got["minimum-message-size"] != 4096.0 ||
		got["registration-limits"].(map[string]any)["max-devices"] != 100.0 ||
		got["resource-limits"].(map[string]any)["max-ttl"] != 60.0 || got["adapters"].([]any)[0].(map[string]any)["type"] != "hono-mqtt" {
		t.Fatalf("after PUT: %s (ETag %q, want %q)", g.body, g.header.Get("ETag"), nu)
	}
	// The throng side of the tenant is untouched by a /v1 update.
	c.must(200, "PUT", "/api/tenants/acme", `{"name":"acme","strict":true}`)
	var at map[string]any
	c.must(200, "GET", "/api/tenants/acme", nil).decode(t, &at)
	if at["strict"] != true || at["iot"] == nil {
		t.Fatalf("/api tenant after both updates: %v", at)
	}
	// ... but its ETag changes (the version covers the whole tenant).
	if e := c.must(200, "GET", "/v1/tenants/acme", nil).header.Get("ETag"); e == nu {
		t.Fatal("ETag unchanged after a change through /api")
	}
	c.must(204, "PUT", "/v1/tenants/acme", `{"enabled": true}`)
	c.must(200, "GET", "/api/tenants/acme", nil).decode(t, &at)
	if at["strict"] != true {
		t.Fatalf("/v1 update lost the throng settings: %v", at)
	}

	// Delete: If-Match, the default tenant stays, devices go with the tenant.
	c.must(201, "POST", "/v1/tenants/gone", nil)
	c.must(201, "POST", "/v1/devices/gone/dev1", nil)
	if r := c.withIfMatch("DELETE", "/v1/tenants/gone", "stale", ""); r.status != 412 {
		t.Fatalf("DELETE with a stale If-Match: %d", r.status)
	}
	c.hfails(403, "DELETE", "/v1/tenants/default", nil)
	cur := c.must(200, "GET", "/v1/tenants/gone", nil).header.Get("ETag")
	if r := c.withIfMatch("DELETE", "/v1/tenants/gone", cur, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	c.hfails(404, "GET", "/v1/tenants/gone", nil)
	c.fails(404, admin.CodeNotFound, "GET", "/api/tenants/gone", nil)
	c.must(201, "POST", "/v1/tenants/gone", nil)
	c.hfails(404, "GET", "/v1/devices/gone/dev1", nil)
	// Deleting through /api deletes the devices too.
	c.must(201, "POST", "/v1/devices/gone/dev2", nil)
	c.must(204, "DELETE", "/api/tenants/gone", nil)
	c.must(201, "POST", "/api/tenants", `{"name":"gone"}`)
	c.hfails(404, "GET", "/v1/devices/gone/dev2", nil)
}

func TestV1TrustedCA(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)

	ca, caKey := certificate(t, pkix.Name{CommonName: "Acme Root", Organization: []string{"Acme"}}, true, nil, nil)
	r := c.must(201, "POST", "/v1/tenants/acme", fmt.Sprintf(`{"trusted-ca": [{"cert": %q, "auto-provisioning-enabled": true}]}`, b64(ca.Raw)))
	_ = r
	var got struct {
		TrustedCA []map[string]any `json:"trusted-ca"`
	}
	c.must(200, "GET", "/v1/tenants/acme", nil).decode(t, &got)
	if len(got.TrustedCA) != 1 {
		t.Fatalf("trusted-ca %v", got.TrustedCA)
	}
	a := got.TrustedCA[0]
	if a["subject-dn"] != "CN=Acme Root,O=Acme" || a["algorithm"] != "EC" || a["public-key"] != b64(ca.RawSubjectPublicKeyInfo) ||
		a["not-before"] != "2026-01-01T00:00:00Z" || a["not-after"] != "2036-01-01T00:00:00Z" || a["id"] == "" || a["id"] == nil ||
		a["cert"] != nil || a["auto-provisioning-enabled"] != true {
		t.Fatalf("derived trust anchor %v", a)
	}
	// The certificate is kept for device authentication.
	if ten, _ := p.Store.Tenant("acme"); len(ten.IoT.TrustedCA[0].Cert) == 0 {
		t.Fatal("the trust anchor's certificate was not stored")
	}
	// Another tenant may not use the same CA (unless in the same trust-anchor-group).
	c.hfails(409, "POST", "/v1/tenants/other", fmt.Sprintf(`{"trusted-ca": [{"cert": %q}]}`, b64(ca.Raw)))
	// Explicit values: all of subject-dn, public-key, not-before, not-after; the key must parse.
	c.hfails(400, "POST", "/v1/tenants/other", `{"trusted-ca": [{"cert": "bm90IGEgY2VydA=="}]}`)
	c.hfails(400, "POST", "/v1/tenants/other", `{"trusted-ca": [{"subject-dn": "CN=x"}]}`)
	other, otherKey := certificate(t, pkix.Name{CommonName: "Other Root"}, true, nil, nil)
	c.hfails(400, "POST", "/v1/tenants/other", fmt.Sprintf(`{"trusted-ca": [{"subject-dn": "CN=Other Root", "public-key": %q,
		"not-before": "2026-01-01T00:00:00Z", "not-after": "2036-01-01T00:00:00Z"}]}`, b64(other.RawSubjectPublicKeyInfo))) // RSA by default
	c.must(201, "POST", "/v1/tenants/other", fmt.Sprintf(`{"trusted-ca": [{"subject-dn": "CN=Other Root", "public-key": %q, "algorithm": "EC",
		"not-before": "2026-01-01T00:00:00Z", "not-after": "2036-01-01T00:00:00Z", "auth-id-template": "CN={{subject-cn}},OU=devices"}]}`, b64(other.RawSubjectPublicKeyInfo)))
	c.hfails(400, "POST", "/v1/tenants/third", fmt.Sprintf(`{"trusted-ca": [{"cert": %q, "auth-id-template": "no placeholder"}]}`, b64(other.Raw)))
	// Subject DNs are compared in canonical form; a shared trust-anchor-group allows sharing.
	c.hfails(409, "POST", "/v1/tenants/third", fmt.Sprintf(`{"trusted-ca": [{"subject-dn": "cn=Other Root", "public-key": %q, "algorithm": "EC",
		"not-before": "2026-01-01T00:00:00Z", "not-after": "2036-01-01T00:00:00Z"}]}`, b64(other.RawSubjectPublicKeyInfo)))
	c.hfails(400, "POST", "/v1/tenants/third", fmt.Sprintf(`{"trusted-ca": [{"subject-dn": "not a dn", "public-key": %q, "algorithm": "EC",
		"not-before": "2026-01-01T00:00:00Z", "not-after": "2036-01-01T00:00:00Z"}]}`, b64(other.RawSubjectPublicKeyInfo)))
	shared, _ := certificate(t, pkix.Name{CommonName: "Shared Root"}, true, nil, nil)
	c.must(201, "POST", "/v1/tenants/g1", fmt.Sprintf(`{"trust-anchor-group": "g", "trusted-ca": [{"cert": %q}]}`, b64(shared.Raw)))
	c.must(201, "POST", "/v1/tenants/g2", fmt.Sprintf(`{"trust-anchor-group": "g", "trusted-ca": [{"cert": %q}]}`, b64(shared.Raw)))
	c.hfails(409, "POST", "/v1/tenants/g3", fmt.Sprintf(`{"trust-anchor-group": "h", "trusted-ca": [{"cert": %q}]}`, b64(shared.Raw)))

	// A device certificate: the auth-id is the subject DN, or the
	// tenant's auth-id-template applied to it; the validity goes into the
	// one secret.
	c.must(201, "POST", "/v1/devices/acme/dev1", nil)
	dev, _ := certificate(t, pkix.Name{CommonName: "dev1", OrganizationalUnit: []string{"iot"}, Organization: []string{"Acme"}}, false, ca, caKey)
	c.must(204, "PUT", "/v1/credentials/acme/dev1", fmt.Sprintf(`[{"type": "x509-cert", "cert": %q}]`, b64(dev.Raw)))
	var cs []map[string]any
	c.must(200, "GET", "/v1/credentials/acme/dev1", nil).decode(t, fresh(&cs))
	if len(cs) != 1 || cs[0]["auth-id"] != "CN=dev1,OU=iot,O=Acme" {
		t.Fatalf("x509 credentials %v", cs)
	}
	sec := cs[0]["secrets"].([]any)[0].(map[string]any)
	if sec["not-after"] != "2036-01-01T00:00:00Z" {
		t.Fatalf("x509 secret %v", sec)
	}
	c.must(201, "POST", "/v1/devices/other/dev2", nil)
	dev2, _ := certificate(t, pkix.Name{CommonName: "dev2"}, false, other, otherKey)
	c.must(204, "PUT", "/v1/credentials/other/dev2", fmt.Sprintf(`[{"type": "x509-cert", "cert": %q, "secrets": [{}]}]`, b64(dev2.Raw)))
	c.must(200, "GET", "/v1/credentials/other/dev2", nil).decode(t, fresh(&cs))
	if len(cs) != 1 || cs[0]["auth-id"] != "CN=dev2,OU=devices" {
		t.Fatalf("x509 credentials with a template %v", cs)
	}
	c.hfails(400, "PUT", "/v1/credentials/acme/dev1", `[{"type": "x509-cert", "cert": "bm90IGEgY2VydA=="}]`)
	c.hfails(400, "PUT", "/v1/credentials/acme/dev1", fmt.Sprintf(`[{"type": "psk", "auth-id": "x", "cert": %q, "secrets": [{"key": "AAAA"}]}]`, b64(dev.Raw)))
}

type page struct {
	Total  int              `json:"total"`
	Result []map[string]any `json:"result"`
}

// reset empties the page for the next decoding (json.Unmarshal would
// merge into the maps it holds).
func (p *page) reset() *page {
	*p = page{}
	return p
}

func TestV1Search(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)

	for _, id := range []string{"t-b", "t-a", "t-c"} {
		c.must(201, "POST", "/v1/tenants/"+id, fmt.Sprintf(`{"ext": {"brand": "acme-%s"}}`, id))
	}
	ids := func(p *page) string {
		var s []string
		for _, r := range p.Result {
			s = append(s, r["id"].(string))
		}
		return strings.Join(s, ",")
	}
	q := func(path string, kv ...string) string {
		v := url.Values{}
		for i := 0; i < len(kv); i += 2 {
			v.Add(kv[i], kv[i+1])
		}
		return path + "?" + v.Encode()
	}
	var pg page
	c.must(200, "GET", "/v1/tenants", nil).decode(t, pg.reset())
	if pg.Total != 4 || ids(&pg) != "default,t-a,t-b,t-c" {
		t.Fatalf("tenants %+v", pg)
	}
	c.must(200, "GET", q("/v1/tenants", "pageSize", "1", "pageOffset", "1", "sortJson", `{"field":"/id","direction":"desc"}`), nil).decode(t, pg.reset())
	if pg.Total != 4 || ids(&pg) != "t-b" {
		t.Fatalf("page %+v", pg)
	}
	c.must(200, "GET", q("/v1/tenants", "filterJson", `{"field":"/ext/brand","value":"acme-t-?"}`, "filterJson", `{"field":"/enabled","value":true}`,
		"sortJson", `{"field":"/ext/brand","direction":"desc"}`), nil).decode(t, pg.reset())
	if pg.Total != 3 || ids(&pg) != "t-c,t-b,t-a" {
		t.Fatalf("filtered %+v", pg)
	}
	c.hfails(404, "GET", q("/v1/tenants", "filterJson", `{"field":"/ext/brand","value":"nothing*"}`), nil)
	for _, bad := range [][]string{{"pageSize", "0"}, {"pageSize", "201"}, {"pageSize", "x"}, {"pageOffset", "-1"},
		{"filterJson", "{"}, {"filterJson", `{"field":"/a"}`}, {"filterJson", `{"field":"/a","value":1,"op":"gt"}`}, {"filterJson", `{"field":"/a","value":1,"x":1}`},
		{"sortJson", `{"field":"/a","direction":"up"}`}, {"sortJson", `{"direction":"asc"}`}} {
		c.hfails(400, "GET", q("/v1/tenants", bad...), nil)
	}

	// Devices: paging (default 30, at most 200), filters, sort, isGateway.
	for i := 0; i < 35; i++ {
		c.must(201, "POST", fmt.Sprintf("/v1/devices/t-a/d%02d", i), fmt.Sprintf(`{"ext": {"brand": "b%d", "n": %d}}`, i%3, i))
	}
	c.must(201, "POST", "/v1/devices/t-a/gw1", `{"ext": {"brand": "gw"}}`)
	c.must(201, "POST", "/v1/devices/t-a/behind", `{"via": ["gw1"], "ext": {"brand": "x"}}`)
	c.must(200, "GET", "/v1/devices/t-a", nil).decode(t, pg.reset())
	if pg.Total != 37 || len(pg.Result) != 30 || pg.Result[0]["id"] != "behind" {
		t.Fatalf("devices: total %d, %d results, first %v", pg.Total, len(pg.Result), pg.Result[0]["id"])
	}
	c.must(200, "GET", q("/v1/devices/t-a", "pageSize", "5", "pageOffset", "35"), nil).decode(t, pg.reset())
	if pg.Total != 37 || len(pg.Result) != 2 {
		t.Fatalf("last page %+v", pg)
	}
	c.must(200, "GET", q("/v1/devices/t-a", "filterJson", `{"field":"/ext/brand","value":"b1"}`, "sortJson", `{"field":"/ext/n","direction":"desc"}`, "pageSize", "3"), nil).decode(t, pg.reset())
	if pg.Total != 12 || ids(&pg) != "d34,d31,d28" {
		t.Fatalf("filtered devices %d %s", pg.Total, ids(&pg))
	}
	c.must(200, "GET", q("/v1/devices/t-a", "isGateway", "true"), nil).decode(t, pg.reset())
	if pg.Total != 1 || ids(&pg) != "gw1" {
		t.Fatalf("gateways %+v", pg)
	}
	c.must(200, "GET", q("/v1/devices/t-a", "isGateway", "false", "pageSize", "200"), nil).decode(t, pg.reset())
	if pg.Total != 36 {
		t.Fatalf("non-gateways %d", pg.Total)
	}
	// Hono answers a search without results with 404.
	c.hfails(404, "GET", q("/v1/devices/t-a", "filterJson", `{"field":"/ext/brand","value":"none"}`), nil)
	c.hfails(404, "GET", "/v1/devices/t-b", nil)
	c.hfails(404, "GET", "/v1/devices/nope", nil)
	for _, bad := range [][]string{{"pageSize", "0"}, {"pageSize", "201"}, {"pageOffset", "x"}, {"isGateway", "maybe"}, {"filterJson", "[]"}} {
		c.hfails(400, "GET", q("/v1/devices/t-a", bad...), nil)
	}
}

func TestV1Devices(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	c.must(201, "POST", "/v1/tenants/acme", nil)

	// Generated id: no body at all, as Hono's getting-started guide sends.
	r := c.must(201, "POST", "/v1/devices/acme", nil)
	gen, _ := c.created("/v1/devices/acme", r, "/v1/devices/acme/")
	c.must(200, "GET", "/v1/devices/acme/"+gen, nil)

	r = c.must(201, "POST", "/v1/devices/acme/dev-1", `{"ext": {"ep": "IMEI4711"}, "defaults": {"ttl": 300}}`)
	_, etag := c.created("/v1/devices/acme/dev-1", r, "/v1/devices/acme/")
	c.hfails(409, "POST", "/v1/devices/acme/dev-1", nil)
	c.hfails(404, "POST", "/v1/devices/nope/dev-1", nil)
	c.hfails(404, "POST", "/v1/devices/nope", nil)
	c.hfails(400, "POST", "/v1/devices/acme/bad%20id", nil)
	c.hfails(400, "POST", "/v1/devices/acme/dev-2", `{"via": ["gw"], "memberOf": ["g"]}`)
	c.hfails(400, "POST", "/v1/devices/acme/dev-2", `{"unknown": true}`)
	c.hfails(400, "POST", "/v1/devices/acme/dev-2", `[]`)
	c.hfails(400, "POST", "/v1/devices/Bad_Tenant/dev-2", nil)
	c.must(201, "POST", "/v1/devices/acme/dev.2:x=y", nil)
	big := `{"ext":{"x":"` + strings.Repeat("x", admin.MaxBodyBytes) + `"}}`
	c.hfails(413, "POST", "/v1/devices/acme/dev-3", big)
	c.hfails(413, "PUT", "/v1/devices/acme/dev-1", big)
	c.hfails(413, "PUT", "/v1/credentials/acme/dev-1", "["+big+"]")

	var d map[string]any
	g := c.must(200, "GET", "/v1/devices/acme/dev-1", nil)
	g.decode(t, &d)
	if g.header.Get("ETag") != etag || d["ext"].(map[string]any)["ep"] != "IMEI4711" || d["status"].(map[string]any)["created"] == nil {
		t.Fatalf("GET device: %s ETag %q want %q", g.body, g.header.Get("ETag"), etag)
	}
	c.hfails(404, "GET", "/v1/devices/acme/nope", nil)
	c.hfails(404, "GET", "/v1/devices/nope/dev-1", nil)

	// Update: status is the registry's; If-Match; 204 with the new ETag.
	c.hfails(400, "PUT", "/v1/devices/acme/dev-1", nil)
	c.hfails(404, "PUT", "/v1/devices/acme/nope", `{}`)
	if r := c.withIfMatch("PUT", "/v1/devices/acme/dev-1", "999999", `{"enabled": false}`); r.status != 412 {
		t.Fatalf("stale If-Match: %d %s", r.status, r.body)
	}
	r = c.withIfMatch("PUT", "/v1/devices/acme/dev-1", etag, `{"enabled": false, "via": ["gw-1"], "status": {"created": "2000-01-01T00:00:00Z"}}`)
	if r.status != 204 || r.header.Get("ETag") == "" || r.header.Get("ETag") == etag {
		t.Fatalf("PUT: %d ETag %q: %s", r.status, r.header.Get("ETag"), r.body)
	}
	etag2 := r.header.Get("ETag")
	d = nil
	c.must(200, "GET", "/v1/devices/acme/dev-1", nil).decode(t, &d)
	st := d["status"].(map[string]any)
	if d["enabled"] != false || d["ext"] != nil || st["created"] == "2000-01-01T00:00:00Z" || st["updated"] == nil {
		t.Fatalf("after PUT: %v", d)
	}
	c.must(204, "PUT", "/v1/devices/acme/dev-1", `{}`) // no If-Match: unconditional

	// Delete: If-Match, then 404.
	if r := c.withIfMatch("DELETE", "/v1/devices/acme/dev-1", etag2, ""); r.status != 412 {
		t.Fatalf("DELETE with a stale If-Match: %d", r.status)
	}
	cur := c.must(200, "GET", "/v1/devices/acme/dev-1", nil).header.Get("ETag")
	if r := c.withIfMatch("DELETE", "/v1/devices/acme/dev-1", cur, ""); r.status != 204 {
		t.Fatalf("DELETE: %d %s", r.status, r.body)
	}
	c.hfails(404, "DELETE", "/v1/devices/acme/dev-1", nil)
	c.hfails(404, "GET", "/v1/devices/acme/dev-1", nil)
	c.hfails(404, "DELETE", "/v1/devices/nope/dev-1", nil)

	// Delete all devices of a tenant (204 also for a tenant without).
	c.must(204, "DELETE", "/v1/devices/acme", nil)
	c.hfails(404, "GET", "/v1/devices/acme", nil)
	c.hfails(404, "GET", "/v1/devices/acme/"+gen, nil)
	c.must(204, "DELETE", "/v1/devices/nope", nil)
}

func TestV1Credentials(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	c.must(201, "POST", "/v1/tenants/acme", nil)
	c.must(201, "POST", "/v1/devices/acme/dev1", nil)
	c.must(201, "POST", "/v1/devices/acme/dev2", nil)

	// A device without credentials has an empty set.
	g := c.must(200, "GET", "/v1/credentials/acme/dev1", nil)
	if strings.TrimSpace(string(g.body)) != "[]" {
		t.Fatalf("empty credentials: %s", g.body)
	}
	c.hfails(404, "GET", "/v1/credentials/acme/nope", nil)
	c.hfails(404, "PUT", "/v1/credentials/acme/nope", `[]`)
	c.hfails(404, "GET", "/v1/credentials/nope/dev1", nil)

	// A pre-hashed sha-512 password: base64(sha512(salt + password)).
	salt := []byte("salt1234")
	sum := sha512.Sum512(append(append([]byte{}, salt...), "hashed-secret"...))
	pwHash := b64(sum[:])
	set := fmt.Sprintf(`[{"type": "hashed-password", "auth-id": "sensor1", "secrets": [{"pwd-plain": "very-secret-1", "not-after": "2036-12-24T19:00:00Z"}]},
		{"type": "hashed-password", "auth-id": "sensor1b", "secrets": [{"pwd-hash": %q, "salt": %q, "hash-function": "sha-512"}]},
		{"type": "psk", "auth-id": "psk-id", "secrets": [{"key": "c2VjcmV0a2V5"}]}]`, pwHash, b64(salt))
	r := c.must(204, "PUT", "/v1/credentials/acme/dev1", set)
	etag := r.header.Get("ETag")
	if etag == "" || strings.Contains(etag, `"`) {
		t.Fatalf("PUT ETag %q", etag)
	}
	g = c.must(200, "GET", "/v1/credentials/acme/dev1", nil)
	if g.header.Get("ETag") != etag {
		t.Fatalf("GET ETag %q, PUT ETag %q", g.header.Get("ETag"), etag)
	}
	for _, secret := range []string{"pwd-plain", "very-secret-1", "pwd-hash", pwHash, "salt", b64(salt), "c2VjcmV0a2V5", "$2a$"} {
		if bytes.Contains(g.body, []byte(secret)) {
			t.Fatalf("GET credentials returns %q: %s", secret, g.body)
		}
	}
	var cs []struct {
		Type    string           `json:"type"`
		AuthID  string           `json:"auth-id"`
		Secrets []map[string]any `json:"secrets"`
	}
	g.decode(t, fresh(&cs))
	if len(cs) != 3 {
		t.Fatalf("credentials %s", g.body)
	}
	var pwSecretID string
	for _, cr := range cs {
		if len(cr.Secrets) != 1 || cr.Secrets[0]["id"] == nil {
			t.Fatalf("credential %+v lacks a secret id", cr)
		}
		if cr.AuthID == "sensor1" {
			pwSecretID = cr.Secrets[0]["id"].(string)
			if cr.Secrets[0]["not-after"] != "2036-12-24T19:00:00Z" {
				t.Fatalf("secret %v", cr.Secrets[0])
			}
		}
	}
	// The password is stored hashed: it authenticates the device through
	// the registry (the plain text is nowhere in the store's answer).

	// Patch mode: a secret named by id keeps its hash; others go.
	if r := c.withIfMatch("PUT", "/v1/credentials/acme/dev1", "12345678", `[]`); r.status != 412 {
		t.Fatalf("stale If-Match: %d %s", r.status, r.body)
	}
	r = c.withIfMatch("PUT", "/v1/credentials/acme/dev1", etag, fmt.Sprintf(`[{"type": "hashed-password", "auth-id": "sensor1", "secrets": [{"id": %q, "comment": "kept"}]}]`, pwSecretID))
	if r.status != 204 || r.header.Get("ETag") == etag {
		t.Fatalf("patch: %d %s", r.status, r.body)
	}
	c.must(200, "GET", "/v1/credentials/acme/dev1", nil).decode(t, fresh(&cs))
	if len(cs) != 1 || cs[0].Secrets[0]["id"] != pwSecretID || cs[0].Secrets[0]["comment"] != "kept" {
		t.Fatalf("after patch: %+v", cs)
	}
	c.hfails(400, "PUT", "/v1/credentials/acme/dev1", `[{"type": "hashed-password", "auth-id": "sensor1", "secrets": [{"id": "no-such-secret"}]}]`)

	// An auth-id of a type belongs to one device of the tenant.
	c.hfails(409, "PUT", "/v1/credentials/acme/dev2", `[{"type": "hashed-password", "auth-id": "sensor1", "secrets": [{"pwd-plain": "x"}]}]`)
	// The same auth-id with another type is another credential.
	c.must(204, "PUT", "/v1/credentials/acme/dev2", `[{"type": "psk", "auth-id": "sensor1", "secrets": [{"key": "a2V5"}]}]`)

	// Invalid sets.
	for _, bad := range []string{
		``, `{}`, `[{}]`, `[1]`, `[{"type": "hashed-password"}]`,
		`[{"type": "magic", "auth-id": "a", "secrets": [{}]}]`,
		`[{"type": "hashed-password", "auth-id": "a", "secrets": []}]`,
		`[{"type": "hashed-password", "auth-id": "a", "secrets": [{}]}]`,
		`[{"type": "hashed-password", "auth-id": "a", "secrets": [{"pwd-plain": "` + strings.Repeat("p", 73) + `"}]}]`,
		`[{"type": "hashed-password", "auth-id": "a", "secrets": [{"pwd-hash": "x", "hash-function": "md5"}]}]`,
		`[{"type": "hashed-password", "auth-id": "a", "secrets": [{"pwd-plain": "x", "not-before": "2030-01-01T00:00:00Z", "not-after": "2029-01-01T00:00:00Z"}]}]`,
		`[{"type": "hashed-password", "auth-id": "a", "secrets": [{"pwd-plain": "x"}]}, {"type": "hashed-password", "auth-id": "a", "secrets": [{"pwd-plain": "y"}]}]`,
		`[{"type": "psk", "auth-id": "a", "secrets": [{}]}]`,
		`[{"type": "psk", "auth-id": "a", "secrets": [{"key": "a2V5", "pwd-plain": "x"}]}]`,
		`[{"type": "rpk", "auth-id": "a", "secrets": [{"key": "bm90IGEga2V5"}]}]`,
		`[{"type": "hashed-password", "auth-id": "a", "secrets": [{"pwd-plain": "x"}], "bogus": 1}]`,
	} {
		c.hfails(400, "PUT", "/v1/credentials/acme/dev2", bad)
	}

	// rpk from a certificate: the key and algorithm are taken from it.
	cert, _ := certificate(t, pkix.Name{CommonName: "dev2"}, false, nil, nil)
	c.must(204, "PUT", "/v1/credentials/acme/dev2", fmt.Sprintf(`[{"type": "rpk", "auth-id": "dev2", "secrets": [{"cert": %q}]}]`, b64(cert.Raw)))
	c.must(200, "GET", "/v1/credentials/acme/dev2", nil).decode(t, fresh(&cs))
	if len(cs) != 1 || cs[0].Type != "rpk" || cs[0].Secrets[0]["cert"] != nil {
		t.Fatalf("rpk %+v", cs)
	}

	// Deleting the device deletes its credentials: the auth-id is free again.
	c.must(204, "DELETE", "/v1/devices/acme/dev1", nil)
	c.hfails(404, "GET", "/v1/credentials/acme/dev1", nil)
	c.must(204, "PUT", "/v1/credentials/acme/dev2", `[{"type": "hashed-password", "auth-id": "sensor1", "secrets": [{"pwd-plain": "x"}]}]`)
}

func TestV1Access(t *testing.T) {
	p := testkit.Start(t)
	c := adminClient(t, p)
	for _, ten := range []string{"t1", "t2"} {
		c.must(201, "POST", "/v1/tenants/"+ten, `{"registration-limits": {"max-devices": 10}}`)
		c.must(201, "POST", "/v1/devices/"+ten+"/d", nil)
	}
	c.must(201, "POST", "/api/tenants/t1/users", `{"name":"ops","password":"pw-ops","roles":["tenant-admin"]}`)
	c.must(201, "POST", "/api/tenants/t1/users", `{"name":"app","password":"pw-app","roles":["app"],"permissions":[{"pattern":"#","actions":["send","receive"]}]}`)
	ops := c.as("ops@t1", "pw-ops")

	// Its own tenant: read and update (not the limits), devices, credentials.
	e := ops.must(200, "GET", "/v1/tenants/t1", nil).header.Get("ETag")
	if r := ops.withIfMatch("PUT", "/v1/tenants/t1", e, `{"registration-limits": {"max-devices": 10}, "ext": {"x": 1}}`); r.status != 204 {
		t.Fatalf("tenant-admin PUT own tenant: %d %s", r.status, r.body)
	}
	ops.hfails(403, "PUT", "/v1/tenants/t1", `{"registration-limits": {"max-devices": 1000}}`)
	ops.hfails(403, "PUT", "/v1/tenants/t1", `{}`)
	// Unchanged limits written another way are unchanged.
	c.must(204, "PUT", "/v1/tenants/t1", `{"registration-limits": {"max-devices": 10}, "resource-limits": {"max-ttl": 60, "max-connections": 5}}`)
	ops.must(204, "PUT", "/v1/tenants/t1", `{"registration-limits":{"max-devices":10},"resource-limits":{ "max-connections" : 5, "max-ttl":60 }}`)
	// A conflict with a tenant it may not read is 403, not 409.
	c.must(204, "PUT", "/v1/tenants/t2", `{"alias": "taken", "registration-limits": {"max-devices": 10}}`)
	ops.hfails(403, "PUT", "/v1/tenants/t1", `{"alias": "taken", "registration-limits":{"max-devices":10},"resource-limits":{"max-connections":5,"max-ttl":60}}`)
	c.hfails(409, "PUT", "/v1/tenants/t1", `{"alias": "taken"}`)
	ops.must(201, "POST", "/v1/devices/t1", nil)
	ops.must(201, "POST", "/v1/devices/t1/d2", nil)
	ops.must(200, "GET", "/v1/devices/t1", nil)
	ops.must(200, "GET", "/v1/devices/t1/d2", nil)
	ops.must(204, "PUT", "/v1/devices/t1/d2", `{"enabled": false}`)
	ops.must(204, "PUT", "/v1/credentials/t1/d2", `[{"type": "hashed-password", "auth-id": "d2", "secrets": [{"pwd-plain": "x"}]}]`)
	ops.must(200, "GET", "/v1/credentials/t1/d2", nil)
	ops.must(204, "DELETE", "/v1/devices/t1/d2", nil)

	// Not tenants' lifecycle, not other tenants (existing or not), not /api.
	for _, rq := range []struct{ method, path, body string }{
		{"POST", "/v1/tenants", ""}, {"POST", "/v1/tenants/t3", ""}, {"GET", "/v1/tenants", ""},
		{"DELETE", "/v1/tenants/t1", ""}, {"DELETE", "/v1/tenants/t2", ""},
		{"GET", "/v1/tenants/t2", ""}, {"PUT", "/v1/tenants/t2", "{}"}, {"GET", "/v1/tenants/nope", ""},
		{"POST", "/v1/devices/t2", ""}, {"POST", "/v1/devices/t2/x", ""}, {"GET", "/v1/devices/t2", ""},
		{"GET", "/v1/devices/t2/d", ""}, {"PUT", "/v1/devices/t2/d", "{}"}, {"DELETE", "/v1/devices/t2/d", ""},
		{"DELETE", "/v1/devices/t2", ""}, {"GET", "/v1/credentials/t2/d", ""},
		{"PUT", "/v1/credentials/t2/d", `[]`}, {"GET", "/v1/devices/default", ""},
	} {
		var body any
		if rq.body != "" {
			body = rq.body
		}
		ops.hfails(403, rq.method, rq.path, body)
	}
	// Crafted paths cannot reach another tenant either.
	for _, path := range []string{"/v1/devices/t1%2F..%2Ft2/d", "/v1/devices/t2%2Fd", "/v1/credentials/t1/..%2F..%2Ft2%2Fd"} {
		if r := ops.do("GET", path, nil); r.status != 400 && r.status != 403 && r.status != 404 {
			t.Fatalf("GET %s: %d %s", path, r.status, r.body)
		}
	}
	c.must(200, "GET", "/v1/devices/t2/d", nil)
	ops.must(200, "GET", "/api/tenants/t1", nil)
	ops.fails(403, admin.CodeForbidden, "GET", "/api/tenants/t2", nil)

	// An app user and bad credentials.
	c.as("app@t1", "pw-app").hfails(403, "GET", "/v1/devices/t1", nil)
	c.as("app@t1", "pw-app").hfails(403, "GET", "/v1/tenants/t1", nil)
	c.as("ops@t1", "wrong").hfails(401, "GET", "/v1/devices/t1", nil)
	c.as("ops@t9", "pw-ops").hfails(401, "GET", "/v1/devices/t1", nil)

	// Hono's registration limit answers 403.
	c.must(201, "POST", "/v1/tenants/small", `{"registration-limits": {"max-devices": 1}}`)
	c.must(201, "POST", "/v1/devices/small/a", nil)
	c.hfails(403, "POST", "/v1/devices/small/b", nil)
}

// TestHonoGettingStarted replays the registry calls of Eclipse Hono's
// getting-started guide (site/documentation/content/getting-started/
// _index.md) as its curl commands send them: only CURL_OPTIONS carries
// the credentials ("-u admin:..." instead of Hono's "--insecure").
func TestHonoGettingStarted(t *testing.T) {
	p := testkit.Start(t)
	curl := func(method, path, contentType, body string) *http.Response {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, p.AdminURL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", "curl/8.5.0")
		req.Header.Set("Accept", "*/*")
		if contentType != "" {
			req.Header.Set("content-type", contentType)
		}
		req.SetBasicAuth(p.AdminUser, p.AdminPassword) // ${CURL_OPTIONS}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	idOf := func(resp *http.Response, want int, loc string) string {
		t.Helper()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("status %d, want %d: %s", resp.StatusCode, want, b)
		}
		if resp.Header.Get("etag") == "" || resp.Header.Get("content-type") != "application/json; charset=utf-8" {
			t.Fatalf("headers %v", resp.Header)
		}
		var body map[string]string
		if err := json.Unmarshal(b, &body); err != nil || len(body) != 1 || body["id"] == "" {
			t.Fatalf("body %s", b)
		}
		if resp.Header.Get("location") != loc+body["id"] {
			t.Fatalf("location %q, id %q", resp.Header.Get("location"), body["id"])
		}
		return body["id"]
	}

	// curl -i -X POST ${CURL_OPTIONS} -H "content-type: application/json" --data-binary '{
	//   "ext": {
	//     "messaging-type": "kafka"
	//   }
	// }' https://${REGISTRY_IP}:28443/v1/tenants
	myTenant := idOf(curl("POST", "/v1/tenants", "application/json", `{
  "ext": {
    "messaging-type": "kafka"
  }
}`), 201, "/v1/tenants/")

	// curl -i -X POST ${CURL_OPTIONS} https://${REGISTRY_IP}:28443/v1/devices/${MY_TENANT}
	myDevice := idOf(curl("POST", "/v1/devices/"+myTenant, "", ""), 201, "/v1/devices/"+myTenant+"/")

	// curl -i -X PUT ${CURL_OPTIONS} -H "content-type: application/json" --data-binary '[{
	//   "type": "hashed-password",
	//   "auth-id": "'${MY_DEVICE}'",
	//   "secrets": [{
	//       "pwd-plain": "'${MY_PWD}'"
	//   }]
	// }]' https://${REGISTRY_IP}:28443/v1/credentials/${MY_TENANT}/${MY_DEVICE}
	myPwd := "this-is-my-password"
	resp := curl("PUT", "/v1/credentials/"+myTenant+"/"+myDevice, "application/json",
		`[{
  "type": "hashed-password",
  "auth-id": "`+myDevice+`",
  "secrets": [{
      "pwd-plain": "`+myPwd+`"
  }]
}]`)
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 204 || resp.Header.Get("etag") == "" || len(b) != 0 {
		t.Fatalf("set password: %d %v %s", resp.StatusCode, resp.Header, b)
	}

	// The tenant is a throng tenant; the device and its credential are registered.
	if ten, ok := p.Store.Tenant(myTenant); !ok || ten.IoT == nil {
		t.Fatalf("tenant %s not stored with its Hono settings", myTenant)
	}
	resp = curl("GET", "/v1/credentials/"+myTenant+"/"+myDevice, "", "")
	b, _ := io.ReadAll(resp.Body)
	var cs []map[string]any
	if err := json.Unmarshal(b, &cs); err != nil || resp.StatusCode != 200 || len(cs) != 1 ||
		cs[0]["type"] != "hashed-password" || cs[0]["auth-id"] != myDevice || bytes.Contains(b, []byte(myPwd)) {
		t.Fatalf("credentials %d %s", resp.StatusCode, b)
	}

	// The guide's next step: the device connects as auth-id@tenant
	// (mosquitto_pub -u ${MY_DEVICE}@${MY_TENANT} -P ${MY_PWD}).
	if rc := mqttConnect(t, p.MQTTAddr, myDevice+"@"+myTenant, myPwd); rc != 0 {
		t.Fatalf("MQTT CONNECT of the registered device: return code %d", rc)
	}
	if rc := mqttConnect(t, p.MQTTAddr, myDevice+"@"+myTenant, "wrong"); rc == 0 {
		t.Fatal("MQTT CONNECT with a wrong password accepted")
	}
}

// mqttConnect sends an MQTT 3.1.1 CONNECT and returns the CONNACK's
// return code.
func mqttConnect(t *testing.T, addr, user, password string) byte {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Minute)) // bcrypt under -race
	str := func(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }
	body := append(str("MQTT"), 4, 0xC2, 0, 30) // level 4, user name + password + clean session, keep-alive 30
	body = append(body, str("getting-started")...)
	body = append(body, str(user)...)
	body = append(body, str(password)...)
	pkt := []byte{0x10}
	for n := len(body); ; n >>= 7 { // remaining length, MQTT's varint
		if n < 0x80 {
			pkt = append(pkt, byte(n))
			break
		}
		pkt = append(pkt, byte(n&0x7f|0x80))
	}
	pkt = append(pkt, body...)
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
	ack := make([]byte, 4)
	if _, err := io.ReadFull(conn, ack); err != nil {
		t.Fatalf("CONNACK: %v", err)
	}
	if ack[0] != 0x20 || ack[1] != 2 {
		t.Fatalf("not a CONNACK: % x", ack)
	}
	return ack[3]
}
