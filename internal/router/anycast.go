package router

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// Anycast (DESIGN.md 3): a message goes to one consumer and settles with
// that consumer's outcome; temporary ($temp/) reply addresses are anycast
// addresses too, so request/response rides on this path.
//
// A producer first offers a message to this node's consumers of the
// address (anycastGroup, round robin among those with credit), without
// the engine. When the node has consumers but none has credit, the
// message waits in the group, in order, until one grants credit, for at
// most Config.AnycastTimeout; it is then released (the producer is told
// Released). A consumer without credit is busy, not gone: releasing at
// once (or after a few retries, as the router used to, ~250 ms) failed
// request/response whenever a requester had less credit than requests
// outstanding, e.g. Proton's one-message prefetch with 20 requests out.
//
// When the node has no consumer of the address, or none with credit while
// other nodes share the account (their consumers may have credit), the
// message goes through the engine to the queue group of every node's
// consumers (a.<name>); a consumer there without credit answers noCredit
// and the producer tries again, backing off up to anycastMaxBackoff,
// until AnycastTimeout: each attempt offers it to this node's consumers
// first. "No responders" means no consumer anywhere (ErrNoConsumers).
//
// Once delivered, a message settles when its consumer settles it, or is
// released when the consumer closes first (Consumer.Close).

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
	for !c.ts.anycastGroup(c.tg.name, true).add(c) {
		// The group was being dropped (its last consumer left): make a
		// new one.
	}
	c.anyLocal = true
	return c.ts.nc.Publish(address.Subject("aa", c.tg.name), []byte{1})
}

// onAnycast is a message that came through the engine (from a producer
// on another node, or on this one before it knew of this consumer).
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

// anycastCredited gives messages waiting in the consumer's group to it,
// now that it has credit. AddCredit should call it for anycast consumers
// (c.anyLocal) after releasing c.mu; until it does, the group polls
// while messages wait (anycastPoll).
func (c *Consumer) anycastCredited() {
	if g := c.ts.anycastGroup(c.tg.name, false); g != nil {
		g.dispatch()
	}
}

// ---- this node's consumers of an anycast address

// anycastGroup is this node's consumers of one anycast address and the
// messages waiting for one of them to have credit. Groups are created by
// their first consumer and dropped with their last (dynamic reply
// addresses come and go by the hundred thousand); a producer that cached
// a dropped group looks it up again.
//
// Lock order: tenantState.mu, then anycastGroup.mu, then Consumer.mu.
// Consumers are offered messages outside g.mu (their deliver callback may
// grant credit, which dispatches).
type anycastGroup struct {
	name string
	ts   *tenantState
	gone atomic.Bool // dropped from the tenant's map

	mu      sync.Mutex
	cs      []*Consumer // guarded by mu
	next    uint32      // round-robin start; guarded by mu
	waiting []anyWait   // messages waiting for credit, oldest first; guarded by mu
	running bool        // a goroutine is giving out waiting messages; guarded by mu
	again   bool        // credit or messages came while running; guarded by mu
	polling bool        // a poll timer is pending; guarded by mu
}

// anyWait is a message waiting for a consumer with credit.
type anyWait struct {
	p        *Producer
	m        *message.Message
	done     func(Outcome, error)
	deadline time.Time
	attempt  int
}

// anycastPoll is how often a group with waiting messages looks for credit
// and expired messages. Credit granted through AddCredit is noticed at
// once when AddCredit calls anycastCredited; the poll is the backstop.
const anycastPoll = time.Millisecond

func (t *tenantState) anycastGroup(name string, create bool) *anycastGroup {
	t.mu.Lock()
	defer t.mu.Unlock()
	g := t.anycast[name]
	if g == nil && create {
		if t.anycast == nil {
			t.anycast = map[string]*anycastGroup{}
		}
		g = &anycastGroup{name: name, ts: t}
		t.anycast[name] = g
	}
	return g
}

// add adds a consumer; false if the group was dropped meanwhile.
func (g *anycastGroup) add(c *Consumer) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gone.Load() {
		return false
	}
	g.cs = append(g.cs, c)
	return true
}

