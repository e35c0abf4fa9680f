package mqtt

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/hono"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// subscription is one topic filter of a session. The exported fields are
// what a persistent session stores.
type subscription struct {
	Filter string `json:"f"` // as subscribed, including "$share/group/"
	QoS    byte   `json:"q"`
	NoLoc  bool   `json:"nl,omitempty"`
	RAP    bool   `json:"rap,omitempty"`
	RH     byte   `json:"rh,omitempty"`
	ID     int    `json:"id,omitempty"`

	topic string                    // the filter without the share prefix
	share string                    // share group, "" if not shared
	cmd   *hono.CommandSubscription // a device's command subscription (hono.go)
	errf  *hono.ErrorFilter         // a device's error topic subscription (hono.go); no consumers
	space bool                      // a topic-space subscription that is not shared (overlap.go)
	refs  []*consumerRef
}

// consumerRef is one router consumer feeding a subscription. A QoS ≥ 1
// subscription of a persistent session in the topic space has two: a
// live one and a durable one for the messages the engine stored.
type consumerRef struct {
	c      *conn
	sub    *subscription
	rc     *router.Consumer
	window int // credit granted at once
	batch  int // credit is returned once this much is due (0: window/2)
	due    int // credit used and not yet returned; guarded by c.mu
}

// Credit windows. Live (at-most-once) consumers get a generous window and
// drop on a slow socket; stored ones are bounded by the client's receive
// maximum so unacknowledged messages stay in the engine.
//
// Live QoS 1/2 deliveries hold their credit until PUBACK/PUBREC: their
// window is larger, and credit goes back in small batches, because the
// router holds QoS 1/2 producers' acknowledgements while a live consumer
// has less than a quarter of its window left (router/interest.go) — the
// window is the cushion that absorbs what producers had in flight.
const (
	liveWindow      = 1024
	liveQoSWindow   = 4096
	liveQoSBatch    = 32
	maxStoredWindow = 64
)

// outMsg is a QoS 1/2 message to the client, pending or in flight.
type outMsg struct {
	d      *router.Delivery // nil for retained messages sent on subscribe
	ref    *consumerRef
	topic  string
	m      *message.Message
	sub    *subscription
	qos    byte
	retain bool
	dup    bool
	rel    bool // PUBREC received, PUBREL sent (QoS 2)

	liveSize int32     // bytes counted in conn.pendingLive while pending (one message: < 2 GiB)
	x        *outExtra // the rarely set fields; nil: all zero
}

// outExtra holds what few outgoing messages need, out of outMsg: one is
// allocated per QoS 1/2 delivery, and these fields took it from 64 to
// 128 bytes (a size class of its own on the delivery path).
type outExtra struct {
	relKey outKey // with rel: the stored message it was (zero for a live one)
	ids    []int  // subscription identifiers when several subscriptions match (overlap.go); nil: sub's
}

// outExtraIDs is the extra fields of a message with subscription
// identifiers ids (nil: none needed).
func outExtraIDs(ids []int) *outExtra {
	if ids == nil {
		return nil
	}
	return &outExtra{ids: ids}
}

// subIDs returns the subscription identifiers set for the message (nil:
// its subscription's own).
func (om *outMsg) subIDs() []int {
	if om.x == nil {
		return nil
	}
	return om.x.ids
}

// relKeyOf returns the stored message a PUBRELed one was (zero: none).
func (om *outMsg) relKeyOf() outKey {
	if om.x == nil {
		return outKey{}
	}
	return om.x.relKey
}

// parseShare splits "$share/group/filter".
func parseShare(f string) (group, topic string, ok bool, err error) {
	rest, ok := strings.CutPrefix(f, "$share/")
	if !ok {
		return "", f, false, nil
	}
	group, topic, found := strings.Cut(rest, "/")
	if !found || group == "" || topic == "" || strings.ContainsAny(group, "+#") {
		return "", "", true, errors.New("malformed shared subscription")
	}
	return group, topic, true, nil
}

func (c *conn) durableName() string { return "mqtt/" + c.clientID }

