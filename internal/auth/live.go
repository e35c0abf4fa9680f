package auth

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

// Live is the registry of live connections by identity: the front-ends
// (AMQP, MQTT) register each authenticated connection with its principal,
// and Live closes those whose access a change took away. It owns the
// decision, the front-ends only carry it out (Conn.Revoke); HTTP needs
// none, it authenticates every request.
//
// The changes come from the stores' watches, so they reach every node:
// the tenant store's (users, tenants: OnUserChange, OnTenantChange) and
// the device registry's (OnCredentialsChange). A connection is closed
// when, after a change of its user, device or tenant:
//
//   - the user is gone, its password was changed (the stored hash differs
//     from the one it authenticated against), or its roles or permissions
//     differ from the principal's (any change: a narrowed right would be
//     used on links and subscriptions made before; a widened one applies
//     from the next connection, which the client makes at once);
//   - the tenant is gone; for devices also when the tenant or the
//     connection's protocol adapter is disabled;
//   - the device is gone or disabled, or the credential it authenticated
//     with (type and auth-id) is gone or disabled. A change of the
//     credential's secrets alone does not close it (Hono does not either).
//
// The bound: the watch delivers a change to every node within
// milliseconds of its write; the connection is told at once (user and
// tenant changes are checked on the watch goroutine against the store's
// cache; a device change costs a registry lookup on a goroutine of its
// own). docs/security.md states the bound as 1 s after the change is
// stored, measured by the tests in internal/testkit (live_test.go).
//
// Anonymous principals are not registered: no stored identity stands
// behind them.
type Live struct {
	users   Users
	devices Devices // nil: no device checks
	log     *slog.Logger
	m       *authMetrics

	mu      sync.Mutex
	tenants map[string]*liveTenant // guarded by mu
}

// Conn is a live connection the registry may close.
type Conn interface {
	// Revoke ends the connection because its principal lost its access:
	// AMQP closes it with amqp:unauthorized-access, MQTT 5 sends
	// DISCONNECT 0x87 (3.1.1: the connection is closed). cause is the
	// description sent along. It must not block and may be called more
	// than once.
	Revoke(cause string)
}

// liveTenant holds a tenant's connections by identity: a slice, not a
// map, per identity, because a device has one connection and a slice of
// one costs a fraction of a map's bucket. Measured with 200,000 devices
// of one tenant registered: 135 heap bytes per connection (entry, slice,
// the outer map's share), against 339 with a map per identity.
type liveTenant struct {
	users   map[string][]liveConn // by user name
	devices map[string][]liveConn // by device id
}

type liveEntry struct {
	p       *Principal
	adapter string // AdapterMQTT, AdapterAMQP
	hash    string // the password hash the user authenticated against
	// expiry closes the connection when the principal's credentials
	// expire (a device's JWT); nil for others. (The entry stays in the
	// 64-byte size class with it.)
	expiry *time.Timer
	// revoked makes a revocation once per connection: deleting a tenant
	// changes the tenant and each of its users, and both changes found
	// the same connections (two log lines, two counts, for one close).
	revoked atomic.Bool
}

// Causes given to Conn.Revoke (also the reason label of
// throng_auth_revocations_total).
const (
	CauseUserDeleted     = "user deleted"
	CauseUserChanged     = "user's password, roles or permissions changed"
	CauseTenantDeleted   = "tenant deleted"
	CauseTenantDisabled  = "tenant disabled"
	CauseAdapterDisabled = "protocol adapter disabled for the tenant"
	CauseDeviceRevoked   = "device or credential deleted or disabled"
	CauseTokenExpired    = "the device's token expired"
)

func newLive(a *Authenticator) *Live {
	return &Live{users: a.users, devices: a.devices, log: a.log, m: a.m, tenants: map[string]*liveTenant{}}
}

// Live returns the authenticator's registry of live connections (nil for
// a nil authenticator; every method of a nil *Live does nothing).
func (a *Authenticator) Live() *Live {
	if a == nil {
		return nil
	}
	return a.live
}

// changeSource is implemented by *tenant.Store.
type changeSource interface {
	OnUserChange(f func(tenant, name string))
	OnTenantChange(f func(name string))
}

// watch subscribes the registry to the stores' changes.
func (l *Live) watch() {
	if cs, ok := l.users.(changeSource); ok {
		cs.OnUserChange(l.userChanged)
		cs.OnTenantChange(l.tenantChanged)
	}
	if l.devices != nil {
		l.devices.OnCredentialsChange(l.deviceChanged)
	}
}

// Register records a live connection of principal p through a protocol
// adapter (AdapterMQTT, AdapterAMQP); call Unregister with the same
// arguments when it ends. A user whose record changed since it
// authenticated (the change's event may have come before the
// registration) is revoked at once.
func (l *Live) Register(c Conn, p *Principal, adapter string) {
	if l == nil || p == nil || (p.User == "" && p.Device == "") {
		return
	}
	e := &liveEntry{p: p, adapter: adapter, hash: p.hash} // 56 bytes
	if !p.IsDevice() && e.hash == "" {
		// Authenticated without a password (a client certificate, SASL
		// EXTERNAL): the record it was authorized by is the current one.
		if u, ok := l.users.User(p.Tenant, p.User); ok {
			e.hash = u.PasswordHash
		}
	}
	l.mu.Lock()
	lt := l.tenants[p.Tenant]
	if lt == nil {
		lt = &liveTenant{users: map[string][]liveConn{}, devices: map[string][]liveConn{}}
		l.tenants[p.Tenant] = lt
	}
	m, id := lt.users, p.User
	if p.IsDevice() {
		m, id = lt.devices, p.Device
	}
	m[id] = append(m[id], liveConn{c, e})
	if p.expires != 0 {
		// Hono's adapters disconnect a device whose token expired.
		e.expiry = time.AfterFunc(time.Until(time.Unix(0, p.expires)), func() { l.revoke(c, e, CauseTokenExpired) })
	}
	l.mu.Unlock()
	if cause := l.stale(e); cause != "" {
		l.revoke(c, e, cause)
	}
}

