package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/tenant"
)

// fakeTenants stands in for *tenant.Store.
type fakeTenants struct {
	mu sync.Mutex
	m  map[string]*tenant.Tenant
}

func newTenants(names ...string) *fakeTenants {
	f := &fakeTenants{m: map[string]*tenant.Tenant{}}
	for _, n := range names {
		f.m[n] = &tenant.Tenant{Name: n, IoT: &tenant.IoT{}}
	}
	return f
}

func (f *fakeTenants) Tenant(name string) (*tenant.Tenant, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.m[name]
	return t, ok
}

func startEngine(t testing.TB, dir string) *engine.Engine {
	t.Helper()
	e, err := engine.Start(engine.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func openStore(t testing.TB, e *engine.Engine, ten Tenants) *Store {
	t.Helper()
	nc, err := e.Connect(engine.SystemAccount)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), nc, ten, nil)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); nc.Close() })
	return s
}

// setup starts an engine and opens a store with tenants "acme" and "other".
func setup(t testing.TB) (*engine.Engine, *Store, *fakeTenants) {
	t.Helper()
	e := startEngine(t, t.TempDir())
	t.Cleanup(e.Shutdown)
	ten := newTenants("acme", "other")
	return e, openStore(t, e, ten), ten
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func boolp(b bool) *bool { return &b }
func intp(i int) *int    { return &i }

func mustCreate(t testing.TB, s *Store, ten, id string, d *Device) string {
	t.Helper()
	got, _, err := s.CreateDevice(context.Background(), ten, id, d)
	if err != nil {
		t.Fatalf("create %q: %v", id, err)
	}
	return got
}

func TestDeviceCRUD(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()

	id, v1, err := s.CreateDevice(ctx, "acme", "", &Device{Ext: map[string]json.RawMessage{"k": json.RawMessage(`"v"`)}})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("generated id %q is not a UUID", id)
	}
	d, v, err := s.Device(ctx, "acme", id)
	if err != nil || v != v1 || string(d.Ext["k"]) != `"v"` || d.Status == nil || d.Status.Created.IsZero() || d.Status.Updated != nil {
		t.Fatalf("get: %+v %q %v", d, v, err)
	}
	if !d.IsEnabled() {
		t.Fatal("default enabled")
	}

	// Ids with characters outside the KV alphabet, and invalid ones.
	for _, odd := range []string{"dev.1", "a:b=c", "..", "=41", "x_-y"} {
		if _, _, err := s.CreateDevice(ctx, "acme", odd, &Device{}); err != nil {
			t.Fatalf("create %q: %v", odd, err)
		}
		if _, _, err := s.Device(ctx, "acme", odd); err != nil {
			t.Fatalf("get %q: %v", odd, err)
		}
	}
	if _, _, err := s.Device(ctx, "acme", "A"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("=41 must not alias A: %v", err)
	}
	for _, bad := range []string{"with space", "a/b", "ä", "a@b", strings.Repeat("x", 300)} {
		if _, _, err := s.CreateDevice(ctx, "acme", bad, &Device{}); !errors.Is(err, ErrInvalid) {
			t.Fatalf("create %q: %v", bad, err)
		}
	}
	if _, _, err := s.CreateDevice(ctx, "acme", "dev.1", nil); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, _, err := s.CreateDevice(ctx, "nope", "d", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
	// The same id in another tenant is another device.
	if _, _, err := s.CreateDevice(ctx, "other", "dev.1", nil); err != nil {
		t.Fatal(err)
	}

	// Update: If-Match, status kept and "updated" set.
	if _, err := s.UpdateDevice(ctx, "acme", id, &Device{Enabled: boolp(false)}, "999"); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("if-match: %v", err)
	}
	v2, err := s.UpdateDevice(ctx, "acme", id, &Device{Enabled: boolp(false), Status: &Status{LastUser: "forged"}}, v1)
	if err != nil || v2 == v1 {
		t.Fatalf("update: %q %v", v2, err)
	}
	d2, _, _ := s.Device(ctx, "acme", id)
	if d2.IsEnabled() || d2.Status.Updated == nil || !d2.Status.Created.Equal(d.Status.Created) || d2.Status.LastUser != "" || d2.Ext != nil {
		t.Fatalf("after update: %+v %+v", d2, d2.Status)
	}
	if _, err := s.UpdateDevice(ctx, "acme", id, &Device{}, v1); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("stale if-match: %v", err)
	}
	if _, err := s.UpdateDevice(ctx, "acme", "missing", &Device{}, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("update missing: %v", err)
	}

	// Delete.
	if err := s.DeleteDevice(ctx, "acme", id, v1); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("delete if-match: %v", err)
	}
	if err := s.DeleteDevice(ctx, "acme", id, v2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Device(ctx, "acme", id); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	if err := s.DeleteDevice(ctx, "acme", id, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
	if n := s.DeviceCount("acme"); n != 5 {
		t.Fatalf("count %d", n)
	}
	// Re-created with the same id: a new device.
	if _, _, err := s.CreateDevice(ctx, "acme", id, nil); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentUpdateIfMatch(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	_, v, err := s.CreateDevice(ctx, "acme", "d", nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateDevice(ctx, "acme", "d", &Device{Mapper: fmt.Sprint(i)}, v)
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, ErrVersionMismatch) {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d updates with the same If-Match won", wins)
	}
}

func ids(p Page) []string {
	out := []string{}
	for _, d := range p.Result {
		out = append(out, d.ID)
	}
	return out
}

func TestPaging(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	const n = 250
	for i := 0; i < n; i++ {
		mustCreate(t, s, "acme", fmt.Sprintf("d%03d", i), &Device{})
	}
	mustCreate(t, s, "other", "x", nil)
	cases := []struct {
		q          Query
		first, cnt int
		desc       bool
	}{
		{Query{}, 0, 30, false},
		{Query{PageSize: 100}, 0, 100, false},
		{Query{PageSize: 100, PageOffset: 200}, 200, 50, false},
		{Query{PageSize: 200, PageOffset: 50}, 50, 200, false},
		{Query{PageSize: 10, PageOffset: 249}, 249, 1, false},
		{Query{PageSize: 10, PageOffset: 250}, 0, 0, false},
		{Query{PageSize: 10, PageOffset: 1000}, 0, 0, false},
		{Query{PageSize: 5, Sort: []Sort{{Field: "/id", Direction: "desc"}}}, 249, 5, true},
		{Query{PageSize: 5, PageOffset: 248, Sort: []Sort{{Field: "/id", Direction: "desc"}}}, 1, 2, true},
	}
	for _, c := range cases {
		p, err := s.Devices(ctx, "acme", c.q)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for i := 0; i < c.cnt; i++ {
			j := c.first + i
			if c.desc {
				j = c.first - i
			}
			want = append(want, fmt.Sprintf("d%03d", j))
		}
		if p.Total != n || fmt.Sprint(ids(p)) != fmt.Sprint(append([]string{}, want...)) {
			t.Fatalf("%+v: total %d ids %v, want %v", c.q, p.Total, ids(p), want)
		}
	}
	for _, q := range []Query{{PageSize: 201}, {PageSize: -1}, {PageOffset: -1},
		{Filters: []Filter{{Field: "x", Value: json.RawMessage(`1`)}}},
		{Filters: []Filter{{Field: "/x", Op: "gt", Value: json.RawMessage(`1`)}}},
		{Sort: []Sort{{Field: "/x", Direction: "up"}}}} {
		if _, err := s.Devices(ctx, "acme", q); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%+v: %v", q, err)
		}
	}
	if p, err := s.Devices(ctx, "acme-less", Query{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tenant: %+v %v", p, err)
	}
	// A tenant without devices: an empty page.
	s.tenants.(*fakeTenants).m["empty"] = &tenant.Tenant{Name: "empty"}
	if p, err := s.Devices(ctx, "empty", Query{}); err != nil || p.Total != 0 || p.Result == nil {
		t.Fatalf("empty tenant: %+v %v", p, err)
	}
}

func TestFiltersAndSort(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	ext := func(m string) map[string]json.RawMessage {
		out := map[string]json.RawMessage{}
		_ = json.Unmarshal([]byte(m), &out)
		return out
	}
	mustCreate(t, s, "acme", "a", &Device{Ext: ext(`{"maker":"ACME Corp","n":3,"tags":["x","y"]}`)})
	mustCreate(t, s, "acme", "b", &Device{Ext: ext(`{"maker":"ACME Inc","n":1}`), Enabled: boolp(false)})
	mustCreate(t, s, "acme", "c", &Device{Ext: ext(`{"maker":"Other","n":2,"tags":["y"]}`)})
	mustCreate(t, s, "acme", "d", &Device{})
	f := func(field, v string) Filter { return Filter{Field: field, Value: json.RawMessage(v)} }
	cases := []struct {
		q    Query
		want string
	}{
		{Query{Filters: []Filter{f("/ext/maker", `"ACME*"`)}}, "[a b]"},
		{Query{Filters: []Filter{f("/ext/maker", `"ACME ?nc"`)}}, "[b]"},
		{Query{Filters: []Filter{f("/ext/n", `2`)}}, "[c]"},
		{Query{Filters: []Filter{f("/enabled", `false`)}}, "[b]"},
		{Query{Filters: []Filter{f("/ext/tags", `"y"`)}}, "[a c]"},
		{Query{Filters: []Filter{f("/ext/tags/0", `"x"`)}}, "[a]"},
		{Query{Filters: []Filter{f("/ext/maker", `"ACME*"`), f("/ext/n", `1`)}}, "[b]"},
		{Query{Filters: []Filter{f("/id", `"c"`)}}, "[c]"},
		{Query{Filters: []Filter{f("/ext/missing", `"x"`)}}, "[]"},
		{Query{Sort: []Sort{{Field: "/ext/n"}}}, "[d b c a]"}, // absent first
		{Query{Sort: []Sort{{Field: "/ext/n", Direction: "desc"}}}, "[a c b d]"},
		{Query{Sort: []Sort{{Field: "/ext/maker", Direction: "desc"}}, PageSize: 2, PageOffset: 1}, "[b a]"},
		{Query{Filters: []Filter{f("/ext/maker", `"*"`)}, Sort: []Sort{{Field: "/ext/n"}}}, "[b c a]"},
	}
	for _, c := range cases {
		p, err := s.Devices(ctx, "acme", c.q)
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprint(ids(p)); got != c.want {
			t.Fatalf("%+v: %s, want %s", c.q, got, c.want)
		}
	}
	p, _ := s.Devices(ctx, "acme", Query{Filters: []Filter{f("/ext/maker", `"ACME*"`)}, PageSize: 1})
	if p.Total != 2 || len(p.Result) != 1 || string(p.Result[0].Ext["maker"]) != `"ACME Corp"` {
		t.Fatalf("page with total: %+v", p)
	}
}

func TestGateways(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	mustCreate(t, s, "acme", "gw1", &Device{})
	mustCreate(t, s, "acme", "gw2", &Device{MemberOf: []string{"g"}})
	mustCreate(t, s, "acme", "gw3", &Device{MemberOf: []string{"g", "h"}})
	mustCreate(t, s, "acme", "lonely", &Device{MemberOf: []string{"h"}, ViaGroups: []string{"h"}}) // names its own group only
	mustCreate(t, s, "acme", "self", &Device{Via: []string{"self"}})
	mustCreate(t, s, "acme", "dev1", &Device{Via: []string{"gw1", "ghost"}})
	_, v, _ := s.CreateDevice(ctx, "acme", "dev2", &Device{ViaGroups: []string{"g"}})
	mustCreate(t, s, "acme", "dev3", &Device{})
	page := func(gw bool, q Query) string {
		t.Helper()
		q.IsGateway = &gw
		p, err := s.Devices(ctx, "acme", q)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%d %v", p.Total, ids(p))
	}
	check := func(got, want string) {
		t.Helper()
		if got != want {
			t.Fatalf("got %s, want %s", got, want)
		}
	}
	check(page(true, Query{}), "3 [gw1 gw2 gw3]")
	check(page(false, Query{}), "5 [dev1 dev2 dev3 lonely self]")
	check(page(false, Query{PageSize: 2, PageOffset: 2}), "5 [dev3 lonely]")
	check(page(false, Query{PageSize: 2, PageOffset: 4}), "5 [self]")
	check(page(false, Query{PageSize: 2, Sort: []Sort{{Field: "/id", Direction: "desc"}}}), "5 [self lonely]")
	check(page(true, Query{PageSize: 1, PageOffset: 1, Sort: []Sort{{Field: "/id", Direction: "desc"}}}), "3 [gw2]")
	check(page(true, Query{Filters: []Filter{{Field: "/memberOf", Value: json.RawMessage(`"h"`)}}}), "1 [gw3]")
	check(page(false, Query{Filters: []Filter{{Field: "/memberOf", Value: json.RawMessage(`"h"`)}}}), "1 [lonely]")
	// dev2 stops naming group g: gw2 is no gateway any more, gw3 still
	// is (lonely names its other group h).
	if _, err := s.UpdateDevice(ctx, "acme", "dev2", &Device{}, v); err != nil {
		t.Fatal(err)
	}
	check(page(true, Query{}), "2 [gw1 gw3]")
	if err := s.DeleteDevice(ctx, "acme", "dev1", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDevice(ctx, "acme", "lonely", ""); err != nil {
		t.Fatal(err)
	}
	check(page(true, Query{}), "0 []")
	check(page(false, Query{}), "6 [dev2 dev3 gw1 gw2 gw3 self]")
}

func TestNonGatewayAt(t *testing.T) {
	ti := newTenantIndex()
	var all []string
	for i := 0; i < 200; i++ {
		id := fmt.Sprintf("%03d", i)
		ti.ids.Set(id)
		all = append(all, id)
	}
	gw := []string{}
	for i := 0; i < 200; i++ {
		if i%7 == 0 || i < 3 || i > 195 || (i > 50 && i < 60) {
			gw = append(gw, fmt.Sprintf("%03d", i))
		}
	}
	isGW := map[string]bool{}
	for _, g := range gw {
		isGW[g] = true
		ti.gw.Set(g)
	}
	var non []string
	for _, id := range all {
		if !isGW[id] {
			non = append(non, id)
		}
	}
	for k, want := range non {
		if got := ti.nonGatewayAt(k); got != want {
			t.Fatalf("k=%d: %s, want %s", k, got, want)
		}
	}
}

func sha256Hash(salt []byte, pw string) string {
	h := sha256.Sum256(append(append([]byte{}, salt...), pw...))
	return base64.StdEncoding.EncodeToString(h[:])
}

func TestCredentials(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	mustCreate(t, s, "acme", "d1", nil)

	cs, v0, err := s.Credentials(ctx, "acme", "d1")
	if err != nil || len(cs) != 0 || cs == nil || v0 != "0" {
		t.Fatalf("no credentials: %v %q %v", cs, v0, err)
	}
	if _, _, err := s.Credentials(ctx, "acme", "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing device: %v", err)
	}
	v1, err := s.SetCredentials(ctx, "acme", "d1", []Credential{
		{Type: TypePassword, AuthID: "sensor1", Secrets: []Secret{{PwdPlain: "hunter2", Comment: "first"}}},
		{Type: TypePSK, AuthID: "psk-1", Secrets: []Secret{{Key: []byte("0123456789")}}},
	}, "0")
	if err != nil {
		t.Fatal(err)
	}
	// Raw value: bcrypt hash, never the plain password.
	raw, err := s.creds.Get(ctx, deviceKey("acme", "d1"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw.Value()), "hunter2") || strings.Contains(string(raw.Value()), "pwd-plain") || !strings.Contains(string(raw.Value()), `"$2a$10$`) {
		t.Fatalf("stored: %s", raw.Value())
	}
	cs, v, err := s.Credentials(ctx, "acme", "d1")
	if err != nil || v != v1 || len(cs) != 2 {
		t.Fatalf("get: %+v %q %v", cs, v, err)
	}
	pw := cs[0].Secrets[0]
	if pw.ID == "" || pw.PwdHash != "" || pw.HashFunction != "" || pw.Comment != "first" || cs[1].Secrets[0].Key != nil {
		t.Fatalf("metadata only: %+v %+v", pw, cs[1].Secrets[0])
	}
	idn, err := s.Lookup(ctx, "acme", TypePassword, "sensor1")
	if err != nil || idn.DeviceID != "d1" || idn.Tenant != "acme" || idn.Credential.Secrets[0].HashFunction != HashBcrypt {
		t.Fatalf("lookup: %+v %v", idn, err)
	}
	oldHash := idn.Credential.Secrets[0].PwdHash

	// Stale If-Match.
	if _, err := s.SetCredentials(ctx, "acme", "d1", nil, "0"); !errors.Is(err, ErrVersionMismatch) {
		t.Fatalf("if-match: %v", err)
	}
	// Keep the password by id (id only), add a sha-256 secret, drop psk,
	// add an x509 credential written with spaces.
	salt := []byte("salty")
	v2, err := s.SetCredentials(ctx, "acme", "d1", []Credential{
		{Type: TypePassword, AuthID: "sensor1", Secrets: []Secret{{ID: pw.ID}, {PwdHash: sha256Hash(salt, "pw2"), Salt: salt, HashFunction: HashSHA256}}},
		{Type: TypeX509, AuthID: "CN=dev 1, O=ACME\\, Inc"},
	}, v1)
	if err != nil {
		t.Fatal(err)
	}
	idn, err = s.Lookup(ctx, "acme", TypePassword, "sensor1")
	if err != nil || len(idn.Credential.Secrets) != 2 {
		t.Fatalf("after replace: %+v %v", idn, err)
	}
	kept := idn.Credential.Secrets[0]
	if kept.ID != pw.ID || kept.PwdHash != oldHash || kept.Comment != "first" {
		t.Fatalf("kept secret: %+v", kept)
	}
	if s2 := idn.Credential.Secrets[1]; s2.ID == "" || s2.ID == pw.ID || s2.HashFunction != HashSHA256 || string(s2.Salt) != "salty" {
		t.Fatalf("new secret: %+v", s2)
	}
	if _, err := s.Lookup(ctx, "acme", TypePSK, "psk-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed psk: %v", err)
	}
	if _, err := s.authIDs.Get(ctx, authIDKey("acme", TypePSK, "psk-1")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("psk index key not removed: %v", err)
	}
	x, err := s.Lookup(ctx, "acme", TypeX509, "CN=dev 1,O=ACME\\, Inc")
	if err != nil || x.Credential.AuthID != `CN=dev 1,O=ACME\, Inc` || len(x.Credential.Secrets) != 1 {
		t.Fatalf("x509 lookup: %+v %v", x, err)
	}
	if _, err := s.Lookup(ctx, "acme", TypeX509, "cn=dev 1 ,  o=ACME\\, Inc"); err != nil {
		t.Fatalf("x509 lookup, other spelling: %v", err)
	}
	// Metadata change for a kept secret (id + metadata, no material).
	nb := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	_, err = s.SetCredentials(ctx, "acme", "d1", []Credential{
		{Type: TypePassword, AuthID: "sensor1", Secrets: []Secret{{ID: pw.ID, Enabled: boolp(false), NotBefore: &nb}}},
	}, v2)
	if err != nil {
		t.Fatal(err)
	}
	idn, _ = s.Lookup(ctx, "acme", TypePassword, "sensor1")
	if sec := idn.Credential.Secrets[0]; len(idn.Credential.Secrets) != 1 || sec.PwdHash != oldHash || sec.IsEnabled() || sec.Comment != "" || !sec.NotBefore.Equal(nb) {
		t.Fatalf("metadata update: %+v", idn.Credential.Secrets)
	}
	if _, err := s.Lookup(ctx, "acme", TypeX509, "CN=dev 1,O=ACME\\, Inc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed x509: %v", err)
	}
	// An id not stored, or stored under another credential: invalid.
	for _, c := range [][]Credential{
		{{Type: TypePassword, AuthID: "sensor1", Secrets: []Secret{{ID: "nope"}}}},
		{{Type: TypePassword, AuthID: "sensor2", Secrets: []Secret{{ID: pw.ID}}}},
	} {
		if _, err := s.SetCredentials(ctx, "acme", "d1", c, ""); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%+v: %v", c, err)
		}
	}
	// Empty set: all removed.
	if _, err := s.SetCredentials(ctx, "acme", "d1", []Credential{}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "acme", TypePassword, "sensor1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after clearing: %v", err)
	}
	// Deleting the device removes its credentials and index keys.
	if _, err := s.SetCredentials(ctx, "acme", "d1", []Credential{{Type: TypePassword, AuthID: "sensor1", Secrets: []Secret{{PwdHash: sha256Hash(nil, "x")}}}}, ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDevice(ctx, "acme", "d1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "acme", TypePassword, "sensor1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	for _, k := range []string{authIDKey("acme", TypePassword, "sensor1")} {
		if _, err := s.authIDs.Get(ctx, k); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("index key %s after delete: %v", k, err)
		}
	}
	if _, err := s.creds.Get(ctx, deviceKey("acme", "d1")); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("credentials after delete: %v", err)
	}
	// Credentials and index keys leave no delete markers in the engine.
	for _, b := range []string{bucketCredentials, bucketAuthIDs} {
		info, err := s.streams[b].Info(ctx)
		if err != nil || info.State.Msgs != 0 {
			t.Fatalf("%s holds %d messages (%v)", b, info.State.Msgs, err)
		}
	}
	// A new device of the same id starts without credentials.
	mustCreate(t, s, "acme", "d1", nil)
	if cs, _, _ := s.Credentials(ctx, "acme", "d1"); len(cs) != 0 {
		t.Fatalf("recreated device inherits %+v", cs)
	}
}

