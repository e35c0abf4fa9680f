package app

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/config"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/tenant"
)

// ErrNoNode is returned by ResetAdminPassword for a data directory that
// no node has used: there is no administrator to reset (the first start
// creates one).
var ErrNoNode = errors.New("no throng node has used this data directory yet")

// ErrAdminPasswordConfigured is returned by ResetAdminPassword when the
// configuration sets adminPassword: every start would set the
// administrator's password back to it.
var ErrAdminPasswordConfigured = errors.New("adminPassword is configured: every start sets the administrator's password to it; change that setting instead")

// ResetAdminPassword gives the platform administrator ("admin" in tenant
// "default") of the data directory cfg names a new password, with no node
// running: it is how an operator who lost the password — for instance
// the one-time generated password of a first start that failed — gets in
// again (throng admin reset-password; docs/operations.md). It takes the
// data directory's lock, so it fails with *DataDirLockedError while a
// node runs there, starts the engine without listeners, sets the
// password (bcrypt hash and SCRAM verifier, the admin role restored if it
// was removed, the user created if it was deleted) and stops.
//
// password empty generates one, which is returned: the caller shows it
// once. log receives the engine's lines (nil discards them).
func ResetAdminPassword(ctx context.Context, cfg *config.Config, password string, log *slog.Logger) (string, error) {
	if cfg == nil {
		return "", errors.New("app: nil config")
	}
	if cfg.AdminPassword != "" {
		return "", ErrAdminPasswordConfigured
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if fi, err := os.Stat(filepath.Join(cfg.DataDir, StoreDir)); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("data directory %s: %w (throng serve creates the administrator on its first start)", cfg.DataDir, ErrNoNode)
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return "", err
	}
	defer lock.unlock()
	eng, err := engine.Start(engine.Config{
		DataDir:       cfg.DataDir,
		MaxMemory:     int64(cfg.Engine.MaxMemory),
		MaxStore:      int64(cfg.Engine.MaxStore),
		SyncAlways:    true, // a reset is one write: make it durable before reporting it
		DiskFreeLimit: -1,   // the guard refuses messages, not this write
		Logger:        slog.New(newEngineLogFilter(log.Handler())),
	})
	if err != nil {
		return "", err
	}
	defer eng.Shutdown()
	nc, err := eng.Connect(engine.SystemAccount, nats.Name("throng-reset-password"))
	if err != nil {
		return "", fmt.Errorf("app: store connection: %w", err)
	}
	defer nc.Close()
	store, err := tenant.Open(ctx, nc, log.With("component", "tenant"))
	if err != nil {
		return "", fmt.Errorf("app: tenant store: %w", err)
	}
	defer store.Close()
	if _, ok := store.Tenant(tenant.Default); !ok {
		return "", fmt.Errorf("data directory %s: %w (no tenant %q)", cfg.DataDir, ErrNoNode, tenant.Default)
	}
	if password == "" {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		password = base64.RawURLEncoding.EncodeToString(b)
	}
	u, exists := store.User(tenant.Default, AdminUser)
	nu := &tenant.User{Name: AdminUser, Tenant: tenant.Default, Roles: []tenant.Role{tenant.RoleAdmin}}
	if exists {
		cp := *u
		nu = &cp
		if !nu.HasRole(tenant.RoleAdmin) {
			nu.Roles = append(append([]tenant.Role{}, u.Roles...), tenant.RoleAdmin)
		}
	}
	if err := auth.SetPassword(nu, password); err != nil {
		return "", err
	}
	if err := store.PutUser(ctx, nu, !exists); err != nil {
		return "", fmt.Errorf("app: store the admin user: %w", err)
	}
	return password, nil
}
