package hono

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/tenant"
)

func TestUnauthenticated(t *testing.T) {
	ctx := context.Background()
	yes, no := true, false
	waive := &tenant.IoT{Adapters: []tenant.Adapter{{Type: auth.AdapterMQTT, Enabled: &yes, DeviceAuthenticationRequired: &no}}}
	s, reg, pub := newFull(waive)
	for _, tc := range []struct {
		iot  *tenant.IoT
		want bool
	}{
		{waive, true},
		{&tenant.IoT{}, false}, // no adapter entry: authentication required
		{&tenant.IoT{Adapters: []tenant.Adapter{{Type: auth.AdapterMQTT, Enabled: &yes}}}, false},
		{&tenant.IoT{Adapters: []tenant.Adapter{{Type: auth.AdapterMQTT, DeviceAuthenticationRequired: &no}}}, false}, // not enabled
		{&tenant.IoT{Adapters: []tenant.Adapter{{Type: auth.AdapterHTTP, Enabled: &yes, DeviceAuthenticationRequired: &no}}}, false},
		{&tenant.IoT{Enabled: &no, Adapters: waive.Adapters}, false},
	} {
		if got := AllowsUnauthenticated(&tenant.Tenant{Name: "iot", IoT: tc.iot}, auth.AdapterMQTT); got != tc.want {
			t.Errorf("%+v: %v", tc.iot, got)
		}
	}
	if AllowsUnauthenticated(nil, auth.AdapterMQTT) || AllowsUnauthenticated(&tenant.Tenant{Name: "plain"}, auth.AdapterMQTT) {
		t.Error("a tenant without IoT allows unauthenticated devices")
	}

	p := Unauthenticated("iot")
	if !p.IsDevice() || !IsUnauthenticated(p) || IsUnauthenticated(&auth.Principal{Tenant: "iot", Device: "dev1"}) || ValidDeviceID(p.Device) {
		t.Fatalf("principal %+v", p)
	}
	up, err := s.Upstream(ctx, p, UpstreamRequest{Adapter: auth.AdapterMQTT, Topic: "t/iot/dev1", QoS: 1, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if up.Tenant != "iot" || up.Device != "dev1" || up.Address != "telemetry/iot" ||
		up.Message.Properties[PropDeviceID] != "dev1" || up.Message.Properties[PropGatewayID] != nil {
		t.Fatalf("%+v %+v", up, up.Message.Properties)
	}
	for topic, want := range map[string]error{
		"t":                      ErrMalformed,
		"telemetry//dev1":        ErrMalformed,
		"t/plain/dev1":           ErrNotAuthorized, // not the connection's tenant
		"t/iot/nobody":           ErrUnknownDevice,
		"t/iot/off":              ErrUnknownDevice, // disabled
		"e/iot/dev1/?hono-ttl=x": ErrMalformed,
	} {
		if _, err := s.Upstream(ctx, p, UpstreamRequest{Adapter: auth.AdapterMQTT, Topic: topic, QoS: 1, Payload: []byte("x")}); !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", topic, err, want)
		}
	}
	// The HTTP adapter's entry does not waive MQTT's.
	if _, err := s.Upstream(ctx, p, UpstreamRequest{Adapter: auth.AdapterHTTP, Topic: "t/iot/dev1", Payload: []byte("x")}); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("hono-http: %v", err)
	}

	cs, err := s.Subscribe(ctx, p, "command/iot/dev1/req/#")
	if err != nil {
		t.Fatal(err)
	}
	if cs.Self != "dev1" || len(cs.Addresses) != 1 || cs.Addresses[0] != DeviceAddress("iot", "dev1") {
		t.Fatalf("%+v", cs)
	}
	for _, f := range []string{"command///req/#", "command/iot//req/#", "command/iot/+/req/#", "command/+/dev1/req/#", "command/iot/nobody/req/#"} {
		if _, err := s.Subscribe(ctx, p, f); err == nil {
			t.Errorf("%s: subscribed", f)
		}
	}
	if err := s.CheckUnauthenticated(ctx, p, auth.AdapterMQTT, "iot", "dev1"); err != nil {
		t.Error(err)
	}

	// The tenant stops waiving authentication: refused at once.
	reg.setTenant(&tenant.IoT{Ext: map[string]json.RawMessage{ExtConnectionEvents: raw(`"events"`)}})
	pub.take()
	if _, err := s.Upstream(ctx, p, UpstreamRequest{Adapter: auth.AdapterMQTT, Topic: "t/iot/dev1", Payload: []byte("x")}); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("after the change: %v", err)
	}
	// No connection events for it, although the tenant wants them.
	s.ConnectionEvent(ctx, p, auth.AdapterMQTT, "c", true)
	if got := pub.take(); len(got) != 0 {
		t.Fatalf("connection event for an unauthenticated connection: %+v", got)
	}
}

func TestWaivingTenant(t *testing.T) {
	yes, no := true, false
	waives := func(name, adapter string) *tenant.Tenant {
		return &tenant.Tenant{Name: name, IoT: &tenant.IoT{Adapters: []tenant.Adapter{{Type: adapter, Enabled: &yes, DeviceAuthenticationRequired: &no}}}}
	}
	a, b, m := waives("a", auth.AdapterAMQP), waives("b", auth.AdapterAMQP), waives("m", auth.AdapterMQTT)
	plain := &tenant.Tenant{Name: "plain", IoT: &tenant.IoT{}}
	for _, tc := range []struct {
		ts   []*tenant.Tenant
		hint string
		want string
	}{
		{nil, "", ""},
		{[]*tenant.Tenant{plain, m}, "", ""},       // nobody waives hono-amqp
		{[]*tenant.Tenant{plain, a, m}, "", "a"},   // the only one
		{[]*tenant.Tenant{a, b}, "", ""},           // which one could not be told
		{[]*tenant.Tenant{a, b}, "b", "b"},         // the hostname tells
		{[]*tenant.Tenant{a, b}, "plain", ""},      // a tenant that does not waive
		{[]*tenant.Tenant{a, plain}, "plain", "a"}, // the only one that does
	} {
		if got := WaivingTenant(tc.ts, auth.AdapterAMQP, tc.hint); got != tc.want {
			t.Errorf("%d tenants, hint %q: %q, want %q", len(tc.ts), tc.hint, got, tc.want)
		}
	}
}
