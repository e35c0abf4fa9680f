package amqp

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// link is one link endpoint, owned by the connection loop. role is the
// server's role: RoleReceiver for links on which clients send (the server
// publishes to the target address), RoleSender for links on which clients
// receive (the server consumes the source address).
type link struct {
	s       *session
	name    string
	handle  uint32 // ours
	rhandle uint32 // the peer's
	role    frames.Role
	addr    string
	// tenant is the tenant whose router the link uses: the connection's,
	// or the one a Hono northbound address names (linkTenant).
	tenant string
	// cmdTenant is set on a Hono application's command sender (target
	// command/T): a relay to command/T/<device> of tenant T.
	cmdTenant string

	detachSent bool // we detached; waiting for the peer's detach
	gone       bool // torn down: router callbacks still queued are ignored
	flowQueued bool
	echo       bool

	// receiving (client → server)
	producer   *router.Producer // nil for the anonymous relay
	relay      map[string]*router.Producer
	rcvSecond  bool   // rcv-settle-mode second
	count      uint32 // delivery-count: transfers received (serial)
	limit      uint32 // count + credit as last announced; never lowered
	announced  uint32 // link-credit in the last flow we sent
	inflight   int    // messages published, outcome pending
	hasCons    bool   // anycast: a consumer exists
	anycast    bool
	stopWatch  func()
	partial    [][]byte // the frames of a multi-frame message being reassembled (they alias read buffers, never reused)
	partialLen int      // their bytes
	inPartial  bool
	maxMsg     uint64 // max-message-size of this link: the tenant's, else the node's
	partialID  uint32
	partialSet bool // partial is pre-settled
	skipping   bool // the rest of an ignored resumed delivery follows
	// Over the message rate (ratehold.go): no credit before holdUntil;
	// while throttle (the refusing rate) is set, less credit.
	holdUntil time.Time
	throttle  float64
	holdTimer bool // a timer will end the hold

	// sending (server → client)
	consumer     *router.Consumer
	pending      deliveryQueue // received from the router, waiting for credit or window
	credit       uint32        // link-credit the peer granted, unused
	sendCount    uint32        // delivery-count
	routerCredit int           // credit given to the router consumer, not yet used
	draining     bool          // a drain is in progress in the router
	drainReq     bool          // the peer asked to drain
	drainEcho    bool          // the next flow answers a drain
	sndMode      frames.SenderSettleMode
	peerMaxMsg   uint64
	tagSeq       uint64
	unsettled    int
	temp         *router.Temp // temporary address to delete on detach
	durable      string       // durable subscription name; deleted when the peer closes the link

	dev *deviceLink // a device's link (Hono's AMQP adapter, device.go); nil otherwise
}

var releasedOutcome = router.Outcome{Kind: router.Released}

// maxMessageSize is the max-message-size of the connection's new links:
// the tenant's maxMessageSize limit if it has one, else the node's
// (Config.MaxMessageSize). Read at attach, so a changed limit applies to
// links attached afterwards. It allows messageOverhead beyond the limit,
// so that a message whose body is as large as the limit, with its
// header, properties and section framing, passes (as MQTT's maximum
// packet size allows room beside the payload).
func (c *conn) maxMessageSize() uint64 {
	if c.principal != nil {
		if t, ok := c.s.cfg.Tenants.Tenant(c.principal.Tenant); ok && t.Effective().MaxMessageSize > 0 {
			return uint64(t.Effective().MaxMessageSize) + messageOverhead
		}
	}
	return c.s.cfg.MaxMessageSize + messageOverhead
}

// messageOverhead is the room a message needs beside its body.
const messageOverhead = 64 << 10

func (l *link) isReceiver() bool { return l.role == frames.RoleReceiver }

// ---- attach

func (s *session) onAttach(a *frames.Attach) error {
	if a.Handle > s.c.s.cfg.HandleMax {
		return sessionErr(s, frames.CondNotAllowed, "handle %d exceeds handle-max %d", a.Handle, s.c.s.cfg.HandleMax)
	}
	if s.links[a.Handle] != nil {
		return sessionErr(s, frames.CondHandleInUse, "handle %d is in use", a.Handle)
	}
	h, ok := s.allocHandle()
	if !ok {
		return sessionErr(s, frames.CondResourceLimitExceeded, "no free handle")
	}
	l := &link{s: s, name: a.Name, handle: h, rhandle: a.Handle, maxMsg: s.c.maxMessageSize()}
	s.links[a.Handle] = l
	s.handles[h] = l
	s.c.nlinks.Add(1) // observe.go
	if a.Role == frames.RoleSender {
		l.role = frames.RoleReceiver
		l.attachReceiver(a)
	} else {
		l.role = frames.RoleSender
		l.attachSender(a)
	}
	return nil
}