// subscribe attaches a subscription's router consumers. It returns the
// granted QoS or a failure reason code.
func (c *conn) subscribe(ctx context.Context, sub *subscription) (byte, error) {
	if c.principal.IsDevice() {
		return c.subscribeDevice(ctx, sub)
	}
	group, topic, shared, err := parseShare(sub.Filter)
	if err != nil {
		return 0, reason(rcTopicFilterInvalid, err.Error(), nil)
	}
	if shared && sub.NoLoc {
		return 0, reason(rcProtocolError, "no-local on a shared subscription", nil) // [MQTT-3.8.3-4]
	}
	if err := address.ValidateFilter(topic); err != nil {
		return 0, reason(rcTopicFilterInvalid, err.Error(), nil)
	}
	if re := c.maySubscribe(topic); re != nil {
		return 0, re
	}
	sub.topic, sub.share = topic, group
	inSpace := address.IsWildcard(topic)
	if !inSpace {
		if p, err := c.s.r.Producer(ctx, c.tenant(), topic); err == nil {
			inSpace = p.TopicSpace()
		} else if errors.Is(err, router.ErrNotFound) && !shared {
			return 0, reason(rcTopicFilterInvalid, err.Error(), err)
		}
	}
	space := shared || inSpace
	sub.space = inSpace && !shared
	type spec struct {
		opts   router.ConsumeOptions
		window int
	}
	stored := min(int(c.recvMax), maxStoredWindow)
	var specs []spec
	switch {
	case shared:
		// Competing consumers on one durable subscription per group.
		specs = []spec{{router.ConsumeOptions{Durable: "share/" + group}, stored}}
		if inSpace {
			// What is not stored (QoS 0, and QoS 1/2 published on another
			// node before it knew of the group) reaches one member through
			// the router's live share group.
			specs = append(specs, spec{router.ConsumeOptions{StoredCompanion: true, ShareGroup: group}, liveQoSWindow})
		}
	case space && sub.QoS == 0:
		specs = []spec{{router.ConsumeOptions{}, liveQoSWindow}}
	case space && c.persistent:
		// Stored messages come through the session's durable consumer
		// (kept while the client is away); the live one brings the rest:
		// QoS 0 publishes and QoS 1/2 ones no stored consumer wanted
		// when they were published (router/interest.go).
		specs = []spec{
			{router.ConsumeOptions{StoredCompanion: true}, liveQoSWindow},
			{router.ConsumeOptions{Durable: c.durableName()}, stored},
		}
	case space:
		// A clean session's QoS 1/2 subscription is live: nothing is kept
		// for it once it is gone, so the engine need not store for it.
		// Its credit returns on PUBACK/PUBREC, so at most liveQoSWindow
		// messages wait for the client; behind that the router holds
		// QoS 1/2 producers' acknowledgements (back-pressure).
		specs = []spec{{router.ConsumeOptions{}, liveQoSWindow}}
	default:
		// A defined address: queue, topic, multicast, anycast or a
		// subscription ("topic::name").
		o := router.ConsumeOptions{}
		if c.persistent {
			o.Durable = c.durableName()
		}
		specs = []spec{{o, stored}}
	}
	for _, sp := range specs {
		ref := &consumerRef{c: c, sub: sub, window: sp.window}
		if sp.window == liveQoSWindow {
			ref.batch = liveQoSBatch
		} else {
			// Stored windows are small: return each credit at once. With
			// half the window per return, a client whose PUBACKs wait on
			// Nagle (libmosquitto's default) waited each round for our
			// delayed ACK, ~40 ms: a queue drained at ~2k msg/s.
			ref.batch = 1
		}
		if sp.window == liveQoSWindow {
			// Live: durable messages beyond the credit wait in the router
			// (bounded), and what is dropped is counted here too.
			sp.opts.LiveQueue = c.s.cfg.MaxQueuedMessages
			sp.opts.Dropped = ref.dropped
		}
		sp.opts.Gone = func() { c.addressGone(topic) } // conn.go
		rc, err := c.s.r.Consume(ctx, c.tenant(), topic, sp.opts, ref.deliver)
		if err != nil {
			c.closeRefs(sub)
			rc, text := publishReason(router.Outcome{}, err)
			if rc == rcTopicNameInvalid {
				rc = rcTopicFilterInvalid
			}
			return 0, reason(rc, text, err)
		}
		if rc.Type() == address.Multicast || rc.Type() == address.Anycast {
			ref.window = max(ref.window, liveWindow/4)
			if sp.window != liveQoSWindow {
				ref.batch = 0 // not stored: half the window at a time
			}
		}
		ref.rc = rc
		sub.refs = append(sub.refs, ref)
	}
	for _, ref := range sub.refs {
		ref.rc.AddCredit(ref.window)
	}
	return sub.QoS, nil
}

