package hono

import (
	"context"
	"errors"
	"testing"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/registry"
	"github.com/throngmq/throng/internal/router"
)

type fakeRegistry map[string]*registry.Device // by tenant/id

func (f fakeRegistry) Device(_ context.Context, t, id string) (*registry.Device, string, error) {
	if d, ok := f[t+"/"+id]; ok {
		return d, "1", nil
	}
	return nil, "", registry.ErrNotFound
}

type fakePublisher struct {
	consumers map[string]bool // addresses with a consumer
	got       []string
}

func (f *fakePublisher) Publish(_ context.Context, t, name string, m *message.Message) (router.Outcome, error) {
	f.got = append(f.got, t+" "+name)
	if !f.consumers[name] {
		return router.Outcome{}, router.ErrNoConsumers
	}
	return router.Outcome{Kind: router.Accepted}, nil
}

func newTestService() (*Service, *fakePublisher) {
	no := false
	reg := fakeRegistry{
		"iot/gw":       {MemberOf: []string{"north"}},
		"iot/gw2":      {},
		"iot/dev2":     {Via: []string{"gw"}},
		"iot/grouped":  {ViaGroups: []string{"north"}},
		"iot/disabled": {Enabled: &no, Via: []string{"gw"}},
	}
	pub := &fakePublisher{consumers: map[string]bool{}}
	return New(reg, pub, nil), pub
}

func device(id string) *auth.Principal { return &auth.Principal{Tenant: "iot", Device: id} }

