package mqtt

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/quota"
	"github.com/throngmq/throng/internal/router"
)

// Application properties the server adds to MQTT messages; they are not
// shown to MQTT subscribers as user properties.
const (
	propOrigin  = "x-mqtt-origin" // publishing client id (no-local), in messages stored before message.Origin
	propQoS2    = "x-mqtt-qos"    // "2" for QoS 2 publishes
	propRetain  = "x-mqtt-retain" // the publish had RETAIN set (retain-as-published)
	propFormat  = "x-mqtt-format" // payload format indicator 1 (UTF-8)
	amqpBodyCT  = "application/vnd.throng.amqp-body"
	propsPrefix = "x-mqtt-"
)

// toMessage converts an MQTT publish (or will) into the router's model
// (DESIGN.md 4.4).
func toMessage(topic string, qos byte, retain bool, payload []byte, p *packets.Properties, origin string) *message.Message {
	m := &message.Message{Body: payload, Durable: qos > 0, CreationTime: time.Now(), Origin: origin}
	// The properties map is made only when there is something to put in
	// it: for a plain publish it was most of the bytes allocated per
	// message (docs/benchmarks.md).
	var props map[string]any
	set := func(k string, v any) {
		if props == nil {
			props = make(map[string]any, len(p.User)+1)
		}
		props[k] = v
	}
	if qos == 2 {
		set(propQoS2, "2")
	}
	if retain {
		set(propRetain, true)
	}
	if p != nil {
		if p.PayloadFormatFlag && p.PayloadFormat == 1 {
			set(propFormat, true)
		}
		if p.MessageExpiryInterval > 0 {
			m.TTL = time.Duration(p.MessageExpiryInterval) * time.Second
		}
		m.ContentType = p.ContentType
		m.ReplyTo = p.ResponseTopic
		if len(p.CorrelationData) > 0 {
			m.CorrelationID = append([]byte(nil), p.CorrelationData...)
		}
		for _, u := range p.User {
			set(u.Key, u.Val) // repeated keys: the last one wins
		}
	}
	m.Properties = props
	return m
}

// msgQoS is the QoS a message was published with.
func msgQoS(m *message.Message) byte {
	if !m.Durable {
		return 0
	}
	if v, _ := m.Properties[propQoS2].(string); v == "2" {
		return 2
	}
	return 1
}

func origin(m *message.Message) string {
	if m.Origin != "" {
		return m.Origin
	}
	s, _ := m.Properties[propOrigin].(string) // stored by an earlier version
	return s
}

// fillPublish sets the payload and v5 properties of an outgoing PUBLISH.
func fillPublish(pk *packets.Packet, m *message.Message, v5 bool, now time.Time) {
	switch m.BodyKind {
	case message.BodyData, message.BodyAMQPString:
		pk.Payload = m.Body
	default:
		pk.Payload = m.Body
		if v5 {
			pk.Properties.ContentType = amqpBodyCT
		}
	}
	if !v5 {
		return
	}
	p := &pk.Properties
	if p.ContentType == "" {
		p.ContentType = m.ContentType
	}
	p.ResponseTopic = m.ReplyTo
	switch id := m.CorrelationID.(type) {
	case nil:
	case []byte:
		p.CorrelationData = id
	case string:
		p.CorrelationData = []byte(id)
	case uint64:
		p.CorrelationData = []byte(strconv.FormatUint(id, 10))
	case [16]byte:
		p.CorrelationData = id[:]
	default:
		p.CorrelationData = fmt.Append(nil, id)
	}
	if !m.Expiry.IsZero() {
		left := m.Expiry.Sub(now)
		p.MessageExpiryInterval = uint32(max((left+time.Second-1)/time.Second, 1)) // [MQTT-3.3.2-6]
	}
	if f, _ := m.Properties[propFormat].(bool); f {
		p.PayloadFormat, p.PayloadFormatFlag = 1, true
	}
	for k, v := range m.Properties {
		if len(k) >= len(propsPrefix) && k[:len(propsPrefix)] == propsPrefix {
			continue
		}
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case []byte:
			s = string(x)
		case nil:
		default:
			s = fmt.Sprint(x)
		}
		if utf8.ValidString(k) && utf8.ValidString(s) {
			p.User = append(p.User, packets.UserProperty{Key: k, Val: s})
		}
	}
}

