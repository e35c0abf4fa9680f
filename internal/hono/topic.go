// Package hono maps Eclipse Hono's device and application APIs onto
// throng's addresses (docs/hono.md). An IoT-enabled tenant T has four
// address families, defined implicitly in its own engine account under
// Hono's northbound names: telemetry/T (anycast), event/T (queue),
// command/T/<device> (anycast, one per device) and
// command_response/T/<reply-id> (anycast). The front-ends call this
// package when the principal is a device: it parses Hono's device topics
// (pure functions in this file, fuzzed), checks gateways against the
// registry and builds the messages with Hono's properties (service.go).
package hono

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// Northbound address families (Hono's names).
const (
	Telemetry       = "telemetry"
	Event           = "event"
	Command         = "command"
	CommandResponse = "command_response"
)

// gatewaySuffix ends the address a gateway's subscription for all its
// devices consumes: command/T/<gateway>/gateway. Device ids cannot hold
// a '/', so it never equals a device's command/T/<device>.
const gatewaySuffix = "gateway"

// Errors of parsing and of the service.
var (
	// ErrMalformed: not a Hono topic, or a malformed one (Hono: 400).
	ErrMalformed = errors.New("malformed hono topic")
	// ErrNotAuthorized: the device may not use that topic, or a gateway
	// is not listed for the device it names (Hono: 403).
	ErrNotAuthorized = errors.New("not authorized")
	// ErrUnknownDevice: the device named is not registered or disabled
	// (Hono: 404).
	ErrUnknownDevice = errors.New("unknown or disabled device")
)

// Kind is what a device publishes.
type Kind int

// Kinds of upstream messages.
const (
	KindTelemetry Kind = iota + 1
	KindEvent
	KindCommandResponse
)

func (k Kind) String() string {
	switch k {
	case KindTelemetry:
		return Telemetry
	case KindEvent:
		return Event
	case KindCommandResponse:
		return CommandResponse
	}
	return "unknown"
}

// ValidDeviceID reports whether s is a device id the registry accepts
// (^[a-zA-Z0-9-_.:=]+$): a device id from a topic is checked before it
// becomes part of an address name, so that no crafted level
// ("..", "+", "a/b") reaches the router.
func ValidDeviceID(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case b == '-' || b == '_' || b == '.' || b == ':' || b == '=':
		default:
			return false
		}
	}
	return true
}

// PublishTopic is a parsed device PUBLISH topic.
type PublishTopic struct {
	Kind Kind
	// Tenant and Device as named in the topic; empty when left out
	// (the authenticated device's own, or "telemetry//<device>").
	Tenant, Device string
	// ReqID and Status of a command response.
	ReqID  string
	Status int
	// Bag is the property bag (/?k=v&...), nil if none.
	Bag url.Values
}

// SplitBag splits a topic into its name and its property bag: Hono puts
// the bag at the very end, as a last level starting with '?'.
func SplitBag(topic string) (name string, bag url.Values, err error) {
	i := strings.Index(topic, "/?")
	if i < 0 {
		return topic, nil, nil
	}
	bag, err = url.ParseQuery(topic[i+2:])
	if err != nil {
		return "", nil, fmt.Errorf("%w: property bag: %v", ErrMalformed, err)
	}
	return topic[:i], bag, nil
}

