package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// fuzzRouter records what a create handler passed on after decoding and
// validating the body.
type fuzzRouter struct {
	fakeRouter
	tenant  *tenant.Tenant
	address *address.Address
}

func (f *fuzzRouter) CreateTenant(_ context.Context, t *tenant.Tenant) error {
	f.tenant = t
	return nil
}
func (f *fuzzRouter) CreateAddress(_ context.Context, _ string, a *address.Address) error {
	f.address = a
	return nil
}

// fuzzStore knows tenant "acme" and records the user a handler stored.
type fuzzStore struct {
	fakeStore
	user *tenant.User
}

func (*fuzzStore) Tenant(name string) (*tenant.Tenant, bool) {
	if name == "acme" {
		return &tenant.Tenant{Name: "acme"}, true
	}
	return nil, false
}

func (f *fuzzStore) PutUser(_ context.Context, u *tenant.User, _ bool) error { f.user = u; return nil }

// FuzzCreateBodies feeds arbitrary bodies to the tenant, address and user
// create handlers (decode, then validate). Whatever the body: no panic; the
// answer is 201 or a 4xx with an error code from the table, never 500;
// and what a handler accepted re-validates after a JSON round trip and
// encodes the same way again (a field that cannot be written back as it
// was read would change on the next GET and PUT).
func FuzzCreateBodies(f *testing.F) {
	for _, s := range []struct {
		kind uint8
		body string
	}{
		{0, `{"name":"acme","strict":true,"autoCreate":[{"pattern":"jobs/#","type":"queue"}],"limits":{"maxAddresses":3}}`},
		{0, `{"name":"x","autoCreate":[{"pattern":"a/+/b","type":"topic","limits":{"maxAge":"24h"}}]}`},
		{0, `{"name":""}`},
		{1, `{"name":"orders/eu","type":"queue","limits":{"maxMessages":100000,"maxAge":"24h","maxDeliveries":10,"overflow":"reject-new"},"deadLetter":"DLQ"}`},
		{1, `{"name":"t","type":"topic","limits":{"maxAge":3600,"overflow":"drop-oldest"}}`},
		{1, `{"name":"t::s","type":"subscription","topic":"t"}`},
		{1, `{"name":"a b","type":"anycast","limits":{"maxDeliveries":-1}}`},
		{2, `{"name":"app1","password":"pw","roles":["app"],"permissions":[{"pattern":"orders/#","actions":["send","receive"]}]}`},
		{2, `{"name":"d","password":"p","roles":["tenant-admin"],"permissions":[{"pattern":"${user}/#","actions":["view","manage"]}]}`},
		{2, `{"name":"x","password":"","roles":["nope"]}`},
		{0, `{"name":"a"} {}`},
		{1, `{"name":1}`},
		{2, `{"unknown":true}`},
		{0, ``},
	} {
		f.Add(s.kind, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		rt, st := &fuzzRouter{}, &fuzzStore{}
		s, err := New(Config{Router: rt, Store: st, Auth: fakeAuth{},
			SetPassword: func(*tenant.User, string) error { return nil }})
		if err != nil {
			t.Fatal(err)
		}
		var (
			path string
			h    func(http.ResponseWriter, *http.Request)
		)
		switch kind % 3 {
		case 0:
			path, h = "/api/tenants", s.createTenant
		case 1:
			path, h = "/api/tenants/acme/addresses", s.createAddress
		case 2:
			path, h = "/api/tenants/acme/users", s.createUser
		}
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		req.SetPathValue("tenant", "acme")
		w := httptest.NewRecorder()
		h(w, req)

		if w.Code != http.StatusCreated {
			var eb ErrorBody
			if err := json.Unmarshal(w.Body.Bytes(), &eb); err != nil {
				t.Fatalf("status %d with a body that is not an error: %q", w.Code, w.Body.Bytes())
			}
			spec, ok := errorTable[eb.Error.Code]
			if !ok || spec.status != w.Code || w.Code >= 500 || w.Code < 400 {
				t.Fatalf("status %d, code %q for body %q", w.Code, eb.Error.Code, body)
			}
			return
		}
		switch kind % 3 {
		case 0:
			if rt.tenant == nil {
				t.Fatal("201 without a tenant created")
			}
			roundTrip(t, rt.tenant, func(b []byte) (any, error) {
				var nt tenant.Tenant
				if err := json.Unmarshal(b, &nt); err != nil {
					return nil, err
				}
				return &nt, nt.Validate()
			})
		case 1:
			if rt.address == nil {
				t.Fatal("201 without an address created")
			}
			roundTrip(t, rt.address, func(b []byte) (any, error) {
				var a address.Address
				if err := json.Unmarshal(b, &a); err != nil {
					return nil, err
				}
				return &a, a.Validate()
			})
		case 2:
			if st.user == nil {
				t.Fatal("201 without a user stored")
			}
			roundTrip(t, st.user, func(b []byte) (any, error) {
				var u tenant.User
				if err := json.Unmarshal(b, &u); err != nil {
					return nil, err
				}
				return &u, u.Validate()
			})
		}
	})
}

// roundTrip encodes v, decodes and validates it with back, and checks that
// the result is valid and encodes to the same bytes.
func roundTrip(t *testing.T, v any, back func([]byte) (any, error)) {
	t.Helper()
	b1, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("accepted value does not encode: %v (%+v)", err, v)
	}
	v2, err := back(b1)
	if err != nil {
		t.Fatalf("accepted value invalid after a round trip: %v\n%s", err, b1)
	}
	b2, err := json.Marshal(v2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b1, b2) {
		t.Fatalf("round trip changed the value:\n%s\n%s", b1, b2)
	}
}
