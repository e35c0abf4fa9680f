package hono

import (
	"errors"
	"net/url"
	"reflect"
	"testing"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

func TestParsePublish(t *testing.T) {
	ok := []struct {
		topic string
		want  PublishTopic
	}{
		{"telemetry", PublishTopic{Kind: KindTelemetry}},
		{"t", PublishTopic{Kind: KindTelemetry}},
		{"event", PublishTopic{Kind: KindEvent}},
		{"e", PublishTopic{Kind: KindEvent}},
		{"t/?content-type=application%2Fjson", PublishTopic{Kind: KindTelemetry, Bag: url.Values{"content-type": {"application/json"}}}},
		{"e/?hono-ttl=30&a=b", PublishTopic{Kind: KindEvent, Bag: url.Values{"hono-ttl": {"30"}, "a": {"b"}}}},
		{"telemetry//dev-1", PublishTopic{Kind: KindTelemetry, Device: "dev-1"}},
		{"telemetry/acme/dev-1", PublishTopic{Kind: KindTelemetry, Tenant: "acme", Device: "dev-1"}},
		{"e/acme/d:1=x/?k=v", PublishTopic{Kind: KindEvent, Tenant: "acme", Device: "d:1=x", Bag: url.Values{"k": {"v"}}}},
		{"command///res/abc/200", PublishTopic{Kind: KindCommandResponse, ReqID: "abc", Status: 200}},
		{"c///s/abc/503", PublishTopic{Kind: KindCommandResponse, ReqID: "abc", Status: 503}},
		{"command//dev-2/res/abc/404", PublishTopic{Kind: KindCommandResponse, Device: "dev-2", ReqID: "abc", Status: 404}},
	}
	for _, c := range ok {
		got, err := ParsePublish(c.topic)
		if err != nil {
			t.Errorf("%q: %v", c.topic, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: %+v, want %+v", c.topic, got, c.want)
		}
	}
	bad := []string{
		"", "telemetry/", "telemetry/acme", "telemetry/acme/", "telemetry/acme/dev/x",
		"telemetry/acme/x/y/z", "telemetry/acme/a+b", "telemetry//a#", "t/acme/a b",
		"foo", "command///req/abc/200", "command///res//200", "command///res/abc/20",
		"command///res/abc/999", "command///res/abc/2000", "command//a b/res/x/200",
		"t/?%zz", "tele", "command", "command/a/b/res/x",
	}
	for _, b := range bad {
		if _, err := ParsePublish(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v, want ErrMalformed", b, err)
		}
	}
}

func TestCommandFilter(t *testing.T) {
	cases := []struct {
		filter string
		want   CommandFilter
		// topic for a command to dev (self "gw") with req-id r and name n
		dev, topic string
	}{
		{"command///req/#", CommandFilter{}, "gw", "command///req/r/n"},
		{"command/+/+/req/#", CommandFilter{Tenant: "+", Device: "+"}, "gw", "command///req/r/n"},
		{"command/+/+/req/#", CommandFilter{Tenant: "+", Device: "+"}, "d1", "command//d1/req/r/n"},
		{"command//+/req/#", CommandFilter{Device: "+"}, "d1", "command//d1/req/r/n"},
		{"command/acme//req/#", CommandFilter{Tenant: "acme"}, "gw", "command/acme//req/r/n"},
		{"command//d1/req/#", CommandFilter{Device: "d1"}, "d1", "command//d1/req/r/n"},
		{"c///q/#", CommandFilter{Short: true}, "gw", "c///q/r/n"},
		{"c/acme/d1/q/#", CommandFilter{Tenant: "acme", Device: "d1", Short: true}, "d1", "c/acme/d1/q/r/n"},
	}
	for _, c := range cases {
		f, err := ParseCommandFilter(c.filter)
		if err != nil || f != c.want {
			t.Errorf("%q: %+v %v, want %+v", c.filter, f, err, c.want)
			continue
		}
		topic := f.CommandTopic("acme", "gw", c.dev, "r", "n")
		if topic != c.topic {
			t.Errorf("%q: topic %q, want %q", c.filter, topic, c.topic)
		}
		if !address.Match(c.filter, topic) {
			t.Errorf("%q does not match its own command topic %q", c.filter, topic)
		}
	}
	for _, b := range []string{"command///req", "command///req/+", "command///res/#", "command/a/b/c/req/#",
		"cmd///req/#", "c///req/#", "command///q/#", "command//a b/req/#", "command/a+/x/req/#", "#", "command//a\x00/req/#"} {
		if _, err := ParseCommandFilter(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v, want ErrMalformed", b, err)
		}
	}
}

func TestReqID(t *testing.T) {
	for _, corr := range []any{"corr-1", "", []byte{0, 1, 2, '/'}, uint64(42), [16]byte{1, 2, 3}} {
		for _, reply := range []string{"r", "app/with/slashes", "ünïcode+#"} {
			id, err := EncodeReqID(corr, reply)
			if err != nil {
				t.Fatal(err)
			}
			if address.ValidateName(id) != nil || len(id) == 0 {
				t.Fatalf("req-id %q is not one topic level", id)
			}
			for _, ch := range id {
				if ch == '/' {
					t.Fatalf("req-id %q has a '/'", id)
				}
			}
			c2, r2, err := DecodeReqID(id)
			if err != nil || !reflect.DeepEqual(c2, corr) || r2 != reply {
				t.Errorf("%v %q: round trip %v %q %v", corr, reply, c2, r2, err)
			}
		}
	}
	if _, err := EncodeReqID(3.5, "r"); err == nil {
		t.Error("float correlation id encoded")
	}
	for _, b := range []string{"", "!!", "cw", "cwE", "dQhA", "eAAB"} {
		if _, _, err := DecodeReqID(b); err == nil {
			t.Errorf("%q decoded", b)
		}
	}
}

func TestNorthboundAndImplicit(t *testing.T) {
	iot := &tenant.Tenant{Name: "acme", IoT: &tenant.IoT{}}
	plain := &tenant.Tenant{Name: "acme"}
	cases := []struct {
		name string
		typ  address.Type // "" = not implicit
	}{
		{"telemetry/acme", address.Anycast},
		{"event/acme", address.Queue},
		{"command/acme/dev-1", address.Anycast},
		{"command/acme/gw/gateway", address.Anycast},
		{"command_response/acme/reply-1", address.Anycast},
		{"command_response/acme/a/b", address.Anycast},
		{"command/acme", ""},
		{"telemetry/other", ""},
		{"telemetry/acme/x", ""},
		{"telemetry/acme/x/y/z", ""},
		{"command/acme/a b", ""},
		{"command/acme/gw/other", ""},
		{"command_response/acme", ""},
		{"command_response/acme/", ""},
		{"queue1", ""},
		{"telemetry", ""},
		{"telemetry/", ""},
	}
	for _, c := range cases {
		typ, ok := ImplicitType(iot, c.name)
		if ok != (c.typ != "") || typ != c.typ {
			t.Errorf("%q: %q %v, want %q", c.name, typ, ok, c.typ)
		}
		if _, ok := ImplicitType(plain, c.name); ok {
			t.Errorf("%q implicit in a tenant that is not IoT-enabled", c.name)
		}
	}
	if fam, tn, rest, ok := Northbound("command_response/acme/r/1"); !ok || fam != CommandResponse || tn != "acme" || rest != "r/1" {
		t.Errorf("Northbound: %q %q %q %v", fam, tn, rest, ok)
	}
}

func TestValidDeviceID(t *testing.T) {
	for _, s := range []string{"a", "A-z_0.9:=", "4711"} {
		if !ValidDeviceID(s) {
			t.Errorf("%q refused", s)
		}
	}
	for _, s := range []string{"", "a/b", "a b", "+", "#", "ü", "a\x00"} {
		if ValidDeviceID(s) {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestErrorFilter(t *testing.T) {
	cases := []struct {
		filter       string
		self, device string
		kind         Kind
		corr         string
		topic        string // "" = not covered
	}{
		{"error///#", "d1", "d1", KindTelemetry, "12", "error///telemetry/12/503"},
		{"error///#", "gw", "d2", KindTelemetry, "12", ""},
		{"error/acme//#", "d1", "d1", KindEvent, "", "error/acme//event/-1/503"},
		{"error//+/#", "gw", "d2", KindCommandResponse, "x", "error//d2/command-response/x/503"},
		{"e/+/+/#", "gw", "gw", KindEvent, "a/b", "e///e/-1/503"},
		{"e//d2/#", "gw", "d2", KindCommandResponse, "c", "e//d2/c-s/c/503"},
		{"e//d2/#", "gw", "d3", KindTelemetry, "c", ""},
	}
	for _, c := range cases {
		f, err := ParseErrorFilter(c.filter)
		if err != nil {
			t.Fatalf("%q: %v", c.filter, err)
		}
		topic, ok := f.ErrorTopic("acme", c.self, c.device, c.kind, c.corr, 503)
		if ok != (c.topic != "") || topic != c.topic {
			t.Errorf("%q: %q %v, want %q", c.filter, topic, ok, c.topic)
		}
		if ok && !address.Match(c.filter, topic) {
			t.Errorf("%q does not match %q", c.filter, topic)
		}
	}
	for _, b := range []string{"error///", "error//#", "errors///#", "error//a b/#", "e///x"} {
		if _, err := ParseErrorFilter(b); err == nil {
			t.Errorf("%q accepted", b)
		}
	}
}