// refuse answers an attach with a null terminus and detaches with e
// (part 2.6.3).
func (l *link) refuse(a *frames.Attach, e *encoding.Error) {
	reply := &frames.Attach{Name: a.Name, Handle: l.handle, Role: l.role,
		SndSettleMode: a.SndSettleMode, RcvSettleMode: a.RcvSettleMode}
	if l.isReceiver() {
		reply.Source = a.Source
	} else {
		reply.Target = a.Target
		reply.HasInitialDeliveryCount = true
	}
	l.s.write(reply, nil)
	l.s.c.s.m.errors.WithLabelValues("link", string(e.Condition)).Inc()
	l.s.c.log.Debug("attach refused", "link", l.name, "condition", e.Condition, "description", e.Description)
	l.detachWith(e)
}

// routerError maps a router error onto an AMQP error.
func routerError(err error) *encoding.Error {
	cond := frames.CondInternalError
	switch {
	case errors.Is(err, router.ErrNotFound):
		cond = frames.CondNotFound
	case errors.Is(err, router.ErrInvalid):
		cond = frames.CondInvalidField
	case errors.Is(err, router.ErrLimitExceeded), errors.Is(err, tenant.ErrLimit):
		cond = frames.CondResourceLimitExceeded
	case errors.Is(err, router.ErrClosed):
		cond = frames.CondDetachForced
	}
	return &encoding.Error{Condition: cond, Description: err.Error()}
}

// tempPrefix starts the names of dynamic (temporary) addresses. Any
// connection of the tenant may send to them: their names are unguessable.
const tempPrefix = router.TempPrefix

// linkTenant resolves the tenant of an address and authorizes the
// action on it. A Hono northbound address (telemetry/T, event/T,
// command/T…, command_response/T/…) names its tenant: a Hono application
// commonly serves many tenants on one connection (docs/hono.md). T may
// be the connection's own tenant (then the usual permissions apply), or,
// for the platform administrator only, another IoT-enabled tenant; any
// other principal naming another tenant is refused with
// amqp:unauthorized-access (whether or not T exists, so that nothing is
// learned about other tenants). Every other name is in the connection's
// own tenant.
func (c *conn) linkTenant(name string, action tenant.Action) (string, *encoding.Error) {
	own := c.principal.Tenant
	if _, tn, _, ok := hono.Northbound(name); ok && tn != own {
		if !c.principal.IsAdmin() || c.principal.IsDevice() {
			return "", &encoding.Error{Condition: frames.CondUnauthorizedAccess, Description: "not authorized for " + name}
		}
		if t, ok := c.s.cfg.Tenants.Tenant(tn); !ok || t.IoT == nil {
			return "", &encoding.Error{Condition: frames.CondNotFound, Description: "no IoT-enabled tenant " + tn}
		}
		return tn, nil
	}
	if !c.authorized(name, action) {
		c.s.cfg.Audit.Record(audit.Event{Kind: audit.Denied, Protocol: audit.AMQP, Remote: addrString(c.remote), Tenant: own,
			User: c.principal.User + c.principal.AuthID, Device: c.principal.Device, ClientID: c.containerID,
			Resource: name, Action: string(action), Reason: "no_permission"})
		verb := "send to "
		if action == tenant.ActionReceive {
			verb = "receive from "
		}
		return "", &encoding.Error{Condition: frames.CondUnauthorizedAccess, Description: "not authorized to " + verb + name}
	}
	return own, nil
}

func (c *conn) authorized(name string, action tenant.Action) bool {
	if action == tenant.ActionSend && strings.HasPrefix(name, tempPrefix) && !c.principal.IsDevice() {
		return true
	}
	return auth.Authorize(c.principal, name, action)
}

