package router

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// ConsumeOptions shape a consumer.
type ConsumeOptions struct {
	// Durable names a durable subscription on a topic (or a topic-space
	// filter): it keeps collecting messages while no consumer is attached
	// and is resumed by attaching with the same name. Consumers attaching
	// with the same name compete for its messages.
	Durable string
	// StartSequence or StartTime replay a topic from a stream sequence or a
	// time (for a new subscription; an existing durable one resumes).
	StartSequence uint64
	StartTime     time.Time
	// Filter, if set, is applied before delivery; messages it refuses are
	// acknowledged without delivery on stored types (a selector consumes
	// only what it matches, as JMS selectors on topics do) and dropped on
	// direct types. On queues a refused message is released for others.
	Filter func(*message.Message) bool
	// StoredCompanion (live topic-space subscriptions) says the caller also
	// consumes this filter's stored messages through a durable consumer:
	// the live consumer then does not listen on the stored (s.) subjects,
	// so that a stored message is delivered once. It still gets durable
	// messages that went out live because no stored consumer wanted them.
	StoredCompanion bool
	// ShareGroup (live topic-space subscriptions) makes the consumer a
	// member of a group of which exactly one member gets each live
	// message, cluster-wide (an MQTT $share group; live.go).
	ShareGroup string
	// LiveQueue bounds the durable live messages (MQTT QoS ≥ 1 that were
	// not stored) held for a live topic-space consumer without credit;
	// beyond it they are dropped (0: DefaultLiveQueue; live.go).
	LiveQueue int
	// Dropped, if set, is told of each live message dropped for this
	// consumer, with the reason ("no_credit", "queue_full", "expired",
	// "closed"); it must not block.
	Dropped func(reason string)
	// Gone, if set, is called once when the defined address the consumer
	// is attached to is deleted (on any node; lifecycle.go): the router
	// has closed the consumer (unsettled deliveries released), and the
	// front-end ends its link or subscription with an error. It must not
	// block.
	Gone func()
}

// Delivery is one message given to a consumer.
type Delivery struct {
	Message *message.Message
	// Address is the name the message was published to (differs from the
	// consumer's name for wildcard subscriptions).
	Address string
	// Count is the delivery attempt, 1 for the first.
	Count uint64
	// Sequence is the stream sequence of stored messages (0 otherwise).
	Sequence uint64
	// Time is when the message was stored (zero for direct messages).
	Time time.Time
	// Part is the message's position in its engine entry (batch.go): with
	// Sequence it identifies a stored message.
	Part int

	settle func(Outcome) // nil with done nil: pre-settled (at-most-once)
	// A local anycast delivery (local.go) settles through c and the
	// producer's done: no closure to allocate per message.
	c    *Consumer
	done func(Outcome, error)
	once atomic.Bool

	prev, next *Delivery // in the consumer's unsettled list; guarded by the consumer's mu
	listed     bool
	entry      *entry    // the engine entry of a pulled delivery (entry.go)
	readyAt    time.Time // when it joined its feed's ready list (feed.go)
}

// PreSettled reports whether the delivery needs no settlement
// (multicast, live topic space).
func (d *Delivery) PreSettled() bool { return d.settle == nil && d.done == nil && d.entry == nil }

// Settle settles the delivery; later calls are ignored.
//   - Accepted: removed (queue) / acknowledged (topic subscription).
//   - Released, Modified: redelivered; Modified with DeliveryFailed
//     counts toward MaxDeliveries (released deliveries count as well,
//     because the engine counts every delivery).
//   - Rejected: moved to the address's dead-letter address.
func (d *Delivery) Settle(o Outcome) {
	if d.PreSettled() || !d.once.CompareAndSwap(false, true) {
		return
	}
	switch {
	case d.entry != nil:
		d.c.forget(d)
		d.c.countSettle(o)
		d.entry.f.settled(d, o)
	case d.done != nil:
		d.c.forget(d)
		d.c.countSettle(o)
		d.done(o, nil)
	default:
		d.settle(o)
	}
}

