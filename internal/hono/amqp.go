package hono

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/message"
)

// Hono's AMQP adapter (docs/hono.md, "Device side (AMQP)"). A device
// sends on the anonymous terminus, each message's "to" naming the
// endpoint (telemetry, t, event, e; telemetry/[T]/<device> and
// event/[T]/<device> for a gateway; command_response/[T]/<device>/<req-id>
// for a response), and receives commands on a receiver link whose
// source is "command" or command/[T]/<device>. These functions map the
// AMQP addresses onto the MQTT topics and filters that mean the same, so
// that gateways, properties and request ids are exactly the MQTT
// device path's (Upstream, Subscribe).

// ErrUnknownEndpoint: the address of a device's AMQP message or link is
// not one of Hono's device endpoints (Hono's AMQP adapter: 404,
// amqp:not-found). It wraps ErrMalformed.
var ErrUnknownEndpoint = fmt.Errorf("%w: not a Hono device endpoint", ErrMalformed)

// AMQPRequest is a message a device sent on the AMQP adapter.
type AMQPRequest struct {
	// Address is the link's target, or the message's to on the
	// anonymous terminus (orig_address).
	Address string
	// Settled: the transfer was pre-settled (at most once, QoS 0).
	Settled bool
	// Payload is the body: one data section, or an amqp-value string or
	// binary.
	Payload     []byte
	ContentType string
	// CorrelationID and Status (the application property "status", any
	// integer type) of a command response.
	CorrelationID any
	Status        any
	// TTL is the header's ttl; an event's TTL (at least one second, as
	// Hono).
	TTL time.Duration
}

// UpstreamAMQP resolves a device's AMQP message like Upstream does an
// MQTT publish: orig_adapter hono-amqp, orig_address the address, qos 0
// for a pre-settled transfer and 1 otherwise. Errors wrap ErrMalformed
// (ErrUnknownEndpoint for an address that is no Hono endpoint),
// ErrNotAuthorized or ErrUnknownDevice.
//
// Hono's AMQP adapter accepts events unsettled only (a pre-settled one is
// refused with ErrMalformed; its transfer has no outcome to carry that,
// so it is dropped), and responses either way.
func (s *Service) UpstreamAMQP(ctx context.Context, p *auth.Principal, req AMQPRequest) (*Upstream, error) {
	topic, kind, err := AMQPTopic(req.Address, req.Status)
	if err != nil {
		return nil, err
	}
	switch {
	case kind == KindEvent && req.Settled:
		return nil, fmt.Errorf("%w: events are sent unsettled (at least once)", ErrMalformed)
	case kind == KindCommandResponse && req.CorrelationID == nil:
		return nil, fmt.Errorf("%w: a command response needs the command's correlation-id", ErrMalformed)
	case kind != KindCommandResponse && req.ContentType == ContentTypeEmpty && len(req.Payload) > 0:
		return nil, fmt.Errorf("%w: an empty notification has no body", ErrMalformed)
	}
	qos := byte(1)
	if req.Settled {
		qos = 0
	}
	var ttl time.Duration
	if kind == KindEvent && req.TTL > 0 {
		// Hono's AMQP adapter: an event's ttl, at least a second
		// (telemetry's is not taken); the tenant's max-ttl caps it.
		ttl = max(req.TTL, time.Second)
	}
	return s.Upstream(ctx, p, UpstreamRequest{
		Adapter: auth.AdapterAMQP, Topic: topic, QoS: qos, Payload: req.Payload, ContentType: req.ContentType, TTL: ttl,
	})
}

// AMQPTopic maps the address of a device's AMQP message onto the MQTT
// topic naming the same endpoint, which Upstream resolves:
//
//	telemetry, t, event, e                        the same
//	telemetry/[T]/<device>, t/…, event/…, e/…     the same (gateways)
//	command_response/[T]/<device>/<req-id>        command/[T]/<device>/res/<req-id>/<status>
//
// status is the response's "status" application property. An address
// with a '?' is refused: it would read as an MQTT property bag, which
// AMQP messages do not have.
func AMQPTopic(addr string, status any) (string, Kind, error) {
	if addr == "" {
		return "", 0, fmt.Errorf("%w: the message's to is required", ErrMalformed)
	}
	if strings.ContainsAny(addr, "?#+\x00") {
		return "", 0, fmt.Errorf("%w: %q", ErrMalformed, addr)
	}
	lv := strings.Split(addr, "/")
	switch lv[0] {
	case "telemetry", "t", "event", "e":
		if len(lv) != 1 && len(lv) != 3 {
			return "", 0, fmt.Errorf("%w: %q: expected %s or %s/[tenant]/<device>", ErrMalformed, addr, lv[0], lv[0])
		}
		k := KindTelemetry
		if lv[0] == "event" || lv[0] == "e" {
			k = KindEvent
		}
		return addr, k, nil
	case CommandResponse:
		if len(lv) != 4 || lv[2] == "" || lv[3] == "" {
			return "", 0, fmt.Errorf("%w: %q: a response goes to the command's reply-to, %s/[tenant]/<device>/<request-id>", ErrMalformed, addr, CommandResponse)
		}
		st, ok := statusCode(status)
		if !ok {
			return "", 0, fmt.Errorf("%w: a command response needs the application property status (an HTTP status code)", ErrMalformed)
		}
		return Command + "/" + lv[1] + "/" + lv[2] + "/res/" + lv[3] + "/" + strconv.Itoa(st), KindCommandResponse, nil
	}
	return "", 0, fmt.Errorf("%w: %q", ErrUnknownEndpoint, addr)
}