func (l *link) attachReceiver(a *frames.Attach) {
	c := l.s.c
	if c.principal.IsDevice() {
		l.attachDeviceReceiver(a)
		return
	}
	t := a.Target
	if t == nil {
		if a.Coordinator != nil {
			l.refuse(a, &encoding.Error{Condition: frames.CondNotImplemented, Description: "transactions are not supported"})
			return
		}
		l.refuse(a, &encoding.Error{Condition: frames.CondInvalidField, Description: "attach without target"})
		return
	}
	l.count = a.InitialDeliveryCount
	l.limit = l.count
	l.rcvSecond = a.RcvSettleMode == frames.ReceiverSettleSecond
	reply := *t
	switch {
	case t.Dynamic:
		if c.principal.IsDevice() {
			l.refuse(a, errDeviceDynamic)
			return
		}
		name, err := l.createTemp()
		if err != nil {
			l.refuse(a, routerError(err))
			return
		}
		reply.Address = name
		l.addr = name
	case t.Address == "":
		l.relay = map[string]*router.Producer{}
	default:
		l.addr = t.Address
	}
	l.tenant = c.principal.Tenant
	if l.addr != "" {
		tn, e := c.linkTenant(l.addr, tenant.ActionSend)
		if e != nil {
			l.refuse(a, e)
			return
		}
		l.tenant = tn
		if fam, _, rest, ok := hono.Northbound(l.addr); ok && fam == hono.Command && rest == "" && c.isIoT(tn) {
			// A Hono application's command sender: each message goes to
			// the device its "to" names (command/T/<device>).
			l.cmdTenant = tn
			l.relay = map[string]*router.Producer{}
		} else {
			ctx, cancel := ctxTimeout()
			p, err := c.s.cfg.Router.Producer(ctx, tn, l.addr)
			cancel()
			if err != nil {
				l.refuse(a, routerError(err))
				return
			}
			p.SetConn(&c.rate)
			l.producer = p
		}
	}
	l.s.write(&frames.Attach{
		Name: a.Name, Handle: l.handle, Role: frames.RoleReceiver,
		SndSettleMode: a.SndSettleMode, RcvSettleMode: a.RcvSettleMode,
		Source: a.Source, Target: &reply,
		Unsettled:      unsettledReply(a),
		MaxMessageSize: l.maxMsg,
	}, nil)
	if l.producer != nil && l.producer.Type() == address.Anycast {
		// Credit only while a consumer exists (DESIGN.md 3).
		l.anycast = true
		l.stopWatch = l.producer.WatchConsumers(func(has bool) {
			c.ev.push(event{kind: evConsumers, l: l, has: has})
		})
		return
	}
	l.refill()
}

// errDeviceDynamic refuses a device's dynamic terminus: devices use
// their Hono addresses only (auth.Authorize), temporary ones included.
var errDeviceDynamic = &encoding.Error{Condition: frames.CondUnauthorizedAccess, Description: "not authorized to create a dynamic address"}

func (l *link) createTemp() (string, error) {
	c := l.s.c
	ctx, cancel := ctxTimeout()
	defer cancel()
	l.tenant = c.principal.Tenant
	tmp, err := c.s.cfg.Router.CreateTemp(ctx, c.principal.Tenant)
	if err != nil {
		return "", err
	}
	l.temp = tmp
	return tmp.Name(), nil
}

func (l *link) attachSender(a *frames.Attach) {
	c := l.s.c
	if c.principal.IsDevice() {
		l.attachDeviceSender(a)
		return
	}
	src := a.Source
	if src == nil {
		l.refuse(a, &encoding.Error{Condition: frames.CondInvalidField, Description: "attach without source"})
		return
	}
	l.sndMode = a.SndSettleMode
	l.peerMaxMsg = a.MaxMessageSize
	l.resumeTags(a.Unsettled)
	reply := *src
	reply.Filter = nil
	var opts router.ConsumeOptions
	if src.Dynamic {
		if c.principal.IsDevice() {
			l.refuse(a, errDeviceDynamic)
			return
		}
		name, err := l.createTemp()
		if err != nil {
			l.refuse(a, routerError(err))
			return
		}
		l.addr, reply.Address = name, name
	} else {
		l.addr = src.Address
		if l.addr == "" {
			l.refuse(a, &encoding.Error{Condition: frames.CondInvalidField, Description: "source address required"})
			return
		}
		tn, e := c.linkTenant(l.addr, tenant.ActionReceive)
		if e != nil {
			l.refuse(a, e)
			return
		}
		l.tenant = tn
		if src.Durable != encoding.DurableNone || src.ExpiryPolicy == encoding.ExpiryNever {
			// A durable terminus is a durable subscription, resumed by
			// attaching again with the same container-id and link name.
			opts.Durable = c.containerID + "/" + a.Name
			l.durable = opts.Durable
		}
		if sel, ok := src.Filter.Selector(); ok {
			f, err := compileSelector(sel)
			if err != nil {
				l.refuse(a, &encoding.Error{Condition: frames.CondInvalidField, Description: "selector: " + err.Error()})
				return
			}
			opts.Filter = f
		}
		if seq, ok := src.Filter.StartAtSequence(); ok {
			opts.StartSequence = seq
		}
		if t, ok := src.Filter.StartAtTime(); ok {
			opts.StartTime = t
		}
		for _, f := range src.Filter {
			// Echo the filters in force (part 3.5.3).
			if f.Is(encoding.SelectorFilter, encoding.DescSelectorFilter) || f.Is(encoding.StartAtSequenceFilter, 0) || f.Is(encoding.StartAtTimeFilter, 0) {
				reply.Filter = append(reply.Filter, f)
			}
		}
	}
	if a.IncompleteUnsettled {
		// "On receipt of an incomplete unsettled map a sending endpoint
		// MUST NOT send any new deliveries" (part 2.7.3), and we have no
		// others: no consumer on this attachment. Our (complete, empty)
		// map settles what the peer listed; it detaches and attaches
		// again with the rest, and eventually with a complete map.
		c.log.Debug("incomplete unsettled map: no deliveries until the link is attached again", "link", l.name)
	} else {
		opts.Gone = func() { c.ev.push(event{kind: evGone, l: l}) } // conn.go
		ctx, cancel := ctxTimeout()
		cons, err := c.s.cfg.Router.Consume(ctx, l.tenant, l.addr, opts, func(d *router.Delivery) {
			c.ev.push(event{kind: evDelivery, l: l, d: d})
		})
		cancel()
		if err != nil {
			l.deleteTemp()
			l.refuse(a, routerError(err))
			return
		}
		l.consumer = cons
	}
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
}