func (c *conn) closeRefs(sub *subscription) {
	for _, r := range sub.refs {
		if r.rc != nil {
			r.rc.Close()
		}
	}
	sub.refs = nil
}

// deleteDurable removes the engine state of a persistent subscription.
func (c *conn) deleteDurable(ctx context.Context, sub *subscription) {
	_, topic, shared, err := parseShare(sub.Filter)
	if shared || err != nil {
		return // shared groups outlive their members
	}
	if err := c.s.r.DeleteDurable(ctx, c.tenant(), topic, c.durableName()); err != nil {
		c.s.log.Warn("delete durable subscription", "tenant", c.tenant(), "client_id", c.clientID, "filter", topic, "err", err)
	}
}

func (c *conn) onSubscribe(pk *packets.Packet) error {
	if code := pk.SubscribeValidate(); code != packets.CodeSuccess {
		return reason(code.Code, code.Reason, nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	codes := make([]byte, len(pk.Filters))
	var retained []*subscription
	var fatal error
	changed := false
	for i, f := range pk.Filters {
		sub := &subscription{Filter: f.Filter, QoS: f.Qos, NoLoc: f.NoLocal, RAP: f.RetainAsPublished, RH: f.RetainHandling, ID: f.Identifier}
		if c.principal.IsDevice() {
			sub.QoS = min(sub.QoS, 1) // Hono: commands at QoS 0 or 1
		}
		if c.version != 5 {
			sub.NoLoc, sub.RAP, sub.RH, sub.ID = false, false, 0, 0
		}
		if c.bridge {
			// A bridge (bridge.go): its own messages do not come back,
			// retained flags pass through. No-local is a protocol error
			// on a shared subscription [MQTT-3.8.3-4].
			sub.NoLoc = sub.NoLoc || !strings.HasPrefix(sub.Filter, "$share/")
			sub.RAP = true
		}
		c.mu.Lock()
		old := c.subs[sub.Filter]
		if old != nil && old.sameConsumers(sub) {
			// Replaced [MQTT-3.8.4-3] by one fed by the same router
			// consumers: only its options change, so its flow goes on
			// without a gap, a duplicate or a redelivery (a resumed
			// client subscribing again used to get its queued messages
			// released, out of order and with DUP).
			old.QoS, old.NoLoc, old.RAP, old.RH, old.ID = sub.QoS, sub.NoLoc, sub.RAP, sub.RH, sub.ID
			c.mu.Unlock()
			codes[i] = sub.QoS
			changed = true
			if sub.RH == 0 && !c.principal.IsDevice() {
				retained = append(retained, old)
			}
			continue
		}
		c.mu.Unlock()
		q, err := c.subscribe(ctx, sub)
		if err != nil {
			var re *ReasonError
			errors.As(err, &re)
			if re.Code == rcProtocolError {
				fatal = re
			}
			codes[i] = re.Code
			if c.version != 5 {
				codes[i] = 0x80
			}
			if old != nil {
				c.mu.Lock()
				delete(c.subs, sub.Filter)
				c.mu.Unlock()
				c.closeRefs(old)
				changed = true
			}
			continue
		}
		codes[i] = q
		c.mu.Lock()
		if c.subs == nil {
			c.subs = map[string]*subscription{}
		}
		c.subs[sub.Filter] = sub
		c.mu.Unlock()
		if old != nil {
			// Replaced by one with other consumers: the new ones were
			// attached first, and live copies go out through whichever
			// is in c.subs (overlap.go), so the flow is not interrupted.
			c.closeRefs(old)
		}
		changed = true
		// Devices get no retained messages: their filters are Hono's
		// command and error topics, not the tenant's topic space (where
		// anyone could retain a message on command///req/…).
		if sub.share == "" && !c.principal.IsDevice() && (sub.RH == 0 || (sub.RH == 1 && old == nil)) {
			retained = append(retained, sub)
		}
	}
	if fatal != nil {
		return fatal
	}
	c.send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, PacketID: pk.PacketID, ReasonCodes: codes})
	if changed {
		c.persist(true, nil)
	}
	for _, sub := range retained {
		c.sendRetained(ctx, sub)
	}
	return nil
}