func TestUpstream(t *testing.T) {
	s, _ := newTestService()
	ctx := context.Background()
	up, err := s.Upstream(ctx, device("dev1"), UpstreamRequest{Adapter: auth.AdapterMQTT, Topic: "t/?seq=3", QoS: 1, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	m := up.Message
	if up.Address != "telemetry/iot" || m.To != "telemetry/iot" || m.ContentType != ContentTypeDefault || m.CreationTime.IsZero() {
		t.Fatalf("%+v %+v", up, m)
	}
	want := map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": "hono-mqtt", "orig_address": "t/?seq=3", "qos": int32(1), "seq": "3"}
	for k, v := range want {
		if m.Properties[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m.Properties[k], v)
		}
	}
	if _, ok := m.Properties["gateway_id"]; ok {
		t.Error("gateway_id on a device's own message")
	}

	up, err = s.Upstream(ctx, device("gw"), UpstreamRequest{Topic: "e/iot/dev2/?hono-ttl=15&content-type=text%2Fplain", QoS: 1, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	if up.Address != "event/iot" || up.Device != "dev2" || up.Message.TTL.Seconds() != 15 || up.Message.ContentType != "text/plain" ||
		up.Message.Properties["gateway_id"] != "gw" || up.Message.Properties["device_id"] != "dev2" || !up.Message.Durable {
		t.Fatalf("gateway event %+v %+v", up, up.Message)
	}
	// viaGroups: grouped names group "north", of which gw is a member.
	if _, err := s.Upstream(ctx, device("gw"), UpstreamRequest{Topic: "telemetry//grouped", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p     string
		topic string
		want  error
	}{
		{"gw2", "t//dev2", ErrNotAuthorized},     // not in via
		{"gw2", "t//grouped", ErrNotAuthorized},  // not a member of the group
		{"gw", "t//disabled", ErrNotAuthorized},  // disabled device
		{"gw", "t//ghost", ErrNotAuthorized},     // unknown device
		{"gw", "t/other/dev2", ErrNotAuthorized}, // another tenant
		{"dev1", "t", nil},                       //
		{"dev1", "t/iot/dev1", nil},              // itself, spelled out
		{"dev1", "x", ErrMalformed},              //
		{"dev1", "e/?hono-ttl=-1", ErrMalformed}, //
		{"dev1", "command///res/zz/200", ErrMalformed},
	} {
		_, err := s.Upstream(ctx, device(c.p), UpstreamRequest{Topic: c.topic, Payload: []byte("x")})
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s %s: %v, want %v", c.p, c.topic, err, c.want)
		}
	}
	if _, err := s.Upstream(ctx, device("dev1"), UpstreamRequest{Topic: "t"}); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty payload without content-type: %v", err)
	}
	if _, err := s.Upstream(ctx, &auth.Principal{Tenant: "iot", User: "u"}, UpstreamRequest{Topic: "t", Payload: []byte("x")}); !errors.Is(err, ErrNotAuthorized) {
		t.Errorf("a user: %v", err)
	}
}

func TestCommandRoundTrip(t *testing.T) {
	s, pub := newTestService()
	ctx := context.Background()
	cmd := &message.Message{To: "command/iot/dev1", Subject: "setBrightness", ReplyTo: "command_response/iot/app/1",
		CorrelationID: uint64(7), Body: []byte("79"), ContentType: "text/plain", Properties: map[string]any{"secret": "x"}}
	if d, err := CheckCommand("iot", cmd); err != nil || d != "dev1" {
		t.Fatalf("CheckCommand %q %v", d, err)
	}
	cs, err := s.Subscribe(ctx, device("dev1"), "command///req/#")
	if err != nil || len(cs.Addresses) != 1 || cs.Addresses[0] != "command/iot/dev1" {
		t.Fatalf("%+v %v", cs, err)
	}
	dn, ok := cs.CommandTopic(cmd)
	if !ok || dn.Message.Properties != nil || string(dn.Message.Body) != "79" || dn.Message.ReplyTo != "" {
		t.Fatalf("%+v", dn)
	}
	pt, err := ParsePublish(dn.Topic)
	if err == nil || pt.Kind != 0 {
		t.Fatalf("a command topic parsed as a publish topic: %+v", pt)
	}
	reqID := dn.Topic[len("command///req/") : len(dn.Topic)-len("/setBrightness")]
	up, err := s.Upstream(ctx, device("dev1"), UpstreamRequest{Topic: "command///res/" + reqID + "/200", QoS: 1, Payload: []byte("ok")})
	if err != nil {
		t.Fatal(err)
	}
	if up.Address != "command_response/iot/app/1" || up.Message.CorrelationID != uint64(7) ||
		up.Message.Properties["status"] != int32(200) || up.Message.Properties["device_id"] != "dev1" || up.Message.Properties["tenant_id"] != "iot" ||
		up.Message.ContentType != ContentTypeDefault {
		t.Fatalf("response %+v %+v", up, up.Message)
	}
	// One-way.
	dn, _ = cs.CommandTopic(&message.Message{To: "command/iot/dev1", Subject: "reboot"})
	if dn.Topic != "command///req//reboot" {
		t.Fatalf("one-way topic %q", dn.Topic)
	}
	// Malformed commands.
	for _, m := range []*message.Message{
		{To: "command/other/dev1", Subject: "x"},
		{To: "command/iot/dev1"},
		{To: "command/iot/dev1", Subject: "a/+"},
		{To: "command/iot/dev1", Subject: "x", ReplyTo: "somewhere"},
		{To: "command/iot/dev1", Subject: "x", ReplyTo: "command_response/other/r", CorrelationID: "c"},
		{To: "command/iot/dev1", Subject: "x", ReplyTo: "command_response/iot/r"}, // no correlation or message id
		{To: "telemetry/iot", Subject: "x"},
	} {
		if _, err := CheckCommand("iot", m); !errors.Is(err, ErrMalformed) {
			t.Errorf("%+v: %v", m, err)
		}
	}
	// Gateways: a + subscription consumes its own address and the gateway's.
	cs, err = s.Subscribe(ctx, device("gw"), "c/+/+/q/#")
	if err != nil || len(cs.Addresses) != 2 || cs.Addresses[1] != "command/iot/gw/gateway" {
		t.Fatalf("%+v %v", cs, err)
	}
	if dn, _ := cs.CommandTopic(&message.Message{To: "command/iot/dev2", Subject: "open"}); dn.Topic != "c//dev2/q//open" {
		t.Fatalf("gateway topic %q", dn.Topic)
	}
	if _, err := s.Subscribe(ctx, device("gw2"), "command//dev2/req/#"); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("gw2 for dev2: %v", err)
	}
	if _, err := s.Subscribe(ctx, device("dev1"), "command/other//req/#"); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("another tenant: %v", err)
	}
	// ViaGateway tries dev2's gateways' "+" subscriptions.
	if _, err := s.ViaGateway(ctx, "iot", "dev2", cmd); !errors.Is(err, router.ErrNoConsumers) {
		t.Fatalf("no gateway subscribed: %v", err)
	}
	pub.consumers["command/iot/gw/gateway"] = true
	if o, err := s.ViaGateway(ctx, "iot", "dev2", cmd); err != nil || o.Kind != router.Accepted {
		t.Fatalf("via gw: %v %v", o, err)
	}
	if _, err := s.ViaGateway(ctx, "iot", "disabled", cmd); !errors.Is(err, router.ErrNoConsumers) {
		t.Fatalf("disabled device: %v", err)
	}
	// Notify publishes on event/T.
	pub.got = nil
	s.Notify(ctx, "iot", "dev1", auth.AdapterMQTT, -1)
	if len(pub.got) != 1 || pub.got[0] != "iot event/iot" {
		t.Fatalf("notify: %v", pub.got)
	}
}