// Consumer receives messages from one address under credit: it is given at
// most as many deliveries as credit it has been granted.
type Consumer struct {
	r            *Router
	ts           *tenantState
	tg           target
	opts         ConsumeOptions
	deliver      func(*Delivery)
	ctr          *addrCounters
	meters       *tenantMeters                    // the tenant's usage meters (quota.go), resolved once
	typ          string                           // metrics label
	out          prometheus.Counter               // metrics.out for this tenant and type, resolved once
	latency      prometheus.Observer              // metrics.latency for this tenant, resolved once
	settled      [Modified + 1]prometheus.Counter // metrics.settled by outcome kind
	dropNoCredit prometheus.Counter               // metrics.dropped{reason="no_credit"}

	mu        sync.Mutex
	credit    int       // granted, not yet used; guarded by mu
	maxCredit int       // largest credit held; guarded by mu
	lv        liveFlow  // back-pressure of a live topic-space consumer (live.go); guarded by mu
	once      *onceSeen // names of the live messages taken (once.go); guarded by mu
	// A live topic-space consumer of a clustered tenant announces itself
	// to the other nodes when behind (remotehold.go); set by startLive.
	clustered    bool
	holdID       uint64
	liveSubjects []string
	closed       bool      // guarded by mu
	unsettled    *Delivery // head of the list of unsettled deliveries (prev/next); guarded by mu

	// stored types: the node's reader of the engine consumer (feed.go),
	// which holds this consumer's credit.
	f            *feed
	stream, cons string
	ephemeral    bool
	maxDeliver   int

	subs     []*nats.Subscription
	indexed  bool // in the tenant's live index (local.go); set before Consume returns
	anyLocal bool // in the tenant's anycast group (local.go); set before Consume returns
}

// Consume attaches a consumer to an address. deliver is called for each
// delivery on an engine goroutine, in order for each engine subject; a
// live wildcard consumer listens on several subjects, so deliver must be
// safe for concurrent use. It must not block (hand the delivery to the
// connection's writer); it may call AddCredit and Settle. No delivery
// happens before credit is granted with AddCredit.
func (r *Router) Consume(ctx context.Context, tenantName, name string, opts ConsumeOptions, deliver func(*Delivery)) (*Consumer, error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return nil, err
	}
	var tg target
	if address.IsWildcard(name) {
		if err := address.ValidateFilter(name); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if t, ok := r.store.Tenant(tenantName); ok && t.Strict {
			return nil, fmt.Errorf("%w: wildcard subscriptions use the topic space, which tenant %q does not allow", ErrNotFound, tenantName)
		}
		tg = target{name: name, typ: address.Topic, space: true}
	} else if tg, err = r.resolve(ctx, ts, name); err != nil {
		return nil, err
	}
	c := &Consumer{r: r, ts: ts, tg: tg, opts: opts, deliver: deliver, ctr: ts.counter(name), typ: string(tg.typ), meters: r.meters(ts.name)}
	if tg.space {
		c.typ = "topicspace"
	}
	c.out = r.metrics.out.WithLabelValues(ts.name, c.typ)
	c.latency = r.metrics.latency.WithLabelValues(ts.name)
	c.dropNoCredit = r.metrics.dropped.WithLabelValues(ts.name, "no_credit")
	for k := range c.settled {
		c.settled[k] = r.metrics.settled.WithLabelValues(ts.name, OutcomeKind(k).String())
	}
	switch {
	case tg.typ == address.Anycast:
		err = c.startAnycast()
	case tg.typ == address.Multicast:
		err = c.startLive([]string{address.Subject("t", name)})
	case tg.typ == address.Queue:
		var sn string
		if sn, err = r.ensureStream(ctx, ts, tg.def); err == nil {
			c.maxDeliver = tg.def.Limits.MaxDeliveries
			if c.maxDeliver == 0 {
				c.maxDeliver = address.DefaultMaxDeliveries
			}
			err = c.startPull(sn, queueConsumer)
		}
	case tg.typ == address.Subscription:
		if err = r.ensureSubscription(ctx, ts, tg); err == nil {
			stream, cname := subscriptionConsumer(tg)
			err = c.startPull(stream, cname)
		}
	case tg.space && opts.Durable == "" && opts.StartSequence == 0 && opts.StartTime.IsZero():
		// Live topic-space subscription: non-durable and durable
		// publishes, and defined topics under the same names.
		var subjects []string
		prefixes := []string{"t", "s", "d"}
		if opts.StoredCompanion {
			prefixes = []string{"t", "d"}
		}
		for _, p := range prefixes {
			subjects = append(subjects, address.FilterSubjects(p, name)...)
		}
		err = c.startLive(subjects)
	default:
		// Topic (defined or topic space) with a durable name or replay.
		err = c.startTopic(ctx)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	ts.mu.Lock()
	ts.consumers[c] = struct{}{}
	ts.mu.Unlock()
	c.ctr.consumers.Add(1)
	return c, nil
}

// Type is the resolved address type of the consumer.
func (c *Consumer) Type() address.Type { return c.tg.typ }

