package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/testkit"
)

// TestCLIUpdates: tenant update, address update (messages kept), address
// delete --force, user get and user update (issue 14.5).
func TestCLIUpdates(t *testing.T) {
	p := testkit.Start(t)
	env := platformEnv(p)
	mustCLI(t, env, 0, "tenant", "create", "acme", "--auto-create", "jobs/#=queue", "--max-users", "5")

	// tenant update changes what its flags name only.
	mustCLI(t, env, 0, "tenant", "update", "acme", "--strict=true", "--max-addresses", "7")
	ten, _ := p.Store.Tenant("acme")
	if !ten.Strict || ten.Limits.MaxAddresses != 7 || ten.Limits.MaxUsers != 5 || len(ten.AutoCreate) != 1 {
		t.Fatalf("tenant after update: %+v", ten)
	}
	mustCLI(t, env, 0, "tenant", "update", "acme", "--no-auto-create")
	if ten, _ = p.Store.Tenant("acme"); len(ten.AutoCreate) != 0 || !ten.Strict {
		t.Fatalf("tenant after --no-auto-create: %+v", ten)
	}
	mustCLI(t, env, 2, "tenant", "update", "acme", "--no-auto-create", "--auto-create", "a=queue")
	mustCLI(t, env, 1, "tenant", "update", "nope", "--strict=true")

	// address update keeps the stored messages.
	mustCLI(t, env, 0, "address", "create", "work", "--type", "queue", "--tenant", "acme", "--max-messages", "10")
	ctx := context.Background()
	for range 3 {
		if _, err := p.Router.Publish(ctx, "acme", "work", &message.Message{Body: []byte("x"), Durable: true}); err != nil {
			t.Fatal(err)
		}
	}
	mustCLI(t, env, 0, "address", "update", "work", "--tenant", "acme", "--max-messages", "1000", "--max-age", "1h")
	a, _ := p.Store.Address("acme", "work")
	if a.Limits.MaxMessages != 1000 || time.Duration(a.Limits.MaxAge) != time.Hour {
		t.Fatalf("address after update: %+v", a.Limits)
	}
	rows := columns(t, mustCLI(t, env, 0, "address", "get", "work", "--tenant", "acme").stdout)
	for _, r := range rows {
		if r[0] == "backlog" && r[1] != "3" {
			t.Fatalf("backlog after the update: %q", r[1])
		}
	}
	if r := mustCLI(t, env, 1, "address", "update", "work", "--tenant", "acme", "--max-messages", "2"); !strings.Contains(r.stderr, "conflict") {
		t.Fatalf("shrinking below the backlog: %s", r.stderr)
	}

	// delete --force while a consumer is attached.
	c, err := p.Router.Consume(ctx, "acme", "work", router.ConsumeOptions{}, func(*router.Delivery) {})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r := mustCLI(t, env, 1, "address", "delete", "work", "--tenant", "acme"); !strings.Contains(r.stderr, "in_use") {
		t.Fatalf("delete in use: %s", r.stderr)
	}
	mustCLI(t, env, 0, "address", "delete", "work", "--tenant", "acme", "--force")

	// user get and update.
	// (created through the API: user create's password flags are being
	// renamed meanwhile, issue 14 item 12)
	resp := p.Do(t, "POST", "/api/tenants/acme/users", strings.NewReader(`{"name":"app1","password":"pw1","roles":["app"],"permissions":[{"pattern":"orders/#","actions":["send"]}]}`))
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("create app1: %d", resp.StatusCode)
	}
	rows = columns(t, mustCLI(t, env, 0, "user", "get", "app1", "--tenant", "acme").stdout)
	if len(rows) < 4 || rows[3][0] != "permissions" || rows[3][1] != "orders/#=send" {
		t.Fatalf("user get: %q", rows)
	}
	mustCLI(t, env, 0, "user", "update", "app1", "--tenant", "acme", "--user-password", "pw2", "--permission", "stock/#=receive,send")
	u, _ := p.Store.User("acme", "app1")
	if len(u.Permissions) != 1 || u.Permissions[0].Pattern != "stock/#" || len(u.Roles) != 1 {
		t.Fatalf("user after update: %+v", u)
	}
	a2 := auth.New(p.Store)
	if _, err := a2.Authenticate("acme", "app1", "pw1"); err == nil {
		t.Fatal("old password still accepted")
	}
	if _, err := a2.Authenticate("acme", "app1", "pw2"); err != nil {
		t.Fatalf("new password: %v", err)
	}
	mustCLI(t, env, 0, "user", "update", "app1", "--tenant", "acme", "--no-permissions")
	if u, _ = p.Store.User("acme", "app1"); len(u.Permissions) != 0 {
		t.Fatalf("permissions after --no-permissions: %+v", u.Permissions)
	}
	mustCLI(t, env, 2, "user", "update", "app1", "--tenant", "acme")
	mustCLI(t, env, 1, "user", "update", "nobody", "--tenant", "acme", "--user-password", "x")
	mustCLI(t, env, 1, "user", "update", "app1", "--tenant", "acme", "--role", "admin")
}