// statusCode reads a response's status: an integer of any AMQP width
// (Hono sends int) within 200–599.
func statusCode(v any) (int, bool) {
	var n int64
	switch v := v.(type) {
	case int8:
		n = int64(v)
	case int16:
		n = int64(v)
	case int32:
		n = int64(v)
	case int64:
		n = v
	case uint8:
		n = int64(v)
	case uint16:
		n = int64(v)
	case uint32:
		n = int64(v)
	case uint64:
		if v > math.MaxInt32 {
			return 0, false
		}
		n = int64(v)
	default:
		return 0, false
	}
	return int(n), n >= 200 && n <= 599
}

// CommandSourceFilter maps a device's command receiver source onto the
// MQTT filter that means the same (Subscribe resolves it):
//
//	command                   command//+/req/#: the device's own commands and, for
//	                          a gateway, those of every device it serves
//	command/[T]/<device>      command/[T]/<device>/req/#: one device (a gateway's)
//
// Other addresses are ErrUnknownEndpoint; a malformed command source
// ErrMalformed.
func CommandSourceFilter(src string) (string, error) {
	if src == Command {
		return Command + "//+/req/#", nil
	}
	rest, ok := strings.CutPrefix(src, Command+"/")
	if !ok {
		return "", fmt.Errorf("%w: %q", ErrUnknownEndpoint, src)
	}
	tn, dev, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(dev, "/") || !ValidDeviceID(dev) {
		return "", fmt.Errorf("%w: %q: the command source is %s or %s/[tenant]/<device-id>", ErrMalformed, src, Command, Command)
	}
	if err := checkTenantDevice(tn, dev, false); err != nil {
		return "", fmt.Errorf("%w: %q: %v", ErrMalformed, src, err)
	}
	return Command + "/" + tn + "/" + dev + "/req/#", nil
}

// Target is the device whose commands the subscription is for: the
// device it names, else the subscriber (also for a gateway's "+", whose
// own commands come too).
func (cs *CommandSubscription) Target() string {
	if cs.Device == "" || cs.Device == "+" {
		return cs.Self
	}
	return cs.Device
}

// AMQPCommand shapes a command delivered on one of the subscription's
// addresses for an AMQP device, as Hono's AMQP adapter forwards it: to
// command/T/<device>, subject the command name, for request/response
// commands correlation-id and reply-to
// command_response/T/<device>/<req-id> (req-id as for MQTT: it carries
// the application's correlation id and reply id, so that the response
// is routed by any node without state), the body and content type, and
// the application property device_id when the command is for a device
// other than the subscriber (a gateway's). ok is false for a message
// that is not a well-formed command (it is then rejected).
func (cs *CommandSubscription) AMQPCommand(m *message.Message) (*message.Message, bool) {
	fam, tn, dev, ok := Northbound(m.To)
	if !ok || fam != Command || tn != cs.Tenant || dev == "" || !ValidDeviceID(dev) || !ValidCommandName(m.Subject) {
		return nil, false
	}
	out := &message.Message{
		To: DeviceAddress(cs.Tenant, dev), Subject: m.Subject, ContentType: m.ContentType,
		ContentEncoding: m.ContentEncoding, CreationTime: m.CreationTime, Durable: m.Durable,
		Body: m.Body, BodyKind: m.BodyKind, Expiry: m.Expiry,
	}
	if m.ReplyTo != "" {
		rfam, rtn, replyID, ok := Northbound(m.ReplyTo)
		if !ok || rfam != CommandResponse || rtn != cs.Tenant {
			return nil, false
		}
		corr := m.CorrelationID
		if corr == nil {
			corr = m.MessageID
		}
		reqID, err := EncodeReqID(corr, replyID)
		if err != nil {
			return nil, false
		}
		out.CorrelationID = corr
		out.ReplyTo = CommandResponse + "/" + cs.Tenant + "/" + dev + "/" + reqID
	}
	if dev != cs.Self {
		out.Properties = map[string]any{PropDeviceID: dev}
	}
	return out, true
}

// IsRefusal reports whether err is the device's fault (Hono: a client
// error, rejected) rather than the server's (released).
func IsRefusal(err error) bool {
	return errors.Is(err, ErrMalformed) || errors.Is(err, ErrNotAuthorized) || errors.Is(err, ErrUnknownDevice)
}
