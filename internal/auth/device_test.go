package auth

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// fakeDevices is an in-memory registry.
type fakeDevices struct {
	mu        sync.Mutex
	ids       map[string]*registry.Identity // tenant/type/auth-id
	onChange  []func(string, string)
	provision []string // device ids auto-provisioned
	lookups   int
}

func newFakeDevices() *fakeDevices { return &fakeDevices{ids: map[string]*registry.Identity{}} }

func (f *fakeDevices) put(ten, dev string, d registry.Device, c registry.Credential) {
	f.mu.Lock()
	f.ids[ten+"/"+c.Type+"/"+c.AuthID] = &registry.Identity{Tenant: ten, DeviceID: dev, Device: &d, Credential: &c}
	hooks := f.onChange
	f.mu.Unlock()
	for _, h := range hooks {
		h(ten, dev)
	}
}

func (f *fakeDevices) Lookup(_ context.Context, ten, typ, authID string) (*registry.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	id, ok := f.ids[ten+"/"+typ+"/"+authID]
	if !ok {
		return nil, registry.ErrNotFound
	}
	return id, nil
}

func (f *fakeDevices) AutoProvision(_ context.Context, ten, dev string, c registry.Credential, gw bool) (*registry.Identity, error) {
	f.mu.Lock()
	if _, ok := f.ids[ten+"/"+c.Type+"/"+c.AuthID]; ok {
		f.mu.Unlock()
		return nil, registry.ErrExists
	}
	f.provision = append(f.provision, dev)
	f.mu.Unlock()
	f.put(ten, dev, registry.Device{Status: &registry.Status{AutoProvisioned: true}}, c)
	return f.Lookup(context.Background(), ten, c.Type, c.AuthID)
}

func (f *fakeDevices) OnCredentialsChange(h func(string, string)) {
	f.mu.Lock()
	f.onChange = append(f.onChange, h)
	f.mu.Unlock()
}

// fakeTenants adds Tenants() to fakeUsers.
type fakeTenants struct{ fakeUsers }