func (c *conn) onUnsubscribe(pk *packets.Packet) error {
	if code := pk.UnsubscribeValidate(); code != packets.CodeSuccess {
		return reason(code.Code, code.Reason, nil)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	codes := make([]byte, len(pk.Filters))
	for i, f := range pk.Filters {
		c.mu.Lock()
		sub := c.subs[f.Filter]
		delete(c.subs, f.Filter)
		c.mu.Unlock()
		if sub == nil {
			codes[i] = rcNoSubscriptionExist
			continue
		}
		c.closeRefs(sub)
		c.commandsGone(sub)
		if c.persistent {
			c.deleteDurable(ctx, sub)
		}
	}
	c.send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsuback}, PacketID: pk.PacketID, ReasonCodes: codes})
	c.persist(true, nil)
	return nil
}

// sendRetained delivers the retained messages matching a new subscription
// [MQTT-3.3.1-9].
func (c *conn) sendRetained(ctx context.Context, sub *subscription) {
	err := c.s.r.Retained(ctx, c.tenant(), sub.topic, func(name string, m *message.Message) {
		if sub.NoLoc && origin(m) == c.clientID {
			return
		}
		qos := min(sub.QoS, msgQoS(m))
		c.mu.Lock()
		if c.gone {
			c.mu.Unlock()
			return
		}
		om := &outMsg{topic: name, m: m, sub: sub, qos: qos, retain: true}
		if qos == 0 {
			b := c.encodePublish(om, 0)
			c.mu.Unlock()
			if b != nil {
				c.enqueue(b, true, nil)
			}
			return
		}
		var op outPkt
		if c.mayStartLocked() {
			op = c.startInflight(om)
		} else {
			c.pending = append(c.pending, om)
		}
		c.sendUnlock(op)
	})
	if err != nil {
		c.s.log.Warn("retained messages unavailable", "tenant", c.tenant(), "filter", sub.topic, "err", err)
	}
}

