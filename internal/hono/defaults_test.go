package hono

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/tenant"
)

func TestDefaultsAndTTL(t *testing.T) {
	ctx := context.Background()
	iot := &tenant.IoT{
		Defaults: map[string]json.RawMessage{
			"ttl": raw(`30`), "content-type": raw(`"text/x-tenant"`), "customer": raw(`"acme"`), "prio": raw(`5`),
			"to": raw(`"elsewhere"`), "subject": raw(`"x"`), "ttl-telemetry-qos0": raw(`7`), "ttl-command-response": raw(`9`),
			"content-encoding": raw(`"gzip"`), "nothing": raw(`null`),
		},
		ResourceLimits: raw(`{"max-ttl": 60, "max-ttl-telemetry-qos1": 10, "max-ttl-command-response": 20}`),
	}
	s, reg, _ := newFull(iot)
	dev := func(id string) *auth.Principal { return &auth.Principal{Tenant: "iot", Device: id} }
	up := func(p *auth.Principal, req UpstreamRequest) *Upstream {
		t.Helper()
		if req.Payload == nil {
			req.Payload = []byte("x")
		}
		u, err := s.Upstream(ctx, p, req)
		if err != nil {
			t.Fatalf("%s: %v", req.Topic, err)
		}
		return u
	}

	// A device without defaults of its own: the tenant's.
	m := up(dev("dev1"), UpstreamRequest{Topic: "t", QoS: 0}).Message
	if m.ContentType != "text/x-tenant" || m.ContentEncoding != "gzip" || m.To != "telemetry/iot" || m.Subject != "" || m.TTL != 30*time.Second {
		t.Fatalf("telemetry qos0: %+v", m)
	}
	for k, v := range map[string]any{"customer": "acme", "prio": int32(5), "device_id": "dev1", "orig_address": "t"} {
		if m.Properties[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m.Properties[k], v)
		}
	}
	for _, k := range []string{"ttl", "to", "subject", "ttl-telemetry-qos0", "ttl-command-response", "content-type", "content-encoding", "nothing"} {
		if _, ok := m.Properties[k]; ok {
			t.Errorf("default %q became a property", k)
		}
	}
	// QoS 1 telemetry: "ttl" 30 capped by max-ttl-telemetry-qos1.
	if m := up(dev("dev1"), UpstreamRequest{Topic: "t", QoS: 1}).Message; m.TTL != 10*time.Second {
		t.Fatalf("telemetry qos1 ttl %v", m.TTL)
	}
	// Events: the device's hono-ttl capped by max-ttl; below it kept;
	// none: the "ttl" default.
	for topic, want := range map[string]time.Duration{
		"e/?hono-ttl=120": 60 * time.Second, "e/?hono-ttl=15": 15 * time.Second, "e": 30 * time.Second,
	} {
		if m := up(dev("dev1"), UpstreamRequest{Topic: topic, QoS: 1}).Message; m.TTL != want {
			t.Errorf("%s: ttl %v, want %v", topic, m.TTL, want)
		}
	}
	// HTTP's hono-ttl (outside the topic), capped too.
	if m := up(dev("dev1"), UpstreamRequest{Adapter: auth.AdapterHTTP, Topic: "event", QoS: 1, TTL: time.Hour}).Message; m.TTL != time.Minute {
		t.Fatalf("http event ttl %v", m.TTL)
	}
	// The message's own content type and properties win: the bag's,
	// else MQTT 5's.
	m = up(dev("dev1"), UpstreamRequest{Topic: "t/?content-type=text%2Fbag&customer=me", ContentType: "text/mqtt5"}).Message
	if m.ContentType != "text/bag" || m.Properties["customer"] != "me" {
		t.Fatalf("bag: %+v", m)
	}
	if m := up(dev("dev1"), UpstreamRequest{Topic: "t", ContentType: "text/mqtt5"}).Message; m.ContentType != "text/mqtt5" {
		t.Fatalf("mqtt5: %q", m.ContentType)
	}
	// An empty payload needs the message's own content type.
	if _, err := s.Upstream(ctx, dev("dev1"), UpstreamRequest{Topic: "t", Payload: []byte{}}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty payload: %v", err)
	}

	// The device's defaults win over the tenant's; objects are left out.
	m = up(dev("dev2"), UpstreamRequest{Topic: "t"}).Message
	for k, v := range map[string]any{"customer": "dev-level", "prio": int32(5), "big": int64(5000000000), "ratio": 0.5, "on": true} {
		if m.Properties[k] != v {
			t.Errorf("dev2 %s = %#v (%T), want %#v", k, m.Properties[k], m.Properties[k], v)
		}
	}
	if m.ContentType != "application/json" {
		t.Errorf("dev2 content type %q", m.ContentType)
	}
	if _, ok := m.Properties["obj"]; ok {
		t.Error("an object default became a property")
	}
	// A gateway's message gets its target device's defaults.
	reg.change("iot", "dev3", &registry.Device{Via: []string{"dev1"}, Defaults: map[string]json.RawMessage{"customer": raw(`"dev3"`)}})
	if m := up(dev("dev1"), UpstreamRequest{Topic: "t//dev3"}).Message; m.Properties["customer"] != "dev3" || m.Properties["gateway_id"] != "dev1" {
		t.Fatalf("gateway: %v", m.Properties)
	}

	// Command responses: ttl-command-response does not count when "ttl"
	// is there (Hono); max-ttl-command-response caps.
	id, _ := EncodeReqID("corr-1", "app-1")
	m = up(dev("dev1"), UpstreamRequest{Topic: "command///res/" + id + "/200", QoS: 1}).Message
	if m.TTL != 20*time.Second || m.ContentType != "text/x-tenant" || m.Properties["customer"] != "acme" || m.Properties["status"] != int32(200) {
		t.Fatalf("response: %+v", m)
	}

	// The device's defaults are cached, and a change of the device (the
	// registry's hook) is seen at once.
	reg.mu.Lock()
	reads := reg.reads
	reg.mu.Unlock()
	for range 5 {
		up(dev("dev2"), UpstreamRequest{Topic: "t"})
	}
	reg.mu.Lock()
	if reg.reads != reads {
		t.Errorf("%d registry reads for cached defaults", reg.reads-reads)
	}
	reg.mu.Unlock()
	reg.change("iot", "dev2", &registry.Device{Defaults: map[string]json.RawMessage{"customer": raw(`"changed"`)}})
	if m := up(dev("dev2"), UpstreamRequest{Topic: "t"}).Message; m.Properties["customer"] != "changed" || m.ContentType != "text/x-tenant" {
		t.Fatalf("after change: %+v", m)
	}
	// Entries do not age with the hook; they do without it.
	s.now = func() time.Time { return time.Now().Add(2 * devCacheAge) }
	reg.mu.Lock()
	reg.devices["iot/dev2"] = &registry.Device{}
	reg.mu.Unlock()
	if m := up(dev("dev2"), UpstreamRequest{Topic: "t"}).Message; m.Properties["customer"] != "changed" {
		t.Fatalf("aged with the hook: %v", m.Properties)
	}
	s.devs.watched = false
	if m := up(dev("dev2"), UpstreamRequest{Topic: "t"}).Message; m.Properties["customer"] != "acme" {
		t.Fatalf("after aging: %v", m.Properties)
	}
	s.now = time.Now

	// A new version of the tenant is read again; without limits and
	// defaults nothing is set.
	reg.setTenant(&tenant.IoT{})
	m = up(dev("dev1"), UpstreamRequest{Topic: "e/?hono-ttl=120", QoS: 1}).Message
	if m.TTL != 120*time.Second || m.ContentType != ContentTypeDefault {
		t.Fatalf("no limits: %+v", m)
	}
	if m := up(dev("dev1"), UpstreamRequest{Topic: "t"}).Message; m.TTL != 0 {
		t.Fatalf("no default ttl: %v", m.TTL)
	}
	// ttl-telemetry-qos0 applies when there is no "ttl".
	reg.setTenant(&tenant.IoT{Defaults: map[string]json.RawMessage{"ttl-telemetry-qos0": raw(`7`), "ttl-telemetry-qos1": raw(`8`)},
		ResourceLimits: raw(`{"max-ttl-telemetry-qos0": 5}`)})
	if m := up(dev("dev1"), UpstreamRequest{Topic: "t", QoS: 0}).Message; m.TTL != 5*time.Second {
		t.Fatalf("qos0 default capped: %v", m.TTL)
	}
	if m := up(dev("dev1"), UpstreamRequest{Topic: "t", QoS: 1}).Message; m.TTL != 8*time.Second {
		t.Fatalf("qos1 default: %v", m.TTL)
	}
	// An event without a TTL gets max-ttl (Hono's algorithm).
	reg.setTenant(&tenant.IoT{ResourceLimits: raw(`{"max-ttl": 40, "max-connections": 10}`)})
	if m := up(dev("dev1"), UpstreamRequest{Topic: "e", QoS: 1}).Message; m.TTL != 40*time.Second {
		t.Fatalf("event without ttl under max-ttl: %v", m.TTL)
	}
	// -1 is unlimited.
	reg.setTenant(&tenant.IoT{ResourceLimits: raw(`{"max-ttl": -1}`)})
	if m := up(dev("dev1"), UpstreamRequest{Topic: "e/?hono-ttl=500", QoS: 1}).Message; m.TTL != 500*time.Second {
		t.Fatalf("unlimited: %v", m.TTL)
	}
}

func TestDefaultsRegistryError(t *testing.T) {
	s := New(errRegistry{}, &recorder{}, nil)
	_, err := s.Upstream(context.Background(), &auth.Principal{Tenant: "iot", Device: "d"}, UpstreamRequest{Topic: "t", Payload: []byte("x")})
	if err == nil || Status(err) != 500 {
		t.Fatalf("%v", err)
	}
}

type errRegistry struct{}

func (errRegistry) Device(context.Context, string, string) (*registry.Device, string, error) {
	return nil, "", errors.New("engine down")
}
