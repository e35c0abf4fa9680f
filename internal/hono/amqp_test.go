package hono

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/message"
)

func TestAMQPTopic(t *testing.T) {
	for _, c := range []struct {
		addr   string
		status any
		topic  string
		kind   Kind
		err    error
	}{
		{"telemetry", nil, "telemetry", KindTelemetry, nil},
		{"t", nil, "t", KindTelemetry, nil},
		{"event", nil, "event", KindEvent, nil},
		{"e", nil, "e", KindEvent, nil},
		{"telemetry/iot/dev2", nil, "telemetry/iot/dev2", KindTelemetry, nil},
		{"e//dev2", nil, "e//dev2", KindEvent, nil},
		{"command_response/iot/dev1/abc", int32(200), "command/iot/dev1/res/abc/200", KindCommandResponse, nil},
		{"command_response//dev1/abc", int64(503), "command//dev1/res/abc/503", KindCommandResponse, nil},
		{"command_response//dev1/abc", uint8(250), "command//dev1/res/abc/250", KindCommandResponse, nil},
		{"", nil, "", 0, ErrMalformed},
		{"telemetry/iot", nil, "", 0, ErrMalformed},
		{"telemetry/?content-type=x", nil, "", 0, ErrMalformed},
		{"telemetry/+/dev2", nil, "", 0, ErrMalformed},
		{"command_response/iot/dev1/abc", nil, "", 0, ErrMalformed},
		{"command_response/iot/dev1/abc", "200", "", 0, ErrMalformed},
		{"command_response/iot/dev1/abc", int32(99), "", 0, ErrMalformed},
		{"command_response/iot/dev1/abc", uint64(1 << 40), "", 0, ErrMalformed},
		{"command_response/iot/abc", int32(200), "", 0, ErrMalformed},
		{"command_response/iot//abc", int32(200), "", 0, ErrMalformed},
		{"orders", nil, "", 0, ErrUnknownEndpoint},
		{"command", nil, "", 0, ErrUnknownEndpoint},
		{"command/iot/dev1", nil, "", 0, ErrUnknownEndpoint},
	} {
		topic, kind, err := AMQPTopic(c.addr, c.status)
		if c.err != nil {
			if !errors.Is(err, c.err) {
				t.Errorf("%q %v: err %v, want %v", c.addr, c.status, err, c.err)
			}
			continue
		}
		if err != nil || topic != c.topic || kind != c.kind {
			t.Errorf("%q %v: %q %v %v, want %q %v", c.addr, c.status, topic, kind, err, c.topic, c.kind)
		}
	}
	// Unknown endpoints are malformed too (Status: 400).
	if !errors.Is(ErrUnknownEndpoint, ErrMalformed) {
		t.Fatal("ErrUnknownEndpoint does not wrap ErrMalformed")
	}
}

func TestCommandSourceFilter(t *testing.T) {
	for src, want := range map[string]string{
		"command":           "command//+/req/#",
		"command/iot/dev2":  "command/iot/dev2/req/#",
		"command//dev2":     "command//dev2/req/#",
		"command/iot/x.y=z": "command/iot/x.y=z/req/#",
	} {
		if got, err := CommandSourceFilter(src); err != nil || got != want {
			t.Errorf("%q: %q %v, want %q", src, got, err, want)
		}
	}
	for src, want := range map[string]error{
		"":                  ErrUnknownEndpoint,
		"#":                 ErrUnknownEndpoint,
		"commands":          ErrUnknownEndpoint,
		"c":                 ErrUnknownEndpoint,
		"command/":          ErrMalformed,
		"command/iot":       ErrMalformed,
		"command/iot/":      ErrMalformed,
		"command/iot/+":     ErrMalformed,
		"command/+/dev1":    ErrMalformed,
		"command/iot/a/b":   ErrMalformed,
		"command/iot/a b":   ErrMalformed,
		"command/#/dev1":    ErrMalformed,
		"command/iot/dev1/": ErrMalformed,
	} {
		if got, err := CommandSourceFilter(src); !errors.Is(err, want) {
			t.Errorf("%q: %q %v, want %v", src, got, err, want)
		}
	}
}

