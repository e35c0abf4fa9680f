package auth

import (
	"errors"
	"testing"

	"github.com/throngmq/throng/internal/tenant"
)

type fakeUsers struct {
	tenants map[string]*tenant.Tenant
	users   map[string]*tenant.User
}

func (f *fakeUsers) Tenant(n string) (*tenant.Tenant, bool) { t, ok := f.tenants[n]; return t, ok }
func (f *fakeUsers) User(t, n string) (*tenant.User, bool) {
	u, ok := f.users[t+"/"+n]
	return u, ok
}

func TestAuthenticateAndCache(t *testing.T) {
	h, err := HashPassword("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUsers{
		tenants: map[string]*tenant.Tenant{"acme": {Name: "acme"}},
		users:   map[string]*tenant.User{"acme/app": {Name: "app", Tenant: "acme", PasswordHash: h, Roles: []tenant.Role{tenant.RoleApp}}},
	}
	a := New(f)
	p, err := a.Authenticate("acme", "app", "s3cret")
	if err != nil || p.User != "app" || p.Tenant != "acme" {
		t.Fatalf("%+v %v", p, err)
	}
	if len(a.cache) != 1 {
		t.Fatal("not cached")
	}
	if _, err := a.Authenticate("acme", "app", "wrong"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := a.Authenticate("acme", "nobody", "s3cret"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("unknown user: %v", err)
	}
	if _, err := a.Authenticate("other", "app", "s3cret"); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("unknown tenant: %v", err)
	}
	// A password change invalidates the cached verification.
	h2, _ := HashPassword("new")
	f.users["acme/app"] = &tenant.User{Name: "app", Tenant: "acme", PasswordHash: h2}
	if _, err := a.Authenticate("acme", "app", "s3cret"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("old password after change: %v", err)
	}
	if _, err := a.Authenticate("acme", "app", "new"); err != nil {
		t.Fatal(err)
	}
	delete(f.users, "acme/app")
	if _, err := a.Authenticate("acme", "app", "new"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("deleted user: %v", err)
	}
}

func TestSplitUser(t *testing.T) {
	for in, want := range map[string][2]string{"app@acme": {"app", "acme"}, "app": {"app", "default"}, "a@b@c": {"a@b", "c"}} {
		u, tn := SplitUser(in, "default")
		if u != want[0] || tn != want[1] {
			t.Errorf("SplitUser(%q) = %q, %q", in, u, tn)
		}
	}
}

func TestAuthorize(t *testing.T) {
	p := &Principal{Tenant: "acme", User: "dev1", ClientID: "c1", Roles: []tenant.Role{tenant.RoleApp}, Perms: []tenant.Permission{
		{Pattern: "orders/#", Actions: []tenant.Action{tenant.ActionSend}},
		{Pattern: "devices/${user}/+", Actions: []tenant.Action{tenant.ActionReceive}},
		{Pattern: "clients/${client_id}", Actions: []tenant.Action{tenant.ActionSend, tenant.ActionReceive}},
	}}
	cases := []struct {
		name   string
		action tenant.Action
		want   bool
	}{
		{"orders/eu", tenant.ActionSend, true},
		{"orders", tenant.ActionSend, true},
		{"orders/eu", tenant.ActionReceive, false},
		{"orders/#", tenant.ActionSend, true},
		{"#", tenant.ActionSend, false},
		{"devices/dev1/cmd", tenant.ActionReceive, true},
		{"devices/dev2/cmd", tenant.ActionReceive, false},
		{"devices/dev1/+", tenant.ActionReceive, true},
		{"devices/+/cmd", tenant.ActionReceive, false},
		{"devices/dev1/#", tenant.ActionReceive, false},
		{"clients/c1", tenant.ActionReceive, true},
		{"clients/c2", tenant.ActionReceive, false},
		{"other", tenant.ActionSend, false},
	}
	for _, c := range cases {
		if got := Authorize(p, c.name, c.action); got != c.want {
			t.Errorf("Authorize(%q, %s) = %v, want %v", c.name, c.action, got, c.want)
		}
	}
	admin := &Principal{Roles: []tenant.Role{tenant.RoleTenantAdmin}}
	if !Authorize(admin, "anything/#", tenant.ActionManage) {
		t.Error("tenant admin refused")
	}
}