// ParsePublish parses a device's PUBLISH topic (Hono MQTT adapter):
//
//	telemetry | t                         the device's own telemetry
//	telemetry/[T]/<device> | t/[T]/<d>    a gateway for a device
//	event | e, event/[T]/<device> | e/…   events, alike
//	command/[T]/[D]/res/<req-id>/<status> command responses (c/…/s/…)
//
// each optionally followed by a property bag ("/?content-type=…").
func ParsePublish(topic string) (PublishTopic, error) {
	name, bag, err := SplitBag(topic)
	if err != nil {
		return PublishTopic{}, err
	}
	lv := strings.Split(name, "/")
	pt := PublishTopic{Bag: bag}
	switch lv[0] {
	case "telemetry", "t":
		pt.Kind = KindTelemetry
	case "event", "e":
		pt.Kind = KindEvent
	case "command", "c":
		if len(lv) != 6 || (lv[3] != "res" && lv[3] != "s") {
			return PublishTopic{}, fmt.Errorf("%w: %q: a command response is command/[tenant]/[device]/res/<req-id>/<status>", ErrMalformed, topic)
		}
		if lv[4] == "" {
			return PublishTopic{}, fmt.Errorf("%w: %q: empty request id", ErrMalformed, topic)
		}
		st, err := strconv.Atoi(lv[5])
		if err != nil || st < 200 || st > 599 || len(lv[5]) != 3 {
			return PublishTopic{}, fmt.Errorf("%w: %q: status must be an HTTP status code", ErrMalformed, topic)
		}
		pt.Kind, pt.Tenant, pt.Device, pt.ReqID, pt.Status = KindCommandResponse, lv[1], lv[2], lv[4], st
		if err := checkTenantDevice(pt.Tenant, pt.Device, true); err != nil {
			return PublishTopic{}, fmt.Errorf("%w: %q: %v", ErrMalformed, topic, err)
		}
		return pt, nil
	default:
		return PublishTopic{}, fmt.Errorf("%w: %q is not a Hono device topic", ErrMalformed, topic)
	}
	switch len(lv) {
	case 1:
	case 3:
		pt.Tenant, pt.Device = lv[1], lv[2]
		if pt.Device == "" {
			return PublishTopic{}, fmt.Errorf("%w: %q: device id missing", ErrMalformed, topic)
		}
		if err := checkTenantDevice(pt.Tenant, pt.Device, false); err != nil {
			return PublishTopic{}, fmt.Errorf("%w: %q: %v", ErrMalformed, topic, err)
		}
	default:
		return PublishTopic{}, fmt.Errorf("%w: %q: expected %s or %s/[tenant]/<device>", ErrMalformed, topic, lv[0], lv[0])
	}
	return pt, nil
}

// checkTenantDevice checks the tenant and device levels of a topic.
func checkTenantDevice(t, d string, deviceOptional bool) error {
	if t != "" && address.ValidateName(t) != nil || strings.Contains(t, "/") {
		return errors.New("invalid tenant")
	}
	if d == "" && deviceOptional {
		return nil
	}
	if !ValidDeviceID(d) {
		return errors.New("invalid device id")
	}
	return nil
}

// CommandFilter is a device's command subscription:
// command/[T]/[D]/req/# or c/[T]/[D]/q/#. Tenant and Device are as
// written: "" (left out), "+" or a name.
type CommandFilter struct {
	Tenant, Device string
	Short          bool // c/…/q/# rather than command/…/req/#
}

// ParseCommandFilter parses a SUBSCRIBE filter of a device.
func ParseCommandFilter(filter string) (CommandFilter, error) {
	lv := strings.Split(filter, "/")
	if len(lv) != 5 || lv[4] != "#" {
		return CommandFilter{}, fmt.Errorf("%w: %q: a command subscription is command/[tenant]/[device]/req/#", ErrMalformed, filter)
	}
	var f CommandFilter
	switch {
	case lv[0] == "command" && lv[3] == "req":
	case lv[0] == "c" && lv[3] == "q":
		f.Short = true
	default:
		return CommandFilter{}, fmt.Errorf("%w: %q: a command subscription is command/[tenant]/[device]/req/#", ErrMalformed, filter)
	}
	f.Tenant, f.Device = lv[1], lv[2]
	if f.Tenant != "+" {
		if err := checkTenantDevice(f.Tenant, "", true); err != nil {
			return CommandFilter{}, fmt.Errorf("%w: %q: %v", ErrMalformed, filter, err)
		}
	}
	if f.Device != "" && f.Device != "+" && !ValidDeviceID(f.Device) {
		return CommandFilter{}, fmt.Errorf("%w: %q: invalid device id", ErrMalformed, filter)
	}
	return f, nil
}