// Unregister forgets a connection registered with Register.
func (l *Live) Unregister(c Conn, p *Principal) {
	if l == nil || p == nil || (p.User == "" && p.Device == "") {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lt := l.tenants[p.Tenant]
	if lt == nil {
		return
	}
	m, id := lt.users, p.User
	if p.IsDevice() {
		m, id = lt.devices, p.Device
	}
	cs := m[id]
	for i := range cs {
		if cs[i].c == c {
			if t := cs[i].e.expiry; t != nil {
				t.Stop()
			}
			last := len(cs) - 1
			cs[i] = cs[last]
			cs[last] = liveConn{}
			cs = cs[:last]
			break
		}
	}
	if len(cs) == 0 {
		delete(m, id)
	} else {
		m[id] = cs
	}
	if len(lt.users) == 0 && len(lt.devices) == 0 {
		delete(l.tenants, p.Tenant)
	}
}

// Count returns the live connections registered for a tenant's user or
// device (device true); for tests and status.
func (l *Live) Count(tenantName, id string, device bool) int {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lt := l.tenants[tenantName]
	if lt == nil {
		return 0
	}
	if device {
		return len(lt.devices[id])
	}
	return len(lt.users[id])
}

type liveConn struct {
	c Conn
	e *liveEntry
}

// snapshot returns the registered connections of a tenant's user or
// device (id ""), or all of the tenant's (all true).
func (l *Live) snapshot(tenantName, user, device string, all bool) []liveConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	lt := l.tenants[tenantName]
	if lt == nil {
		return nil
	}
	var out []liveConn
	add := func(cs []liveConn) { out = append(out, cs...) }
	switch {
	case all:
		for _, cs := range lt.users {
			add(cs)
		}
		for _, cs := range lt.devices {
			add(cs)
		}
	case device != "":
		add(lt.devices[device])
	default:
		add(lt.users[user])
	}
	return out
}

func (l *Live) revoke(c Conn, e *liveEntry, cause string) {
	if !e.revoked.CompareAndSwap(false, true) {
		return
	}
	l.m.revoked.WithLabelValues(cause).Inc()
	l.log.Info("closing a connection whose access was revoked", "tenant", e.p.Tenant, "user", e.p.User, "device", e.p.Device, "adapter", e.adapter, "cause", cause)
	c.Revoke(cause)
}

// stale says why a registered connection lost its access, from the
// tenant store alone ("" if it did not; devices' registrations are
// checked by checkDevices).
func (l *Live) stale(e *liveEntry) string {
	t, ok := l.users.Tenant(e.p.Tenant)
	if !ok {
		return CauseTenantDeleted
	}
	if e.p.IsDevice() {
		switch tenantOpen(t, e.adapter) {
		case ReasonTenantDisabled:
			return CauseTenantDisabled
		case ReasonAdapterDisabled:
			return CauseAdapterDisabled
		}
		if t.IoT == nil {
			return CauseTenantDisabled
		}
		return ""
	}
	u, ok := l.users.User(e.p.Tenant, e.p.User)
	if !ok {
		return CauseUserDeleted
	}
	if u.PasswordHash != e.hash || !slices.Equal(u.Roles, e.p.Roles) ||
		!slices.EqualFunc(u.Permissions, e.p.Perms, func(a, b tenant.Permission) bool {
			return a.Pattern == b.Pattern && slices.Equal(a.Actions, b.Actions)
		}) {
		return CauseUserChanged
	}
	return ""
}

// userChanged is the tenant store's OnUserChange.
func (l *Live) userChanged(tenantName, name string) {
	for _, lc := range l.snapshot(tenantName, name, "", false) {
		if cause := l.stale(lc.e); cause != "" {
			l.revoke(lc.c, lc.e, cause)
		}
	}
}

// tenantChanged is the tenant store's OnTenantChange.
func (l *Live) tenantChanged(name string) {
	for _, lc := range l.snapshot(name, "", "", true) {
		if cause := l.stale(lc.e); cause != "" {
			l.revoke(lc.c, lc.e, cause)
		}
	}
}

// deviceTimeout bounds the registry lookup of a device check.
const deviceTimeout = 10 * time.Second

// deviceChanged is the registry's OnCredentialsChange: it runs on the
// registry's watch goroutine, so the lookups go on one of their own.
func (l *Live) deviceChanged(tenantName, deviceID string) {
	lcs := l.snapshot(tenantName, "", deviceID, false)
	if len(lcs) == 0 {
		return
	}
	go l.checkDevices(lcs)
}

func (l *Live) checkDevices(lcs []liveConn) {
	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	defer cancel()
	for _, lc := range lcs {
		p := lc.e.p
		id, err := l.devices.Lookup(ctx, p.Tenant, p.AuthType, p.AuthID)
		switch {
		case errors.Is(err, registry.ErrNotFound):
		case err != nil:
			// The connection stays; the next change of the device checks
			// again.
			l.log.Warn("device check after a registry change failed", "tenant", p.Tenant, "device", p.Device, "err", err)
			continue
		case id.DeviceID == p.Device && (id.Device == nil || id.Device.IsEnabled()) &&
			id.Credential != nil && id.Credential.IsEnabled():
			continue
		}
		l.revoke(lc.c, lc.e, CauseDeviceRevoked)
	}
}
