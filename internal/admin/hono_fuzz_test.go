package admin

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// FuzzV1SearchParams feeds arbitrary filterJson / sortJson / paging
// parameters to the /v1 search parser and the tenant search's matching
// and ordering: no panic; a refusal is a 400 with Hono's error body.
func FuzzV1SearchParams(f *testing.F) {
	for _, s := range [][3]string{
		{`{"field":"/enabled","value":true}`, `{"field":"/id","direction":"desc"}`, "10"},
		{`{"field":"/ext/brand","op":"eq","value":"ac*e?"}`, `{"field":"/ext/brand"}`, "1"},
		{`{"field":"/via/0","value":"gw-1"}`, `{"field":"/status/created","direction":"asc"}`, "200"},
		{`{"field":"enabled","value":1}`, `{"direction":"up"}`, "0"},
		{`{"field":"/a~1b~0c","value":null}`, `{}`, "-1"},
		{`{"field":"/x"} {}`, `[`, "x"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	docs := []map[string]any{
		{"id": "a", "enabled": true, "ext": map[string]any{"brand": "acme"}, "via": []any{"gw-1"}},
		{"id": "b", "enabled": false, "ext": map[string]any{"brand": 7.0}},
		{"id": "c"},
	}
	f.Fuzz(func(t *testing.T, filter, sort, pageSize string) {
		q := url.Values{"filterJson": {filter}, "sortJson": {sort}, "pageSize": {pageSize}}
		for _, devices := range []bool{false, true} {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/v1/devices/t?"+q.Encode(), nil)
			query, ok := parseSearch(w, r, devices)
			if !ok {
				if w.Code != http.StatusBadRequest || w.Body.Len() == 0 {
					t.Fatalf("refused with %d %q", w.Code, w.Body.String())
				}
				continue
			}
			for _, d := range docs {
				_ = registry.Match(d, query.Filters)
				for _, e := range docs {
					_ = registry.Less(d, e, query.Sort)
				}
			}
		}
	})
}

// FuzzV1Credentials feeds arbitrary credentials sets to the checks the
// PUT /v1/credentials handler applies before the registry stores them:
// no panic, and an accepted credential has a known type and an auth-id.
func FuzzV1Credentials(f *testing.F) {
	for _, s := range []string{
		`[{"type":"hashed-password","auth-id":"sensor1","secrets":[{"pwd-plain":"hono-secret"}]}]`,
		`[{"type":"hashed-password","auth-id":"s","secrets":[{"hash-function":"sha-256","pwd-hash":"AQID","salt":"AQ=="}]}]`,
		`[{"type":"hashed-password","auth-id":"s","secrets":[{"hash-function":"bcrypt","pwd-hash":"$2a$10$N7UMjhZ2hYx.yuvW9WVXZ.4y33mr6MvnryfvA3rYHOYdE2hI.oy0S"}]}]`,
		`[{"type":"psk","auth-id":"p","secrets":[{"key":"c2VjcmV0"}]}]`,
		`[{"type":"x509-cert","auth-id":"CN=Device 1,O=ACME Corporation","secrets":[{}]}]`,
		`[{"type":"rpk","auth-id":"r","secrets":[{"algorithm":"EC","key":"AAAA"}]}]`,
		`[{"type":"x509-cert","cert":"AAAA","secrets":[{}]}]`,
		`[{"type":"nope","auth-id":"x","secrets":[]}]`,
		`[{"type":"hashed-password","auth-id":"s","secrets":[{"id":"k1"}],"enabled":false}]`,
		`[{"type":"hashed-password","auth-id":"s","secrets":[{"not-before":"2030-01-01T00:00:00Z","not-after":"2020-01-01T00:00:00Z","pwd-plain":"x"}]}]`,
		`{}`, `[`, `[null]`,
	} {
		f.Add(s)
	}
	ten := &tenant.Tenant{Name: "t", IoT: &tenant.IoT{TrustedCA: []tenant.TrustedCA{{SubjectDN: "CN=ca", AuthIDTemplate: "{{subject-cn}}"}}}}
	f.Fuzz(func(t *testing.T, body string) {
		var hcs []honoCredential
		if err := strictJSON(body, &hcs); err != nil {
			return
		}
		for i := range hcs {
			c, err := checkCredential(ten, &hcs[i])
			if err != nil {
				continue
			}
			switch c.Type {
			case registry.TypePassword, registry.TypePSK, registry.TypeRPK, registry.TypeX509:
			default:
				t.Fatalf("accepted type %q", c.Type)
			}
			if c.AuthID == "" {
				t.Fatalf("accepted %+v without an auth-id", c)
			}
		}
	})
}