// publishReason maps a router result onto a PUBACK/PUBREC reason code.
func publishReason(o router.Outcome, err error) (byte, string) {
	switch {
	case err == nil && o.Kind == router.Accepted:
		return rcSuccess, ""
	case err == nil:
		d := "message " + o.Kind.String()
		if o.Description != "" {
			d += ": " + o.Description
		}
		return rcUnspecified, d
	case errors.Is(err, router.ErrNoConsumers):
		return rcNoMatchingSubs, "no matching subscribers"
	case errors.Is(err, router.ErrLimitExceeded):
		return rcQuotaExceeded, err.Error()
	case errors.Is(err, router.ErrNotFound), errors.Is(err, router.ErrInvalid):
		return rcTopicNameInvalid, err.Error()
	case errors.Is(err, router.ErrClosed):
		return rcServerUnavailable, "server unavailable"
	}
	return rcUnspecified, err.Error()
}

func (c *conn) onPublish(pk *packets.Packet) error {
	qos := pk.FixedHeader.Qos
	if code := pk.PublishValidate(c.s.cfg.TopicAliasMaximum); code != packets.CodeSuccess {
		return reason(code.Code, code.Reason, nil)
	}
	topic := pk.TopicName
	if c.version == 5 && pk.Properties.TopicAlias > 0 {
		// Topic aliases from the client [MQTT-3.3.2-12].
		if c.inAliases == nil {
			c.inAliases = map[uint16]string{}
		}
		if topic != "" {
			c.inAliases[pk.Properties.TopicAlias] = topic
		} else if topic = c.inAliases[pk.Properties.TopicAlias]; topic == "" {
			return reason(rcProtocolError, "unknown topic alias", nil)
		}
	}
	c.ti.received.Add(1)
	c.ti.mReceived.Inc()
	c.ce.Load().In(len(pk.Payload))
	id := pk.PacketID
	var slot *ackSlot
	if qos > 0 {
		c.mu.Lock()
		if qos == 2 {
			if _, dup := c.inQoS2[id]; dup {
				// Already routed: acknowledge again, route nothing [MQTT-4.3.3-9].
				slot := c.newAckSlotLocked()
				c.mu.Unlock()
				c.completeAck(slot, packets.Pubrec, id, rcSuccess, "")
				return nil
			}
		}
		if qos != 2 || !c.qos2PendingLocked(id) { // a resent id with a token is counted (qos2in.go)
			if int(c.inFlightIn) >= int(c.s.cfg.ReceiveMaximum) {
				c.mu.Unlock()
				return reason(rcReceiveMaxExceeded, "receive maximum exceeded", nil) // [MQTT-3.3.4-9]
			}
			c.inFlightIn++
		}
		// Acknowledgements go out in the order the PUBLISHes came in
		// [MQTT-4.6.0-2], [MQTT-4.6.0-3].
		slot = c.newAckSlotLocked()
		c.mu.Unlock()
	}
	// fail answers a refused publish: v5 gets the reason code; 3.1.1
	// has none, so the connection is closed and the client retries.
	fail := func(rc byte, text string) error {
		c.mu.Lock()
		if qos > 0 {
			c.inFlightIn--
		}
		c.mu.Unlock()
		if qos == 0 {
			return nil
		}
		if c.version != 5 {
			return reason(rc, text, nil)
		}
		typ := byte(packets.Puback)
		if qos == 2 {
			typ = packets.Pubrec
		}
		c.completeAck(slot, typ, id, rc, text)
		return nil
	}
	var m *message.Message
	var p *router.Producer // from the connection's cache
	device := c.principal.IsDevice()
	var derr deviceErr // where a failure of a device's publish is reported (hono.go)
	if device {
		// Hono's MQTT adapter (hono.go): the topic names the message's
		// kind, and the address is the tenant's telemetry/T, event/T or
		// command_response/T/<reply-id>.
		derr = c.deviceErrContext(topic, qos, id)
		up, re, status := c.deviceUpstream(topic, qos, pk)
		if re != nil {
			act := actDefault
			if qos < 2 {
				// Hono's on-error and error topic (hono.go).
				act = c.deviceFailure(derr, status, re.Reason)
			}
			switch act {
			case actAck, actSkip:
				c.mu.Lock()
				if qos > 0 {
					c.inFlightIn--
				}
				c.mu.Unlock()
				if qos > 0 && act == actAck {
					c.completeAck(slot, packets.Puback, id, rcSuccess, "")
				} else if qos > 0 {
					c.skipAck(slot)
				}
				return nil
			case actClose:
				return re
			}
			if qos == 0 {
				// Hono closes the connection of a device whose publish
				// fails (no error subscription: docs/hono.md); a
				// QoS 1 publish gets its PUBACK code on MQTT 5.
				return re
			}
			return fail(re.Code, re.Reason)
		}
		topic, m = up.Address, up.Message
	} else {
		// A name with a cached producer was validated and authorized when
		// it was cached: the principal is fixed for the connection, so
		// neither answer can have changed (both were ~5 % of a QoS 1
		// publish's CPU, with two more map look-ups).
		var known bool
		p, known = c.producers.cached(topic)
		if !known {
			if err := address.ValidateName(topic); err != nil {
				return fail(rcTopicNameInvalid, err.Error())
			}
			if re := c.mayPublish(topic); re != nil {
				return fail(re.Code, re.Reason)
			}
		}
		m = toMessage(topic, qos, pk.FixedHeader.Retain, pk.Payload, &pk.Properties, c.clientID)
	}
	if pk.FixedHeader.Retain && !device {
		// [MQTT-3.3.1-5..7]: store (or clear, with an empty payload).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := c.s.r.Retain(ctx, c.tenant(), topic, m)
		cancel()
		if err != nil {
			rc, text := publishReason(router.Outcome{}, err)
			return fail(rc, text)
		}
	}
	if p == nil {
		var err error
		if p, err = c.producer(topic); err != nil {
			rc, text := publishReason(router.Outcome{}, err)
			return fail(rc, text)
		}
	}
	switch qos {
	case 0:
		if !device {
			p.Publish(m, c.producers.qos0Done(c))
			break
		}
		p.Publish(m, func(o router.Outcome, err error) {
			if err != nil && errors.Is(err, router.ErrLimitExceeded) {
				// Hono telemetry QoS 0 over the rate: backpressure as
				// for any QoS 0 publish (synchronous refusal).
				c.in.overRate(err)
			}
			if err != nil || o.Kind != router.Accepted {
				// Dropped unless reported or on-error is disconnect.
				if c.deviceFailure(derr, deviceStatus(o, err), outcomeText(o, err)) == actClose {
					rc, text := publishReason(o, err)
					c.kick(disconnectCode(rc), text)
				}
			}
		})
	case 1:
		if !device {
			// The common case in a closure of its own: capturing the
			// device's error context made it ~100 bytes per publish.
			p.Publish(m, func(o router.Outcome, err error) {
				rc, text := publishReason(o, err)
				c.mu.Lock()
				c.inFlightIn--
				c.mu.Unlock()
				if rc >= 0x80 && c.version != 5 {
					c.kick(rc, text)
					return
				}
				c.completeAck(slot, packets.Puback, id, rc, text)
			})
			break
		}
		p.Publish(m, func(o router.Outcome, err error) {
			rc, text := publishReason(o, err)
			c.mu.Lock()
			c.inFlightIn--
			c.mu.Unlock()
			if device && rc != rcSuccess {
				switch c.deviceFailure(derr, deviceStatus(o, err), text) {
				case actAck:
					rc, text = rcSuccess, ""
				case actSkip:
					c.skipAck(slot)
					return
				case actClose:
					c.kick(disconnectCode(rc), text)
					return
				}
			}
			if device && rc == rcNoMatchingSubs && c.version != 5 {
				// Hono: no consumer is an error, and without an error
				// subscription the adapter closes the connection (no
				// PUBACK); MQTT 5 gets PUBACK 0x10.
				c.kick(rcNoMatchingSubs, text)
				return
			}
			if rc >= 0x80 && c.version != 5 {
				c.kick(rc, text)
				return
			}
			c.completeAck(slot, packets.Puback, id, rc, text)
		})
	case 2:
		c.publish2(p, m, id, slot) // qos2in.go
	}
	return nil
}

