package httpapi

import (
	"errors"
	"net/url"
	"strings"

	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/tenant"
)

// Endpoint is what a request URI names (Hono's HTTP adapter resources).
type Endpoint int

// Endpoints.
const (
	EndpointTelemetry Endpoint = iota + 1
	EndpointEvent
	EndpointCommandResponse
)

func (e Endpoint) String() string {
	switch e {
	case EndpointTelemetry:
		return "telemetry"
	case EndpointEvent:
		return "event"
	case EndpointCommandResponse:
		return "command_response"
	}
	return "other"
}

// Resource is a parsed request path of Hono's HTTP adapter:
//
//	/telemetry, /event                          the authenticated device
//	/telemetry/[T]/<device>, /event/[T]/<d>     a gateway, or an unauthenticated device
//	/command/res/<req-id>                       the authenticated device's response
//	/command/res/[T]/<device>/<req-id>          a gateway's, or an unauthenticated device's
//
// Tenant is empty when the path leaves it out ("/telemetry//4711");
// Device is empty for the short forms.
type Resource struct {
	Endpoint Endpoint
	Tenant   string
	Device   string
	ReqID    string
	// Long is true for the forms with tenant and device levels (PUT).
	Long bool
}

// Errors of ParsePath.
var (
	// ErrNotFound: not one of the adapter's resources (404).
	ErrNotFound = errors.New("no such resource")
	// ErrBadPath: a resource with a malformed level (400).
	ErrBadPath = errors.New("malformed request path")
)

// ParsePath parses a request's escaped path (URL.EscapedPath). Each level
// is unescaped on its own, so an escaped '/' cannot add a level, and
// then checked: a tenant name as tenants are named, a device id as the
// registry accepts them, a request id of this server's alphabet (base64url).
// Nothing unchecked reaches an address name.
func ParsePath(escaped string) (Resource, error) {
	if !strings.HasPrefix(escaped, "/") || len(escaped) > 2048 {
		return Resource{}, ErrNotFound
	}
	raw := strings.Split(escaped[1:], "/")
	lv := make([]string, len(raw))
	for i, s := range raw {
		u, err := url.PathUnescape(s)
		if err != nil {
			return Resource{}, ErrBadPath
		}
		lv[i] = u
	}
	var r Resource
	switch lv[0] {
	case "telemetry":
		r.Endpoint = EndpointTelemetry
	case "event":
		r.Endpoint = EndpointEvent
	case "command":
		if len(lv) < 2 || lv[1] != "res" {
			return Resource{}, ErrNotFound
		}
		r.Endpoint = EndpointCommandResponse
		switch len(lv) {
		case 3:
			r.ReqID = lv[2]
		case 5:
			r.Long = true
			r.Tenant, r.Device, r.ReqID = lv[2], lv[3], lv[4]
			if err := checkLevels(r.Tenant, r.Device); err != nil {
				return Resource{}, err
			}
		default:
			return Resource{}, ErrNotFound
		}
		if !validReqID(r.ReqID) {
			return Resource{}, ErrBadPath
		}
		return r, nil
	default:
		return Resource{}, ErrNotFound
	}
	switch len(lv) {
	case 1:
	case 3:
		r.Long = true
		r.Tenant, r.Device = lv[1], lv[2]
		if err := checkLevels(r.Tenant, r.Device); err != nil {
			return Resource{}, err
		}
	default:
		return Resource{}, ErrNotFound
	}
	return r, nil
}

// checkLevels checks a path's tenant (may be empty) and device levels.
func checkLevels(t, d string) error {
	if d == "" {
		// Hono: "request URI must contain device ID" (404).
		return ErrNotFound
	}
	if t != "" && tenant.ValidateName(t) != nil {
		return ErrBadPath
	}
	if !hono.ValidDeviceID(d) {
		return ErrBadPath
	}
	return nil
}

// validReqID: request ids are base64url without padding
// (hono.EncodeReqID); anything else cannot be one of this server's.
func validReqID(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9', b == '-', b == '_':
		default:
			return false
		}
	}
	return true
}

// topic is the Hono MQTT topic that names the same resource, for
// hono.Service.Upstream: "telemetry", "event/T/<device>",
// "command//<device>/res/<req-id>/<status>", ...
func (r Resource) topic(status string) string {
	switch r.Endpoint {
	case EndpointTelemetry, EndpointEvent:
		if !r.Long {
			return r.Endpoint.String()
		}
		return r.Endpoint.String() + "/" + r.Tenant + "/" + r.Device
	case EndpointCommandResponse:
		return "command/" + r.Tenant + "/" + r.Device + "/res/" + r.ReqID + "/" + status
	}
	return ""
}