// unsettledReply is our unsettled map in answer to the peer's (part
// 2.6.13). The server keeps no unsettled deliveries across attachments:
// outgoing ones were released to the router when the link detached (they
// come again as new deliveries), incoming ones were forgotten once
// settled. So a peer that sends a map (resuming the link) gets an empty,
// complete one: every delivery it lists is settled from our side
// ("deliveries that only the target considers unsettled ... MUST be
// considered settled by the receiver"; a sender resends those only it
// considers unsettled as new deliveries). A plain attach (null map) is
// answered with null, as before.
func unsettledReply(a *frames.Attach) encoding.Map {
	if a.Unsettled == nil {
		return nil
	}
	return encoding.Map{}
}

// resumeTags makes the delivery tags of a resumed sending link start above
// every tag of ours the peer listed as unsettled, so that no new delivery
// carries a tag the peer may still remember (tags are unique among the
// deliveries either end considers unsettled, part 2.6.12).
func (l *link) resumeTags(m encoding.Map) {
	for _, p := range m {
		if tag, ok := p.Key.([]byte); ok && len(tag) == 8 {
			l.tagSeq = max(l.tagSeq, binary.BigEndian.Uint64(tag))
		}
	}
}

// ---- detach

func (s *session) onDetach(d *frames.Detach) error {
	l, err := s.linkFor(d.Handle)
	if err != nil {
		return err
	}
	if d.Error != nil {
		s.c.log.Debug("peer detached with error", "link", l.name, "condition", d.Error.Condition, "description", d.Error.Description)
	}
	if !l.detachSent {
		l.teardown()
		if d.Closed {
			// Closing (not just detaching) a durable link ends its
			// terminus, i.e. the durable subscription (part 2.6.6).
			l.deleteDurable()
		}
		s.write(&frames.Detach{Handle: l.handle, Closed: d.Closed}, nil)
	}
	delete(s.links, l.rhandle)
	delete(s.handles, l.handle)
	s.c.nlinks.Add(-1) // observe.go
	return nil
}

// detachWith detaches (closes) the link with an error; the handles stay
// reserved until the peer's detach arrives.
func (l *link) detachWith(e *encoding.Error) {
	if l.detachSent {
		return
	}
	l.teardown()
	l.detachSent = true
	l.s.write(&frames.Detach{Handle: l.handle, Closed: true, Error: e}, nil)
}