// deliver is the router callback. It runs with the router consumer's lock
// held: it must not block, settle or grant credit synchronously.
func (ref *consumerRef) deliver(d *router.Delivery) {
	c := ref.c
	sub := ref.sub
	m := d.Message
	c.mu.Lock()
	if c.gone {
		c.mu.Unlock()
		return // Close releases the delivery
	}
	// Options are read under c.mu: a SUBSCRIBE may change them in place.
	drop, qos, ids := c.shapeLocked(sub, d)
	topic := d.Address
	if sub.cmd != nil {
		// A command for a device: Hono's topic, the subscription's QoS.
		dn, ok := sub.cmd.CommandTopic(m)
		if !ok {
			// Only a sender bypassing the command relay's checks (the
			// anonymous relay) can send one: rejected, its credit returned.
			n := ref.creditLocked()
			c.mu.Unlock()
			go func() {
				d.Settle(router.Outcome{Kind: router.Rejected, Description: "not a well-formed Hono command"})
				if n > 0 {
					ref.rc.AddCredit(n)
				}
			}()
			return
		}
		topic, m, qos = dn.Topic, dn.Message, sub.QoS
	}
	if drop {
		post := ref.usedLocked(d)
		c.mu.Unlock()
		if post != nil {
			go post()
		}
		return
	}
	retain := false
	if sub.RAP {
		retain, _ = m.Properties[propRetain].(bool)
	}
	if qos == 0 {
		// om does not escape: no allocation per QoS 0 delivery.
		om := outMsg{d: d, ref: ref, topic: topic, m: m, sub: sub, retain: retain, x: outExtraIDs(ids)}
		b := c.encodePublish(&om, 0)
		post := ref.usedLocked(d)
		c.mu.Unlock()
		if b == nil {
			if post != nil {
				go post()
			}
			return
		}
		c.enqueue(b, true, post)
		return
	}
	if c.x != nil && c.x.relDone != nil && d.Sequence > 0 {
		k := outKey{sub.Filter, d.Sequence, d.Part}
		if _, done := c.x.relDone[k]; done {
			// PUBRECed before a crash: the client has it, and the engine
			// had not yet heard (exactly once, [MQTT-4.3.3]).
			delete(c.x.relDone, k)
			c.noteCompletedLocked(k) // settled again now: kept in the record a while
			post := ref.usedLocked(d)
			c.mu.Unlock()
			if post != nil {
				go post()
			}
			return
		}
	}
	// DUP only for a message this session may have sent before: one the
	// previous connection left unacknowledged (startInflight), or one
	// the engine delivered before a node crash (nothing was recorded).
	// A message released unsent (queued for the client when it went
	// away) goes out without DUP, although the engine counts it again.
	dup := d.Count > 1 && c.x != nil && c.x.crashResume
	om := &outMsg{d: d, ref: ref, topic: topic, m: m, sub: sub, qos: qos, retain: retain, dup: dup, x: outExtraIDs(ids)}
	var op outPkt
	if c.mayStartLocked() {
		op = c.startInflight(om)
	} else {
		if d.PreSettled() {
			// A live QoS 1/2 message waiting for the client's receive
			// maximum or for the write queue: bounded in bytes as well
			// as by the credit window.
			size := len(m.Body) + len(d.Address)
			x := c.extraLocked()
			if x.pendingLive+size > maxPendingLiveBytes {
				post := ref.usedLocked(d)
				c.mu.Unlock()
				c.ti.mDropBytes.Inc()
				if post != nil {
					go post()
				}
				c.overflow("queue_bytes")
				return
			}
			x.pendingLive += size
			om.liveSize = int32(size)
		}
		c.pending = append(c.pending, om)
	}
	c.sendUnlock(op)
}

// maxPendingLiveBytes bounds, per connection, the live QoS 1/2 messages
// waiting for the client's receive maximum or for the write queue (their
// credit window bounds their number; this bounds large ones). Beyond it
// they are dropped and counted (reason "queue_bytes"), as mosquitto's
// max_queued_bytes does, and QueueOverflow applies.
const maxPendingLiveBytes = 16 << 20

// overflow applies Config.QueueOverflow after a live QoS 1/2 message
// was dropped for this connection's subscriber (why: "queue_full", the
// router's queue of MaxQueuedMessages; "queue_bytes", maxPendingLiveBytes
// here): with OverflowDisconnect the client is disconnected with 0x97
// (MQTT 5 DISCONNECT after what was already queued for it), counted once.
func (c *conn) overflow(why string) {
	if c.s.cfg.QueueOverflow != OverflowDisconnect {
		return
	}
	if c.kick(rcQuotaExceeded, "subscriber queue full") {
		c.s.m.disconnects.WithLabelValues(why).Inc()
	}
}

// mayStartLocked reports whether a QoS 1/2 message may go out now rather
// than wait in c.pending: nothing waits before it, the client's receive
// maximum allows it, and the write queue has room. c.mu held.
func (c *conn) mayStartLocked() bool {
	return len(c.pending) == 0 && len(c.inflight) < int(c.recvMax) && c.writeRoomLocked() > 0
}