func (f *fakeTenants) Tenants() []*tenant.Tenant {
	var out []*tenant.Tenant
	for _, t := range f.tenants {
		out = append(out, t)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func bcryptHash(t *testing.T, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func pwCred(authID string, secrets ...registry.Secret) registry.Credential {
	return registry.Credential{Type: registry.TypePassword, AuthID: authID, Secrets: secrets}
}

type deviceFixture struct {
	a   *Authenticator
	ten *fakeTenants
	dev *fakeDevices
	reg *prometheus.Registry
}

func newDeviceFixture(t *testing.T) *deviceFixture {
	ten := &fakeTenants{fakeUsers{
		tenants: map[string]*tenant.Tenant{
			"iot":   {Name: "iot", IoT: &tenant.IoT{}},
			"plain": {Name: "plain"},
		},
		users: map[string]*tenant.User{},
	}}
	h, _ := HashPassword("userpw")
	ten.users["iot/app"] = &tenant.User{Name: "app", Tenant: "iot", PasswordHash: h}
	dev := newFakeDevices()
	reg := prometheus.NewRegistry()
	a := New(ten, WithDevices(dev), WithMetrics(reg))
	return &deviceFixture{a: a, ten: ten, dev: dev, reg: reg}
}

func (f *deviceFixture) failures(adapter, reason string) float64 {
	return value(f.a.m.deviceFail.WithLabelValues(adapter, reason))
}

func TestDevicePassword(t *testing.T) {
	f := newDeviceFixture(t)
	salt := []byte("s4lt")
	s256 := sha256.Sum256(append(append([]byte{}, salt...), "pw256"...))
	s512 := sha512.Sum512([]byte("pw512")) // no salt
	past, future := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	f.dev.put("iot", "d-bcrypt", registry.Device{}, pwCred("bc", registry.Secret{HashFunction: "bcrypt", PwdHash: bcryptHash(t, "pwbc")}))
	f.dev.put("iot", "d-2y", registry.Device{}, pwCred("bc2y", registry.Secret{PwdHash: "$2y$" + bcryptHash(t, "pw2y")[4:]}))
	f.dev.put("iot", "d-256", registry.Device{}, pwCred("s256", registry.Secret{HashFunction: "sha-256", Salt: salt, PwdHash: base64.StdEncoding.EncodeToString(s256[:])}))
	f.dev.put("iot", "d-512", registry.Device{}, pwCred("s512", registry.Secret{HashFunction: "sha-512", PwdHash: base64.StdEncoding.EncodeToString(s512[:])}))
	f.dev.put("iot", "d-off", registry.Device{Enabled: ptr(false)}, pwCred("devoff", registry.Secret{PwdHash: bcryptHash(t, "pw")}))
	f.dev.put("iot", "d-credoff", registry.Device{}, registry.Credential{Type: registry.TypePassword, AuthID: "credoff", Enabled: ptr(false), Secrets: []registry.Secret{{PwdHash: bcryptHash(t, "pw")}}})
	f.dev.put("iot", "d-exp", registry.Device{}, pwCred("expired",
		registry.Secret{PwdHash: bcryptHash(t, "pw"), NotAfter: &past},
		registry.Secret{PwdHash: bcryptHash(t, "pw"), NotBefore: &future},
		registry.Secret{PwdHash: bcryptHash(t, "pw"), Enabled: ptr(false)}))
	f.dev.put("iot", "d-rot", registry.Device{}, pwCred("rotating",
		registry.Secret{PwdHash: bcryptHash(t, "old"), NotAfter: &past},
		registry.Secret{PwdHash: bcryptHash(t, "new")}))
	f.dev.put("iot", "app", registry.Device{}, pwCred("app", registry.Secret{PwdHash: bcryptHash(t, "devpw")}))

	ctx := context.Background()
	for _, c := range []struct{ authID, pw, device string }{
		{"bc", "pwbc", "d-bcrypt"}, {"bc2y", "pw2y", "d-2y"}, {"s256", "pw256", "d-256"}, {"s512", "pw512", "d-512"}, {"rotating", "new", "d-rot"},
	} {
		p, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", c.authID, c.pw)
		if err != nil {
			t.Fatalf("%s: %v", c.authID, err)
		}
		if p.Device != c.device || p.Tenant != "iot" || p.User != "" || p.AuthID != c.authID || !p.IsDevice() {
			t.Fatalf("%s: principal %+v", c.authID, p)
		}
	}
	// A user of the name comes first.
	if p, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "app", "userpw"); err != nil || p.IsDevice() || p.User != "app" {
		t.Fatalf("user first: %+v %v", p, err)
	}
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "app", "devpw"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("the device behind a user name: %v", err)
	}
	// A tenant that is not IoT-enabled has no devices.
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "plain", "bc", "pwbc"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("plain tenant: %v", err)
	}

	refusals := []struct {
		authID, pw, reason string
		want               error
	}{
		{"nobody", "pw", ReasonUnknownAuthID, ErrBadCredentials},
		{"bc", "wrong", ReasonWrongSecret, ErrBadCredentials},
		{"s256", "wrong", ReasonWrongSecret, ErrBadCredentials},
		{"s512", "wrong", ReasonWrongSecret, ErrBadCredentials},
		{"rotating", "old", ReasonWrongSecret, ErrBadCredentials},
		{"devoff", "pw", ReasonDeviceDisabled, ErrBadCredentials},
		{"credoff", "pw", ReasonCredentialDisabled, ErrBadCredentials},
		{"expired", "pw", ReasonCredentialExpired, ErrBadCredentials},
	}
	for _, r := range refusals {
		before := f.failures(AdapterAMQP, r.reason)
		_, err := f.a.AuthenticateFor(ctx, AdapterAMQP, "iot", r.authID, r.pw)
		var de *DeviceError
		if !errors.Is(err, r.want) || !errors.As(err, &de) || de.Reason != r.reason {
			t.Errorf("%s: %v, want %v (%s)", r.authID, err, r.want, r.reason)
		}
		if got := f.failures(AdapterAMQP, r.reason); got != before+1 {
			t.Errorf("%s: %s counted %v times", r.authID, r.reason, got-before)
		}
	}

	// Tenant and adapter switches.
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{Enabled: ptr(false)}}
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "bc", "pwbc"); !errors.Is(err, ErrNotAuthorized) || f.failures(AdapterMQTT, ReasonTenantDisabled) != 1 {
		t.Fatalf("disabled tenant: %v", err)
	}
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{Adapters: []tenant.Adapter{
		{Type: AdapterAMQP, Enabled: ptr(true)}, {Type: AdapterHTTP}}}}
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "bc", "pwbc"); !errors.Is(err, ErrNotAuthorized) || f.failures(AdapterMQTT, ReasonAdapterDisabled) != 1 {
		t.Fatalf("unlisted adapter: %v", err)
	}
	if _, err := f.a.AuthenticateFor(ctx, AdapterHTTP, "iot", "bc", "pwbc"); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("listed, not enabled: %v", err)
	}
	if _, err := f.a.AuthenticateFor(ctx, AdapterAMQP, "iot", "bc", "pwbc"); err != nil {
		t.Fatalf("enabled adapter: %v", err)
	}
	if n := value(f.a.m.deviceOK.WithLabelValues(AdapterMQTT, "password")); n != 5 {
		t.Fatalf("successes counted %v", n)
	}
}