// teardown leaves the router: pending deliveries and unsettled ones go
// back (released), a temporary address is deleted. A durable subscription
// stays; onDetach deletes it when the peer closes the link.
func (l *link) teardown() {
	if l.gone {
		return
	}
	l.gone = true
	s := l.s
	if l.stopWatch != nil {
		l.stopWatch()
	}
	for _, d := range l.pending.take() {
		d.Settle(releasedOutcome)
	}
	if l.consumer != nil {
		l.consumer.Close()
	}
	if l.dev != nil {
		l.closeDevice()
	}
	if s.cur != nil && s.cur.l == l {
		s.cur = nil // the peer will not get the rest; the delivery is released by Close
	}
	if l.unsettled > 0 {
		for id, x := range s.unsettledOut {
			if x == l {
				delete(s.unsettledOut, id)
				delete(s.outDeliveries, id)
			}
		}
	}
	if i := indexOf(s.senders, l); i >= 0 {
		s.senders = append(s.senders[:i], s.senders[i+1:]...)
	}
	l.partial, l.partialLen = nil, 0
	l.deleteTemp()
}

func (l *link) deleteTemp() {
	if l.temp == nil {
		return
	}
	ctx, cancel := ctxTimeout()
	defer cancel()
	if err := l.temp.Delete(ctx); err != nil {
		l.s.c.log.Warn("deleting a temporary address failed", "address", l.temp.Name(), "err", err)
	}
	l.temp = nil
}

func (l *link) deleteDurable() {
	if l.durable == "" {
		return
	}
	c := l.s.c
	ctx, cancel := ctxTimeout()
	defer cancel()
	if err := c.s.cfg.Router.DeleteDurable(ctx, l.tenant, l.addr, l.durable); err != nil {
		c.log.Warn("deleting a durable subscription failed", "address", l.addr, "durable", l.durable, "err", err)
	}
	l.durable = ""
}

func indexOf(ls []*link, l *link) int {
	for i, x := range ls {
		if x == l {
			return i
		}
	}
	return -1
}

// ---- flow

func (l *link) flowFrame() *frames.Flow {
	f := l.s.sessionFlow()
	f.Handle, f.HasHandle = l.handle, true
	if l.isReceiver() {
		f.DeliveryCount, f.HasDeliveryCount = l.count, true
		f.LinkCredit, f.HasLinkCredit = l.announced, true
	} else {
		f.DeliveryCount, f.HasDeliveryCount = l.sendCount, true
		f.LinkCredit, f.HasLinkCredit = l.credit, true
		f.Available, f.HasAvailable = uint32(l.pending.len()), true
		f.Drain = l.drainReq || l.drainEcho
		l.drainEcho = false
	}
	return f
}

func (l *link) onFlow(f *frames.Flow) error {
	if f.Echo {
		l.echo = true
		l.s.queueFlow(l)
	}
	if l.isReceiver() {
		return nil // the peer's view of a link we receive on: nothing to do
	}
	// link-credit(ours) = delivery-count(peer) + link-credit(peer) - delivery-count(ours) (part 2.6.7)
	dc := f.DeliveryCount
	if !f.HasDeliveryCount {
		dc = 0 // our initial delivery-count
	}
	if f.HasLinkCredit {
		c := int64(int32(dc + f.LinkCredit - l.sendCount))
		l.credit = uint32(max(c, 0))
	}
	l.drainReq = f.Drain
	l.topUp()
	l.s.pump()
	if l.drainReq {
		l.startDrain()
	}
	return nil
}

// topUp gives the router consumer the credit the peer granted that is not
// yet covered by router credit or pending deliveries.
func (l *link) topUp() {
	if l.dev != nil {
		l.topUpDevice()
	}
	if l.consumer == nil || l.draining {
		return
	}
	need := int(l.credit) - l.routerCredit - l.pending.len()
	if need > 0 {
		l.routerCredit += need
		l.consumer.AddCredit(need)
	}
}

func (l *link) startDrain() {
	if l.draining {
		return
	}
	if l.consumer == nil || l.credit == 0 || l.routerCredit == 0 {
		// Nothing in the router to drain (or no consumer: an incomplete
		// unsettled map withholds deliveries).
		l.finishDrain()
		return
	}
	l.draining = true
	c := l.s.c
	l.consumer.Drain(func() { c.ev.push(event{kind: evDrained, l: l}) })
}

func (l *link) onDrained() {
	if l.gone {
		return
	}
	l.draining = false
	l.routerCredit = 0
	l.s.pump()
	if l.drainReq {
		l.finishDrain()
	} else {
		l.topUp()
	}
}

// finishDrain uses up the remaining credit (part 2.6.7: drain) and tells
// the peer.
func (l *link) finishDrain() {
	if l.pending.len() > 0 && l.credit > 0 {
		// Still sending (or held by the session's window): the drain
		// covers these, so pump completes it once they are out.
		return
	}
	l.sendCount += l.credit
	l.credit = 0
	l.routerCredit = 0
	l.drainEcho = true
	l.s.queueFlow(l)
	l.drainReq = false
}

