package httpapi

import (
	"hash/maphash"
	"sync/atomic"
)

// changes lets a kept-alive connection reuse the principal its last
// Authorization header (or client certificate) authenticated without
// missing a change of the device, its credentials or its tenant: the
// stores' watches (on every node) bump counters, and a connection's cached
// principal is used only while the counters it was stamped with are
// unchanged. A change thus applies from the next request on every
// connection, as if each request authenticated (docs/security.md), while
// a device posting on one connection costs two atomic loads per request
// instead of a registry lookup and a password hash check.
//
// The counters are slots chosen by a hash of the tenant and of the
// (tenant, device) pair: a fixed amount of memory whatever the number of
// devices. Two devices sharing a slot only make one re-authenticate when
// the other changes. all counts every change: a refusal cached for a
// certificate is kept only while nothing changed at all.
type changes struct {
	seed    maphash.Seed
	watched bool // both stores report their changes; else only the TTL bounds the cache
	all     atomic.Uint64
	tenants [256]atomic.Uint64
	devices [4096]atomic.Uint64
}

// stamp is what a cached principal was authenticated under.
type stamp struct {
	ti, di uint16
	tg, dg uint64
	all    uint64 // for a cached refusal (no principal): changes.all
}

// tenantWatcher is implemented by *tenant.Store.
type tenantWatcher interface {
	OnTenantChange(f func(name string))
}

// credentialsWatcher is implemented by *registry.Store.
type credentialsWatcher interface {
	OnCredentialsChange(f func(tenantName, deviceID string))
}

// watch subscribes c to the stores' changes (when they report them).
func (c *changes) watch(tenants Tenants, devices Devices) {
	c.seed = maphash.MakeSeed()
	tw, okT := tenants.(tenantWatcher)
	cw, okD := devices.(credentialsWatcher)
	if okT {
		tw.OnTenantChange(c.tenantChanged)
	}
	if okD {
		cw.OnCredentialsChange(c.deviceChanged)
	}
	c.watched = okT && okD
}

func (c *changes) tenantSlot(tenantName string) uint16 {
	return uint16(maphash.String(c.seed, tenantName) % uint64(len(c.tenants)))
}

func (c *changes) deviceSlot(tenantName, device string) uint16 {
	var h maphash.Hash
	h.SetSeed(c.seed)
	h.WriteString(tenantName)
	h.WriteByte(0)
	h.WriteString(device)
	return uint16(h.Sum64() % uint64(len(c.devices)))
}

// The slot is bumped before all: stampOf compares all last.
func (c *changes) tenantChanged(name string) {
	c.tenants[c.tenantSlot(name)].Add(1)
	c.all.Add(1)
}

func (c *changes) deviceChanged(tenantName, device string) {
	c.devices[c.deviceSlot(tenantName, device)].Add(1)
	c.all.Add(1)
}

// stampOf stamps a principal of tenantName and device that was
// authenticated after changes.all read before (the value before
// authenticating): ok is false when something changed meanwhile, and then
// the principal must not be cached (the change may have come too late for
// the authentication and too early for the stamp).
func (c *changes) stampOf(before uint64, tenantName, device string) (s stamp, ok bool) {
	s.ti, s.di = c.tenantSlot(tenantName), c.deviceSlot(tenantName, device)
	s.tg, s.dg = c.tenants[s.ti].Load(), c.devices[s.di].Load()
	s.all = before
	return s, c.all.Load() == before
}

// current reports whether nothing the stamp covers changed since.
func (c *changes) current(s stamp) bool {
	return c.tenants[s.ti].Load() == s.tg && c.devices[s.di].Load() == s.dg
}

// ctEqual reports whether a and b are equal, in time independent of where
// they differ (subtle.ConstantTimeCompare without converting to []byte:
// an Authorization header longer than 32 bytes would be allocated).
func ctEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}