// writeRoomLocked returns how many more bytes of QoS 1/2 publishes may
// be queued for writing now. A client that stops reading then has at
// most about WriteQueueBytes of them in the write queue; the rest wait
// in c.pending, still holding their router credit, so that the router
// queues what follows (back-pressure) instead of the write queue
// growing until enqueue ends the connection. With no room, the writer
// calls fillPending once it has written half its queue. c.mu held.
func (c *conn) writeRoomLocked() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wclosed {
		return 1 // ending: enqueue drops it and runs the teardown's settlement
	}
	room := c.s.cfg.WriteQueueBytes - c.wqBytes
	if room <= 0 {
		c.fillWanted = true
	}
	return room
}

// fillPending sends the messages waiting in c.pending that the receive
// maximum and the write queue now allow (the writer calls it).
func (c *conn) fillPending() {
	c.mu.Lock()
	out := c.startPendingLocked(nil)
	c.sendUnlock(out...)
}

// sendUnlock sends QoS 1/2 publishes started under c.mu (startInflight),
// in the order they were started, and unlocks c.mu: the send-order lock
// is taken before c.mu is released, so a publish started later (by a new
// delivery, the writer's fillPending or an acknowledgement) cannot be
// queued for writing before these. (Without it a new delivery could
// overtake the last pending ones that an acknowledgement had just
// started: TestLiveQoS1SubscriberPause saw 1 out of order.) sendPublish
// never waits for c.mu, so holding smu through it cannot deadlock.
func (c *conn) sendUnlock(ops ...outPkt) {
	some := false
	for _, op := range ops {
		if op.b != nil {
			some = true
			break
		}
	}
	if !some {
		c.mu.Unlock()
		return
	}
	c.smu.Lock()
	c.mu.Unlock()
	for _, op := range ops {
		c.sendPublish(op)
	}
	c.smu.Unlock()
}

// startPendingLocked starts the pending messages that may go out now, in
// order, appending their packets to out. c.mu held.
func (c *conn) startPendingLocked(out []outPkt) []outPkt {
	if len(c.pending) == 0 || len(c.inflight) >= int(c.recvMax) {
		return out
	}
	room := c.writeRoomLocked()
	for len(c.pending) > 0 && len(c.inflight) < int(c.recvMax) {
		if room <= 0 {
			c.writeRoomLocked() // asks the writer to call again
			break
		}
		next := c.pending[0]
		c.pending[0] = nil
		c.pending = c.pending[1:]
		if next.liveSize > 0 {
			c.x.pendingLive -= int(next.liveSize)
		}
		if op := c.startInflight(next); op.b != nil {
			out = append(out, op)
			room -= len(op.b)
		}
	}
	if len(c.pending) == 0 {
		c.pending = nil
	}
	return out
}

// outPkt is an encoded QoS 1/2 PUBLISH; save: its packet id must be in
// the engine before it is sent.
type outPkt struct {
	b    []byte
	save bool
}

// sendPublish queues a QoS 1/2 PUBLISH. A QoS 2 message of a persistent
// session has its packet id stored first, so that after a crash the
// engine's redelivery goes out with the same id and DUP, which the client
// recognises (exactly once); other publishes wait behind
// such a write to keep their order.
func (c *conn) sendPublish(op outPkt) {
	if op.b == nil {
		return
	}
	if !op.save && !c.savesPending() {
		// Nothing to wait for: queued at once, as persist would, without
		// its closure (an allocation per QoS 1/2 delivery).
		c.enqueue(op.b, false, nil)
		return
	}
	c.persist(op.save, func() { c.enqueue(op.b, false, nil) })
}

// usedLocked settles a delivery that needs no acknowledgement from the
// client and returns the work to do outside the locks, nil if there is
// none (a pre-settled delivery between credit batches: most QoS 0 ones,
// which then allocate no closure). c.mu held.
func (ref *consumerRef) usedLocked(d *router.Delivery) func() {
	n := ref.creditLocked()
	if n == 0 && d.PreSettled() {
		return nil
	}
	return func() {
		d.Settle(router.Outcome{Kind: router.Accepted})
		if n > 0 {
			ref.rc.AddCredit(n)
		}
	}
}