// refill grants credit to a client sender: Config.LinkCredit minus the
// messages whose outcome is pending, announced when at least half of it
// was used. No credit while the server shuts down, while an anycast
// address has no consumer, or while the connection holds too many bytes
// of messages being published.
func (l *link) refill() {
	c := l.s.c
	if l.detachSent || l.gone || c.draining || (l.anycast && !l.hasCons) || c.inBytes > maxInflightBytes || l.held() {
		return
	}
	target := l.creditTarget() // ratehold.go
	want := target - int64(l.inflight)
	have := int64(int32(l.limit - l.count))
	if want <= have || (have > 0 && want-have < target/2) {
		return
	}
	l.limit = l.count + uint32(want)
	l.announced = uint32(want)
	l.s.queueFlow(l)
}

// maxInflightBytes bounds the bytes of messages a connection has handed
// to the router without an outcome; past it, credit is not renewed.
const maxInflightBytes = 64 << 20

// withdrawCredit tells the sender to stop (credit 0). Transfers it sent
// before seeing the flow are still accepted: limit is not lowered.
func (l *link) withdrawCredit() {
	if l.announced == 0 && int32(l.limit-l.count) <= 0 {
		return
	}
	l.announced = 0
	l.s.queueFlow(l)
}

func (l *link) onConsumers(has bool) {
	if l.gone {
		return
	}
	l.hasCons = has
	if has {
		l.refill()
	} else {
		l.withdrawCredit()
	}
}

// ---- receiving (client → server)

func (l *link) onTransfer(t *frames.Transfer, payload []byte) error {
	if l.skipping {
		// The rest of an ignored resumed delivery (its later frames may
		// or may not repeat resume=true).
		l.skipping = t.More && !t.Aborted
		return nil
	}
	if t.Resume && !l.inPartial {
		// "The receiver MUST ignore resumed deliveries that are not in
		// its local unsettled map" (part 2.7.5), and ours is always
		// empty (unsettledReply). The sender learns from our map that we
		// hold none of its deliveries and resends those it still wants
		// delivered as new ones (resume=false); acting on the resumed
		// transfer too would store such a message twice. Nothing is
		// published or answered, whatever the transfer's state,
		// settled or aborted flags say, and no link credit is used: a
		// resumed delivery is not a new one (go-amqp never resumes;
		// fe2o3-amqp sends resumed transfers without credit).
		l.skipping = t.More && !t.Aborted
		l.s.c.log.Debug("resumed delivery ignored: not in our unsettled map", "link", l.name, "tag", t.DeliveryTag)
		return nil
	}
	if !l.inPartial {
		if int32(l.limit-l.count) <= 0 {
			return linkErr(l, frames.CondTransferLimitExceeded, "transfer without link credit")
		}
		if !t.HasDeliveryID {
			return sessionErr(l.s, frames.CondInvalidField, "first transfer of a delivery without delivery-id")
		}
		l.count++
		if l.announced > 0 {
			l.announced--
		}
		l.partialID = t.DeliveryID
		l.partialSet = t.Settled
	} else if t.HasDeliveryID && t.DeliveryID != l.partialID {
		return sessionErr(l.s, frames.CondInvalidField, "delivery-id %d while delivery %d is incomplete", t.DeliveryID, l.partialID)
	}
	l.partialSet = l.partialSet || t.Settled
	if t.Aborted {
		l.inPartial, l.partial, l.partialLen = false, nil, 0
		l.refill()
		return nil
	}
	max := l.maxMsg
	if t.More || l.inPartial {
		if uint64(l.partialLen+len(payload)) > max {
			// Part 2.7.3: the receiver detaches with this error; only
			// this link ends, the connection and its other links go on.
			l.partial, l.partialLen, l.inPartial = nil, 0, false
			return linkErr(l, frames.CondMessageSizeExceeded, "message larger than max-message-size %d", max)
		}
		// The frames are kept as they are (they alias read buffers that
		// are never written again) and copied once, into one buffer of
		// the final size, when the last one arrives: appending each
		// frame to a growing buffer copied a 64 MiB message about five
		// times and held up to 2.25 times its size.
		l.partial = append(l.partial, payload)
		l.partialLen += len(payload)
		l.inPartial = t.More
		if t.More {
			return nil
		}
		whole := make([]byte, 0, l.partialLen)
		for _, p := range l.partial {
			whole = append(whole, p...)
		}
		payload, l.partial, l.partialLen = whole, nil, 0
	} else if uint64(len(payload)) > max {
		return linkErr(l, frames.CondMessageSizeExceeded, "message larger than max-message-size %d", max)
	}
	l.publish(l.partialID, l.partialSet, payload)
	return nil
}

