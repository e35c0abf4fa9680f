package mqtt

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/router"
)

// Devices (auth.Principal.Device set) get Hono's MQTT adapter topics
// instead of the broker's topic space (docs/mqtt.md, "Devices"):
// publishes to telemetry/t, event/e and command///res/… become messages
// on the tenant's telemetry/T, event/T and command_response/T/<reply-id>
// (package hono builds them), and command subscriptions consume the
// device's command/T/<device> anycast address. Wills, retained messages
// and session state do not apply to devices (Hono's adapter has none).

// honoTimeout bounds the registry lookups of a device's publish or
// subscribe (gateways).
const honoTimeout = 10 * time.Second

// deviceUpstream resolves a device's PUBLISH, or the reason to refuse it
// and the HTTP status Hono reports for it.
func (c *conn) deviceUpstream(topic string, qos byte, pk *packets.Packet) (*hono.Upstream, *ReasonError, int) {
	h := c.s.cfg.Hono
	if h == nil {
		return nil, reason(rcNotAuthorized, "not authorized", nil), 403
	}
	if qos > 1 {
		return nil, reason(rcQoSNotSupported, "Hono devices publish with QoS 0 or 1", nil), 400
	}
	ctx, cancel := context.WithTimeout(context.Background(), honoTimeout)
	defer cancel()
	up, err := h.Upstream(ctx, c.principal, hono.UpstreamRequest{
		Adapter: auth.AdapterMQTT, Topic: topic, QoS: qos, Payload: pk.Payload,
		ContentType: pk.Properties.ContentType,
	})
	if err != nil {
		return nil, honoReason(err, rcTopicNameInvalid), hono.Status(err)
	}
	if up.Kind == hono.KindEvent && qos == 0 {
		return nil, reason(rcQoSNotSupported, "events are published with QoS 1", nil), 400
	}
	if pk.FixedHeader.Retain && up.Kind != hono.KindCommandResponse {
		// Hono retains nothing but tells the application: the
		// x-opt-retain annotation on telemetry and events.
		if err := hono.MarkRetain(up.Message); err != nil {
			return nil, reason(rcUnspecified, err.Error(), err), 500
		}
	}
	return up, nil, 0
}

// deviceErr is what an error message about a device's publish needs,
// taken from the PUBLISH before it is routed (the packet is not kept).
type deviceErr struct {
	kind   hono.Kind
	device string // the device the publish was for
	corr   string // the bag's correlation-id, else the packet id, else "-1"
	mode   string // the bag's on-error: "disconnect", "ignore", "skip-ack", else "" (default)
	tenant string // the tenant level of the topic, if any
}

// Hono's on-error values (MQTT adapter user guide, "Error Handling").
const (
	onErrorDisconnect = "disconnect"
	onErrorIgnore     = "ignore"
	onErrorSkipAck    = "skip-ack"
)

// errAction is what becomes of a device's failed publish.
type errAction int

const (
	// actDefault: the failure takes its course (MQTT 5: the PUBACK's
	// reason code; 3.1.1: the connection is closed; QoS 0 telemetry
	// nobody consumes is dropped).
	actDefault errAction = iota
	actAck               // PUBACK 0x00: the error is ignored
	actSkip              // no PUBACK: the error is ignored
	actClose             // the connection is closed (MQTT 5: DISCONNECT with the code)
)

// disconnectCode is the DISCONNECT reason code for a publish refused
// with rc: a PUBACK's 0x10 (no matching subscribers) is no reason to
// disconnect in MQTT 5, so it becomes 0x80 (unspecified error).
func disconnectCode(rc byte) byte {
	if rc < 0x80 {
		return rcUnspecified
	}
	return rc
}

// deviceFailure reports a failed publish on the device's error topic, if
// it subscribed to one, and decides by the publish's on-error what
// becomes of it (Hono's table): disconnect closes the connection, ignore
// acknowledges it, skip-ack leaves it unacknowledged; default (or none,
// or another value) acknowledges it once reported on the error topic,
// else takes its course.
func (c *conn) deviceFailure(de deviceErr, status int, text string) errAction {
	reported := c.deviceError(de, status, text)
	switch de.mode {
	case onErrorDisconnect:
		return actClose
	case onErrorIgnore:
		return actAck
	case onErrorSkipAck:
		return actSkip
	}
	if reported {
		return actAck
	}
	return actDefault
}

