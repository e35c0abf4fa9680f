package router

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/message"
)

// Live consumers: multicast and the live half of topic-space
// subscriptions (core NATS subjects t., s., d.).
//
// # Back-pressure for durable live messages
//
// A durable (MQTT QoS ≥ 1, AMQP durable) topic-space message that no
// stored consumer wants goes out live (interest.go) and its producer is
// answered without a store. Nothing acknowledged may then be lost because
// a live subscriber is slow or stops reading for a while, so:
//
//   - a live topic-space consumer without credit keeps durable messages in
//     its own queue (liveFlow.queue), in order, and delivers them as
//     credit comes; at-most-once (non-durable) messages are dropped and
//     counted as before;
//   - a consumer is behind while its queue is not empty, its credit is
//     below a quarter of its largest grant, or more than liveQueuedHigh
//     messages wait for it in the engine client; it has caught up when the
//     queue is empty, half its credit is back and the engine client holds
//     at most half that many;
//   - the outcome of a durable live publish on this node waits until every
//     consumer on this node that took it while behind has caught up
//     (heldPublish). There is no time limit: producers with a bounded
//     window (MQTT receive maximum, AMQP credit) wait for as long as the
//     slow subscriber lives. When it goes away (MQTT: its connection
//     closes, e.g. by keep-alive) the held outcomes complete and its
//     queue is dropped (counted "closed": a clean session keeps nothing).
//   - the queue is bounded by ConsumeOptions.LiveQueue (DefaultLiveQueue):
//     the escape hatch when producers' windows together exceed it, or
//     producers on other nodes, which this node cannot hold. Beyond it a
//     durable message is dropped and counted "queue_full" (and reported
//     to ConsumeOptions.Dropped, so the front-end can count or act on it).
//
// Earlier versions held outcomes for at most 500 ms each and stopped
// counting a consumer that granted no credit for 1 s: a subscriber that
// paused for 2 s lost everything beyond its credit window.
//
// Only producers on this node are held; a message from another node
// reaches this node's consumer through the engine, and only its queue
// bound protects it.
type liveFlow struct {
	queue   []*Delivery    // durable live messages taken without credit, oldest first
	behind  bool           // see above
	queued  int            // messages waiting in the engine client at the last remote delivery
	waiters []*heldPublish // publishes waiting for this consumer to catch up
	pumping bool           // a goroutine delivers the queue
}

// DefaultLiveQueue is the default bound of a live consumer's queue of
// durable messages (ConsumeOptions.LiveQueue).
const DefaultLiveQueue = 100000

// liveQueuedHigh is how many messages may wait in the engine client for
// a live topic-space consumer before it counts as behind.
const liveQueuedHigh = 512

// heldPublish is the outcome of one durable live publish, completed when
// the last consumer it waits for has caught up.
type heldPublish struct {
	n    atomic.Int32 // consumers still behind, plus one while the publish runs
	p    *Producer    // counts the message accepted (stats.go) before done
	body int          // its body length, for the byte counter
	done func(Outcome, error)
}

// newHeld makes the hold of a durable live publish, counting the
// publish itself (released by deliverLive once it has run).
func (p *Producer) newHeld(m *message.Message, done func(Outcome, error)) *heldPublish {
	h := &heldPublish{p: p, body: bodyLen(m), done: done}
	h.n.Store(1)
	return h
}

func (h *heldPublish) release() {
	if h.n.Add(-1) == 0 {
		h.p.count(h.body, Outcome{Kind: Accepted}, nil)
		h.done(Outcome{Kind: Accepted}, nil)
	}
}

