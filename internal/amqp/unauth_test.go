package amqp

import (
	"testing"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

// TestWaiversCache: whether a tenant waives device authentication for
// hono-amqp (SASL ANONYMOUS offered) is cached until a tenant changes.
func TestWaiversCache(t *testing.T) {
	e := startDeviceEnv(t)
	c := &conn{s: e.srv}
	if c.waivesAuthentication() {
		t.Fatal("no tenant waives authentication yet")
	}
	if e.srv.waivers.known.Load() == 0 {
		t.Fatal("the answer is not cached")
	}
	yes, no := true, false
	open := &tenant.Tenant{Name: "open", IoT: &tenant.IoT{Adapters: []tenant.Adapter{
		{Type: auth.AdapterAMQP, Enabled: &yes, DeviceAuthenticationRequired: &no}}}}
	e.tenant(t, open)
	waitFor := func(want bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for c.waivesAuthentication() != want {
			if time.Now().After(deadline) {
				t.Fatalf("waivesAuthentication stays %v", !want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitFor(true)
	if p := c.unauthenticatedDevices(""); p == nil || p.Tenant != "open" {
		t.Fatalf("principal %+v", p)
	}
	// Requiring authentication again.
	closed := &tenant.Tenant{Name: "open", IoT: &tenant.IoT{Adapters: []tenant.Adapter{{Type: auth.AdapterAMQP, Enabled: &yes}}}}
	if err := e.store.UpdateTenant(ctxT(t), closed); err != nil {
		t.Fatal(err)
	}
	waitFor(false)
	if p := c.unauthenticatedDevices(""); p != nil {
		t.Fatalf("principal %+v after the waiver ended", p)
	}
}