// publish hands a complete message to the router; its outcome comes back
// as an event.
func (l *link) publish(id uint32, settled bool, payload []byte) {
	c := l.s.c
	c.s.m.msgsIn.Inc()
	c.ce.In(len(payload))
	am, err := encoding.DecodeMessage(payload)
	if err != nil {
		l.settleIn(id, settled, &encoding.Rejected{Error: &encoding.Error{Condition: frames.CondDecodeError, Description: err.Error()}})
		return
	}
	if l.dev != nil {
		l.publishDevice(id, settled, am)
		return
	}
	m := fromAMQP(am, payload)
	p := l.producer
	device := "" // the target device of a Hono command
	if l.relay != nil {
		if m.To == "" {
			l.settleIn(id, settled, rejectedWith(frames.CondPreconditionFailed, "the anonymous relay needs the message's to"))
			return
		}
		tn := l.cmdTenant
		if tn != "" {
			// Hono's command API: malformed commands are rejected.
			if device, err = hono.CheckCommand(tn, m); err != nil {
				l.settleIn(id, settled, rejectedWith(frames.CondInvalidField, err.Error()))
				return
			}
		} else {
			var e *encoding.Error
			if tn, e = c.linkTenant(m.To, tenant.ActionSend); e != nil {
				l.settleIn(id, settled, &encoding.Rejected{Error: e})
				return
			}
		}
		if p = l.relay[m.To]; p == nil {
			ctx, cancel := ctxTimeout()
			p, err = c.s.cfg.Router.Producer(ctx, tn, m.To)
			cancel()
			if err != nil {
				l.settleIn(id, settled, &encoding.Rejected{Error: routerError(err)})
				return
			}
			if len(l.relay) >= 256 {
				clear(l.relay)
			}
			p.SetConn(&c.rate)
			l.relay[m.To] = p
		}
	}
	size := len(payload)
	l.inflight++
	c.inflight++
	c.inBytes += size
	p.Publish(m, func(o router.Outcome, err error) {
		if device != "" && errors.Is(err, router.ErrNoConsumers) && c.s.cfg.Commands != nil {
			// No subscription of the device's own: its gateways may have
			// one for all their devices. The registry is asked off the
			// router's goroutine.
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
				defer cancel()
				o, err := c.s.cfg.Commands.ViaGateway(ctx, l.cmdTenant, device, m)
				c.ev.push(event{kind: evOutcome, l: l, id: id, settled: settled, size: size, o: o, err: err})
			}()
			return
		}
		c.ev.push(event{kind: evOutcome, l: l, id: id, settled: settled, size: size, o: o, err: err})
	})
}

// commandTimeout bounds a command's way through a gateway: the anycast
// wait for a consumer with credit (30 s by default) and the registry.
const commandTimeout = 35 * time.Second

// isIoT reports whether a tenant is IoT-enabled.
func (c *conn) isIoT(name string) bool {
	t, ok := c.s.cfg.Tenants.Tenant(name)
	return ok && t.IoT != nil
}

func rejectedWith(cond encoding.Symbol, desc string) *encoding.Rejected {
	return &encoding.Rejected{Error: &encoding.Error{Condition: cond, Description: desc}}
}

// settleIn sends the outcome of a received delivery, unless the client
// sent it pre-settled.
func (l *link) settleIn(id uint32, settled bool, st encoding.DeliveryState) {
	if settled || l.detachSent || l.gone {
		l.refill()
		return
	}
	if l.rcvSecond {
		// rcv-settle-mode second: send the outcome unsettled; the sender
		// settles, then we forget it.
		l.s.unsettledIn[id] = struct{}{}
		l.s.queueDispo(id, false, st, frames.RoleReceiver)
	} else {
		l.s.queueDispo(id, true, st, frames.RoleReceiver)
	}
	l.refill()
}

func (l *link) onOutcome(e event) {
	c := l.s.c
	l.inflight--
	c.inflight--
	c.inBytes -= e.size
	if e.err != nil && e.settled {
		c.log.Debug("pre-settled message dropped", "address", l.addr, "err", e.err)
	}
	l.overRate(e.err) // ratehold.go: hold the credit before settleIn refills it
	l.settleIn(e.id, e.settled, stateOf(e.o, e.err))
}