// AddCredit grants n more deliveries.
func (c *Consumer) AddCredit(n int) {
	if n <= 0 {
		return
	}
	if c.f != nil {
		c.f.addCredit(c, n)
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.credit += n
	c.maxCredit = max(c.maxCredit, c.credit)
	release := c.liveCreditLocked() // queued live messages, held publishers (live.go)
	anycast := c.anyLocal
	c.mu.Unlock()
	if release != nil {
		release()
	}
	if anycast {
		c.anycastCredited() // messages waiting in the node's anycast group (anycast.go)
	}
}

// Credit returns the unused credit.
func (c *Consumer) Credit() int {
	if c.f != nil {
		return c.f.credit(c)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.credit
}

// Drain delivers what is available now within the credit, then sets the
// credit to zero and calls done (AMQP drain).
func (c *Consumer) Drain(done func()) {
	if c.f != nil {
		c.f.drain(c, done)
		return
	}
	// Direct types deliver what arrives as it arrives: nothing is
	// available to wait for.
	c.mu.Lock()
	c.credit = 0
	c.mu.Unlock()
	done()
}

// Close detaches the consumer. Unsettled deliveries are released (they
// are redelivered to other consumers); a durable subscription is kept.
func (c *Consumer) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	release := c.liveCloseLocked() // live.go
	var unsettled []*Delivery
	for d := c.unsettled; d != nil; {
		next := d.next
		d.prev, d.next, d.listed = nil, nil, false
		unsettled = append(unsettled, d)
		d = next
	}
	c.unsettled = nil
	slices.Reverse(unsettled) // oldest first
	c.mu.Unlock()
	if release != nil {
		release()
	}
	if c.f != nil {
		// Leave first: what this consumer releases goes to the others.
		c.f.leave(c)
	}
	// Stop the engine's traffic before releasing: an UNSUB sent ahead of
	// the releases (same connection, so processed first) makes the
	// engine drop this consumer's waiting pull requests, which would
	// otherwise take the released messages again and hold them for the
	// ack wait. Drain, not Unsubscribe: what is already on its way is
	// still handled (released, since the consumer is closed).
	for _, s := range c.subs {
		_ = s.Drain()
	}
	for _, d := range unsettled {
		d.Settle(Outcome{Kind: Released})
	}
	if c.indexed {
		c.ts.index.remove(c)
	}
	if c.anyLocal {
		if g := c.ts.anycastGroup(c.tg.name, false); g != nil {
			g.remove(c)
		}
	}
	if c.tg.typ == address.Anycast {
		_ = c.ts.nc.Publish(address.Subject("aa", c.tg.name), nil)
	}
	if c.ephemeral && c.cons != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = c.ts.js.DeleteConsumer(ctx, c.stream, c.cons)
		cancel()
	}
	c.ts.mu.Lock()
	_, was := c.ts.consumers[c]
	delete(c.ts.consumers, c)
	c.ts.mu.Unlock()
	if was {
		c.ctr.consumers.Add(-1)
	}
}

// give hands a delivery of its feed to the front-end; the feed took the
// credit.
func (c *Consumer) give(d *Delivery) {
	d.c = c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.f.requeueSame(d)
		return
	}
	c.giveUnlock(d)
}

// giveUnlock hands a delivery to the front-end. It is called with c.mu
// held and credit already taken, and releases c.mu before calling deliver,
// so that deliver may call AddCredit or Settle.
func (c *Consumer) giveUnlock(d *Delivery) {
	if !d.PreSettled() {
		// An intrusive list: no map insert and delete per message.
		d.next, d.listed = c.unsettled, true
		if d.next != nil {
			d.next.prev = d
		}
		c.unsettled = d
	}
	c.mu.Unlock()
	c.ctr.delivered(d.Message)
	c.out.Inc()
	c.meters.out.Inc() // usage (quota.go)
	if d.Count == 1 && !d.Time.IsZero() {
		// Stored messages only (Time is the engine's store time); first
		// deliveries only: a redelivery's age is not latency.
		c.latency.Observe(max(time.Since(d.Time).Seconds(), 0))
	}
	c.deliver(d)
}

func (c *Consumer) forget(d *Delivery) {
	c.mu.Lock()
	if d.listed {
		d.listed = false
		if d.prev != nil {
			d.prev.next = d.next
		} else {
			c.unsettled = d.next
		}
		if d.next != nil {
			d.next.prev = d.prev
		}
		d.prev, d.next = nil, nil
	}
	c.mu.Unlock()
}

func (c *Consumer) countSettle(o Outcome) {
	if int(o.Kind) < len(c.settled) {
		c.settled[o.Kind].Inc()
		return
	}
	c.r.metrics.settled.WithLabelValues(c.ts.name, o.Kind.String()).Inc()
}