func TestDeviceCache(t *testing.T) {
	f := newDeviceFixture(t)
	f.dev.put("iot", "d1", registry.Device{}, pwCred("d1", registry.Secret{PwdHash: bcryptHash(t, "pw1")}))
	ctx := context.Background()
	bcrypts := func() float64 { return value(f.a.m.bcrypts) }
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "d1", "pw1"); err != nil {
		t.Fatal(err)
	}
	if bcrypts() != 1 {
		t.Fatalf("bcrypts %v", bcrypts())
	}
	for range 3 {
		if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "d1", "pw1"); err != nil {
			t.Fatal(err)
		}
	}
	if bcrypts() != 1 || value(f.a.m.cacheHits) != 3 {
		t.Fatalf("cached connects ran %v bcrypts, %v hits", bcrypts(), value(f.a.m.cacheHits))
	}
	// A wrong password is never served from the cache.
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "d1", "pw2"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal(err)
	}
	// Disabling the credential takes effect at once, cache or not.
	f.dev.put("iot", "d1", registry.Device{}, registry.Credential{Type: registry.TypePassword, AuthID: "d1", Enabled: ptr(false), Secrets: []registry.Secret{{PwdHash: bcryptHash(t, "pw1")}}})
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "d1", "pw1"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal("disabled credential accepted")
	}
	// The change notification dropped the device's entries.
	f.a.devMu.Lock()
	n := len(f.a.devCache)
	f.a.devMu.Unlock()
	if n != 0 {
		t.Fatalf("%d cache entries after the change", n)
	}
	// A new password: the old one fails, the new one works.
	f.dev.put("iot", "d1", registry.Device{}, pwCred("d1", registry.Secret{PwdHash: bcryptHash(t, "pw2")}))
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "d1", "pw1"); !errors.Is(err, ErrBadCredentials) {
		t.Fatal("old password accepted after the change")
	}
	if _, err := f.a.AuthenticateFor(ctx, AdapterMQTT, "iot", "d1", "pw2"); err != nil {
		t.Fatal(err)
	}
}

// TestBcryptPool: with one worker, concurrent checks queue (the gauge
// shows them) and all complete; a check whose context ends while queued
// fails with ErrUnavailable.
func TestBcryptPool(t *testing.T) {
	m := newAuthMetrics()
	p := newPool(1, m)
	h := []byte(bcryptHash(t, "pw"))
	p.slots <- struct{}{} // the only worker is busy
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if ok, err := p.compare(context.Background(), h, "pw", false); !ok || err != nil {
				t.Errorf("compare: %v %v", ok, err)
			}
		})
	}
	deadline := time.Now().Add(10 * time.Second)
	for value(m.queued) != 8 {
		if time.Now().After(deadline) {
			t.Fatalf("queued %v", value(m.queued))
		}
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.compare(ctx, h, "pw", false); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("queued past the deadline: %v", err)
	}
	<-p.slots
	wg.Wait()
	if value(m.queued) != 0 || value(m.bcrypts) != 8 {
		t.Fatalf("queued %v bcrypts %v", value(m.queued), value(m.bcrypts))
	}
}

func TestAuthorizeDevice(t *testing.T) {
	p := &Principal{Tenant: "iot", Device: "d1", Perms: []tenant.Permission{{Pattern: "#", Actions: []tenant.Action{tenant.ActionSend, tenant.ActionReceive}}}}
	for _, name := range []string{"telemetry", "a/b", "#", "$temp/x"} {
		for _, act := range []tenant.Action{tenant.ActionSend, tenant.ActionReceive, tenant.ActionView} {
			if Authorize(p, name, act) {
				t.Errorf("device may %s %q", act, name)
			}
		}
	}
}

// value reads a counter or gauge.
func value(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

// failingDevices is a registry that cannot answer.
type failingDevices struct{ fakeDevices }

func (f *failingDevices) Lookup(context.Context, string, string, string) (*registry.Identity, error) {
	return nil, errors.New("registry: nats: timeout")
}

func TestDeviceRegistryUnavailable(t *testing.T) {
	f := newDeviceFixture(t)
	a := New(f.ten, WithDevices(&failingDevices{}))
	_, err := a.AuthenticateFor(context.Background(), AdapterAMQP, "iot", "sensor", "pw")
	var de *DeviceError
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &de) || de.Reason != ReasonRegistryError {
		t.Fatalf("%v", err)
	}
	if value(a.m.deviceFail.WithLabelValues(AdapterAMQP, ReasonRegistryError)) != 1 {
		t.Fatal("not counted")
	}
}