// stateOf maps a publish outcome onto the delivery state sent to the
// client: stored or consumed → accepted; the consumer's own outcome for
// anycast; limits → rejected with amqp:resource-limit-exceeded; no
// consumer or timeout → released.
func stateOf(o router.Outcome, err error) encoding.DeliveryState {
	if err != nil {
		switch {
		case errors.Is(err, router.ErrNoConsumers), errors.Is(err, router.ErrTimeout), errors.Is(err, router.ErrClosed):
			return &encoding.Released{}
		}
		return &encoding.Rejected{Error: routerError(err)}
	}
	switch o.Kind {
	case router.Rejected:
		e := &encoding.Error{Condition: encoding.Symbol(o.Condition), Description: o.Description}
		if e.Condition == "" {
			e.Condition = "amqp:rejected"
		}
		return &encoding.Rejected{Error: e}
	case router.Released:
		return &encoding.Released{}
	case router.Modified:
		return &encoding.Modified{DeliveryFailed: o.DeliveryFailed, UndeliverableHere: o.UndeliverableHere}
	}
	return &encoding.Accepted{}
}

// ---- sending (server → client)

func (l *link) onDelivery(d *router.Delivery) {
	if l.gone {
		d.Settle(releasedOutcome)
		return
	}
	if l.dev == nil {
		l.routerCredit--
	} else if !l.deviceDelivery(d) {
		return // a malformed command, rejected
	}
	l.pending.push(d)
	l.s.pump()
	if l.drainReq && !l.draining {
		l.finishDrain()
	}
}

// send starts the transfer of one delivery (credit and window checked by
// pump).
func (l *link) send(d *router.Delivery) {
	s := l.s
	if s.cur != nil {
		panic("amqp: send while a delivery is in progress")
	}
	buf := s.msgBuf[:0]
	if size := d.Message.Size(); size > largeDelivery || cap(buf) > largeDelivery {
		// A large message gets a buffer of its own size (appending to a
		// small one copied it at every growth), and a large buffer is
		// not kept for the next message.
		buf = make([]byte, 0, size+1024)
	}
	payload, err := appendDelivery(buf, d)
	if err != nil || (l.peerMaxMsg > 0 && uint64(len(payload)) > l.peerMaxMsg) {
		desc := "message larger than the receiver's max-message-size"
		if err != nil {
			desc = err.Error()
		}
		d.Settle(router.Outcome{Kind: router.Rejected, Condition: string(frames.CondMessageSizeExceeded), Description: desc})
		s.msgBuf = payload
		return
	}
	s.msgBuf = payload
	id := s.nextDeliveryID
	s.nextDeliveryID++
	l.credit--
	l.sendCount++
	l.tagSeq++
	settled := l.sndMode == frames.SenderSettleSettled || (l.sndMode == frames.SenderSettleMixed && d.PreSettled())
	// The session sends one delivery at a time and encodes the tag into
	// the first transfer at once, so the sending state and the tag live in
	// the session rather than in an allocation per message.
	x := &s.curBuf
	*x = sending{l: l, id: id, payload: payload, settled: settled}
	binary.BigEndian.PutUint64(x.tagBuf[:], l.tagSeq)
	x.tag = x.tagBuf[:]
	if settled {
		x.d = d
	} else {
		s.unsettledOut[id] = l
		if !d.PreSettled() {
			s.outDeliveries[id] = d
		}
		l.unsettled++
	}
	s.cur = x
	s.continueSend()
}

// largeDelivery is the encoded size above which an outgoing message gets
// a buffer of its own rather than the session's reused one.
const largeDelivery = 1 << 20

// deliveryQueue is a FIFO of deliveries that reuses its array: popping by
// re-slicing made every push after the queue emptied an allocation.
type deliveryQueue struct {
	buf  []*router.Delivery
	head int
}

func (q *deliveryQueue) len() int { return len(q.buf) - q.head }

func (q *deliveryQueue) push(d *router.Delivery) { q.buf = append(q.buf, d) }

func (q *deliveryQueue) pop() *router.Delivery {
	d := q.buf[q.head]
	q.buf[q.head] = nil
	q.head++
	if q.head == len(q.buf) {
		q.buf, q.head = q.buf[:0], 0
		if cap(q.buf) > 4096 {
			q.buf = nil // a burst is over: let its array go
		}
	}
	return d
}

// take empties the queue and returns what it held.
func (q *deliveryQueue) take() []*router.Delivery {
	ds := q.buf[q.head:]
	q.buf, q.head = nil, 0
	return ds
}