func (c *Consumer) startLive(subjects []string) error {
	var local []string
	group := ""
	if c.opts.ShareGroup != "" {
		// A share group is a NATS queue group on the connection that
		// also receives this node's own live publishes, so the engine
		// picks one member cluster-wide; the members are in the index
		// only to tell publishers on this node to go through the engine.
		sum := sha256.Sum256([]byte(c.opts.ShareGroup + "\x00" + c.tg.name))
		group = "share_" + hex.EncodeToString(sum[:12])
	}
	if c.tg.space && group == "" && c.r.eng.Clustered() {
		// Announced to the other nodes when behind (remotehold.go).
		c.clustered, c.holdID, c.liveSubjects = true, holdIDs.Add(1), subjects
	}
	flushNC := false
	for _, s := range subjects {
		nc := c.ts.nc
		if strings.HasPrefix(s, "t.") {
			local = append(local, s)
			if group == "" {
				// Live publishes: this node's own come through the index
				// (local.go), other nodes' through the NoEcho connection.
				nc = c.ts.live
			}
		}
		if nc == c.ts.nc {
			flushNC = true
		}
		var sub *nats.Subscription
		var err error
		if group != "" {
			sub, err = nc.QueueSubscribe(s, group, c.onLive)
		} else {
			sub, err = nc.Subscribe(s, c.onLive)
		}
		if err != nil {
			return err
		}
		// The engine client's buffer is bounded; the consumer's own queue
		// (above) holds what it cannot take yet.
		_ = sub.SetPendingLimits(65536, 64<<20)
		c.subs = append(c.subs, sub)
	}
	// Registered with the engine when Consume returns, so that a message
	// published afterwards reaches it (a SUBSCRIBE is in force before its
	// SUBACK): on both connections, stored (s.) and defined (d.) subjects
	// included.
	if len(local) > 0 && group == "" {
		if err := c.ts.live.Flush(); err != nil {
			return err
		}
	}
	if flushNC {
		if err := c.ts.nc.Flush(); err != nil {
			return err
		}
	}
	if len(local) > 0 {
		for _, s := range local {
			c.ts.index.add(c, s)
		}
		c.indexed = true
	}
	// In force on the other nodes too before Consume returns (barrier.go).
	c.ts.barrier()
	return nil
}

func (c *Consumer) onLive(msg *nats.Msg) {
	m, err := message.Unmarshal(msg.Data)
	if err == nil {
		m, err = c.r.loadMessage(c.ts, m) // a stored large message seen live (large.go)
	}
	if err != nil {
		return
	}
	name := c.tg.name
	if i := strings.IndexByte(msg.Subject, '.'); i > 0 {
		if n, err := address.NameFromSubject(msg.Subject[:i], msg.Subject); err == nil {
			name = n
		}
	}
	queued := 0
	if msg.Sub != nil {
		queued, _, _ = msg.Sub.Pending()
	}
	once := ""
	if msg.Header != nil {
		once = msg.Header.Get(onceHeader) // PublishOnce (once.go)
	}
	c.take(m, name, once, queued, nil, -1)
}

// deliverLive delivers a live message to this node's consumers directly
// (local.go) and, when other nodes share the account or a share group
// member wants it, sends it through the engine. With done set (a durable
// message), done gets Accepted once every consumer here that took it
// while behind has caught up, and the message is counted accepted just
// before (p.count, as Producer.counted would); an error is returned
// instead of calling done, and nothing is counted. once is the message's
// name (PublishOnce, once.go), or "".
func (p *Producer) deliverLive(m *message.Message, once string, done func(Outcome, error)) error {
	cs := p.ts.index.match(p.subject)
	viaEngine := p.ts.peers() > 1
	if !viaEngine {
		for _, c := range cs {
			if c.opts.ShareGroup != "" {
				viaEngine = true
				break
			}
		}
	}
	if viaEngine {
		var err error
		if once == "" {
			err = p.ts.live.Publish(p.subject, m.Marshal())
		} else {
			err = p.ts.live.PublishMsg(&nats.Msg{Subject: p.subject, Data: m.Marshal(), Header: nats.Header{onceHeader: []string{once}}})
		}
		if err != nil {
			return errPublish(err)
		}
	}
	var h *heldPublish
	var hp **heldPublish
	if done != nil {
		hp = &h
	}
	// The tenant's delivery rate limit, read once for an at-most-once
	// message to several consumers (each read took the tenant store's
	// lock: ~3 % of a 1 → 100 fan-out's CPU); -1: take reads it.
	outRate := -1.0
	if !m.Durable && len(cs) > 1 {
		outRate = p.r.outRate(p.ts.name)
	}
	for _, c := range cs {
		if c.opts.ShareGroup != "" {
			continue // through the engine's queue group
		}
		if c.take(m, p.tg.name, once, -1, hp, outRate) {
			// The first consumer behind: c.mu is held (see take).
			h = p.newHeld(m, done)
			c.holdLocked(h)
			c.mu.Unlock()
		}
	}
	if done != nil && viaEngine && p.ts.holds.n.Load() > 0 {
		// Other nodes' consumers that are behind (remotehold.go).
		p.ts.holdRemote(p.subject, &h, func() *heldPublish { return p.newHeld(m, done) })
	}
	if done != nil {
		if h == nil {
			p.count(bodyLen(m), Outcome{Kind: Accepted}, nil)
			done(Outcome{Kind: Accepted}, nil)
		} else {
			h.release()
		}
	}
	return nil
}