// creditLocked counts one used credit and returns how much to give back
// now (in batches of half the window). c.mu held.
func (ref *consumerRef) creditLocked() int {
	ref.due++
	batch := ref.batch
	if batch == 0 {
		batch = max(ref.window/2, 1)
	}
	if ref.due >= batch {
		n := ref.due
		ref.due = 0
		return n
	}
	return 0
}

// startInflight assigns a packet id and encodes the publish. A message
// the previous connection of a resumed session left unacknowledged gets
// its packet id back (DUP set) [MQTT-4.4.0-1]. c.mu held.
func (c *conn) startInflight(om *outMsg) outPkt {
	if c.inflight == nil {
		c.inflight = map[uint16]*outMsg{}
	}
	var id uint16
	var held map[uint16]struct{}
	if c.x != nil {
		held = c.x.resumeIDs
	}
	if om.d != nil && om.d.Sequence > 0 && om.sub != nil && held != nil {
		k := outKey{om.sub.Filter, om.d.Sequence, om.d.Part}
		if rid, ok := c.x.resume[k]; ok {
			delete(c.x.resume, k)
			delete(held, rid)
			if _, used := c.inflight[rid]; !used {
				id, om.dup = rid, true
			}
		}
	}
	for id == 0 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		_, used := c.inflight[c.nextID]
		_, reserved := held[c.nextID]
		if !used && !reserved {
			id = c.nextID
		}
	}
	b := c.encodePublish(om, id)
	if b == nil {
		// Too large for the client: as if sent and acknowledged [MQTT-3.1.2-25].
		if om.d != nil {
			n := om.ref.creditLocked()
			d, rc := om.d, om.ref.rc
			go func() {
				d.Settle(router.Outcome{Kind: router.Accepted})
				if n > 0 {
					rc.AddCredit(n)
				}
			}()
		}
		return outPkt{}
	}
	c.inflight[id] = om
	return outPkt{b: b, save: om.qos == 2 && om.d != nil && om.d.Sequence > 0 && c.sessExpiry > 0}
}

// encodePublish builds the PUBLISH for a message, applying the topic
// alias and the client's maximum packet size. nil: not sendable. c.mu held.
func (c *conn) encodePublish(om *outMsg, id uint16) []byte {
	if c.version != 5 || (c.aliasMaxOut == 0 && om.subIDs() == nil && (om.sub == nil || om.sub.ID == 0) && noV5Properties(om.m)) {
		// The common case without properties is encoded by hand: the
		// codec's Packet and property tables were ~13 % of the QoS 0
		// delivery path's CPU (docs/benchmarks.md).
		if b, ok := appendPublish(nil, c.version, om.qos, om.retain, om.dup && om.qos > 0, om.topic, id, om.m.Body); ok {
			if c.maxOut > 0 && len(b) > int(c.maxOut) {
				if om.sub != nil {
					c.ti.mDropLarge.Inc()
				}
				return nil
			}
			c.ti.sent.Add(1)
			c.ti.mSent.Inc()
			c.ce.Load().Out(len(om.m.Body))
			return b
		}
	}
	pk := &packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: om.qos, Retain: om.retain, Dup: om.dup && om.qos > 0},
		TopicName:       om.topic,
		PacketID:        id,
		ProtocolVersion: c.version,
		Mods:            packets.Mods{AllowResponseInfo: true, MaxSize: c.maxOut},
	}
	v5 := c.version == 5
	fillPublish(pk, om.m, v5, clock.Now()) // the expiry interval left
	if v5 {
		if ids := om.subIDs(); ids != nil {
			pk.Properties.SubscriptionIdentifier = ids
		} else if om.sub != nil && om.sub.ID > 0 {
			pk.Properties.SubscriptionIdentifier = []int{om.sub.ID}
		}
		if c.aliasMaxOut > 0 {
			if a, ok := c.outAliases[om.topic]; ok {
				pk.TopicName = ""
				pk.Properties.TopicAlias = a
			} else if len(c.outAliases) < int(c.aliasMaxOut) {
				if c.outAliases == nil {
					c.outAliases = map[string]uint16{}
				}
				a := uint16(len(c.outAliases) + 1)
				c.outAliases[om.topic] = a
				pk.Properties.TopicAlias = a
			}
		}
	}
	b, err := encodePacket(pk)
	if err != nil || (c.maxOut > 0 && len(b) > int(c.maxOut)) {
		if om.sub != nil {
			c.ti.mDropLarge.Inc()
		}
		return nil
	}
	c.ti.sent.Add(1)
	c.ti.mSent.Inc()
	c.ce.Load().Out(len(om.m.Body))
	return b
}

