package router

import (
	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

func (c *Consumer) startAnycast() error {
	sub, err := c.ts.nc.QueueSubscribe(address.Subject("a", c.tg.name), "anycast", c.onAnycast)
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, -1)
	c.subs = append(c.subs, sub)
	probe, err := c.ts.nc.QueueSubscribe(address.Subject("ap", c.tg.name), "presence", func(m *nats.Msg) {
		_ = m.Respond([]byte{1})
	})
	if err != nil {
		return err
	}
	c.subs = append(c.subs, probe)
	// Make sure the interest is registered before announcing it.
	if err := c.ts.nc.Flush(); err != nil {
		return err
	}
	c.ts.anycastGroup(c.tg.name, true).add(c)
	c.anyLocal = true
	return c.ts.nc.Publish(address.Subject("aa", c.tg.name), []byte{1})
}

func (c *Consumer) onAnycast(msg *nats.Msg) {
	c.mu.Lock()
	if c.closed || c.credit <= 0 {
		c.mu.Unlock()
		_ = msg.Respond([]byte{anycastNoCredit})
		return
	}
	m, err := message.Unmarshal(msg.Data)
	if err != nil {
		c.mu.Unlock()
		_ = msg.Respond(encodeOutcome(Outcome{Kind: Rejected, Condition: "amqp:decode-error", Description: err.Error()}))
		return
	}
	if c.opts.Filter != nil && !c.opts.Filter(m) {
		c.mu.Unlock()
		_ = msg.Respond([]byte{anycastNoCredit})
		return
	}
	c.credit--
	reply := msg.Reply
	d := &Delivery{Message: m, Address: c.tg.name, Count: 1}
	d.settle = func(o Outcome) {
		c.forget(d)
		c.countSettle(o)
		_ = c.ts.nc.Publish(reply, encodeOutcome(o))
	}
	c.giveUnlock(d)
}