// remove removes a consumer. Messages waiting for the last one go back to
// the engine path (consumers on other nodes, or ErrNoConsumers); an empty
// group is dropped.
func (g *anycastGroup) remove(c *Consumer) {
	g.mu.Lock()
	g.cs = without(g.cs, c)
	empty := len(g.cs) == 0
	g.mu.Unlock()
	if empty {
		g.dispatch() // hands waiting messages on
		g.prune()
	}
}

// prune drops the group from the tenant's map if it is idle and empty.
func (g *anycastGroup) prune() {
	t := g.ts
	t.mu.Lock()
	g.mu.Lock()
	if len(g.cs) == 0 && len(g.waiting) == 0 && !g.running && t.anycast[g.name] == g {
		g.gone.Store(true)
		delete(t.anycast, g.name)
	}
	g.mu.Unlock()
	t.mu.Unlock()
}

// offer gives m to one of this node's consumers with credit, or, if park,
// queues it until one has credit; false if it did neither (no consumer
// on this node, or none with credit and not park).
func (g *anycastGroup) offer(w anyWait, park bool) bool {
	g.mu.Lock()
	if len(g.cs) == 0 {
		g.mu.Unlock()
		return false
	}
	if !park || (len(g.waiting) == 0 && !g.running) {
		if g.tryLocked(w.m, w.done) {
			return true
		}
		if !park || len(g.cs) == 0 {
			g.mu.Unlock()
			return false
		}
	}
	// Behind those already waiting: one producer's messages stay in order.
	g.waiting = append(g.waiting, w)
	g.mu.Unlock()
	// Credit may have come since the try, with nobody waiting to notice.
	g.dispatch()
	return true
}

// tryLocked offers m to the consumers, round robin from g.next; called
// with g.mu held, it returns with g.mu released iff it returns true
// (otherwise with g.mu held again).
func (g *anycastGroup) tryLocked(m *message.Message, done func(Outcome, error)) bool {
	n := len(g.cs)
	start := int(g.next % uint32(n))
	g.next++
	// A snapshot is enough: one that closed meanwhile refuses. remove
	// builds a new slice, so cs is never written under our feet.
	cs := g.cs
	g.mu.Unlock()
	for i := range n {
		if cs[(start+i)%n].takeAnycast(m, done) {
			return true
		}
	}
	g.mu.Lock()
	return false
}

// dispatch gives waiting messages, oldest first, to consumers with
// credit, releases those that waited past their deadline, and hands them
// all to the engine path when the node has no consumer left. One
// goroutine at a time runs it; a call meanwhile makes it go round again.
func (g *anycastGroup) dispatch() {
	g.mu.Lock()
	if g.running {
		g.again = true
		g.mu.Unlock()
		return
	}
	if len(g.waiting) == 0 {
		g.mu.Unlock()
		return
	}
	g.running = true
	var expired, orphans []anyWait
	for {
		g.again = false
		now := time.Now()
		for i := 0; i < len(g.waiting); {
			w := g.waiting[i]
			if now.After(w.deadline) {
				g.removeAt(i)
				expired = append(expired, w)
				continue
			}
			if len(g.cs) == 0 {
				orphans = append(orphans, g.waiting...)
				clear(g.waiting)
				g.waiting = g.waiting[:0]
				break
			}
			if !g.creditLocked() {
				break
			}
			if g.tryLocked(w.m, w.done) {
				g.mu.Lock()
				// Only dispatch removes, only one runs, and offer
				// appends: w is still at i.
				g.removeAt(i)
				continue
			}
			// A consumer has credit but none takes this message (their
			// selectors refuse it): the ones behind it may still go.
			i++
		}
		if !g.again || len(g.waiting) == 0 {
			break
		}
	}
	g.running = false
	if len(g.waiting) > 0 && !g.polling {
		g.polling = true
		time.AfterFunc(anycastPoll, func() {
			g.mu.Lock()
			g.polling = false
			g.mu.Unlock()
			g.dispatch()
		})
	}
	if len(g.waiting) == 0 {
		g.waiting = nil // a burst is over: let its array go
	}
	idle := len(g.cs) == 0 && len(g.waiting) == 0
	g.mu.Unlock()
	if idle {
		g.prune() // its last consumer left while this ran
	}
	for _, w := range expired {
		w.done(Outcome{Kind: Released}, nil)
	}
	for _, w := range orphans {
		w.p.sendAnycast(w)
	}
}

