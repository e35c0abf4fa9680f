package amqp

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/router"
)

// Hono's AMQP device adapter (docs/hono.md, "Device side (AMQP)"). A
// connection whose principal is a device (auth.Principal.Device) gets
// Hono's device links instead of addresses:
//
//   - links on which the device sends: the anonymous terminus (null
//     target, each message's to naming the endpoint: telemetry, t,
//     event, e, telemetry/[T]/<device> and event/[T]/<device> for a
//     gateway, command_response/[T]/<device>/<req-id>), or the fixed
//     targets telemetry, t, event, e. package hono resolves each message
//     (gateways, Hono's properties) and the router publishes it; a
//     pre-settled transfer is QoS 0 (events: dropped, as Hono), an
//     unsettled one QoS 1, settled with the router's outcome (accepted
//     once an application accepted telemetry or the event is stored,
//     released when nobody consumes, rejected with Hono's conditions for
//     the device's errors);
//   - links on which the device receives commands: source "command"
//     (its own commands and, for a gateway, those of all its devices)
//     or command/[T]/<device> (a gateway's for one device). They consume
//     the device's anycast command address(es); each command is shaped as
//     Hono's adapter forwards it (hono.CommandSubscription.AMQPCommand)
//     and the device's outcome goes back to the application.
//
// Everything else is refused (amqp:unauthorized-access for addresses a
// device may not use, hono:bad-request for malformed Hono addresses).
// All of it runs on the connection loop, like the other links; the only
// blocking calls are the registry lookups of gateways (deviceTimeout).

// Devices is what the device adapter needs of the Hono layer
// (*hono.Service). The server finds it in Config.Commands, which app sets
// to the service; without it devices are refused every link.
type Devices interface {
	UpstreamAMQP(ctx context.Context, p *auth.Principal, req hono.AMQPRequest) (*hono.Upstream, error)
	SubscribeAMQP(ctx context.Context, p *auth.Principal, filter string) (*hono.CommandSubscription, error)
	Notify(ctx context.Context, tenantName, device, adapter string, ttd int32)
}

// condBadRequest is Hono's condition for a malformed message or address.
const condBadRequest encoding.Symbol = "hono:bad-request"

// deviceTimeout bounds the registry lookups of a device's message or
// link (gateways) and the empty notifications.
const deviceTimeout = 10 * time.Second

// deviceLink is the Hono state of a device's link (link.dev).
type deviceLink struct {
	// target is the fixed target of a link the device sends on
	// (telemetry, t, event, e), "" for the anonymous terminus.
	target string

	// Command links: the subscription, and for source "command" a second
	// consumer, of command/T/<self>/gateway, where commands for the
	// devices the gateway serves arrive (hono.Service.ViaGateway). Its
	// credit follows the link's like the first consumer's (topUpDevice);
	// a delivery beyond the link credit is released (deviceDelivery).
	cs       *hono.CommandSubscription
	gw       *router.Consumer
	gwAddr   string
	gwCredit int
	// notified is the device whose ttd -1 notification was sent: ttd 0
	// follows when the link ends.
	notified string
}

func (c *conn) devices() Devices {
	d, _ := c.s.cfg.Commands.(Devices)
	return d
}

// attachDeviceReceiver attaches a link on which a device sends.
func (l *link) attachDeviceReceiver(a *frames.Attach) {
	c := l.s.c
	t := a.Target
	switch {
	case t == nil && a.Coordinator != nil:
		l.refuse(a, &encoding.Error{Condition: frames.CondNotImplemented, Description: "transactions are not supported"})
		return
	case t == nil:
		l.refuse(a, &encoding.Error{Condition: frames.CondInvalidField, Description: "attach without target"})
		return
	case t.Dynamic:
		l.refuse(a, errDeviceDynamic)
		return
	case c.devices() == nil:
		l.refuse(a, &encoding.Error{Condition: frames.CondUnauthorizedAccess, Description: "no device adapter"})
		return
	}
	switch t.Address {
	case "", "telemetry", "t", "event", "e":
	default:
		l.refuse(a, &encoding.Error{Condition: frames.CondUnauthorizedAccess,
			Description: "a device sends on the anonymous terminus (to = telemetry, event, command_response/…) or to telemetry, t, event, e; not to " + t.Address})
		return
	}
	l.dev = &deviceLink{target: t.Address}
	l.addr = t.Address
	l.tenant = c.principal.Tenant
	l.relay = map[string]*router.Producer{}
	l.count = a.InitialDeliveryCount
	l.limit = l.count
	// The adapter settles first, whatever the device asked for (Hono:
	// rcv-settle-mode first only); the attach says so.
	l.rcvSecond = false
	l.s.write(&frames.Attach{
		Name: a.Name, Handle: l.handle, Role: frames.RoleReceiver,
		SndSettleMode: a.SndSettleMode, RcvSettleMode: frames.ReceiverSettleFirst,
		Source: a.Source, Target: t,
		Unsettled:      unsettledReply(a),
		MaxMessageSize: l.maxMsg,
	}, nil)
	// Credit regardless of consumers: Hono's adapter takes telemetry
	// without a consumer and releases it (QoS 1) or drops it (QoS 0).
	l.refill()
}

