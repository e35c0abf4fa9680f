package app_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/app"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/tenant"
)

// TestFailedFirstStartShowsNoPassword (issue 14 item 10): a first start
// that fails after creating the administrator (here: the MQTT port is
// taken) shows no password and removes the administrator again, so the
// next start generates one, shows it, and it works.
func TestFailedFirstStartShowsNoPassword(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg := testConfig(t, dir)
	cfg.Listeners.MQTT = busy.Addr().String()
	var stdout, logs syncBuffer
	logger, _ := app.NewLogger(config.Log{Format: "json", Level: "info"}, &logs)
	a, err := app.New(cfg, app.WithLogger(logger), app.WithStdout(&stdout))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := a.Run(ctx); err == nil || !strings.Contains(err.Error(), "mqtt listener") {
		t.Fatalf("Run: %v", err)
	}
	if out := stdout.String(); out != "" {
		t.Fatalf("a failed start printed %q", out)
	}
	if !strings.Contains(logs.String(), "the admin user it created was removed again") {
		t.Fatalf("logs:\n%s", logs.String())
	}

	r := start(t, testConfig(t, dir))
	m := generatedRE.FindStringSubmatch(r.stdout.String())
	if m == nil {
		t.Fatalf("no generated password on the next start: %q", r.stdout.String())
	}
	if !strings.Contains(r.stdout.String(), "throng admin reset-password") {
		t.Fatalf("the recovery is not named: %q", r.stdout.String())
	}
	if st := r.status(t, "admin", m[1]); st != 200 {
		t.Fatalf("generated password: %d", st)
	}
}

// TestResetAdminPassword: the library call behind throng admin
// reset-password refuses while a node holds the data directory, then
// sets a generated or given password, restores the admin role and
// recreates a deleted administrator.
func TestResetAdminPassword(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := app.ResetAdminPassword(ctx, testConfig(t, dir), "", nil); !errors.Is(err, app.ErrNoNode) {
		t.Fatalf("fresh directory: %v", err)
	}
	r := start(t, testConfig(t, dir))
	old := generatedRE.FindStringSubmatch(r.stdout.String())[1]
	var locked *app.DataDirLockedError
	if _, err := app.ResetAdminPassword(ctx, testConfig(t, dir), "", nil); !errors.As(err, &locked) {
		t.Fatalf("while running: %v", err)
	}
	// Take the role away and delete the user: the reset brings both back.
	u, _ := r.app.Store().User("default", "admin")
	cp := *u
	cp.Roles = []tenant.Role{tenant.RoleApp}
	if err := r.app.Store().PutUser(ctx, &cp, false); err != nil {
		t.Fatal(err)
	}
	r.stop()

	pw, err := app.ResetAdminPassword(ctx, testConfig(t, dir), "", nil)
	if err != nil || len(pw) < 20 || pw == old {
		t.Fatalf("generated reset: %q %v", pw, err)
	}
	r = start(t, testConfig(t, dir))
	if st := r.status(t, "admin", pw); st != 200 {
		t.Fatalf("reset password: %d (role restored?)", st)
	}
	if st := r.status(t, "admin", old); st != 401 {
		t.Fatalf("old password: %d", st)
	}
	if err := r.app.Store().DeleteUser(ctx, "default", "admin"); err != nil {
		t.Fatal(err)
	}
	r.stop()
	if _, err := app.ResetAdminPassword(ctx, testConfig(t, dir), "given-pw", nil); err != nil {
		t.Fatal(err)
	}
	r = start(t, testConfig(t, dir))
	if out := r.stdout.String(); out != "" {
		t.Fatalf("start after the reset printed %q", out)
	}
	if st := r.status(t, "admin", "given-pw"); st != 200 {
		t.Fatalf("given password: %d", st)
	}
	r.stop()
	cfg := testConfig(t, dir)
	cfg.AdminPassword = "configured"
	if _, err := app.ResetAdminPassword(ctx, cfg, "", nil); !errors.Is(err, app.ErrAdminPasswordConfigured) {
		t.Fatalf("with adminPassword: %v", err)
	}
}