// removeAt drops waiting message i. g.mu held.
func (g *anycastGroup) removeAt(i int) {
	if i == 0 { // the usual case: no copying
		g.waiting[0] = anyWait{}
		g.waiting = g.waiting[1:]
		return
	}
	n := len(g.waiting) - 1
	copy(g.waiting[i:], g.waiting[i+1:])
	g.waiting[n] = anyWait{}
	g.waiting = g.waiting[:n]
}

// creditLocked reports whether a consumer of the group has credit. g.mu
// held (lock order: g.mu, then Consumer.mu).
func (g *anycastGroup) creditLocked() bool {
	for _, c := range g.cs {
		c.mu.Lock()
		ok := !c.closed && c.credit > 0
		c.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// takeAnycast delivers m if the consumer has credit; the producer's done
// gets the consumer's outcome (Released if it closes first).
func (c *Consumer) takeAnycast(m *message.Message, done func(Outcome, error)) bool {
	c.mu.Lock()
	if c.closed || c.credit <= 0 || (c.opts.Filter != nil && !c.opts.Filter(m)) {
		c.mu.Unlock()
		return false
	}
	c.credit--
	c.giveUnlock(&Delivery{Message: m, Address: c.tg.name, Count: 1, c: c, done: done})
	return true
}

// ---- producer side

// publishAnycast sends m to one consumer of the address (see above).
func (p *Producer) publishAnycast(m *message.Message, done func(Outcome, error)) {
	p.sendAnycast(anyWait{p: p, m: m, done: done, deadline: time.Now().Add(p.r.cfg.AnycastTimeout)})
}

// sendAnycast is one attempt: this node's consumers, else the engine.
// Messages wait in the group only while no other node shares the
// account: with peers, a consumer elsewhere may have the credit this
// node's lack, so the message goes through the engine and tries again.
func (p *Producer) sendAnycast(w anyWait) {
	if g := p.anyGroup(); g != nil && g.offer(w, p.ts.peers() <= 1) {
		return
	}
	p.sendRemote(w)
}

// sendRemote sends w through the engine. (Apart from sendAnycast, so
// that only this path pays for w escaping into the reply closure.)
func (p *Producer) sendRemote(w anyWait) {
	wait := time.Until(w.deadline)
	if wait <= 0 {
		w.done(Outcome{Kind: Released}, nil)
		return
	}
	data := w.m.Marshal()
	reply, ok := p.ts.mux.register(wait, func(msg *nats.Msg) {
		switch {
		case msg == nil:
			w.done(Outcome{Kind: Released}, nil)
		case len(msg.Data) == 0 && msg.Header.Get("Status") == "503":
			w.done(Outcome{}, ErrNoConsumers)
		case len(msg.Data) == 1 && msg.Data[0] == anycastNoCredit:
			// Busy, not gone: ask again until the deadline.
			delay := min(time.Duration(w.attempt+1)*200*time.Microsecond, anycastMaxBackoff)
			if time.Now().Add(delay).After(w.deadline) {
				w.done(Outcome{Kind: Released}, nil)
				return
			}
			w.attempt++
			time.AfterFunc(delay, func() { p.sendAnycast(w) })
		default:
			o, ok := decodeOutcome(msg.Data)
			if !ok {
				w.done(Outcome{Kind: Released}, nil)
				return
			}
			w.done(o, nil)
		}
	})
	if !ok {
		w.done(Outcome{}, ErrClosed)
		return
	}
	if err := p.ts.nc.PublishMsg(&nats.Msg{Subject: p.subject, Reply: reply, Data: data}); err != nil {
		p.ts.mux.cancel(reply)
		w.done(Outcome{}, fmt.Errorf("router: publish: %w", err))
	}
}

// anycastMaxBackoff caps the pause between attempts at consumers on other
// nodes that have no credit.
const anycastMaxBackoff = 5 * time.Millisecond

// anyGroup is this node's consumer group of the anycast address, looked
// up again when the cached one was dropped.
func (p *Producer) anyGroup() *anycastGroup {
	if g := p.group.Load(); g != nil && !g.gone.Load() {
		return g
	}
	g := p.ts.anycastGroup(p.tg.name, false)
	if g != nil {
		p.group.Store(g)
	}
	return g
}