func TestCredentialValidation(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	mustCreate(t, s, "acme", "d", nil)
	cost11, _ := generateBcrypt("pw", 11)
	cost4, _ := generateBcrypt("pw", 4)
	good := []Secret{{PwdHash: sha256Hash(nil, "x")}}
	now := time.Now()
	later := now.Add(time.Hour)
	bad := map[string][]Credential{
		"unknown type":     {{Type: "token", AuthID: "a", Secrets: good}},
		"empty auth-id":    {{Type: TypePassword, Secrets: good}},
		"auth-id with @":   {{Type: TypePassword, AuthID: "a@b", Secrets: good}},
		"no secrets":       {{Type: TypePassword, AuthID: "a"}},
		"no material":      {{Type: TypePassword, AuthID: "a", Secrets: []Secret{{Comment: "x"}}}},
		"bad hash fn":      {{Type: TypePassword, AuthID: "a", Secrets: []Secret{{PwdHash: "abc", HashFunction: "md5"}}}},
		"bad sha-256":      {{Type: TypePassword, AuthID: "a", Secrets: []Secret{{PwdHash: "abc", HashFunction: HashSHA256}}}},
		"sha-512 length":   {{Type: TypePassword, AuthID: "a", Secrets: []Secret{{PwdHash: sha256Hash(nil, "x"), HashFunction: HashSHA512}}}},
		"bcrypt prefix":    {{Type: TypePassword, AuthID: "a", Secrets: []Secret{{PwdHash: "$1$" + cost4[3:], HashFunction: HashBcrypt}}}},
		"bcrypt cost":      {{Type: TypePassword, AuthID: "a", Secrets: []Secret{{PwdHash: cost11, HashFunction: HashBcrypt}}}},
		"window":           {{Type: TypePassword, AuthID: "a", Secrets: []Secret{{PwdHash: sha256Hash(nil, "x"), NotBefore: &later, NotAfter: &now}}}},
		"duplicate":        {{Type: TypePassword, AuthID: "a", Secrets: good}, {Type: TypePassword, AuthID: "a", Secrets: good}},
		"psk without key":  {{Type: TypePSK, AuthID: "a", Secrets: []Secret{{}}}},
		"x509 not a DN":    {{Type: TypeX509, AuthID: "just text"}},
		"x509 two secrets": {{Type: TypeX509, AuthID: "CN=a", Secrets: []Secret{{}, {}}}},
		"x509 bad cert":    {{Type: TypeX509, Cert: []byte("junk")}},
		"rpk bad key":      {{Type: TypeRPK, AuthID: "a", Secrets: []Secret{{Key: []byte("junk")}}}},
		"dup secret id":    {{Type: TypePassword, AuthID: "a", Secrets: []Secret{{ID: "s", PwdHash: sha256Hash(nil, "x")}, {ID: "s", PwdHash: sha256Hash(nil, "y")}}}},
	}
	for name, cs := range bad {
		if _, err := s.SetCredentials(ctx, "acme", "d", cs, ""); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Accepted: bcrypt $2y$ of cost 4, sha-512 with default-less fields,
	// pwd-plain overriding given hash fields, rpk and x509 from certificates.
	cert, key := selfSigned(t, "CN=dev7,OU=Sensors,O=ACME Corp")
	pub, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	h512 := make([]byte, 64)
	ok := []Credential{
		{Type: TypePassword, AuthID: "a", Secrets: []Secret{{PwdHash: "$2y$" + cost4[4:], HashFunction: HashBcrypt}}},
		{Type: TypePassword, AuthID: "b", Secrets: []Secret{{PwdHash: base64.StdEncoding.EncodeToString(h512), HashFunction: HashSHA512}}},
		{Type: TypePassword, AuthID: "c", Secrets: []Secret{{PwdPlain: "p", PwdHash: "ignored", HashFunction: "md5"}}},
		{Type: TypeX509, Cert: cert.Raw},
		{Type: TypeRPK, AuthID: "jwt-dev", Secrets: []Secret{{Cert: cert.Raw}, {Key: pub, Algorithm: "EC"}}},
	}
	if _, err := s.SetCredentials(ctx, "acme", "d", ok, ""); err != nil {
		t.Fatal(err)
	}
	x, err := s.Lookup(ctx, "acme", TypeX509, SubjectDN(cert))
	if err != nil || x.Credential.AuthID != "CN=dev7,OU=Sensors,O=ACME Corp" {
		t.Fatalf("x509 from cert: %+v %v", x, err)
	}
	if sec := x.Credential.Secrets[0]; sec.NotAfter == nil || !sec.NotAfter.Equal(cert.NotAfter) {
		t.Fatalf("x509 validity: %+v", sec)
	}
	// A tenant whose trust anchor has an auth-id-template: x509 auth-ids
	// need not be DNs, and a cert with an auth-id keeps the auth-id.
	s.tenants.(*fakeTenants).m["acme"].IoT.TrustedCA = []tenant.TrustedCA{{AuthIDTemplate: "{{subject-cn}}"}}
	if _, err := s.SetCredentials(ctx, "acme", "d", []Credential{{Type: TypeX509, AuthID: "dev7", Cert: cert.Raw}, {Type: TypeX509, AuthID: "plain id"}}, ""); err != nil {
		t.Fatal(err)
	}
	if x, err := s.Lookup(ctx, "acme", TypeX509, "dev7"); err != nil || x.Credential.Secrets[0].NotAfter == nil {
		t.Fatalf("templated x509: %+v %v", x, err)
	}
	if _, err := s.SetCredentials(ctx, "acme", "d", ok, ""); err != nil {
		t.Fatal(err)
	}
	r, err := s.Lookup(ctx, "acme", TypeRPK, "jwt-dev")
	if err != nil || r.Credential.Secrets[0].Algorithm != "EC" || len(r.Credential.Secrets[0].Key) == 0 || r.Credential.Secrets[0].Cert != nil {
		t.Fatalf("rpk: %+v %v", r, err)
	}
}

func selfSigned(t testing.TB, dn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var subj pkix.Name
	for _, part := range strings.Split(dn, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "CN":
			subj.CommonName = v
		case "OU":
			subj.OrganizationalUnit = append(subj.OrganizationalUnit, v)
		case "O":
			subj.Organization = append(subj.Organization, v)
		}
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: subj,
		NotBefore: time.Now().Add(-time.Hour).Truncate(time.Second), NotAfter: time.Now().Add(24 * time.Hour).Truncate(time.Second)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestAuthIDUnique(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	mustCreate(t, s, "acme", "a", nil)
	mustCreate(t, s, "acme", "b", nil)
	mustCreate(t, s, "other", "c", nil)
	pw := func(auth string) []Credential {
		return []Credential{{Type: TypePassword, AuthID: auth, Secrets: []Secret{{PwdHash: sha256Hash(nil, "x")}}}}
	}
	if _, err := s.SetCredentials(ctx, "acme", "a", pw("shared"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCredentials(ctx, "acme", "b", pw("shared"), ""); !errors.Is(err, ErrExists) {
		t.Fatalf("taken auth-id: %v", err)
	}
	// b's failed attempt left nothing behind.
	if cs, _, _ := s.Credentials(ctx, "acme", "b"); len(cs) != 0 {
		t.Fatalf("b: %+v", cs)
	}
	// Another type or tenant is another namespace.
	if _, err := s.SetCredentials(ctx, "acme", "b", []Credential{{Type: TypePSK, AuthID: "shared", Secrets: []Secret{{Key: []byte("k")}}}}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCredentials(ctx, "other", "c", pw("shared"), ""); err != nil {
		t.Fatal(err)
	}
	// Set again on the holder: fine. Released by a, b may take it.
	if _, err := s.SetCredentials(ctx, "acme", "a", pw("shared"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCredentials(ctx, "acme", "a", pw("mine"), ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetCredentials(ctx, "acme", "b", pw("shared"), ""); err != nil {
		t.Fatal(err)
	}
	if idn, err := s.Lookup(ctx, "acme", TypePassword, "shared"); err != nil || idn.DeviceID != "b" {
		t.Fatalf("lookup: %+v %v", idn, err)
	}

	// A race of many devices for one auth-id: exactly one wins.
	const n = 8
	for i := 0; i < n; i++ {
		mustCreate(t, s, "acme", fmt.Sprintf("r%d", i), nil)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = s.SetCredentials(ctx, "acme", fmt.Sprintf("r%d", i), pw("contested"), "")
		}()
	}
	wg.Wait()
	winner := ""
	for i, err := range errs {
		switch {
		case err == nil:
			if winner != "" {
				t.Fatalf("two winners: %s and r%d", winner, i)
			}
			winner = fmt.Sprintf("r%d", i)
		case !errors.Is(err, ErrExists):
			t.Fatalf("r%d: %v", i, err)
		}
	}
	if winner == "" {
		t.Fatal("no winner")
	}
	if idn, err := s.Lookup(ctx, "acme", TypePassword, "contested"); err != nil || idn.DeviceID != winner {
		t.Fatalf("lookup: %+v %v, winner %s", idn, err, winner)
	}
	holders := 0
	for i := 0; i < n; i++ {
		if cs, _, _ := s.Credentials(ctx, "acme", fmt.Sprintf("r%d", i)); len(cs) == 1 {
			holders++
		}
	}
	if holders != 1 {
		t.Fatalf("%d devices hold the auth-id", holders)
	}
}

func TestDanglingIndexKey(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	mustCreate(t, s, "acme", "b", nil)
	pw := []Credential{{Type: TypePassword, AuthID: "left", Secrets: []Secret{{PwdHash: sha256Hash(nil, "x")}}}}
	// As a crash between the index write and the credentials write leaves it.
	if _, err := s.authIDs.Create(ctx, authIDKey("acme", TypePassword, "left"), []byte("ghost")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(ctx, "acme", TypePassword, "left"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dangling key: %v", err)
	}
	// Young: may be a write in progress.
	if _, err := s.SetCredentials(ctx, "acme", "b", pw, ""); !errors.Is(err, ErrExists) {
		t.Fatalf("young dangling key: %v", err)
	}
	old := claimGrace
	claimGrace = 0
	defer func() { claimGrace = old }()
	if _, err := s.SetCredentials(ctx, "acme", "b", pw, ""); err != nil {
		t.Fatalf("repair: %v", err)
	}
	if idn, err := s.Lookup(ctx, "acme", TypePassword, "left"); err != nil || idn.DeviceID != "b" {
		t.Fatalf("after repair: %+v %v", idn, err)
	}
}

func TestLimits(t *testing.T) {
	_, s, ten := setup(t)
	ctx := context.Background()
	ten.m["acme"].IoT.RegistrationLimits = &tenant.RegistrationLimits{MaxDevices: intp(2), MaxCredentialsPerDevice: intp(1)}
	ten.m["other"].IoT.RegistrationLimits = &tenant.RegistrationLimits{MaxDevices: intp(-1)}
	mustCreate(t, s, "acme", "a", nil)
	mustCreate(t, s, "acme", "b", nil)
	if _, _, err := s.CreateDevice(ctx, "acme", "c", nil); !errors.Is(err, ErrLimit) {
		t.Fatalf("max-devices: %v", err)
	}
	for i := 0; i < 3; i++ {
		mustCreate(t, s, "other", fmt.Sprint(i), nil)
	}
	two := []Credential{
		{Type: TypePassword, AuthID: "x", Secrets: []Secret{{PwdHash: sha256Hash(nil, "x")}}},
		{Type: TypePassword, AuthID: "y", Secrets: []Secret{{PwdHash: sha256Hash(nil, "x")}}},
	}
	if _, err := s.SetCredentials(ctx, "acme", "a", two, ""); !errors.Is(err, ErrLimit) {
		t.Fatalf("max-credentials: %v", err)
	}
	if _, err := s.SetCredentials(ctx, "acme", "a", two[:1], ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDevice(ctx, "acme", "b", ""); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, s, "acme", "c", nil)
}

func TestRestartAndSecondNode(t *testing.T) {
	dir := t.TempDir()
	e := startEngine(t, dir)
	ten := newTenants("acme", "other")
	ctx := context.Background()
	nc, err := e.Connect(engine.SystemAccount)
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, nc, ten, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		id := fmt.Sprintf("dev%02d", i)
		mustCreate(t, s, "acme", id, &Device{Via: []string{"gw"}})
		if _, err := s.SetCredentials(ctx, "acme", id, []Credential{{Type: TypePassword, AuthID: "auth-" + id, Secrets: []Secret{{PwdHash: sha256Hash(nil, id)}}}}, ""); err != nil {
			t.Fatal(err)
		}
	}
	mustCreate(t, s, "acme", "gw", nil)
	s.Close()
	nc.Close()
	e.Shutdown()

	e = startEngine(t, dir)
	t.Cleanup(e.Shutdown)
	s = openStore(t, e, ten)
	if n := s.DeviceCount("acme"); n != 51 {
		t.Fatalf("count after restart: %d", n)
	}
	idn, err := s.Lookup(ctx, "acme", TypePassword, "auth-dev17")
	if err != nil || idn.DeviceID != "dev17" {
		t.Fatalf("lookup after restart: %+v %v", idn, err)
	}
	gw := true
	if p, err := s.Devices(ctx, "acme", Query{IsGateway: &gw}); err != nil || fmt.Sprint(ids(p)) != "[gw]" {
		t.Fatalf("gateways after restart: %+v %v", p, err)
	}

	// A second store on the same engine: another node's view.
	other := openStore(t, e, ten)
	var mu sync.Mutex
	changes := map[string]int{}
	for _, st := range []*Store{s, other} {
		st.OnCredentialsChange(func(tn, id string) {
			mu.Lock()
			changes[fmt.Sprintf("%p/%s/%s", st, tn, id)]++
			mu.Unlock()
		})
	}
	seen := func(st *Store, tn, id string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return changes[fmt.Sprintf("%p/%s/%s", st, tn, id)] > 0
		}
	}
	reset := func() {
		mu.Lock()
		clear(changes)
		mu.Unlock()
	}
	mustCreate(t, s, "acme", "new", nil)
	eventually(t, "other node's index", func() bool { return other.DeviceCount("acme") == 52 })
	eventually(t, "create seen by writer", seen(s, "acme", "new"))
	eventually(t, "create seen by other", seen(other, "acme", "new"))
	reset()
	if _, err := other.SetCredentials(ctx, "acme", "dev03", []Credential{{Type: TypePSK, AuthID: "k3", Secrets: []Secret{{Key: []byte("k")}}}}, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "credentials change on the writer", seen(other, "acme", "dev03"))
	eventually(t, "credentials change on the other node", seen(s, "acme", "dev03"))
	if idn, err := s.Lookup(ctx, "acme", TypePSK, "k3"); err != nil || idn.DeviceID != "dev03" {
		t.Fatalf("lookup on the other node: %+v %v", idn, err)
	}
	// A cached identity is dropped when another node changes it.
	if idn, err := s.Lookup(ctx, "acme", TypePSK, "k3"); err != nil || string(idn.Credential.Secrets[0].Key) != "k" {
		t.Fatalf("cached lookup: %+v %v", idn, err)
	}
	if _, err := other.SetCredentials(ctx, "acme", "dev03", []Credential{{Type: TypePSK, AuthID: "k3", Secrets: []Secret{{Key: []byte("k2")}}}}, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cache invalidated by the other node's write", func() bool {
		idn, err := s.Lookup(ctx, "acme", TypePSK, "k3")
		return err == nil && string(idn.Credential.Secrets[0].Key) == "k2"
	})
	if _, err := other.UpdateDevice(ctx, "acme", "dev03", &Device{Enabled: boolp(false)}, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "cache invalidated by a registration change", func() bool {
		idn, err := s.Lookup(ctx, "acme", TypePSK, "k3")
		return err == nil && !idn.Device.IsEnabled()
	})
	reset()
	if _, err := s.UpdateDevice(ctx, "acme", "dev04", &Device{Enabled: boolp(false)}, ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "registration change", seen(other, "acme", "dev04"))
	reset()
	if err := s.DeleteDevice(ctx, "acme", "dev05", ""); err != nil {
		t.Fatal(err)
	}
	eventually(t, "delete", seen(other, "acme", "dev05"))
	eventually(t, "delete in the other index", func() bool { return other.DeviceCount("acme") == 51 })
	// The gateway relation follows on the other node too.
	if p, _ := other.Devices(ctx, "acme", Query{IsGateway: &gw}); fmt.Sprint(ids(p)) != "[gw]" {
		t.Fatalf("other node gateways: %+v", p)
	}

	// DeleteDevices: every node drops the tenant and hears of each device.
	reset()
	mustCreate(t, s, "other", "keep", nil)
	if err := s.DeleteDevices(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if n := s.DeviceCount("acme"); n != 0 {
		t.Fatalf("writer count after DeleteDevices: %d", n)
	}
	eventually(t, "other node empty", func() bool { return other.DeviceCount("acme") == 0 })
	eventually(t, "purge callbacks", func() bool { return seen(other, "acme", "dev17")() && seen(s, "acme", "new")() })
	if _, err := s.Lookup(ctx, "acme", TypePassword, "auth-dev17"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup after DeleteDevices: %v", err)
	}
	if _, _, err := other.Device(ctx, "other", "keep"); err != nil {
		t.Fatalf("other tenant touched: %v", err)
	}
	// The tenant can be filled again, and a restart keeps it right.
	mustCreate(t, s, "acme", "again", nil)
	third := openStore(t, e, ten)
	if n := third.DeviceCount("acme"); n != 1 {
		t.Fatalf("fresh store after purge: %d devices", n)
	}
	if p, _ := third.Devices(ctx, "acme", Query{}); fmt.Sprint(ids(p)) != "[again]" {
		t.Fatalf("fresh store page: %+v", p)
	}
}

func TestAutoProvision(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	cert, _ := selfSigned(t, "CN=auto1,O=ACME")
	c := Credential{Type: TypeX509, Cert: cert.Raw}
	var wg sync.WaitGroup
	res := make([]*Identity, 4)
	errs := make([]error, 4)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = s.AutoProvision(ctx, "acme", "auto-1", c, true)
		}()
	}
	wg.Wait()
	for i := range res {
		if errs[i] != nil || res[i].DeviceID != "auto-1" || !res[i].Device.Status.AutoProvisioned || res[i].Credential.AuthID != "CN=auto1,O=ACME" {
			t.Fatalf("%d: %+v %v", i, res[i], errs[i])
		}
		if fmt.Sprint(res[i].Device.Authorities) != "[auto-provisioning-enabled]" {
			t.Fatalf("gateway authorities: %v", res[i].Device.Authorities)
		}
	}
	if n := s.DeviceCount("acme"); n != 1 {
		t.Fatalf("%d devices", n)
	}
	// A device registered by hand with that id is not taken over.
	mustCreate(t, s, "acme", "manual", nil)
	cert2, _ := selfSigned(t, "CN=auto2,O=ACME")
	if _, err := s.AutoProvision(ctx, "acme", "manual", Credential{Type: TypeX509, Cert: cert2.Raw}, false); !errors.Is(err, ErrExists) {
		t.Fatalf("manual device: %v", err)
	}
	if cs, _, _ := s.Credentials(ctx, "acme", "manual"); len(cs) != 0 {
		t.Fatalf("manual device got %+v", cs)
	}
	// After a delete, provisioning again starts afresh.
	if err := s.DeleteDevice(ctx, "acme", "auto-1", ""); err != nil {
		t.Fatal(err)
	}
	if idn, err := s.AutoProvision(ctx, "acme", "auto-1", c, false); err != nil || idn.Device.Authorities != nil {
		t.Fatalf("again: %+v %v", idn, err)
	}
}

func TestKeysAndDN(t *testing.T) {
	for _, id := range []string{"a", "a.b", "x:y=z", "..", "=", "A-_z09"} {
		enc := encodeID(id)
		if !regexp.MustCompile(`^[-_=A-Za-z0-9]+$`).MatchString(enc) {
			t.Fatalf("%q → %q", id, enc)
		}
		if back, ok := decodeID(enc); !ok || back != id {
			t.Fatalf("%q → %q → %q", id, enc, back)
		}
		tn, got, ok := splitDeviceKey(deviceKey("acme", id))
		if !ok || tn != "acme" || got != id {
			t.Fatalf("split %q", id)
		}
	}
	for _, bad := range []string{"=4", "=zz", ""} {
		if _, ok := decodeID(bad); ok {
			t.Fatalf("decoded %q", bad)
		}
	}
	for in, want := range map[string]string{
		"CN=dev1,O=ACME":                   "CN=dev1,O=ACME",
		" cn = dev1 ,  o=ACME ":            "CN=dev1,O=ACME",
		"CN=dev 1;O=ACME\\, Inc":           `CN=dev 1,O=ACME\, Inc`,
		`CN="a,b",OU=x+CN=y`:               `CN=a\,b,OU=x+CN=y`,
		"2.5.4.3=dev,OID.2.5.4.10=ACME":    "CN=dev,O=ACME",
		`CN=\41\42,O=#0403414243`:          "CN=AB,O=#0403414243",
		`CN=\ lead,O=trail\ `:              `CN=\ lead,O=trail\ `,
		"emailAddress=a@b.c,CN=x":          "EMAILADDRESS=a@b.c,CN=x",
		"CN=Ünïcode":                       "CN=Ünïcode",
		"UID=u1,DC=example,DC=com":         "UID=u1,DC=example,DC=com",
		"CN=with\\=equals":                 "CN=with=equals",
		"street=Main St 1,postalCode=1234": "STREET=Main St 1,POSTALCODE=1234",
	} {
		got, err := NormalizeSubjectDN(in)
		if err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "no equals", "=x", "CN=a,", "CN=\"open", "C N=x"} {
		if got, err := NormalizeSubjectDN(bad); err == nil {
			t.Errorf("%q accepted as %q", bad, got)
		}
	}
}

func generateBcrypt(pw string, cost int) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	return string(h), err
}

// TestGatewayIndexRandom checks the incremental gateway tree against the
// definition after random registrations, updates and deletions.
func TestGatewayIndexRandom(t *testing.T) {
	ti := newTenantIndex()
	devs := map[string]*links{}
	names := []string{"a", "b", "c", "d", "e", "f"}
	groups := []string{"g1", "g2"}
	pick := func(r *mrand.Rand, from []string) []string {
		var out []string
		for _, x := range from {
			if r.Intn(4) == 0 {
				out = append(out, x)
			}
		}
		return out
	}
	r := mrand.New(mrand.NewSource(1))
	for step := 0; step < 20000; step++ {
		id := names[r.Intn(len(names))]
		if r.Intn(4) == 0 {
			delete(devs, id)
			ti.ids.Delete(id)
			ti.refresh(ti.setLinks(id, nil), id)
		} else {
			l := &links{Via: pick(r, names), ViaGroups: pick(r, groups), MemberOf: pick(r, groups)}
			devs[id] = l
			ti.ids.Set(id)
			if len(l.Via)+len(l.ViaGroups)+len(l.MemberOf) == 0 {
				l = nil
			}
			ti.refresh(ti.setLinks(id, l), id)
		}
		for _, x := range names {
			want := false
			if lx, ok := devs[x]; ok {
				for y, ly := range devs {
					if y == x {
						continue
					}
					for _, v := range ly.Via {
						want = want || v == x
					}
					for _, g := range ly.ViaGroups {
						for _, m := range lx.MemberOf {
							want = want || g == m
						}
					}
				}
			}
			if _, got := ti.gw.Get(x); got != want {
				t.Fatalf("step %d: %s gateway %v, want %v (%+v)", step, x, got, want, devs)
			}
		}
	}
}

// TestSubjectDNOrder: the auth-id of a certificate keeps the order of
// its subject's RDNs (reversed, as RFC 2253 writes them).
func TestSubjectDNOrder(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	raw, err := asn1.Marshal(pkix.RDNSequence{
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 3}, Value: "dev, 1"}},
		{{Type: asn1.ObjectIdentifier{2, 5, 4, 10}, Value: "ACME"}},
		{{Type: asn1.ObjectIdentifier{0, 9, 2342, 19200300, 100, 1, 25}, Value: "example"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), RawSubject: raw, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	if got := SubjectDN(cert); got != `DC=example,O=ACME,CN=dev\, 1` {
		t.Fatalf("SubjectDN %q", got)
	}
}

// TestStaleCredentials: credentials a deleted device left behind (a PUT
// that raced its DELETE, or a crash) do not pass to a new device of the
// same id, and are overwritten by its first PUT.
func TestStaleCredentials(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	mustCreate(t, s, "acme", "d", nil)
	stale, _ := json.Marshal(storedCredentials{Inc: "0123456789abcdef", Credentials: []Credential{
		{Type: TypePassword, AuthID: "old", Secrets: []Secret{{ID: "s1", PwdHash: sha256Hash(nil, "x"), HashFunction: HashSHA256}}}}})
	if _, err := s.creds.Put(ctx, deviceKey("acme", "d"), stale); err != nil {
		t.Fatal(err)
	}
	if _, err := s.authIDs.Put(ctx, authIDKey("acme", TypePassword, "old"), []byte("d")); err != nil {
		t.Fatal(err)
	}
	cs, v, err := s.Credentials(ctx, "acme", "d")
	if err != nil || len(cs) != 0 || v == "0" {
		t.Fatalf("stale set visible: %+v %q %v", cs, v, err)
	}
	if _, err := s.Lookup(ctx, "acme", TypePassword, "old"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stale lookup: %v", err)
	}
	// Its secret ids are not the device's either.
	if _, err := s.SetCredentials(ctx, "acme", "d", []Credential{{Type: TypePassword, AuthID: "old", Secrets: []Secret{{ID: "s1"}}}}, ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("stale secret id: %v", err)
	}
	if _, err := s.SetCredentials(ctx, "acme", "d", []Credential{{Type: TypePassword, AuthID: "old", Secrets: []Secret{{PwdHash: sha256Hash(nil, "y")}}}}, v); err != nil {
		t.Fatal(err)
	}
	if idn, err := s.Lookup(ctx, "acme", TypePassword, "old"); err != nil || idn.Credential.Secrets[0].PwdHash != sha256Hash(nil, "y") {
		t.Fatalf("after PUT: %+v %v", idn, err)
	}
}

func TestConcurrentCreate(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	var won atomic.Int32
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := s.CreateDevice(ctx, "acme", "same", &Device{Mapper: fmt.Sprint(i)})
			switch {
			case err == nil:
				won.Add(1)
			case !errors.Is(err, ErrExists):
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if won.Load() != 1 || s.DeviceCount("acme") != 1 {
		t.Fatalf("%d creates won, %d devices", won.Load(), s.DeviceCount("acme"))
	}
}

// TestConcurrentSetCredentialsOneDevice: PUTs of one device's set racing
// without If-Match leave the index agreeing with the set that won last.
func TestConcurrentSetCredentialsOneDevice(t *testing.T) {
	_, s, _ := setup(t)
	ctx := context.Background()
	mustCreate(t, s, "acme", "d", nil)
	pw := func(ids ...string) []Credential {
		var cs []Credential
		for _, a := range ids {
			cs = append(cs, Credential{Type: TypePassword, AuthID: a, Secrets: []Secret{{PwdHash: sha256Hash(nil, a)}}})
		}
		return cs
	}
	sets := [][]Credential{pw("x"), pw("x", "y"), pw("y"), pw("z"), pw("x", "z")}
	for round := 0; round < 10; round++ {
		var wg sync.WaitGroup
		for i := range sets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.SetCredentials(ctx, "acme", "d", sets[(i+round)%len(sets)], ""); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		cs, _, _ := s.Credentials(ctx, "acme", "d")
		held := map[string]bool{}
		for _, c := range cs {
			held[c.AuthID] = true
		}
		for _, a := range []string{"x", "y", "z"} {
			_, err := s.Lookup(ctx, "acme", TypePassword, a)
			if held[a] == (err == nil) {
				continue
			}
			// A lost index key (two writes racing; fixed by the per-device
			// write locks) fails; a transient miss is logged, so that a
			// loaded machine shows it if it ever happens.
			recovered := false
			for deadline := time.Now().Add(3 * time.Second); !recovered && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
				_, err2 := s.Lookup(ctx, "acme", TypePassword, a)
				recovered = held[a] == (err2 == nil)
			}
			if !recovered {
				t.Fatalf("round %d: set %v, lookup %s: %v", round, held, a, err)
			}
			t.Logf("round %d: set %v, lookup %s: %v at first, right later (transient)", round, held, a, err)
		}
	}
}