func TestUpstreamAMQP(t *testing.T) {
	s, _ := newTestService()
	ctx := context.Background()
	up, err := s.UpstreamAMQP(ctx, device("dev1"), AMQPRequest{Address: "t", Settled: true, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	m := up.Message
	want := map[string]any{"device_id": "dev1", "tenant_id": "iot", "orig_adapter": "hono-amqp", "orig_address": "t", "qos": int32(0)}
	for k, v := range want {
		if m.Properties[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m.Properties[k], v)
		}
	}
	if up.Address != "telemetry/iot" || m.Durable || m.ContentType != ContentTypeDefault {
		t.Fatalf("%+v %+v", up, m)
	}

	// A gateway's event, unsettled, with the header's ttl (at least 1 s).
	up, err = s.UpstreamAMQP(ctx, device("gw"), AMQPRequest{Address: "event/iot/dev2", Payload: []byte("x"),
		ContentType: "text/plain", TTL: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if up.Address != "event/iot" || up.Message.TTL != time.Second || up.Message.Properties["gateway_id"] != "gw" ||
		up.Message.Properties["qos"] != int32(1) || up.Message.Properties["orig_address"] != "event/iot/dev2" {
		t.Fatalf("gateway event %+v %+v", up, up.Message)
	}

	// A response to a command's reply-to.
	reqID, _ := EncodeReqID("corr-1", "app-1")
	up, err = s.UpstreamAMQP(ctx, device("dev1"), AMQPRequest{Address: "command_response/iot/dev1/" + reqID,
		Payload: []byte("r"), ContentType: "text/plain", CorrelationID: "corr-1", Status: int32(204)})
	if err != nil {
		t.Fatal(err)
	}
	if up.Address != "command_response/iot/app-1" || up.Message.CorrelationID != "corr-1" ||
		up.Message.Properties["status"] != int32(204) || up.Message.ContentType != "text/plain" {
		t.Fatalf("response %+v %+v", up, up.Message)
	}

	for _, c := range []struct {
		req  AMQPRequest
		p    string
		want error
	}{
		{AMQPRequest{Address: "event", Settled: true, Payload: []byte("x")}, "dev1", ErrMalformed},
		{AMQPRequest{Address: "telemetry"}, "dev1", ErrMalformed},
		{AMQPRequest{Address: "telemetry", ContentType: ContentTypeEmpty, Payload: []byte("x")}, "dev1", ErrMalformed},
		{AMQPRequest{Address: "command_response/iot/dev1/" + reqID, Status: int32(200)}, "dev1", ErrMalformed},
		{AMQPRequest{Address: "command_response/iot/dev1/nonsense", Status: int32(200), CorrelationID: "c"}, "dev1", ErrMalformed},
		{AMQPRequest{Address: "telemetry/iot/dev2", Payload: []byte("x")}, "dev1", ErrNotAuthorized},
		{AMQPRequest{Address: "telemetry/other/dev1", Payload: []byte("x")}, "dev1", ErrNotAuthorized},
		{AMQPRequest{Address: "command_response/iot/dev2/" + reqID, Status: int32(200), CorrelationID: "c"}, "dev1", ErrNotAuthorized},
		{AMQPRequest{Address: "orders", Payload: []byte("x")}, "dev1", ErrUnknownEndpoint},
	} {
		if _, err := s.UpstreamAMQP(ctx, device(c.p), c.req); !errors.Is(err, c.want) {
			t.Errorf("%+v: %v, want %v", c.req, err, c.want)
		}
	}
	// The empty notification content type with no body is fine.
	if _, err := s.UpstreamAMQP(ctx, device("dev1"), AMQPRequest{Address: "e", ContentType: ContentTypeEmpty}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpstreamAMQP(ctx, &auth.Principal{Tenant: "iot", User: "app"}, AMQPRequest{Address: "t", Payload: []byte("x")}); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("a user: %v", err)
	}
}

func TestAMQPCommand(t *testing.T) {
	s, _ := newTestService()
	ctx := context.Background()
	filter, _ := CommandSourceFilter("command")
	cs, err := s.Subscribe(ctx, device("gw"), filter)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Addresses) != 2 || cs.Addresses[1] != "command/iot/gw/gateway" || cs.Target() != "gw" {
		t.Fatalf("%+v", cs)
	}
	// A request/response command for the gateway itself.
	m, ok := cs.AMQPCommand(&message.Message{To: "command/iot/gw", Subject: "setMode", ReplyTo: "command_response/iot/app-1",
		CorrelationID: uint64(7), ContentType: "text/plain", Body: []byte("eco")})
	if !ok {
		t.Fatal("not a command")
	}
	rest, found := strings.CutPrefix(m.ReplyTo, "command_response/iot/gw/")
	if !found || m.To != "command/iot/gw" || m.Subject != "setMode" || m.CorrelationID != uint64(7) ||
		m.ContentType != "text/plain" || string(m.Body) != "eco" || m.Properties != nil {
		t.Fatalf("%+v", m)
	}
	if corr, replyID, err := DecodeReqID(rest); err != nil || corr != uint64(7) || replyID != "app-1" {
		t.Fatalf("req-id %q: %v %q %v", rest, corr, replyID, err)
	}
	// A one-way command for a device the gateway serves: device_id, no
	// correlation id or reply-to; the message id stands in for a
	// missing correlation id of a request.
	m, ok = cs.AMQPCommand(&message.Message{To: "command/iot/dev2", Subject: "open", MessageID: "m-1"})
	if !ok || m.ReplyTo != "" || m.CorrelationID != nil || m.Properties[PropDeviceID] != "dev2" {
		t.Fatalf("%v %+v", ok, m)
	}
	m, ok = cs.AMQPCommand(&message.Message{To: "command/iot/dev2", Subject: "open", MessageID: "m-1", ReplyTo: "command_response/iot/r"})
	if !ok || m.CorrelationID != "m-1" || !strings.HasPrefix(m.ReplyTo, "command_response/iot/dev2/") {
		t.Fatalf("%v %+v", ok, m)
	}
	for _, bad := range []*message.Message{
		{To: "command/other/gw", Subject: "x"},
		{To: "command/iot/gw", Subject: ""},
		{To: "command/iot/gw/gateway", Subject: "x"},
		{To: "telemetry/iot", Subject: "x"},
		{To: "command/iot/gw", Subject: "x", ReplyTo: "elsewhere"},
		{To: "command/iot/gw", Subject: "x", ReplyTo: "command_response/other/r", CorrelationID: "c"},
		{To: "command/iot/gw", Subject: "x", ReplyTo: "telemetry/iot", CorrelationID: "c"},
		{To: "command/iot/gw", Subject: "x", ReplyTo: "command_response/iot/r"}, // no correlation
	} {
		if m, ok := cs.AMQPCommand(bad); ok {
			t.Errorf("%+v accepted: %+v", bad, m)
		}
	}

	// A gateway's link for one device.
	filter, _ = CommandSourceFilter("command//dev2")
	cs, err = s.Subscribe(ctx, device("gw"), filter)
	if err != nil || len(cs.Addresses) != 1 || cs.Addresses[0] != "command/iot/dev2" || cs.Target() != "dev2" {
		t.Fatalf("%+v %v", cs, err)
	}
	filter, _ = CommandSourceFilter("command/iot/dev2")
	if _, err := s.Subscribe(ctx, device("dev1"), filter); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("dev1 for dev2: %v", err)
	}
	filter, _ = CommandSourceFilter("command/other/dev1")
	if _, err := s.Subscribe(ctx, device("dev1"), filter); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("another tenant: %v", err)
	}
}
