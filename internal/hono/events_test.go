package hono

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// fullRegistry is what *registry.Store offers the service beyond Device:
// the Tenant API, group members and change notification.
type fullRegistry struct {
	mu      sync.Mutex
	devices map[string]*registry.Device // tenant/id
	tenants map[string]*tenant.Tenant
	reads   int // Device calls
	hooks   []func(string, string)
}

func (f *fullRegistry) Device(_ context.Context, t, id string) (*registry.Device, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if d, ok := f.devices[t+"/"+id]; ok {
		return d, "1", nil
	}
	return nil, "", registry.ErrNotFound
}

func (f *fullRegistry) Tenant(name string) (*tenant.Tenant, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tenants[name]
	return t, ok
}

func (f *fullRegistry) GroupMembers(_ context.Context, t, group string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k, d := range f.devices {
		if tn, id, _ := cut(k); tn == t && slices.Contains(d.MemberOf, group) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

func cut(k string) (string, string, bool) {
	for i := range k {
		if k[i] == '/' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

func (f *fullRegistry) OnCredentialsChange(h func(string, string)) {
	f.mu.Lock()
	f.hooks = append(f.hooks, h)
	f.mu.Unlock()
}

// change replaces a device and reports it, as the registry's watch does.
func (f *fullRegistry) change(t, id string, d *registry.Device) {
	f.mu.Lock()
	f.devices[t+"/"+id] = d
	hooks := f.hooks
	f.mu.Unlock()
	for _, h := range hooks {
		h(t, id)
	}
}

// setTenant replaces a tenant (a new struct, as the tenant store does).
func (f *fullRegistry) setTenant(iot *tenant.IoT) {
	f.mu.Lock()
	f.tenants["iot"] = &tenant.Tenant{Name: "iot", IoT: iot}
	f.mu.Unlock()
}

type sent struct {
	tenant, addr string
	m            *message.Message
}

// recorder is a Publisher that keeps what it was given.
type recorder struct {
	mu        sync.Mutex
	consumers map[string]bool
	got       []sent
}

func (r *recorder) Publish(_ context.Context, t, name string, m *message.Message) (router.Outcome, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, sent{t, name, m})
	if r.consumers != nil && !r.consumers[name] {
		return router.Outcome{}, router.ErrNoConsumers
	}
	return router.Outcome{Kind: router.Accepted}, nil
}

func (r *recorder) take() []sent {
	r.mu.Lock()
	defer r.mu.Unlock()
	g := r.got
	r.got = nil
	return g
}

func raw(v string) json.RawMessage { return json.RawMessage(v) }

func newFull(iot *tenant.IoT) (*Service, *fullRegistry, *recorder) {
	reg := &fullRegistry{
		devices: map[string]*registry.Device{
			"iot/dev1": {},
			"iot/dev2": {Defaults: map[string]json.RawMessage{
				"content-type": raw(`"application/json"`), "customer": raw(`"dev-level"`),
				"obj": raw(`{"a":1}`), "big": raw(`5000000000`), "ratio": raw(`0.5`), "on": raw(`true`),
			}},
			"iot/gwv":     {},
			"iot/gwg":     {MemberOf: []string{"north"}},
			"iot/gwg2":    {MemberOf: []string{"north"}},
			"iot/grouped": {ViaGroups: []string{"north"}},
			"iot/both":    {Via: []string{"gwv"}, ViaGroups: []string{"north"}},
			"iot/outside": {},
			"iot/off":     {Enabled: new(bool), ViaGroups: []string{"north"}},
		},
		tenants: map[string]*tenant.Tenant{"iot": {Name: "iot", IoT: iot}, "plain": {Name: "plain"}},
	}
	pub := &recorder{}
	return New(reg, pub, nil), reg, pub
}

func TestConnectionEvent(t *testing.T) {
	ctx := context.Background()
	s, reg, pub := newFull(&tenant.IoT{})
	dev := &auth.Principal{Tenant: "iot", Device: "dev1"}

	// Off by default, and for "none", "logging", an unknown word.
	for _, v := range []string{"", `"none"`, `"logging"`, `"sometimes"`, `false`, `1`} {
		iot := &tenant.IoT{}
		if v != "" {
			iot.Ext = map[string]json.RawMessage{ExtConnectionEvents: raw(v)}
		}
		reg.setTenant(iot)
		s.ConnectionEvent(ctx, dev, auth.AdapterMQTT, "client-1", true)
		if got := pub.take(); len(got) != 0 {
			t.Fatalf("setting %s: sent %+v", v, got)
		}
	}
	if m := s.ConnectionEventsMode("iot", auth.AdapterMQTT); m != ConnEventsNone {
		t.Fatalf("mode %q", m)
	}

	// On for the tenant: exact payload and properties, tenant defaults
	// and max-ttl as for any event.
	reg.setTenant(&tenant.IoT{
		Ext:            map[string]json.RawMessage{ExtConnectionEvents: raw(`"events"`)},
		Defaults:       map[string]json.RawMessage{"region": raw(`"eu"`), "content-type": raw(`"text/plain"`)},
		ResourceLimits: raw(`{"max-ttl": 60}`),
	})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	s.now = func() time.Time { return now }
	s.ConnectionEvent(ctx, dev, auth.AdapterMQTT, "client-1", true)
	s.ConnectionEvent(ctx, dev, auth.AdapterAMQP, "container-9", false)
	got := pub.take()
	if len(got) != 2 {
		t.Fatalf("sent %d", len(got))
	}
	for i, want := range []struct{ body, adapter string }{
		{`{"cause":"connected","remote-id":"client-1","source":"hono-mqtt"}`, "hono-mqtt"},
		{`{"cause":"disconnected","remote-id":"container-9","source":"hono-amqp"}`, "hono-amqp"},
	} {
		g := got[i]
		m := g.m
		if g.tenant != "iot" || g.addr != "event/iot" || m.To != "event/iot" || string(m.Body) != want.body ||
			m.ContentType != ContentTypeConnection || !m.Durable || !m.CreationTime.Equal(now) || m.TTL != time.Minute {
			t.Fatalf("event %d: %+v %+v body %s", i, g, m, m.Body)
		}
		wantProps := map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": want.adapter, "qos": int32(1), "region": "eu"}
		if len(m.Properties) != len(wantProps) {
			t.Errorf("event %d props %v", i, m.Properties)
		}
		for k, v := range wantProps {
			if m.Properties[k] != v {
				t.Errorf("event %d: %s = %#v, want %#v", i, k, m.Properties[k], v)
			}
		}
	}

	// Not for principals that are not devices.
	s.ConnectionEvent(ctx, &auth.Principal{Tenant: "iot", User: "app"}, auth.AdapterMQTT, "c", true)
	s.ConnectionEvent(ctx, nil, auth.AdapterMQTT, "c", true)
	if got := pub.take(); len(got) != 0 {
		t.Fatalf("non-device: %+v", got)
	}

	// An adapter's own setting wins over the tenant's; true is "events".
	reg.setTenant(&tenant.IoT{
		Ext: map[string]json.RawMessage{ExtConnectionEvents: raw(`true`)},
		Adapters: []tenant.Adapter{
			{Type: auth.AdapterAMQP, Ext: map[string]json.RawMessage{ExtConnectionEvents: raw(`"none"`)}},
			{Type: auth.AdapterHTTP, Ext: map[string]json.RawMessage{"max-ttd": raw(`5`)}},
		},
	})
	s.ConnectionEvent(ctx, dev, auth.AdapterAMQP, "c", true)
	if got := pub.take(); len(got) != 0 {
		t.Fatalf("amqp turned off: %+v", got)
	}
	s.ConnectionEvent(ctx, dev, auth.AdapterMQTT, "c", true)
	if got := pub.take(); len(got) != 1 || got[0].m.TTL != 0 {
		t.Fatalf("mqtt: %+v", got)
	}
	if m := s.ConnectionEventsMode("iot", auth.AdapterHTTP); m != ConnEventsEvents {
		t.Fatalf("http inherits the tenant's: %q", m)
	}
	// A tenant that is not IoT-enabled, or unknown: none.
	if m := s.ConnectionEventsMode("plain", auth.AdapterMQTT); m != ConnEventsNone {
		t.Fatalf("plain: %q", m)
	}
	if m := s.ConnectionEventsMode("nobody", auth.AdapterMQTT); m != ConnEventsNone {
		t.Fatalf("unknown: %q", m)
	}

	// A failed publish is logged, not fatal.
	pub.consumers = map[string]bool{}
	s.ConnectionEvent(ctx, dev, auth.AdapterMQTT, "c", false)
}

func TestViaGatewayGroups(t *testing.T) {
	ctx := context.Background()
	s, _, pub := newFull(&tenant.IoT{})
	cmd := &message.Message{To: "command/iot/grouped", Subject: "on"}
	addrs := func(got []sent) []string {
		var out []string
		for _, g := range got {
			out = append(out, g.addr)
		}
		return out
	}

	// No gateway subscribed: every member of the group was tried.
	pub.consumers = map[string]bool{}
	if _, err := s.ViaGateway(ctx, "iot", "grouped", cmd); !errors.Is(err, router.ErrNoConsumers) {
		t.Fatal(err)
	}
	if got := addrs(pub.take()); !slices.Equal(got, []string{"command/iot/gwg/gateway", "command/iot/gwg2/gateway"}) {
		t.Fatalf("tried %v", got)
	}
	// gwg2's "+" subscription gets it.
	pub.consumers = map[string]bool{"command/iot/gwg2/gateway": true}
	if o, err := s.ViaGateway(ctx, "iot", "grouped", cmd); err != nil || o.Kind != router.Accepted {
		t.Fatalf("%+v %v", o, err)
	}
	if got := pub.take(); got[len(got)-1].m != cmd {
		t.Fatal("not the command")
	}
	// via first, then the groups.
	pub.consumers = map[string]bool{"command/iot/gwv/gateway": true, "command/iot/gwg/gateway": true}
	if _, err := s.ViaGateway(ctx, "iot", "both", cmd); err != nil {
		t.Fatal(err)
	}
	if got := addrs(pub.take()); !slices.Equal(got, []string{"command/iot/gwv/gateway"}) {
		t.Fatalf("both: %v", got)
	}
	// A device outside the group, a disabled one, an unknown one: none.
	for _, d := range []string{"outside", "off", "nobody"} {
		if _, err := s.ViaGateway(ctx, "iot", d, cmd); !errors.Is(err, router.ErrNoConsumers) {
			t.Fatalf("%s: %v", d, err)
		}
	}
	if got := pub.take(); len(got) != 0 {
		t.Fatalf("sent for devices outside: %v", addrs(got))
	}
	// A registry that cannot list groups (the plain fake): via only.
	s2, _ := newTestService()
	if _, err := s2.ViaGateway(ctx, "iot", "grouped", cmd); !errors.Is(err, router.ErrNoConsumers) {
		t.Fatal(err)
	}
}
