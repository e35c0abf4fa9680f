package httpapi

import (
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/throngmq/throng/internal/hono"
)

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// FuzzParsePath: no path panics ParsePath, and every resource it accepts
// has well-formed levels and becomes a topic that package hono parses
// back to the same tenant and device (so nothing crafted reaches an
// address name). Seed corpus in testdata/fuzz/FuzzParsePath.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/telemetry", "/event", "/telemetry/acme/4711", "/event//4711",
		"/command/res/abc", "/command/res/acme/4711/abc", "/telemetry/acme/a%2Fb", "/command/res/a%3Fb",
		"/telemetry/acme/dev%3A1", "//", "/command/res//x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		r, err := ParsePath(path)
		if err != nil {
			return
		}
		if r.Long && !hono.ValidDeviceID(r.Device) {
			t.Fatalf("%q: device %q", path, r.Device)
		}
		if strings.ContainsAny(r.Tenant+r.ReqID, "/?#+\x00") {
			t.Fatalf("%q: levels %+v", path, r)
		}
		tp := r.topic("200")
		pt, err := hono.ParsePublish(tp)
		if err != nil {
			t.Fatalf("%q: topic %q: %v", path, tp, err)
		}
		if pt.Tenant != r.Tenant || pt.Device != r.Device || pt.ReqID != r.ReqID {
			t.Fatalf("%q: %+v became %+v", path, r, pt)
		}
		// The escaped form of what was parsed parses the same.
		if r.Long {
			pfx := "/" + r.Endpoint.String() + "/"
			if r.Endpoint == EndpointCommandResponse {
				pfx = "/command/res/"
			}
			again, err := ParsePath(pfx + url.PathEscape(r.Tenant) + "/" + url.PathEscape(r.Device) + reqSuffix(r))
			if err != nil || again != r {
				t.Fatalf("%q: %+v, again %+v %v", path, r, again, err)
			}
		}
	})
}

func reqSuffix(r Resource) string {
	if r.Endpoint == EndpointCommandResponse {
		return "/" + r.ReqID
	}
	return ""
}
