package app_test

import (
	"context"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// The admin gets a SCRAM verifier with its password, and an admin stored
// before SCRAM support gets one at the next start with a configured
// password.
func TestAdminScramVerifier(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir)
	cfg.AdminPassword = "first-pw"
	r := start(t, cfg)
	u, _ := r.app.Store().User(tenant.Default, "admin")
	if u == nil || !auth.ScramMatches(u.Scram, "first-pw") {
		t.Fatalf("stored admin = %+v", u)
	}
	// Make it a user from before SCRAM support.
	legacy := *u
	legacy.Scram = nil
	if err := r.app.Store().PutUser(context.Background(), &legacy, false); err != nil {
		t.Fatal(err)
	}
	r.stop()

	r = start(t, cfg)
	u, _ = r.app.Store().User(tenant.Default, "admin")
	if u == nil || !auth.ScramMatches(u.Scram, "first-pw") || u.PasswordHash == "" {
		t.Fatalf("verifier not restored: %+v", u)
	}
	if logs := r.logs.String(); !strings.Contains(logs, `"scram_verifier_set":true`) || !strings.Contains(logs, `"password_changed":false`) {
		t.Fatalf("logs: %s", logs)
	}
	r.stop()

	// A new configured password replaces both.
	cfg.AdminPassword = "second-pw"
	r = start(t, cfg)
	u, _ = r.app.Store().User(tenant.Default, "admin")
	if u == nil || !auth.ScramMatches(u.Scram, "second-pw") || auth.ScramMatches(u.Scram, "first-pw") {
		t.Fatalf("verifier after a password change: %+v", u)
	}
	if st := r.status(t, "admin", "second-pw"); st != 200 {
		t.Fatalf("configured password: %d", st)
	}
}
