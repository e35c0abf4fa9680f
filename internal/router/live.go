package router

import (
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

func (c *Consumer) startLive(subjects []string) error {
	var local []string
	for _, s := range subjects {
		nc := c.ts.nc
		if strings.HasPrefix(s, "t.") {
			// Live publishes: this node's own come through the index
			// (local.go), other nodes' through the NoEcho connection.
			nc = c.ts.live
			local = append(local, s)
		}
		sub, err := nc.Subscribe(s, c.onLive)
		if err != nil {
			return err
		}
		// A slow consumer drops (at-most-once) instead of growing memory.
		_ = sub.SetPendingLimits(65536, 64<<20)
		c.subs = append(c.subs, sub)
	}
	if len(local) > 0 {
		// Registered with the engine when Consume returns, so that a
		// message another router publishes afterwards reaches it.
		if err := c.ts.live.Flush(); err != nil {
			return err
		}
		for _, s := range local {
			c.ts.index.add(c, s)
		}
		c.indexed = true
	}
	return nil
}

func (c *Consumer) onLive(msg *nats.Msg) {
	m, err := message.Unmarshal(msg.Data)
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
	c.take(m, name, queued)
}

// take delivers a live message published to name, if the consumer has
// credit. queued is how many messages wait in the engine client for this
// consumer (-1: not known, a local delivery). m is shared with other
// consumers and must not be modified.
func (c *Consumer) take(m *message.Message, name string, queued int) {
	if !m.Expiry.IsZero() && m.Expired(time.Now()) {
		c.r.metrics.dropped.WithLabelValues(c.ts.name, "expired").Inc()
		return
	}
	if c.opts.Filter != nil && !c.opts.Filter(m) {
		return
	}
	if c.tg.space && strings.HasPrefix(name, "$") && !strings.HasPrefix(c.tg.name, "$") {
		return // MQTT: wildcards at the first level do not match $-names
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.credit <= 0 {
		c.mu.Unlock()
		c.dropNoCredit.Inc()
		return
	}
	c.credit--
	var release func()
	if c.tg.space {
		// Behind: little credit left, or many messages queued in the
		// engine client for this subscription (already acknowledged to
		// their producers, so they count as much as used credit).
		if queued >= 0 {
			c.queued = queued
		}
		behind := c.credit < c.maxCredit/4 || c.queued > liveQueuedHigh
		switch {
		case behind && !c.congested && !c.stuck:
			c.congested = true
			c.ts.cong.set(true)
			c.congGen++
			c.lastCredit = time.Now()
			gen := c.congGen
			time.AfterFunc(maxCongested, func() { c.unstick(gen) })
		case c.congested && c.caughtUpLocked():
			c.congested = false
			release = c.ts.cong.set(false)
		}
	}
	if release != nil {
		c.mu.Unlock()
		release()
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return
		}
	}
	c.giveUnlock(&Delivery{Message: m, Address: name, Count: 1})
}

// liveQueuedHigh is how many messages may wait in the engine client for
// a live topic-space consumer before it counts as behind (interest.go).
const liveQueuedHigh = 512

// caughtUpLocked: a congested consumer has recovered. c.mu held.
func (c *Consumer) caughtUpLocked() bool {
	return c.credit >= c.maxCredit/2 && c.queued <= liveQueuedHigh/2
}

// unstick stops counting a congested consumer that has granted no credit
// for maxCongested: it is not behind but stalled, and producers are not
// held for it any longer; what it cannot take is dropped as before. One
// that makes progress, however slowly, keeps holding them.
func (c *Consumer) unstick(gen uint64) {
	c.mu.Lock()
	var release func()
	if c.congested && c.congGen == gen {
		if idle := time.Since(c.lastCredit); idle < maxCongested {
			time.AfterFunc(maxCongested-idle, func() { c.unstick(gen) })
			c.mu.Unlock()
			return
		}
		c.congested, c.stuck = false, true
		release = c.ts.cong.set(false)
	}
	c.mu.Unlock()
	if release != nil {
		release()
	}
}