func (c *conn) onPubrel(id uint16) {
	c.mu.Lock()
	_, ok := c.inQoS2[id]
	if ok {
		delete(c.inQoS2, id)
	}
	if ok = ok || c.pubrelPendingLocked(id); ok {
		c.inFlightIn--
	}
	c.mu.Unlock()
	rc := byte(rcSuccess)
	if !ok {
		rc = rcPacketIDNotFound
	}
	// Forgetting the id is stored before PUBCOMP: after PUBCOMP the
	// client may reuse it for a new message, which a stale stored id
	// would have dropped as a duplicate.
	c.persist(ok, func() { c.ack(packets.Pubcomp, id, rc, "") })
}

// ---- producer cache

// producerCache is a small LRU of resolved producers per connection, so a
// client publishing to a few topics resolves each once.
type producerCache struct {
	l *list.List
	m map[string]*list.Element
	// rate is the connection's message rate bucket, given to each of its
	// producers (maxMessagesInPerSecondPerConnection, router/quota.go).
	rate  quota.Bucket
	done0 func(router.Outcome, error) // qos0Done
}

// qos0Done is the outcome callback of the connection's QoS 0 publishes,
// made once (c.producers exists once a producer was resolved): a closure
// per publish was one of its few allocations.
func (pc *producerCache) qos0Done(c *conn) func(router.Outcome, error) {
	if pc.done0 == nil {
		pc.done0 = func(_ router.Outcome, err error) {
			if err != nil && errors.Is(err, router.ErrLimitExceeded) {
				c.in.overRate(err) // evread.go: backpressure
			}
		}
	}
	return pc.done0
}