// take delivers a live message published to name, queues it (durable
// messages to a topic-space consumer without credit), or drops it — or
// nothing, when a topic-space consumer has taken a message of that name
// (once, "" if none) before (once.go).
// queued is how many messages wait in the engine client for this consumer
// (-1: a local delivery). m is shared with other consumers and must not
// be modified. With hp non-nil (a local durable publish) and the consumer
// behind, the publish must wait for it: if *hp is set, take registers it
// and returns false; if it is nil, take returns true with c.mu still held
// so that the caller can make one (holdLocked) and unlock. outRate is
// the tenant's maxMessagesOutPerSecond if the caller has read it (-1: not
// read).
func (c *Consumer) take(m *message.Message, name, once string, queued int, hp **heldPublish, outRate float64) bool {
	if !m.Expiry.IsZero() && m.Expired(clock.Now()) {
		c.drop("expired")
		return false
	}
	if c.opts.Filter != nil && !c.opts.Filter(m) {
		return false
	}
	if c.tg.space && strings.HasPrefix(name, "$") && !strings.HasPrefix(c.tg.name, "$") {
		return false // MQTT: wildcards at the first level do not match $-names
	}
	if (!c.tg.space || !m.Durable) && !c.r.admitLiveOut(c.ts.name, outRate) {
		c.drop("rate_out") // maxMessagesOutPerSecond, at most once (quota.go)
		return false
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	d := &Delivery{Message: m, Address: name, Count: 1}
	if !c.tg.space {
		// Multicast: at most once.
		if c.credit <= 0 {
			c.mu.Unlock()
			c.drop("no_credit")
			return false
		}
		c.credit--
		c.giveUnlock(d)
		return false
	}
	if once != "" {
		if c.once == nil {
			c.once = &onceSeen{}
		}
		if c.once.seen(once) {
			c.mu.Unlock()
			c.r.metrics.dropped.WithLabelValues(c.ts.name, "duplicate").Inc()
			return false
		}
	}
	if queued >= 0 {
		c.lv.queued = queued
	}
	var release []*heldPublish
	was := c.lv.behind
	switch {
	case c.credit > 0 && len(c.lv.queue) == 0 && !c.lv.pumping:
		// While the pump runs it may be handing over the last queued
		// message outside c.mu: delivering this one now could overtake
		// it, so it joins the queue instead (the pump takes it next).
		c.credit--
		c.lv.behind = c.lv.behind || c.credit < c.maxCredit/4 || c.lv.queued > liveQueuedHigh
		if c.lv.behind && c.caughtUpLocked() {
			c.lv.behind, release = false, c.lv.waiters
			c.lv.waiters = nil
		}
	case !m.Durable && c.credit <= 0:
		c.mu.Unlock()
		c.drop("no_credit")
		return false
	case len(c.lv.queue) >= c.liveQueueMax():
		c.mu.Unlock()
		c.drop("queue_full")
		return false
	default:
		c.lv.queue = append(c.lv.queue, d)
		c.lv.behind = true
		d = nil
	}
	if c.lv.behind != was {
		c.announceBehind(c.lv.behind) // to the other nodes' publishers (remotehold.go)
	}
	if c.lv.behind && hp != nil && m.Durable {
		if *hp == nil {
			if d != nil {
				// Hand the delivery over first; the caller registers the
				// hold with c.mu held again.
				c.giveUnlock(d)
				c.mu.Lock()
			}
			return true
		}
		c.holdLocked(*hp)
	}
	if d != nil {
		c.giveUnlock(d)
	} else {
		c.mu.Unlock()
	}
	for _, h := range release {
		h.release()
	}
	return false
}

// holdLocked makes publish h wait until the consumer has caught up. c.mu
// held.
func (c *Consumer) holdLocked(h *heldPublish) {
	if c.closed || !c.lv.behind {
		return
	}
	h.n.Add(1)
	c.lv.waiters = append(c.lv.waiters, h)
}

func (c *Consumer) liveQueueMax() int {
	if c.opts.LiveQueue > 0 {
		return c.opts.LiveQueue
	}
	return DefaultLiveQueue
}

// drop counts a live message dropped for this consumer.
func (c *Consumer) drop(reason string) {
	if reason == "no_credit" {
		c.dropNoCredit.Inc()
	} else {
		c.r.metrics.dropped.WithLabelValues(c.ts.name, reason).Inc()
	}
	if c.opts.Dropped != nil {
		c.opts.Dropped(reason)
	}
}

// caughtUpLocked: a consumer that was behind has recovered. c.mu held.
func (c *Consumer) caughtUpLocked() bool {
	return len(c.lv.queue) == 0 && c.credit >= c.maxCredit/2 && c.lv.queued <= liveQueuedHigh/2
}

// liveCreditLocked runs after credit was added (AddCredit, c.mu held) and
// returns the work to do once c.mu is released: delivering queued
// messages (on another goroutine: deliver may need a lock the caller of
// AddCredit holds) or completing held publishes.
func (c *Consumer) liveCreditLocked() func() {
	if len(c.lv.queue) > 0 {
		if c.lv.pumping {
			return nil
		}
		c.lv.pumping = true
		return func() { go c.pumpLive() }
	}
	if !c.lv.behind || !c.caughtUpLocked() {
		return nil
	}
	c.lv.behind = false
	c.announceBehind(false)
	held := c.lv.waiters
	c.lv.waiters = nil
	return func() {
		for _, h := range held {
			h.release()
		}
	}
}

// pumpLive delivers queued live messages within the credit, in order,
// then completes held publishes if the consumer has caught up.
func (c *Consumer) pumpLive() {
	c.mu.Lock()
	for !c.closed && c.credit > 0 && len(c.lv.queue) > 0 {
		d := c.lv.queue[0]
		c.lv.queue[0] = nil
		c.lv.queue = c.lv.queue[1:]
		if len(c.lv.queue) == 0 {
			c.lv.queue = nil
		}
		c.credit--
		c.giveUnlock(d)
		c.mu.Lock()
	}
	c.lv.pumping = false
	var held []*heldPublish
	if !c.closed && c.lv.behind && c.caughtUpLocked() {
		c.lv.behind = false
		c.announceBehind(false)
		held = c.lv.waiters
		c.lv.waiters = nil
	}
	c.mu.Unlock()
	for _, h := range held {
		h.release()
	}
}

// liveCloseLocked ends the consumer's back-pressure (Close, c.mu held)
// and returns what to do outside the lock: held publishes complete,
// queued messages are dropped and counted.
func (c *Consumer) liveCloseLocked() func() {
	held, queue := c.lv.waiters, c.lv.queue
	if c.lv.behind {
		c.announceBehind(false)
	}
	c.lv.waiters, c.lv.queue, c.lv.behind = nil, nil, false
	if len(held) == 0 && len(queue) == 0 {
		return nil
	}
	return func() {
		for range queue {
			c.drop("closed")
		}
		for _, h := range held {
			h.release()
		}
	}
}

func errPublish(err error) error { return fmt.Errorf("router: publish: %w", err) }
