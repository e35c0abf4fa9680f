package amqp

import (
	"sync"
	"sync/atomic"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/tenant"
)

// Hono's unauthenticated AMQP devices (docs/hono.md, "Unauthenticated
// devices (AMQP)"): a client without credentials (SASL ANONYMOUS, or no
// SASL layer) is a device of the tenant whose hono-amqp adapter entry
// has "device-authentication-required": false; every address it uses
// names the tenant and the device (package hono checks them).

// tenantLister is implemented by a tenant store that lists its tenants
// (*tenant.Store).
type tenantLister interface{ Tenants() []*tenant.Tenant }

// tenantWatcher is implemented by a tenant store that reports changes of
// tenants (*tenant.Store): the waiver's answer is kept until one.
type tenantWatcher interface{ OnTenantChange(f func(name string)) }

// waivers caches whether some tenant waives device authentication for
// hono-amqp: the SASL mechanisms of every connection depend on it
// (ANONYMOUS is offered then), and listing the tenants costs one
// allocation of all of them.
type waivers struct {
	once  sync.Once
	gen   atomic.Uint64 // bumped by every tenant change
	known atomic.Uint64 // gen+1 of the cached answer; 0: none
	any   atomic.Bool
}

// waivesAuthentication reports whether some tenant lets devices use the
// AMQP adapter without credentials (then SASL ANONYMOUS is offered).
func (c *conn) waivesAuthentication() bool {
	tl, ok := c.s.cfg.Tenants.(tenantLister)
	if !ok || c.devices() == nil {
		return false
	}
	w := &c.s.waivers
	tw, watched := c.s.cfg.Tenants.(tenantWatcher)
	if watched {
		w.once.Do(func() { tw.OnTenantChange(func(string) { w.gen.Add(1) }) })
		if g := w.gen.Load(); w.known.Load() == g+1 {
			return w.any.Load()
		}
	}
	g := w.gen.Load()
	found := false
	for _, t := range tl.Tenants() {
		if hono.AllowsUnauthenticated(t, auth.AdapterAMQP) {
			found = true
			break
		}
	}
	if watched {
		// A change during the listing bumped gen: the answer is then
		// not kept (known stays behind).
		w.any.Store(found)
		w.known.Store(g + 1)
	}
	return found
}

// unauthenticatedDevices is the principal of a connection without
// credentials that is Hono's unauthenticated device: bound to the tenant
// whose hono-amqp adapter entry waives device authentication — the one
// the SASL hostname names, else the only such tenant. nil if there is
// none (or several and the hostname names none of them).
func (c *conn) unauthenticatedDevices(hostname string) *auth.Principal {
	tl, ok := c.s.cfg.Tenants.(tenantLister)
	if !ok || c.devices() == nil {
		return nil
	}
	hint, _ := c.tenantFromHost(hostname)
	name := hono.WaivingTenant(tl.Tenants(), auth.AdapterAMQP, hint)
	if name == "" {
		return nil
	}
	return hono.Unauthenticated(name)
}

// withoutCredentials is the principal of a client that gives no
// credentials: an unauthenticated device where a tenant waives device
// authentication for hono-amqp (the tenant's explicit choice wins over
// the node's default, as on MQTT), else anonymous from loopback where
// allowed; nil: refused.
func (c *conn) withoutCredentials(hostname string) *auth.Principal {
	if p := c.unauthenticatedDevices(hostname); p != nil {
		return p
	}
	if c.anonymousAllowed() {
		return auth.Anonymous(tenant.Default)
	}
	return nil
}