// finish completes an in-flight message and sends pending ones; the
// returned function settles and grants credit outside the lock.
func (c *conn) finishLocked(id uint16, settle bool) (settleWork, []outPkt) {
	om := c.inflight[id]
	if om == nil {
		return settleWork{}, nil
	}
	delete(c.inflight, id)
	var post settleWork
	if om.d != nil && settle {
		post = settleWork{d: om.d, rc: om.ref.rc, n: om.ref.creditLocked()}
	}
	return post, c.startPendingLocked(nil)
}

// settleWork accepts an acknowledged delivery and returns its credit
// (n > 0) outside the locks; the zero value does nothing. A value rather
// than a closure: one allocation less per acknowledged delivery.
type settleWork struct {
	d  *router.Delivery
	rc *router.Consumer
	n  int
}

func (w settleWork) run() {
	if w.d == nil {
		return
	}
	w.d.Settle(router.Outcome{Kind: router.Accepted})
	if w.n > 0 {
		w.rc.AddCredit(w.n)
	}
}

func (c *conn) onPuback(id uint16) {
	c.mu.Lock()
	post, out := c.finishLocked(id, true)
	c.sendUnlock(out...)
	post.run()
}

func (c *conn) onPubrec(id uint16, rc byte) {
	c.mu.Lock()
	om := c.inflight[id]
	if om == nil {
		c.mu.Unlock()
		c.ack(packets.Pubrel, id, rcPacketIDNotFound, "")
		return
	}
	if rc >= 0x80 {
		// The client refused it: the exchange ends here [MQTT-4.3.3-?].
		post, out := c.finishLocked(id, true)
		c.sendUnlock(out...)
		post.run()
		return
	}
	var post func()
	if !om.rel {
		om.rel = true
		if om.d != nil {
			if om.d.Sequence > 0 && om.sub != nil {
				if om.x == nil {
					om.x = &outExtra{}
				}
				om.x.relKey = outKey{om.sub.Filter, om.d.Sequence, om.d.Part}
			}
			// The client owns the message now; the engine can forget it.
			n := om.ref.creditLocked()
			d, r := om.d, om.ref.rc
			om.d = nil
			post = func() {
				d.Settle(router.Outcome{Kind: router.Accepted})
				if n > 0 {
					r.AddCredit(n)
				}
			}
		}
	}
	c.mu.Unlock()
	// The PUBREL state is stored before the engine forgets the message,
	// so that a resumed session resends PUBREL, not the PUBLISH
	// [MQTT-4.4.0-1]. (A crash between the two writes would have the
	// engine redeliver the message under a new packet id.)
	c.persist(post != nil, func() {
		if post != nil {
			post()
		}
		c.ack(packets.Pubrel, id, rcSuccess, "")
	})
}

func (c *conn) onPubcomp(id uint16) {
	c.mu.Lock()
	om := c.inflight[id]
	if om != nil && om.rel && om.relKeyOf() != (outKey{}) && c.persistent {
		c.noteCompletedLocked(om.relKeyOf())
	}
	post, out := c.finishLocked(id, true)
	c.sendUnlock(out...)
	if om != nil && om.rel {
		c.persist(true, nil) // forget the PUBREL state (lazily: a stale one only costs a PUBREL answered 0x92)
	}
	post.run()
}