func (c *conn) deviceErrContext(topic string, qos byte, id uint16) deviceErr {
	de := deviceErr{kind: hono.KindTelemetry, device: c.principal.Device, corr: "-1"}
	if qos > 0 {
		de.corr = strconv.Itoa(int(id))
	}
	if pt, err := hono.ParsePublish(topic); err == nil {
		de.kind, de.tenant = pt.Kind, pt.Tenant
		if pt.Device != "" {
			de.device = pt.Device
		}
	} else if strings.HasPrefix(topic, "e") {
		de.kind = hono.KindEvent
	}
	// The bag counts even on a topic that is not Hono's.
	if _, bag, err := hono.SplitBag(topic); err == nil {
		switch m := bag.Get("on-error"); m {
		case onErrorDisconnect, onErrorIgnore, onErrorSkipAck:
			de.mode = m
		}
		if v := bag.Get("correlation-id"); v != "" {
			de.corr = v
		}
	}
	return de
}

// deviceError sends Hono's error message for a failed publish to the
// device, if it subscribed to its error topic; false if it did not (the
// failure then takes its course: PUBACK code or closed connection).
// Safe on any goroutine (router callbacks).
func (c *conn) deviceError(de deviceErr, status int, text string) bool {
	var ef *hono.ErrorFilter
	c.mu.Lock()
	for _, s := range c.subs {
		if s.errf != nil {
			ef = s.errf
			break
		}
	}
	gone := c.gone
	c.mu.Unlock()
	if ef == nil || gone {
		return false
	}
	topic, ok := ef.ErrorTopic(c.tenant(), c.principal.Device, de.device, de.kind, de.corr, status)
	if ok && hono.IsUnauthenticated(c.principal) && de.tenant != ef.Tenant {
		ok = false // about another tenant's device
	}
	if !ok {
		return false
	}
	b, ok := appendPublish(nil, c.version, 0, false, false, topic, 0, hono.ErrorPayload(status, text, de.corr, time.Now()))
	if ok {
		c.enqueue(b, true, nil)
	}
	return true
}

// deviceStatus is Hono's status for a publish outcome.
func deviceStatus(o router.Outcome, err error) int {
	switch {
	case err != nil:
		return hono.Status(err)
	case o.Kind == router.Rejected:
		return 400
	}
	return 503 // released or modified: the application did not take it
}

func outcomeText(o router.Outcome, err error) string {
	_, text := publishReason(o, err)
	return text
}

// honoReason maps a hono error onto a reason code; invalid is the code
// for a malformed topic or filter.
func honoReason(err error, invalid byte) *ReasonError {
	switch {
	case errors.Is(err, hono.ErrMalformed):
		return reason(invalid, err.Error(), err)
	case errors.Is(err, hono.ErrNotAuthorized), errors.Is(err, hono.ErrUnknownDevice):
		return reason(rcNotAuthorized, err.Error(), err)
	}
	return reason(rcUnspecified, err.Error(), err)
}