func BenchmarkAuthenticateCached(b *testing.B) {
	h, _ := HashPassword("pw")
	f := &fakeUsers{tenants: map[string]*tenant.Tenant{"t": {Name: "t"}}, users: map[string]*tenant.User{"t/u": {Name: "u", PasswordHash: h}}}
	a := New(f)
	if _, err := a.Authenticate("t", "u", "pw"); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := a.Authenticate("t", "u", "pw"); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAuthorizeDollarNames: a permission "#" (or "foo/#", "+/x") covers
// application names starting with '$' — [MQTT-4.7.2-1] is about
// subscription wildcards, not permissions — and only throng's reserved
// prefixes are refused, to administrators too (issue 10 item 9).
func TestAuthorizeDollarNames(t *testing.T) {
	all := []tenant.Action{tenant.ActionSend, tenant.ActionReceive}
	anon := Anonymous("default")
	user := &Principal{Tenant: "acme", User: "u", Perms: []tenant.Permission{
		{Pattern: "#", Actions: all},
	}}
	scoped := &Principal{Tenant: "acme", User: "s", Perms: []tenant.Permission{
		{Pattern: "$dev/#", Actions: all}, {Pattern: "+/x", Actions: all},
	}}
	admin := &Principal{Roles: []tenant.Role{tenant.RoleTenantAdmin}}
	cases := []struct {
		p      *Principal
		name   string
		action tenant.Action
		want   bool
	}{
		{anon, "$TopicA/B", tenant.ActionSend, true},
		{anon, "$TopicA/B", tenant.ActionReceive, true},
		{anon, "$TopicA/#", tenant.ActionReceive, true},
		{user, "$dev/1", tenant.ActionSend, true},
		{user, "$", tenant.ActionSend, true},
		{scoped, "$dev/1/t", tenant.ActionSend, true},
		{scoped, "$dev", tenant.ActionSend, true},
		{scoped, "$other/x", tenant.ActionSend, true},
		{scoped, "$other/y", tenant.ActionSend, false},
		// Reserved prefixes.
		{user, "$SYS/broker/uptime", tenant.ActionReceive, true},
		{user, "$SYS/#", tenant.ActionReceive, true},
		{user, "$SYS/x", tenant.ActionSend, false},
		{user, "$SYS", tenant.ActionSend, false},
		{admin, "$SYS/x", tenant.ActionSend, false},
		{user, "$SYSTEM/x", tenant.ActionSend, true},
		{user, "$share/g/x", tenant.ActionSend, false},
		{user, "$share/g/x", tenant.ActionReceive, false},
		{admin, "$share/g/x", tenant.ActionSend, false},
		{user, "$temp/abc", tenant.ActionSend, true},
		{user, "$temp/abc", tenant.ActionReceive, false},
		{user, "$temp/#", tenant.ActionReceive, false},
		{admin, "$temp/abc", tenant.ActionReceive, false},
	}
	for _, c := range cases {
		if got := Authorize(c.p, c.name, c.action); got != c.want {
			t.Errorf("Authorize(%s, %q, %s) = %v, want %v", c.p.User, c.name, c.action, got, c.want)
		}
	}
	if err := Reserved("$share/g/x", tenant.ActionSend); !errors.Is(err, ErrReservedName) {
		t.Errorf("$share: %v", err)
	}
	if err := Reserved("$SYS/x", tenant.ActionSend); !errors.Is(err, ErrReservedUse) {
		t.Errorf("$SYS: %v", err)
	}
	if err := Reserved("$temp/x", tenant.ActionReceive); !errors.Is(err, ErrReservedUse) {
		t.Errorf("$temp: %v", err)
	}
}
