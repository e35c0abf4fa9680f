package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/router"
)

func TestParsePath(t *testing.T) {
	tel, ev, res := EndpointTelemetry, EndpointEvent, EndpointCommandResponse
	cases := []struct {
		path  string
		want  Resource
		err   error
		topic string
	}{
		{"/telemetry", Resource{Endpoint: tel}, nil, "telemetry"},
		{"/event", Resource{Endpoint: ev}, nil, "event"},
		{"/telemetry/acme/4711", Resource{Endpoint: tel, Tenant: "acme", Device: "4711", Long: true}, nil, "telemetry/acme/4711"},
		{"/event//4711", Resource{Endpoint: ev, Device: "4711", Long: true}, nil, "event//4711"},
		{"/telemetry/acme/dev%3A1", Resource{Endpoint: tel, Tenant: "acme", Device: "dev:1", Long: true}, nil, "telemetry/acme/dev:1"},
		{"/command/res/abc_-9", Resource{Endpoint: res, ReqID: "abc_-9"}, nil, "command///res/abc_-9/200"},
		{"/command/res/acme/4711/abc", Resource{Endpoint: res, Tenant: "acme", Device: "4711", ReqID: "abc", Long: true}, nil, "command/acme/4711/res/abc/200"},
		{"/command/res//4711/abc", Resource{Endpoint: res, Device: "4711", ReqID: "abc", Long: true}, nil, "command//4711/res/abc/200"},
		// Not resources.
		{"", Resource{}, ErrNotFound, ""},
		{"/", Resource{}, ErrNotFound, ""},
		{"/telemetry/", Resource{}, ErrNotFound, ""},
		{"/telemetry/acme", Resource{}, ErrNotFound, ""},
		{"/telemetry/acme/", Resource{}, ErrNotFound, ""},
		{"/telemetry/acme/4711/x", Resource{}, ErrNotFound, ""},
		{"/t", Resource{}, ErrNotFound, ""},
		{"/command", Resource{}, ErrNotFound, ""},
		{"/command/req/x", Resource{}, ErrNotFound, ""},
		{"/command/res/a/b", Resource{}, ErrNotFound, ""},
		{"//telemetry", Resource{}, ErrNotFound, ""},
		// Malformed levels: nothing crafted reaches an address.
		{"/telemetry/acme/a%2Fb", Resource{}, ErrBadPath, ""},
		{"/telemetry/acme/%2B", Resource{}, ErrBadPath, ""},
		{"/telemetry/ACME/4711", Resource{}, ErrBadPath, ""},
		{"/telemetry/a%2Fb/4711", Resource{}, ErrBadPath, ""},
		{"/telemetry/acme/%zz", Resource{}, ErrBadPath, ""},
		{"/command/res/", Resource{}, ErrBadPath, ""},
		{"/command/res/a%2Fb", Resource{}, ErrBadPath, ""},
		{"/command/res/a+b", Resource{}, ErrBadPath, ""},
		{"/command/res/acme/4711/a%3Fb", Resource{}, ErrBadPath, ""},
		{"/command/res/acme//abc", Resource{}, ErrNotFound, ""},
	}
	for _, c := range cases {
		got, err := ParsePath(c.path)
		if !errors.Is(err, c.err) || (err == nil && got != c.want) {
			t.Errorf("ParsePath(%q) = %+v, %v; want %+v, %v", c.path, got, err, c.want, c.err)
			continue
		}
		if err == nil {
			if tp := got.topic("200"); tp != c.topic {
				t.Errorf("%q: topic %q, want %q", c.path, tp, c.topic)
			}
			if _, err := hono.ParsePublish(got.topic("200")); err != nil && got.Endpoint != res {
				t.Errorf("%q: hono does not parse %q: %v", c.path, got.topic("200"), err)
			}
		}
	}
}

// TestStatusOf is the error table: every error a request can end with
// and Hono's status code for it.
func TestStatusOf(t *testing.T) {
	cases := []struct {
		err  error
		want int
	}{
		{nil, 202},
		{ErrNoCredentials, 401},
		{&auth.DeviceError{Reason: auth.ReasonWrongSecret, Err: auth.ErrBadCredentials}, 401},
		{auth.ErrUnknownTenant, 401},
		{&auth.DeviceError{Reason: auth.ReasonAdapterDisabled, Err: auth.ErrNotAuthorized}, 403},
		{ErrNotDevice, 403},
		{ErrAdapterDisabled, 403},
		{fmt.Errorf("%w: gateway", hono.ErrNotAuthorized), 403},
		{fmt.Errorf("%w: x", ErrBadRequest), 400},
		{ErrBadPath, 400},
		{fmt.Errorf("%w: topic", hono.ErrMalformed), 400},
		{&outcomeError{router.Outcome{Kind: router.Rejected}}, 400},
		{ErrNotFound, 404},
		{ErrUnknownDevice, 404},
		{fmt.Errorf("%w: x", ErrTooLarge), 413},
		{fmt.Errorf("%w: message of 3000 bytes exceeds the tenant's maximum of 2048", router.ErrLimitExceeded), 413},
		{router.ErrDiskFull, 429},
		{fmt.Errorf("%w: queue full", router.ErrLimitExceeded), 429},
		{router.ErrNoConsumers, 503},
		{&outcomeError{router.Outcome{Kind: router.Released}}, 503},
		{&auth.DeviceError{Reason: auth.ReasonRegistryError, Err: auth.ErrUnavailable}, 503},
		{router.ErrTimeout, 503},
		{errors.New("something else"), 500},
	}
	for _, c := range cases {
		if got := statusOf(c.err); got != c.want {
			t.Errorf("statusOf(%v) = %d, want %d", c.err, got, c.want)
		}
	}
	s := &Server{log: discard()}
	w := httptest.NewRecorder()
	if st := s.writeError(w, router.ErrDiskFull); st != 429 || w.Code != 429 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("429: %d %v", w.Code, w.Header())
	}
	w = httptest.NewRecorder()
	s.writeError(w, &auth.DeviceError{Reason: auth.ReasonWrongSecret, Tenant: "t", AuthID: "secret-id", Err: auth.ErrBadCredentials})
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") != `Basic realm="Hono"` || w.Body.String() != http.StatusText(401)+"\n" {
		t.Fatalf("401: %d %v %q", w.Code, w.Header(), w.Body)
	}
}
