package hono

import (
	"reflect"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/address"
)

// FuzzTopics feeds arbitrary strings to every parser of device input:
// none may panic, and what they accept must be safe to turn into address
// names (no wildcard, no crafted level), and req-ids must round-trip.
// Seed corpus: testdata/fuzz/FuzzTopics.
func FuzzTopics(f *testing.F) {
	for _, s := range []string{"telemetry", "t/?content-type=a%2Fb", "e/acme/dev/?hono-ttl=5", "command///res/abc/200",
		"command/+/+/req/#", "c//+/q/#", "error//+/#", "e///#", "command_response/acme/r", "command/acme/dev", "telemetry/acme/.."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if pt, err := ParsePublish(s); err == nil {
			if pt.Device != "" && !ValidDeviceID(pt.Device) {
				t.Fatalf("%q: device %q accepted", s, pt.Device)
			}
			if strings.ContainsAny(pt.Tenant, "/+#") {
				t.Fatalf("%q: tenant %q accepted", s, pt.Tenant)
			}
			if pt.Kind == KindCommandResponse {
				if c, r, err := DecodeReqID(pt.ReqID); err == nil {
					id, err := EncodeReqID(c, r)
					if err != nil {
						t.Fatal(err)
					}
					c2, r2, err := DecodeReqID(id)
					if err != nil || !reflect.DeepEqual(c, c2) || r != r2 {
						t.Fatalf("req-id does not round-trip (%d bytes)", len(s))
					}
				}
			}
		}
		if cf, err := ParseCommandFilter(s); err == nil {
			dev := "dev" // a filter naming a device gets only that device's commands
			if cf.Device != "" && cf.Device != "+" {
				dev = cf.Device
			}
			tn := "acme"
			if cf.Tenant != "" && cf.Tenant != "+" {
				tn = cf.Tenant
			}
			topic := cf.CommandTopic(tn, "self", dev, "rid", "cmd")
			if !address.Match(s, topic) {
				t.Fatalf("%q does not match its command topic %q", s, topic)
			}
		}
		if ef, err := ParseErrorFilter(s); err == nil {
			dev := "self"
			if ef.Device != "" && ef.Device != "+" {
				dev = ef.Device
			}
			tn := "acme"
			if ef.Tenant != "" && ef.Tenant != "+" {
				tn = ef.Tenant
			}
			if topic, ok := ef.ErrorTopic(tn, "self", dev, KindEvent, s, 503); !ok || !address.Match(s, topic) {
				t.Fatalf("%q does not match its error topic %q (%v)", s, topic, ok)
			}
		}
		if fam, tn, rest, ok := Northbound(s); ok {
			if tn == "" || strings.Contains(tn, "/") {
				t.Fatalf("%q: tenant %q", s, tn)
			}
			if fam == Command && rest != "" && !ValidDeviceID(strings.TrimSuffix(rest, "/"+gatewaySuffix)) {
				t.Fatalf("%q: device %q", s, rest)
			}
		}
		if len(s) < 1000 { // longer req-ids are refused (DecodeReqID)
			id, err := EncodeReqID(s, s+"r")
			if err != nil {
				t.Fatal(err)
			}
			if c, r, err := DecodeReqID(id); err != nil || c != s || r != s+"r" {
				t.Fatalf("req-id round trip of %d bytes: %v", len(s), err)
			}
		}
		_, _, _ = DecodeReqID(s)
	})
}
