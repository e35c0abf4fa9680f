package mqtt

import (
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"golang.org/x/crypto/bcrypt"

	"github.com/throngmq/throng/internal/tenant"
)

// TestPublishPermissionCached: a connection checks a topic's name and
// permission once, when the topic gets its cached producer (session 15:
// the principal is fixed for the connection, so the answer cannot
// change); a refused topic is never cached, so it stays refused however
// often it is tried, between publishes to a permitted one, and a
// permitted one keeps working.
func TestPublishPermissionCached(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	h, err := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.PutUser(ctxT(t), &tenant.User{Name: "app", Tenant: "default", PasswordHash: string(h), Roles: []tenant.Role{tenant.RoleApp},
		Permissions: []tenant.Permission{{Pattern: "a/#", Actions: []tenant.Action{tenant.ActionSend}}}}, true); err != nil {
		t.Fatal(err)
	}
	c, err := dialV5(t, e, &paho.Connect{ClientID: "perm", CleanStart: true, KeepAlive: 30,
		UsernameFlag: true, Username: "app", PasswordFlag: true, Password: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []struct {
		topic string
		rc    byte
	}{
		{"a/x", 0}, {"b/x", 0x87}, {"a/x", 0}, {"b/x", 0x87}, {"b/x", 0x87},
		{"$SYS/x", 0x87}, {"a/y", 0}, {"$SYS/x", 0x87}, {"a/x", 0}, {"b/x", 0x87},
	} {
		if pr := pub(t, c, s.topic, 1, "m"); pr.ReasonCode != s.rc {
			t.Fatalf("publish %d to %s: reason %#x, want %#x", i, s.topic, pr.ReasonCode, s.rc)
		}
	}
}