type producerEntry struct {
	name string
	p    *router.Producer
}

const producerCacheSize = 32

// cached returns name's cached producer, most recently used now; known
// reports whether name is in the cache at all (p is nil when its address
// was deleted: producer resolves it again). A nil cache knows nothing.
func (pc *producerCache) cached(name string) (p *router.Producer, known bool) {
	if pc == nil {
		return nil, false
	}
	e, ok := pc.m[name]
	if !ok {
		return nil, false
	}
	if p = e.Value.(*producerEntry).p; p.Stale() {
		return nil, true
	}
	pc.l.MoveToFront(e)
	return p, true
}

func (c *conn) producer(name string) (*router.Producer, error) {
	pc := c.producers
	if pc == nil {
		pc = &producerCache{m: map[string]*list.Element{}, l: list.New()}
		c.producers = pc
	}
	if e, ok := pc.m[name]; ok {
		if p := e.Value.(*producerEntry).p; !p.Stale() {
			pc.l.MoveToFront(e)
			return p, nil
		}
		// Its address was deleted: the name is resolved again.
		pc.l.Remove(e)
		delete(pc.m, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := c.s.r.Producer(ctx, c.tenant(), name)
	if err != nil {
		return nil, err
	}
	p.SetConn(&pc.rate)
	pc.m[name] = pc.l.PushFront(&producerEntry{name: name, p: p})
	if pc.l.Len() > producerCacheSize {
		e := pc.l.Back()
		pc.l.Remove(e)
		delete(pc.m, e.Value.(*producerEntry).name)
	}
	return p, nil
}
