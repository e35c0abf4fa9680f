package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// The fakes only serve tests that need no engine: the document, the error
// table and the probes. Everything else runs end to end (api_test.go).
type fakeRouter struct{}

func (fakeRouter) CreateTenant(context.Context, *tenant.Tenant) error            { return nil }
func (fakeRouter) UpdateTenant(context.Context, *tenant.Tenant) error            { return nil }
func (fakeRouter) DeleteTenant(context.Context, string) error                    { return nil }
func (fakeRouter) CreateAddress(context.Context, string, *address.Address) error { return nil }
func (fakeRouter) UpdateAddress(context.Context, string, *address.Address) error { return nil }
func (fakeRouter) DeleteAddress(context.Context, string, string) error           { return nil }
func (fakeRouter) AddressStats(context.Context, string, string) (address.Stats, error) {
	return address.Stats{}, nil
}

type fakeStore struct{}

func (fakeStore) Tenant(string) (*tenant.Tenant, bool)              { return nil, false }
func (fakeStore) Tenants() []*tenant.Tenant                         { return nil }
func (fakeStore) Address(string, string) (*address.Address, bool)   { return nil, false }
func (fakeStore) Addresses(string) []*address.Address               { return nil }
func (fakeStore) User(string, string) (*tenant.User, bool)          { return nil, false }
func (fakeStore) Users(string) []*tenant.User                       { return nil }
func (fakeStore) PutUser(context.Context, *tenant.User, bool) error { return nil }
func (fakeStore) DeleteUser(context.Context, string, string) error  { return nil }

type fakeAuth struct{}

func (fakeAuth) Authenticate(string, string, string) (*auth.Principal, error) {
	return nil, auth.ErrBadCredentials
}

func newFake(t *testing.T, ready func() bool) *Server {
	s, err := New(Config{Router: fakeRouter{}, Store: fakeStore{}, Auth: fakeAuth{}, Ready: ready})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	var doc struct {
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas struct {
				Error struct {
					Properties struct {
						Error struct {
							Properties struct {
								Code struct {
									Enum []string `json:"enum"`
								} `json:"code"`
							} `json:"properties"`
						} `json:"error"`
					} `json:"properties"`
				} `json:"Error"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	described := 0
	for _, m := range doc.Paths {
		for k := range m {
			if k != "parameters" {
				described++
			}
		}
	}
	for _, rt := range routes {
		p := strings.ReplaceAll(rt.path, "...}", "}")
		if _, ok := doc.Paths[p][strings.ToLower(rt.method)]; !ok {
			t.Errorf("openapi.json lacks %s %s", rt.method, p)
		}
	}
	if described != len(routes) {
		t.Errorf("openapi.json describes %d operations, the server has %d routes", described, len(routes))
	}
	enum := map[string]bool{}
	for _, c := range doc.Components.Schemas.Error.Properties.Error.Properties.Code.Enum {
		enum[c] = true
	}
	for c := range errorTable {
		if !enum[string(c)] {
			t.Errorf("error code %q missing from the Error schema", c)
		}
	}
	if len(enum) != len(errorTable) {
		t.Errorf("Error schema lists %d codes, the table has %d", len(enum), len(errorTable))
	}
}

func TestErrorTable(t *testing.T) {
	re := regexp.MustCompile(`^[a-z_]+$`)
	for c, spec := range errorTable {
		if !re.MatchString(string(c)) || spec.status < 400 || spec.message == "" {
			t.Errorf("bad entry %q: %+v", c, spec)
		}
	}
	// An unknown code renders as internal.
	w := httptest.NewRecorder()
	writeError(w, Code("bogus"), "")
	if w.Code != 500 || !strings.Contains(w.Body.String(), `"internal"`) {
		t.Fatalf("unknown code rendered %d %s", w.Code, w.Body)
	}
}

func TestClassifyRefusedPassword(t *testing.T) {
	// A password SASLprep refuses (here a control character) is the
	// client's mistake, reported without the offending character.
	err := auth.SetPassword(&tenant.User{Name: "u", Tenant: "t"}, "pass\u0007word")
	if !errors.Is(err, auth.ErrSASLprep) {
		t.Fatalf("SetPassword: %v", err)
	}
	code, msg := classify(err)
	if code != CodeInvalid || !strings.HasPrefix(msg, "password refused by SASLprep (RFC 4013): ") ||
		strings.Contains(msg, "\u0007") || strings.Contains(msg, "0007") {
		t.Fatalf("classify: %s %q", code, msg)
	}
}

func TestReadyz(t *testing.T) {
	ready := false
	s := newFake(t, func() bool { return ready })
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "not_ready") {
		t.Fatalf("not ready: %d %s", w.Code, w.Body)
	}
	ready = true
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/readyz", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("ready: %d %s", w.Code, w.Body)
	}
	w = httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/healthz", nil))
	if w.Code != http.StatusOK {
		t.Fatalf("healthz: %d", w.Code)
	}
}

func TestNewRequiresDependencies(t *testing.T) {
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without dependencies succeeded")
	}
}

// TestOpenAPIStatusSchema: every field GET /api/status answers with, the
// cluster's included, is described in openapi.json (the document lagged
// behind the cluster object once).
func TestOpenAPIStatusSchema(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openapiDoc, &doc); err != nil {
		t.Fatal(err)
	}
	for schema, v := range map[string]any{"Status": Status{}, "ClusterStatus": ClusterStatus{}, "ClusterNode": ClusterNode{}, "ClusterRoute": ClusterRoute{}} {
		props := doc.Components.Schemas[schema].Properties
		if props == nil {
			t.Errorf("openapi.json lacks the schema %s", schema)
			continue
		}
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if _, ok := props[name]; !ok {
				t.Errorf("openapi.json: %s lacks %q", schema, name)
			}
		}
		if len(props) != typ.NumField() {
			t.Errorf("openapi.json: %s describes %d properties, the type has %d fields", schema, len(props), typ.NumField())
		}
	}
}