// CommandTopic is the topic a command goes out on to a subscriber of f:
// command/[T]/[D]/req/[<req-id>]/<name> (c/…/q/… for the short form).
// The tenant and device levels are filled only where the filter named
// them (Hono); for a gateway's "+" filter the device level names the
// target device, unless the command is for the subscriber itself. The
// result always matches the filter.
func (f CommandFilter) CommandTopic(tenantName, self, device, reqID, name string) string {
	t, d := "", ""
	if f.Tenant != "" && f.Tenant != "+" {
		t = tenantName
	}
	switch f.Device {
	case "":
	case "+":
		if device != self {
			d = device
		}
	default:
		d = device
	}
	pfx, req := "command/", "/req/"
	if f.Short {
		pfx, req = "c/", "/q/"
	}
	return pfx + t + "/" + d + req + reqID + "/" + name
}

// ValidCommandName reports whether a command name (the AMQP subject) can
// end a topic: not empty, no wildcard or NUL, UTF-8.
func ValidCommandName(s string) bool {
	return s != "" && address.ValidateName(s) == nil
}

// Request ids. A request/response command's req-id carries the command's
// correlation id and the reply id of its reply-to address
// (command_response/T/<reply-id>), so that the device's response can be
// routed by any node without state: base64url (no padding) of
//
//	kind byte ('s' string, 'b' binary, 'u' ulong, 'U' uuid)
//	uvarint length of the correlation id, its bytes
//	the reply id's bytes
//
// The alphabet has no '/', '+' or '#': a req-id is one topic level.

// EncodeReqID builds a req-id from a correlation id (string, []byte,
// uint64 or [16]byte) and a reply id.
func EncodeReqID(corr any, replyID string) (string, error) {
	var kind byte
	var b []byte
	switch v := corr.(type) {
	case string:
		kind, b = 's', []byte(v)
	case []byte:
		kind, b = 'b', v
	case uint64:
		kind, b = 'u', binary.BigEndian.AppendUint64(nil, v)
	case [16]byte:
		kind, b = 'U', v[:]
	default:
		return "", fmt.Errorf("%w: correlation id of type %T", ErrMalformed, corr)
	}
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(b)+len(replyID))
	buf = append(buf, kind)
	buf = binary.AppendUvarint(buf, uint64(len(b)))
	buf = append(buf, b...)
	buf = append(buf, replyID...)
	return base64.RawURLEncoding.EncodeToString(buf), nil
}

// DecodeReqID is EncodeReqID's inverse.
func DecodeReqID(s string) (corr any, replyID string, err error) {
	bad := func(why string) (any, string, error) {
		return nil, "", fmt.Errorf("%w: request id: %s", ErrMalformed, why)
	}
	if len(s) > 4096 {
		return bad("too long")
	}
	buf, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(buf) < 2 {
		return bad("not one of this server's request ids")
	}
	n, k := binary.Uvarint(buf[1:])
	if k <= 0 || n > uint64(len(buf)-1-k) {
		return bad("bad length")
	}
	b := buf[1+k : 1+k+int(n)]
	replyID = string(buf[1+k+int(n):])
	if replyID == "" {
		return bad("no reply id")
	}
	switch buf[0] {
	case 's':
		return string(b), replyID, nil
	case 'b':
		return append([]byte(nil), b...), replyID, nil
	case 'u':
		if len(b) != 8 {
			return bad("bad ulong")
		}
		return binary.BigEndian.Uint64(b), replyID, nil
	case 'U':
		if len(b) != 16 {
			return bad("bad uuid")
		}
		return [16]byte(b), replyID, nil
	}
	return bad("unknown kind")
}

// Northbound splits a northbound (application) address of one of the four
// families: telemetry/T, event/T, command/T (the application's command
// sender), command/T/<device>, command/T/<gateway>/gateway and
// command_response/T/<reply-id>. rest is what follows "family/T/" ("" for
// telemetry, event and command/T).
func Northbound(name string) (family, tenantName, rest string, ok bool) {
	family, after, found := strings.Cut(name, "/")
	if !found {
		return "", "", "", false
	}
	tenantName, rest, more := strings.Cut(after, "/")
	if tenantName == "" {
		return "", "", "", false
	}
	switch family {
	case Telemetry, Event:
		if more {
			return "", "", "", false
		}
	case Command:
		if more {
			dev, gw, isGW := strings.Cut(rest, "/")
			if !ValidDeviceID(dev) || (isGW && gw != gatewaySuffix) {
				return "", "", "", false
			}
		}
	case CommandResponse:
		if rest == "" {
			return "", "", "", false
		}
	default:
		return "", "", "", false
	}
	return family, tenantName, rest, true
}

