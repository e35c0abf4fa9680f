package auth

import (
	"sync"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// changingUsers is fakeUsers with the tenant store's change hooks; the
// test calls changed after editing the maps, as the store's watch would.
type changingUsers struct {
	fakeUsers
	mu       sync.Mutex
	onUser   []func(string, string)
	onTenant []func(string)
}

func (c *changingUsers) OnUserChange(f func(string, string)) { c.onUser = append(c.onUser, f) }
func (c *changingUsers) OnTenantChange(f func(string))       { c.onTenant = append(c.onTenant, f) }

func (c *changingUsers) userChanged(ten, name string) {
	for _, f := range c.onUser {
		f(ten, name)
	}
}

func (c *changingUsers) tenantChanged(ten string) {
	for _, f := range c.onTenant {
		f(ten)
	}
}

// recConn records revocations.
type recConn struct {
	mu     sync.Mutex
	causes []string
}

func (r *recConn) Revoke(cause string) {
	r.mu.Lock()
	r.causes = append(r.causes, cause)
	r.mu.Unlock()
}

func (r *recConn) revoked() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.causes...)
}

func waitRevoked(t *testing.T, r *recConn, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if cs := r.revoked(); len(cs) > 0 {
			if cs[0] != want {
				t.Fatalf("revoked with %q, want %q", cs[0], want)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("not revoked (want %q)", want)
}

func TestLiveUsers(t *testing.T) {
	h := bcryptHash(t, "pw")
	perms := []tenant.Permission{{Pattern: "orders/#", Actions: []tenant.Action{tenant.ActionSend}}}
	u := &changingUsers{fakeUsers: fakeUsers{
		tenants: map[string]*tenant.Tenant{"acme": {Name: "acme"}},
		users: map[string]*tenant.User{
			"acme/app":   {Name: "app", Tenant: "acme", PasswordHash: h, Roles: []tenant.Role{tenant.RoleApp}, Permissions: perms},
			"acme/other": {Name: "other", Tenant: "acme", PasswordHash: h, Roles: []tenant.Role{tenant.RoleApp}},
		},
	}}
	a := New(u)
	live := a.Live()
	login := func(user string) (*Principal, *recConn) {
		t.Helper()
		p, err := a.Authenticate("acme", user, "pw")
		if err != nil {
			t.Fatal(err)
		}
		c := &recConn{}
		live.Register(c, p, AdapterMQTT)
		return p, c
	}

	// An unrelated change, and a change that changes nothing, close
	// nothing.
	_, c1 := login("app")
	_, cOther := login("other")
	u.userChanged("acme", "other")
	u.userChanged("acme", "app")
	if len(c1.revoked()) != 0 || len(cOther.revoked()) != 0 {
		t.Fatal("revoked without a change")
	}
	if n := live.Count("acme", "app", false); n != 1 {
		t.Fatalf("Count %d", n)
	}

	// A permission change closes the user's connections only.
	cp := *u.users["acme/app"]
	cp.Permissions = []tenant.Permission{{Pattern: "orders/#", Actions: []tenant.Action{tenant.ActionReceive}}}
	u.users["acme/app"] = &cp
	u.userChanged("acme", "app")
	waitRevoked(t, c1, CauseUserChanged)
	if len(cOther.revoked()) != 0 {
		t.Fatal("another user's connection revoked")
	}

	// A password change: a connection that authenticated before it goes.
	p2, c2 := login("app")
	cp2 := *u.users["acme/app"]
	cp2.PasswordHash = bcryptHash(t, "new")
	u.users["acme/app"] = &cp2
	u.userChanged("acme", "app")
	waitRevoked(t, c2, CauseUserChanged)
	live.Unregister(c2, p2)

	// A connection registered after a change it did not see (the event
	// came first) is revoked at once.
	c3 := &recConn{}
	live.Register(c3, p2, AdapterAMQP)
	waitRevoked(t, c3, CauseUserChanged)
	live.Unregister(c3, p2)

	// An unregistered connection is not told; a deleted user's are.
	pd, cd := login("other")
	gone := &recConn{}
	live.Register(gone, pd, AdapterMQTT)
	live.Unregister(gone, pd)
	delete(u.users, "acme/other")
	u.userChanged("acme", "other")
	waitRevoked(t, cd, CauseUserDeleted)
	if len(gone.revoked()) != 0 {
		t.Fatal("an unregistered connection was revoked")
	}

	// Anonymous principals are not registered.
	anon := &recConn{}
	live.Register(anon, Anonymous("acme"), AdapterMQTT)
	if live.Count("acme", "", false) != 0 {
		t.Fatal("anonymous registered")
	}

	// A deleted tenant: everything of it.
	u.users["acme/x"] = &tenant.User{Name: "x", Tenant: "acme", PasswordHash: h, Roles: []tenant.Role{tenant.RoleApp}}
	_, cx := login("x")
	delete(u.tenants, "acme")
	u.tenantChanged("acme")
	waitRevoked(t, cx, CauseTenantDeleted)
	if len(anon.revoked()) != 0 {
		t.Fatal("anonymous revoked")
	}
}

func TestLiveDevices(t *testing.T) {
	f := newDeviceFixture(t)
	f.dev.put("iot", "d1", registry.Device{}, pwCred("a1", registry.Secret{PwdHash: bcryptHash(t, "pw1")}))
	f.dev.put("iot", "d2", registry.Device{}, pwCred("a2", registry.Secret{PwdHash: bcryptHash(t, "pw2")}))
	login := func(authID, pw, adapter string) (*Principal, *recConn) {
		t.Helper()
		p, err := f.a.Authenticate("iot", authID, pw)
		if err != nil {
			t.Fatal(err)
		}
		c := &recConn{}
		f.a.Live().Register(c, p, adapter)
		return p, c
	}
	_, c1 := login("a1", "pw1", AdapterMQTT)
	_, c2 := login("a2", "pw2", AdapterAMQP)

	// A change that keeps the device and its credential enabled (a new
	// secret) closes nothing.
	f.dev.put("iot", "d1", registry.Device{}, pwCred("a1", registry.Secret{PwdHash: bcryptHash(t, "pw1b")}))
	time.Sleep(20 * time.Millisecond)
	if len(c1.revoked()) != 0 {
		t.Fatal("revoked by a secret change")
	}
	// Disabled device.
	f.dev.put("iot", "d1", registry.Device{Enabled: ptr(false)}, pwCred("a1", registry.Secret{PwdHash: bcryptHash(t, "pw1")}))
	waitRevoked(t, c1, CauseDeviceRevoked)
	if len(c2.revoked()) != 0 {
		t.Fatal("another device revoked")
	}

	// The adapter of one connection disabled for the tenant.
	_, c3 := login("a2", "pw2", AdapterMQTT)
	f.ten.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: &tenant.IoT{Adapters: []tenant.Adapter{{Type: AdapterAMQP, Enabled: ptr(true)}}}}
	f.a.Live().tenantChanged("iot")
	waitRevoked(t, c3, CauseAdapterDisabled)
	if len(c2.revoked()) != 0 {
		t.Fatal("the AMQP connection was revoked with the MQTT adapter")
	}

	// Credential removed.
	f.dev.mu.Lock()
	delete(f.dev.ids, "iot/"+registry.TypePassword+"/a2")
	f.dev.mu.Unlock()
	f.a.Live().deviceChanged("iot", "d2")
	waitRevoked(t, c2, CauseDeviceRevoked)
}

// A nil registry (no authenticator) does nothing.
func TestLiveNil(t *testing.T) {
	var a *Authenticator
	l := a.Live()
	l.Register(&recConn{}, &Principal{Tenant: "t", User: "u"}, AdapterMQTT)
	l.Unregister(&recConn{}, &Principal{Tenant: "t", User: "u"})
	if l.Count("t", "u", false) != 0 {
		t.Fatal("count")
	}
}

// Deleting a tenant changes the tenant and each of its users; a
// connection is revoked once (TestLogHygiene saw the close logged twice).
func TestLiveRevokedOnce(t *testing.T) {
	u := &changingUsers{fakeUsers: fakeUsers{
		tenants: map[string]*tenant.Tenant{"acme": {Name: "acme"}},
		users: map[string]*tenant.User{
			"acme/app": {Name: "app", Tenant: "acme", PasswordHash: bcryptHash(t, "pw"), Roles: []tenant.Role{tenant.RoleApp}},
		},
	}}
	a := New(u)
	p, err := a.Authenticate("acme", "app", "pw")
	if err != nil {
		t.Fatal(err)
	}
	c := &recConn{}
	a.Live().Register(c, p, AdapterMQTT)
	delete(u.tenants, "acme")
	delete(u.users, "acme/app")
	u.tenantChanged("acme")
	u.userChanged("acme", "app")
	waitRevoked(t, c, CauseTenantDeleted)
	if cs := c.revoked(); len(cs) != 1 {
		t.Fatalf("revoked %d times: %v", len(cs), cs)
	}
}
