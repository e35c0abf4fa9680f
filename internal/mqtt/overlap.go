package mqtt

import (
	"slices"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/router"
)

// Overlapping subscriptions of one session (a with id 2, a/# with id 3)
// [MQTT-3.3.4-2..5]: a message matching several of them goes to the
// client once, at the highest QoS granted among them, carrying all their
// subscription identifiers (MQTT 5 allows one copy per subscription
// too; HiveMQ and EMQX send one, and applications count on it).
//
// Each subscription has its own router consumers, so the message arrives
// once per subscription; the copies are reduced here:
//
//   - a live copy (pre-settled) goes out only through the designated
//     subscription: among the matching ones, the one with the highest
//     QoS (ties: the smallest filter). Every topic-space subscription
//     receives every matching message through one of its consumers, so
//     the designated one has it too. In a persistent session the
//     designated subscription is one with a durable consumer whenever
//     there is one, so a stored message is not also sent live;
//   - a stored copy (a persistent session's durable consumers: the engine
//     stored the message once, each durable delivers it) goes out the
//     first time it arrives; later copies are acknowledged without
//     sending (connExtra.seen counts the copies still to come). First
//     arrival rather than the designated subscription, because a durable
//     made after the message was stored does not have it.
//
// The same rule keeps a subscription replaced by one with other
// consumers (a SUBSCRIBE changing QoS 0 to 1 in a persistent session)
// from dropping or doubling its flow: live copies go through the
// subscription in c.subs, the old one's stop once the new one is there.
//
// Only topic-space subscriptions that are not shared take part: shared
// subscriptions are independent [MQTT-4.8.2], and an exact-name
// subscription to a defined address has different consumers (a
// limitation: it and an overlapping wildcard each send a copy).

// shapeLocked decides how a delivery of sub goes out: not at all (drop:
// another copy carries it, or no-local), or at qos with the subscription
// identifiers ids (nil: sub's own). c.mu held.
func (c *conn) shapeLocked(sub *subscription, d *router.Delivery) (drop bool, qos byte, ids []int) {
	m := d.Message
	mq := msgQoS(m)
	// The origin is a property lookup: made only when a no-local
	// subscription asks (once per delivery otherwise costs ~2 % of a
	// fan-out's CPU).
	local, known := false, false
	isLocal := func() bool {
		if !known {
			local, known = origin(m) == c.clientID, true
		}
		return local
	}
	if sub.NoLoc && isLocal() {
		return true, 0, nil
	}
	qos = min(sub.QoS, mq)
	if c.subs[sub.Filter] != sub {
		// Replaced or unsubscribed: live copies go through the current
		// subscription (if any); stored ones are delivered (acknowledging
		// them unsent would lose them).
		return d.PreSettled(), qos, nil
	}
	if !sub.space || len(c.subs) < 2 {
		return false, qos, nil
	}
	var best *subscription
	stored := 0 // matching subscriptions with a durable consumer
	n := 0
	for _, s := range c.subs {
		if !s.space || (s.NoLoc && isLocal()) || !address.Match(s.topic, d.Address) {
			continue
		}
		n++
		if s.ID > 0 {
			ids = append(ids, s.ID)
		}
		if c.persistent && s.QoS > 0 {
			stored++
		}
		if best == nil || s.QoS > best.QoS || (s.QoS == best.QoS && s.Filter < best.Filter) {
			best = s
		}
	}
	if n < 2 || best == nil {
		return false, qos, nil
	}
	slices.Sort(ids)
	qos = min(best.QoS, mq)
	if d.PreSettled() {
		return sub != best, qos, ids
	}
	if d.Sequence == 0 || stored < 2 {
		return false, qos, ids
	}
	x := c.extraLocked()
	k := outKey{d.Address, d.Sequence, d.Part}
	if left, ok := x.seen[k]; ok {
		if left <= 1 {
			delete(x.seen, k)
		} else {
			x.seen[k] = left - 1
		}
		return true, qos, ids
	}
	if x.seen == nil || len(x.seen) >= maxSeen {
		// Bounded: a copy that never comes (a durable made after the
		// message) must not keep its entry; at worst a later copy goes
		// out again (QoS ≥ 1 is at least once).
		x.seen = map[outKey]int{}
	}
	x.seen[k] = stored - 1
	return false, qos, ids
}

// maxSeen bounds connExtra.seen.
const maxSeen = 8192

// sameConsumers reports whether subscription n, replacing s (same
// filter), would be fed by the same router consumers, so that s can be
// updated in place.
func (s *subscription) sameConsumers(n *subscription) bool {
	if len(s.refs) == 0 {
		return false
	}
	if _, _, shared, err := parseShare(n.Filter); err != nil || (shared && n.NoLoc) {
		return false // refused by subscribe
	}
	return !s.space || (s.QoS == 0) == (n.QoS == 0)
}

// dropped counts a live message the router dropped for this
// subscription (router.ConsumeOptions.Dropped), in the MQTT metrics too,
// and applies the overflow action to a full queue.
func (ref *consumerRef) dropped(reason string) {
	c := ref.c
	label := reason
	switch reason {
	case "no_credit":
		label = "slow_client" // QoS 0 to a client that does not keep up
	case "closed":
		label = "session_ended"
	}
	c.s.m.dropped.WithLabelValues(c.tenant(), label).Inc()
	if reason == "queue_full" {
		c.overflow(reason)
	}
}

// Overflow actions for a live subscriber's full queue (Config.QueueOverflow).
const (
	OverflowDrop       = "drop"
	OverflowDisconnect = "disconnect"
)