// DeviceAddress is the anycast address of a device's commands.
func DeviceAddress(tenantName, device string) string {
	return Command + "/" + tenantName + "/" + device
}

// GatewayAddress is the anycast address a gateway's subscription for all
// its devices consumes.
func GatewayAddress(tenantName, gateway string) string {
	return Command + "/" + tenantName + "/" + gateway + "/" + gatewaySuffix
}

// ImplicitType is the router's hook for the implicit addresses of an
// IoT-enabled tenant (router.Config.Implicit): the type of name in
// tenant t, if it is one of them. command/T itself is not an address:
// the AMQP front-end treats a sender to it as a relay to
// command/T/<device>.
func ImplicitType(t *tenant.Tenant, name string) (address.Type, bool) {
	if t == nil || t.IoT == nil {
		return "", false
	}
	fam, tn, rest, ok := Northbound(name)
	if !ok || tn != t.Name {
		return "", false
	}
	switch fam {
	case Telemetry:
		return address.Anycast, true
	case Event:
		return address.Queue, true
	case Command:
		if rest == "" {
			return "", false
		}
		return address.Anycast, true
	case CommandResponse:
		return address.Anycast, true
	}
	return "", false
}

// ErrorFilter is a device's subscription to Hono's error topic:
// error/[T]/[D]/# or e/[T]/[D]/# (D "+" for a gateway's devices).
type ErrorFilter struct {
	Tenant, Device string
	Short          bool
}

// ParseErrorFilter parses an error topic subscription.
func ParseErrorFilter(filter string) (ErrorFilter, error) {
	lv := strings.Split(filter, "/")
	if len(lv) != 4 || lv[3] != "#" || (lv[0] != "error" && lv[0] != "e") {
		return ErrorFilter{}, fmt.Errorf("%w: %q: an error subscription is error/[tenant]/[device]/#", ErrMalformed, filter)
	}
	f := ErrorFilter{Tenant: lv[1], Device: lv[2], Short: lv[0] == "e"}
	if f.Tenant != "+" {
		if err := checkTenantDevice(f.Tenant, "", true); err != nil {
			return ErrorFilter{}, fmt.Errorf("%w: %q: %v", ErrMalformed, filter, err)
		}
	}
	if f.Device != "" && f.Device != "+" && !ValidDeviceID(f.Device) {
		return ErrorFilter{}, fmt.Errorf("%w: %q: invalid device id", ErrMalformed, filter)
	}
	return f, nil
}

// ErrorTopic is the topic of an error message for a publish of kind k
// about device (self: the subscriber):
// error/[T]/[D]/<endpoint>/<correlation-id>/<status>, the tenant and
// device levels filled as for commands (CommandTopic); ok is false when
// the filter does not cover the device (a filter naming another device).
func (f ErrorFilter) ErrorTopic(tenantName, self, device string, k Kind, corrID string, status int) (string, bool) {
	t, d := "", ""
	if f.Tenant != "" && f.Tenant != "+" {
		t = tenantName
	}
	switch f.Device {
	case "":
		if device != self {
			return "", false
		}
	case "+":
		if device != self {
			d = device
		}
	default:
		if device != f.Device {
			return "", false
		}
		d = device
	}
	ep := k.String()
	if k == KindCommandResponse {
		ep = "command-response"
	}
	pfx := "error/"
	if f.Short {
		pfx = "e/"
		switch k {
		case KindTelemetry:
			ep = "t"
		case KindEvent:
			ep = "e"
		case KindCommandResponse:
			ep = "c-s"
		}
	}
	if corrID == "" || address.ValidateName(corrID) != nil || strings.Contains(corrID, "/") {
		corrID = "-1"
	}
	return pfx + t + "/" + d + "/" + ep + "/" + corrID + "/" + strconv.Itoa(status), true
}