// subscribeDevice attaches a device's command subscription: a consumer of
// command/T/<device> (and, for a gateway's "+", of the address its
// devices' commands come to through it). Anything else a device
// subscribes to is refused: 0x87, or 0x8F for a malformed command filter.
func (c *conn) subscribeDevice(ctx context.Context, sub *subscription) (byte, error) {
	h := c.s.cfg.Hono
	if h == nil {
		return 0, reason(rcNotAuthorized, "not authorized", nil)
	}
	if ef, err := hono.ParseErrorFilter(sub.Filter); err == nil {
		// Hono's error topic (QoS 0): failed publishes are reported here
		// (deviceError) instead of closing the connection.
		if hono.IsUnauthenticated(c.principal) {
			// error/T/<device>/# only: the tenant waives
			// authentication, the device is registered.
			if err := h.CheckUnauthenticated(ctx, c.principal, auth.AdapterMQTT, ef.Tenant, ef.Device); err != nil {
				return 0, honoReason(err, rcTopicFilterInvalid)
			}
		} else if (ef.Tenant != "" && ef.Tenant != "+" && ef.Tenant != c.tenant()) ||
			(ef.Device != "" && ef.Device != "+" && ef.Device != c.principal.Device && h.AuthorizeGateway(ctx, c.tenant(), c.principal.Device, ef.Device) != nil) {
			return 0, reason(rcNotAuthorized, "not authorized", nil)
		}
		sub.topic, sub.errf, sub.QoS = sub.Filter, &ef, 0
		return 0, nil
	}
	cs, err := h.Subscribe(ctx, c.principal, sub.Filter)
	if err != nil {
		if errors.Is(err, hono.ErrMalformed) {
			// Neither a command nor an error filter: 0x87, as for any
			// topic a device may not use.
			return 0, reason(rcNotAuthorized, err.Error(), err)
		}
		return 0, honoReason(err, rcTopicFilterInvalid)
	}
	sub.topic, sub.cmd = sub.Filter, cs
	sub.QoS = min(sub.QoS, 1)
	for _, a := range cs.Addresses {
		// Commands are anycast: not stored, half the window returned at
		// a time.
		ref := &consumerRef{c: c, sub: sub, window: liveWindow / 4}
		rc, err := c.s.r.Consume(ctx, cs.Tenant, a, router.ConsumeOptions{}, ref.deliver)
		if err != nil {
			c.closeRefs(sub)
			rc, text := publishReason(router.Outcome{}, err)
			return 0, reason(rc, text, err)
		}
		ref.rc = rc
		sub.refs = append(sub.refs, ref)
	}
	for _, ref := range sub.refs {
		ref.rc.AddCredit(ref.window)
	}
	// Hono's empty notification: the device is ready for commands until
	// further notice (ttd -1).
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), honoTimeout)
		defer cancel()
		h.Notify(ctx, cs.Tenant, cs.Self, auth.AdapterMQTT, -1)
	}()
	return sub.QoS, nil
}

// commandsGone sends the ttd 0 notification once a device has no
// command subscription left (unsubscribed, or disconnected).
func (c *conn) commandsGone(subs ...*subscription) {
	h := c.s.cfg.Hono
	if h == nil || !c.principal.IsDevice() {
		return
	}
	for _, s := range subs {
		if s != nil && s.cmd != nil {
			cs := s.cmd
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), honoTimeout)
				defer cancel()
				h.Notify(ctx, cs.Tenant, cs.Self, auth.AdapterMQTT, 0)
			}()
			return
		}
	}
}

// deviceConnected reports a device's new connection (Hono's connection
// event, when its tenant turned them on) before CONNACK, so that the
// event precedes anything the device does on the connection (its empty
// notifications, its messages). The remote-id is the client identifier,
// as in Hono's MQTT adapter.
func (c *conn) deviceConnected() {
	h := c.s.cfg.Hono
	if h == nil || c.principal == nil || !c.principal.IsDevice() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), honoTimeout)
	defer cancel()
	h.ConnectionEvent(ctx, c.principal, auth.AdapterMQTT, c.clientID, true)
}

// deviceGone reports the end of a device's connection, in the
// background and in Hono's order: the ttd 0 notification if it had a
// command subscription, then the disconnected connection event.
func (c *conn) deviceGone(subs []*subscription) {
	h := c.s.cfg.Hono
	if h == nil || c.principal == nil || !c.principal.IsDevice() {
		return
	}
	var cmd *hono.CommandSubscription
	for _, s := range subs {
		if s != nil && s.cmd != nil {
			cmd = s.cmd
			break
		}
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), honoTimeout)
		defer cancel()
		if cmd != nil {
			h.Notify(ctx, cmd.Tenant, cmd.Self, auth.AdapterMQTT, 0)
		}
		h.ConnectionEvent(ctx, c.principal, auth.AdapterMQTT, c.clientID, false)
	}()
}

// unauthenticatedDevices is the principal of a device connection
// without credentials (hono.Unauthenticated), bound to the one tenant
// whose hono-mqtt adapter entry has "device-authentication-required":
// false (docs/hono.md, "Unauthenticated devices"); nil if no tenant, or
// several, waive authentication (the connection could not be told which
// one's: its client id, limits and metrics are a tenant's), and the
// connection is refused as any anonymous one.
func (s *Server) unauthenticatedDevices() *auth.Principal {
	if s.cfg.Hono == nil || s.cfg.Store == nil {
		return nil
	}
	name, n := "", 0
	for _, t := range s.cfg.Store.Tenants() {
		if hono.AllowsUnauthenticated(t, auth.AdapterMQTT) {
			name, n = t.Name, n+1
		}
	}
	if n != 1 {
		return nil
	}
	return hono.Unauthenticated(name)
}
