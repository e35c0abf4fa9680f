package mqtt

import (
	"context"
	"errors"
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

// deviceUpstream resolves a device's PUBLISH, or the reason to refuse it.
func (c *conn) deviceUpstream(topic string, qos byte, pk *packets.Packet) (*hono.Upstream, *ReasonError) {
	h := c.s.cfg.Hono
	if h == nil {
		return nil, reason(rcNotAuthorized, "not authorized", nil)
	}
	if qos > 1 {
		return nil, reason(rcQoSNotSupported, "Hono devices publish with QoS 0 or 1", nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), honoTimeout)
	defer cancel()
	up, err := h.Upstream(ctx, c.principal, hono.UpstreamRequest{
		Adapter: auth.AdapterMQTT, Topic: topic, QoS: qos, Payload: pk.Payload,
		ContentType: pk.Properties.ContentType,
	})
	if err != nil {
		return nil, honoReason(err, rcTopicNameInvalid)
	}
	if up.Kind == hono.KindEvent && qos == 0 {
		return nil, reason(rcQoSNotSupported, "events are published with QoS 1", nil)
	}
	return up, nil
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
	cs, err := h.Subscribe(ctx, c.principal, sub.Filter)
	if err != nil {
		if errors.Is(err, hono.ErrMalformed) {
			// Not a command filter at all (error/…/# is not built yet): 0x87,
			// as for any topic a device may not use.
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
		h.Notify(ctx, cs.Tenant, c.principal.Device, auth.AdapterMQTT, -1)
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
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), honoTimeout)
				defer cancel()
				h.Notify(ctx, c.tenant, c.principal.Device, auth.AdapterMQTT, 0)
			}()
			return
		}
	}
}