// publishDevice resolves and publishes a device's message; its outcome
// comes back as an event, as for any published message.
func (l *link) publishDevice(id uint32, settled bool, am *encoding.Message) {
	c := l.s.c
	addr := l.dev.target
	if addr == "" && am.Properties != nil {
		addr = am.Properties.To
	}
	payload, ok := devicePayload(am)
	if !ok {
		l.refuseDevice(id, settled, addr, &encoding.Error{Condition: condBadRequest,
			Description: "the body must be one data section or an amqp-value string or binary"})
		return
	}
	req := hono.AMQPRequest{Address: addr, Settled: settled, Payload: payload}
	if p := am.Properties; p != nil {
		req.ContentType = string(p.ContentType)
		req.CorrelationID = idFromAMQP(p.CorrelationID)
	}
	if h := am.Header; h != nil && h.TTL > 0 {
		req.TTL = time.Duration(h.TTL) * time.Millisecond
	}
	for _, p := range am.ApplicationProperties {
		if p.Key == hono.PropStatus {
			req.Status = p.Value
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	up, err := c.devices().UpstreamAMQP(ctx, c.principal, req)
	cancel()
	if err != nil && !hono.IsRefusal(err) {
		// The server's problem (the registry): released, as Hono does,
		// so that the device may send it again.
		c.log.Debug("device message not resolved", "device", c.principal.Device, "address", addr, "err", err)
		l.settleIn(id, settled, &encoding.Released{})
		return
	}
	if err != nil {
		l.refuseDevice(id, settled, addr, deviceError(err))
		return
	}
	p := l.relay[up.Address]
	if p == nil {
		ctx, cancel := ctxTimeout()
		p, err = c.s.cfg.Router.Producer(ctx, up.Tenant, up.Address)
		cancel()
		if err != nil {
			l.settleIn(id, settled, stateOf(router.Outcome{}, err))
			return
		}
		if len(l.relay) >= 64 {
			clear(l.relay)
		}
		p.SetConn(&c.rate) // maxMessagesInPerSecondPerConnection, as MQTT's
		l.relay[up.Address] = p
	}
	size := len(payload)
	l.inflight++
	c.inflight++
	c.inBytes += size
	p.Publish(up.Message, func(o router.Outcome, err error) {
		c.ev.push(event{kind: evOutcome, l: l, id: id, settled: settled, size: size, o: o, err: err})
	})
}

// refuseDevice settles a device's message that is not published: rejected
// with e, or, pre-settled, dropped (logged).
func (l *link) refuseDevice(id uint32, settled bool, addr string, e *encoding.Error) {
	c := l.s.c
	if settled {
		c.log.Debug("pre-settled device message dropped", "device", c.principal.Device, "address", addr,
			"condition", e.Condition, "description", e.Description)
	}
	c.s.m.errors.WithLabelValues("delivery", string(e.Condition)).Inc()
	l.settleIn(id, settled, &encoding.Rejected{Error: e})
}

// devicePayload is a device message's payload (Hono's adapter: one data
// section, or an amqp-value string or binary; no body: empty).
func devicePayload(am *encoding.Message) ([]byte, bool) {
	switch am.Body {
	case encoding.BodyNone:
		return nil, true
	case encoding.BodyData:
		if len(am.Data) == 1 {
			return am.Data[0], true
		}
		return slices.Concat(am.Data...), true
	case encoding.BodyValue:
		switch v := am.Value.(type) {
		case string:
			return []byte(v), true
		case []byte:
			return v, true
		}
	}
	return nil, false
}

// deviceError maps a Hono error onto the rejection Hono's AMQP adapter
// sends: hono:bad-request for a malformed message, amqp:not-found for an
// address that is no endpoint, amqp:unauthorized-access for a device
// that may not send it (another tenant, not a gateway of the device).
// Other errors (the registry) are the server's: released.
func deviceError(err error) *encoding.Error {
	cond := frames.CondInternalError
	switch {
	case errors.Is(err, hono.ErrUnknownEndpoint):
		cond = frames.CondNotFound
	case errors.Is(err, hono.ErrMalformed):
		cond = condBadRequest
	case errors.Is(err, hono.ErrNotAuthorized), errors.Is(err, hono.ErrUnknownDevice):
		cond = frames.CondUnauthorizedAccess
	}
	return &encoding.Error{Condition: cond, Description: err.Error()}
}

// attachDeviceSender attaches a link on which a device receives commands.
func (l *link) attachDeviceSender(a *frames.Attach) {
	c := l.s.c
	src := a.Source
	devs := c.devices()
	switch {
	case src == nil:
		l.refuse(a, &encoding.Error{Condition: frames.CondInvalidField, Description: "attach without source"})
		return
	case src.Dynamic:
		l.refuse(a, errDeviceDynamic)
		return
	case devs == nil:
		l.refuse(a, &encoding.Error{Condition: frames.CondUnauthorizedAccess, Description: "no device adapter"})
		return
	case a.SndSettleMode == frames.SenderSettleSettled:
		// Hono's adapter delivers commands at least once only.
		l.refuse(a, &encoding.Error{Condition: frames.CondNotImplemented,
			Description: "commands are delivered unsettled (at least once): snd-settle-mode settled is not supported"})
		return
	}
	filter, err := hono.CommandSourceFilter(src.Address)
	if errors.Is(err, hono.ErrUnknownEndpoint) {
		// A device has no ordinary addresses (docs/device-auth.md).
		l.refuse(a, &encoding.Error{Condition: frames.CondUnauthorizedAccess,
			Description: "a device receives commands from command or command/[tenant]/<device-id>; not from " + src.Address})
		return
	}
	if err != nil {
		l.refuse(a, deviceError(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	cs, err := devs.SubscribeAMQP(ctx, c.principal, filter)
	cancel()
	if err != nil {
		l.refuse(a, deviceError(err))
		return
	}
	l.dev = &deviceLink{cs: cs}
	l.sndMode = a.SndSettleMode
	l.peerMaxMsg = a.MaxMessageSize
	l.resumeTags(a.Unsettled)
	l.addr, l.tenant = cs.Addresses[0], cs.Tenant
	deliver := func(d *router.Delivery) { c.ev.push(event{kind: evDelivery, l: l, d: d}) }
	ctx, cancel = ctxTimeout()
	defer cancel()
	cons, err := c.s.cfg.Router.Consume(ctx, l.tenant, l.addr, router.ConsumeOptions{}, deliver)
	if err != nil {
		l.refuse(a, routerError(err))
		return
	}
	l.consumer = cons
	if len(cs.Addresses) > 1 {
		gw, err := c.s.cfg.Router.Consume(ctx, l.tenant, cs.Addresses[1], router.ConsumeOptions{}, deliver)
		if err != nil {
			cons.Close()
			l.consumer = nil
			l.refuse(a, routerError(err))
			return
		}
		l.dev.gw, l.dev.gwAddr = gw, cs.Addresses[1]
	}
	reply := *src
	reply.Filter = nil
	if reply.DefaultOutcome == nil {
		reply.DefaultOutcome = &encoding.Released{}
	}
	l.s.write(&frames.Attach{
		Name: a.Name, Handle: l.handle, Role: frames.RoleSender,
		SndSettleMode: a.SndSettleMode, RcvSettleMode: a.RcvSettleMode,
		Source: &reply, Target: a.Target,
		Unsettled:            unsettledReply(a),
		InitialDeliveryCount: 0, HasInitialDeliveryCount: true,
		MaxMessageSize: l.maxMsg,
	}, nil)
	l.s.senders = append(l.s.senders, l)
	// Hono's empty notification: the device is ready for commands until
	// further notice (ttd -1); ttd 0 when the link ends (closeDevice).
	l.dev.notified = cs.Target()
	tn, dev := cs.Tenant, l.dev.notified
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
		defer cancel()
		devs.Notify(ctx, tn, dev, auth.AdapterAMQP, -1)
	}()
}

// commandSettleTimeout is how long a device may take to settle a command
// before the application is told released (Hono's adapter:
// sendMessageToDeviceTimeout, 1 s by default; longer here, for devices on
// slow links). The device's later outcome is then ignored.
var commandSettleTimeout = 10 * time.Second

// deviceDelivery takes a command from one of a command link's consumers
// and shapes it for the device; false if it is not sent: a malformed
// command is rejected (amqp:invalid-field, as on MQTT), one beyond the
// device's credit (both consumers of "command" hold credit for the
// link's) is released, and the consumer's credit is given back. While
// the device grants no credit at all, the router holds commands for it
// (up to its anycast timeout), where Hono's adapter releases them.
func (l *link) deviceDelivery(d *router.Delivery) bool {
	fromGW := l.dev.gw != nil && d.Address == l.dev.gwAddr
	if fromGW {
		l.dev.gwCredit--
	} else {
		l.routerCredit--
	}
	m, ok := l.dev.cs.AMQPCommand(d.Message)
	switch {
	case !ok:
		d.Settle(router.Outcome{Kind: router.Rejected, Condition: string(frames.CondInvalidField), Description: "malformed command"})
	case int(l.credit) <= l.pending.len() || l.detachSent:
		d.Settle(releasedOutcome)
	default:
		// The delivery is this consumer's own (anycast); its message is
		// replaced, not changed: the application's stays as it was.
		d.Message = m
		time.AfterFunc(commandSettleTimeout, func() { d.Settle(releasedOutcome) })
		return true
	}
	l.topUp()
	return false
}

// topUpDevice gives the gateway consumer of a command link the credit the
// device granted that is not covered yet (topUp does the first
// consumer's).
func (l *link) topUpDevice() {
	if l.dev.gw == nil {
		return
	}
	if need := int(l.credit) - l.dev.gwCredit - l.pending.len(); need > 0 {
		l.dev.gwCredit += need
		l.dev.gw.AddCredit(need)
	}
}

// closeDevice ends a device link's Hono state when the link is torn down
// (detach, end, connection closed): the gateway consumer is closed and
// the ttd 0 notification sent.
func (l *link) closeDevice() {
	if l.dev.gw != nil {
		l.dev.gw.Close()
		l.dev.gw = nil
	}
	if dev := l.dev.notified; dev != "" {
		l.dev.notified = ""
		c := l.s.c
		devs, tn := c.devices(), l.tenant
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
			defer cancel()
			devs.Notify(ctx, tn, dev, auth.AdapterAMQP, 0)
		}()
	}
}

// connectionEvents is implemented by the Hono layer when it reports
// connection events (hono.Service.ConnectionEvent: per tenant, as its
// settings say).
type connectionEvents interface {
	ConnectionEvent(ctx context.Context, p *auth.Principal, adapter, remote string, connected bool)
}

// deviceConnected reports a device's new connection (Hono's connection
// event, remote-id the AMQP container-id) before the server's open is
// sent, as Hono's adapter does, so that the event precedes anything the
// device does on the connection.
func (c *conn) deviceConnected() {
	ce, ok := c.s.cfg.Commands.(connectionEvents)
	if !ok || c.principal == nil || !c.principal.IsDevice() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
	defer cancel()
	ce.ConnectionEvent(ctx, c.principal, auth.AdapterAMQP, c.containerID, true)
}

// deviceGone reports the end of a device's connection, in the background
// and in Hono's order: the ttd 0 notifications of its command links,
// then the disconnected connection event. Called by serve before
// teardown, which then sends no notifications of its own.
func (c *conn) deviceGone() {
	if c.principal == nil || !c.principal.IsDevice() {
		return
	}
	devs := c.devices()
	if devs == nil {
		return
	}
	type gone struct{ tenant, device string }
	var notes []gone
	for _, s := range c.sessions {
		for _, l := range s.links {
			if l.dev != nil && l.dev.notified != "" {
				notes = append(notes, gone{l.tenant, l.dev.notified})
				l.dev.notified = ""
			}
		}
	}
	ce, _ := c.s.cfg.Commands.(connectionEvents)
	p, remote := c.principal, c.containerID
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), deviceTimeout)
		defer cancel()
		for _, n := range notes {
			devs.Notify(ctx, n.tenant, n.device, auth.AdapterAMQP, 0)
		}
		if ce != nil {
			ce.ConnectionEvent(ctx, p, auth.AdapterAMQP, remote, false)
		}
	}()
}
