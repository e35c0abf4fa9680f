package mqtt

import (
	"math/rand/v2"
	"strconv"
	"sync/atomic"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// Inbound QoS 2 of a persistent session, exactly once across crashes
// [MQTT-4.3.3] (issue 11).
//
// The packet id alone, stored once the message was routed and before
// PUBREC, left a hole: a node that died after the engine stored the
// message and before that session write had stored it once, and the
// client, which never got PUBREC, resent it (DUP) to a node that did not
// know the id: stored twice, delivered twice under two packet ids (the
// soak: runs of up to 16 messages, its 3.1.1 publisher's window, after a
// kill -9). Now each message gets a name (its token) that the session
// record holds with its packet id *before* it is routed, and the router
// stores it under that name (router.PublishOnce: JetStream's Nats-Msg-Id
// deduplication). A resent PUBLISH whose id the record holds with a token
// is routed again under the same name, and the engine stores it only if
// the first attempt did not. Once routed, the id is stored as routed
// (qos2, the token dropped) before PUBREC, as before, so that a resend
// after PUBREC is not routed at all (a live message, not stored, is
// deduplicated only by its live consumers' memory of recent names,
// router/once.go: bounded, a backstop for a node that died between
// routing and this write). The session writes three times per message (before
// routing, before PUBREC, before PUBCOMP), coalesced per connection.

// inRef is a client→server QoS 2 packet id whose routing this node has
// not seen complete, with the name its message is stored under.
type inRef struct {
	ID  uint16 `json:"i"`
	Tok string `json:"t"`
}

// newInTokenLocked names one inbound QoS 2 message: "q2.<r>.<n>", r 128
// random bits naming this connection's sequence (the engine's duplicate
// window is per stream, i.e. per tenant and address), n its number in
// it. The router takes a live message of one name once per consumer by
// these (router/once.go): a resend after this node died goes out under
// the name it had here. c.mu held.
func (x *connExtra) newInTokenLocked() string {
	if x.inSeq == "" {
		x.inSeq = "q2." + strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(rand.Uint64(), 36)
	}
	x.inN++
	return x.inSeq + "." + strconv.FormatUint(x.inN, 36)
}

// qos2PendingLocked reports whether a QoS 2 id has a token: its routing
// is under way here or was under way when the session was last stored
// (it is counted in inFlightIn already). c.mu held.
func (c *conn) qos2PendingLocked(id uint16) bool {
	if c.x == nil {
		return false
	}
	_, ok := c.x.inTok[id]
	return ok
}

// publish2 routes a client's QoS 2 message and answers PUBREC (slot).
func (c *conn) publish2(p *router.Producer, m *message.Message, id uint16, slot *ackSlot) {
	if !c.persistent {
		// Nothing survives the connection: a resend would come in a
		// new session anyway.
		p.Publish(m, func(o router.Outcome, err error) { c.routed2(id, "", slot, o, err) })
		return
	}
	c.mu.Lock()
	x := c.extraLocked()
	tok, again := x.inTok[id]
	if !again {
		tok = x.newInTokenLocked()
		if x.inTok == nil {
			x.inTok = map[uint16]string{}
		}
		x.inTok[id] = tok
	}
	c.mu.Unlock()
	// The id and its token are in the engine before the message is
	// routed (a resend of an id with a token is routed again after the
	// write that holds it: persist runs fns in call order).
	c.persist(!again, func() {
		p.PublishOnce(m, tok, func(o router.Outcome, err error) { c.routed2(id, tok, slot, o, err) })
	})
}

// routed2 completes publish2 once the router has the outcome.
func (c *conn) routed2(id uint16, tok string, slot *ackSlot, o router.Outcome, err error) {
	rc, text := publishReason(o, err)
	c.mu.Lock()
	if tok != "" && c.x.inTok[id] == tok {
		delete(c.x.inTok, id)
	}
	if rc < 0x80 {
		if c.inQoS2 == nil {
			c.inQoS2 = map[uint16]struct{}{}
		}
		c.inQoS2[id] = struct{}{}
	} else {
		c.inFlightIn--
	}
	c.mu.Unlock()
	if h := testQoS2Routed.Load(); h != nil {
		(*h)(c)
	}
	if rc >= 0x80 && c.version != 5 {
		c.kick(rc, text)
		return
	}
	if !c.persistent {
		c.completeAck(slot, packets.Pubrec, id, rc, text)
		return
	}
	// The id is stored as routed before PUBREC: a resend is then answered
	// without routing, which also covers messages that went out live
	// (not stored, so not deduplicated by their name).
	//
	// When that write fails for good (persist.go: the session store has
	// been unavailable for longer than its retries), PUBREC goes out all
	// the same and the connection is closed. The engine has the id with
	// its token (publish2 routed only once that was stored), which is
	// enough for exactly once: a PUBREL on the next connection forgets
	// it (pubrelPendingLocked), a resend is routed under the same name
	// and the engine stores it once. Withholding PUBREC would make that
	// resend certain, and its live copies (not deduplicated) with it.
	c.persistEither(rc < 0x80, func(ok bool) {
		c.completeAck(slot, packets.Pubrec, id, rc, text)
		if !ok {
			c.kick(rcServerUnavailable, "session not saved: server unavailable")
		}
	})
}

// testQoS2Routed, when set, is called once a client's QoS 2 message is
// routed (tests).
var testQoS2Routed atomic.Pointer[func(*conn)]

// pubrelPendingLocked forgets a token id on PUBREL (a resumed session's
// id whose message was not resent: the client had PUBREC). c.mu held.
func (c *conn) pubrelPendingLocked(id uint16) bool {
	if c.x == nil {
		return false
	}
	if _, ok := c.x.inTok[id]; !ok {
		return false
	}
	delete(c.x.inTok, id)
	return true
}
