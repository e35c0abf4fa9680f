package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	entry      *entry // the engine entry of a pulled delivery (batch.go)
}

// PreSettled reports whether the delivery needs no settlement
// (multicast, live topic space).
func (d *Delivery) PreSettled() bool { return d.settle == nil && d.done == nil }

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
	if d.done != nil {
		d.c.forget(d)
		d.c.countSettle(o)
		d.done(o, nil)
		return
	}
	d.settle(o)
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
	typ          string                           // metrics label
	out          prometheus.Counter               // metrics.out for this tenant and type, resolved once
	settled      [Modified + 1]prometheus.Counter // metrics.settled by outcome kind
	dropNoCredit prometheus.Counter               // metrics.dropped{reason="no_credit"}

	mu         sync.Mutex
	credit     int       // granted, not yet used; guarded by mu
	maxCredit  int       // largest credit held; guarded by mu
	congested  bool      // live topic-space consumer low on credit (interest.go); guarded by mu
	stuck      bool      // was congested for maxCongested: no longer counted until credit recovers; guarded by mu
	congGen    uint64    // bumped on each congestion start; guarded by mu
	queued     int       // messages waiting in the engine client at the last live delivery; guarded by mu
	lastCredit time.Time // last AddCredit while congested; guarded by mu
	closed     bool      // guarded by mu
	drainFn    func()    // pending drain completion; guarded by mu
	unsettled  *Delivery // head of the list of unsettled deliveries (prev/next); guarded by mu

	// pull consumers (stored types)
	stream, cons string
	ephemeral    bool
	inbox        string
	// reqs are the pull requests not yet finished, oldest first. The
	// engine fills waiting requests in order and a delivered message
	// carries its stream subject, not the request's reply subject, so a
	// message is attributed to the oldest request.
	reqs        []pullReq // guarded by mu
	outstanding int       // entries still due on live (not abandoned) requests; guarded by mu
	perEntry    float64   // moving average of messages per entry (batch.go), at least 1; guarded by mu
	// backlog holds deliveries received beyond the credit (an entry may
	// hold several messages), delivered in order as credit comes.
	backlog     []*Delivery // guarded by mu
	flushing    bool        // a goroutine is delivering from backlog; guarded by mu
	keepArmed   bool        // a keepAlive timer is pending; guarded by mu
	given       uint64      // deliveries handed to the front-end; guarded by mu
	givenAtKeep uint64      // given at the last keepAlive; guarded by mu
	nextReq     uint64      // guarded by mu
	maxDeliver  int

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
	c := &Consumer{r: r, ts: ts, tg: tg, opts: opts, deliver: deliver, ctr: ts.counter(name), typ: string(tg.typ),
		perEntry: 1}
	if tg.space {
		c.typ = "topicspace"
	}
	c.out = r.metrics.out.WithLabelValues(ts.name, c.typ)
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
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.credit += n
	c.maxCredit = max(c.maxCredit, c.credit)
	if c.congested {
		c.lastCredit = time.Now()
	}
	var release func()
	if c.caughtUpLocked() {
		c.stuck = false
		if c.congested {
			c.congested = false
			release = c.ts.cong.set(false)
		}
	}
	flush := len(c.backlog) > 0 && !c.flushing
	if !flush {
		c.pumpLocked(false)
	}
	c.mu.Unlock()
	if release != nil {
		release()
	}
	if flush {
		// Not on the caller's goroutine: deliver may need a lock the
		// caller of AddCredit holds.
		go c.flush()
	}
}

// Credit returns the unused credit.
func (c *Consumer) Credit() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.credit
}

// Drain delivers what is available now within the credit, then sets the
// credit to zero and calls done (AMQP drain).
func (c *Consumer) Drain(done func()) {
	c.mu.Lock()
	if c.closed || c.credit == 0 || c.inbox == "" {
		c.credit = 0
		c.mu.Unlock()
		done()
		return
	}
	// Withdraw the credit of waiting long-poll requests; what still
	// arrives for them is released.
	c.abandonLocked()
	c.drainFn = done
	if len(c.backlog) > 0 {
		if !c.flushing {
			go c.flush() // it pulls for the rest of the credit, or ends the drain
		}
		c.mu.Unlock()
		return
	}
	c.pumpLocked(true)
	c.mu.Unlock()
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
	var release func()
	if c.congested {
		c.congested = false
		release = c.ts.cong.set(false)
	}
	var unsettled []*Delivery
	for d := c.unsettled; d != nil; {
		next := d.next
		d.prev, d.next, d.listed = nil, nil, false
		unsettled = append(unsettled, d)
		d = next
	}
	c.unsettled = nil
	slices.Reverse(unsettled) // oldest first
	backlog := c.backlog
	c.backlog = nil
	drain := c.drainFn
	c.drainFn = nil
	c.mu.Unlock()
	if release != nil {
		release()
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
	for _, d := range backlog {
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
	if drain != nil {
		drain()
	}
}

// giveUnlock hands a delivery to the front-end. It is called with c.mu
// held and credit already taken, and releases c.mu before calling deliver,
// so that deliver may call AddCredit or Settle.
func (c *Consumer) giveUnlock(d *Delivery) {
	c.given++
	if d.entry != nil {
		c.armKeepaliveLocked()
	}
	if !d.PreSettled() {
		// An intrusive list: no map insert and delete per message.
		d.next, d.listed = c.unsettled, true
		if d.next != nil {
			d.next.prev = d
		}
		c.unsettled = d
	}
	c.mu.Unlock()
	c.ctr.out.Add(1)
	c.out.Inc()
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

// ---- live (core) subscriptions: multicast and topic space

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

// ---- anycast

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

// ---- pull consumers (stored types)

// subscriptionConsumer names the stream and durable consumer of a
// subscription address ("topic::name" or a defined subscription).
func subscriptionConsumer(tg target) (stream, consumer string) {
	if tg.topicDef != nil {
		return streamFor(tg.topicDef), address.ConsumerName("S", tg.subName)
	}
	return topicSpaceStream, address.ConsumerName("S", tg.subName)
}

// ensureSubscription creates the durable consumer of a subscription
// address if it does not exist yet; it collects from now on.
func (r *Router) ensureSubscription(ctx context.Context, ts *tenantState, tg target) error {
	topic := tg.def.Topic
	var filters []string
	if tg.topicDef != nil {
		if _, err := r.ensureStream(ctx, ts, tg.topicDef); err != nil {
			return err
		}
	} else {
		if err := r.ensureTopicSpace(ctx, ts); err != nil {
			return err
		}
		filters = address.FilterSubjects("s", topic)
	}
	stream, cname := subscriptionConsumer(tg)
	if err := r.ensureDurable(ctx, ts, stream, cname, tg.subName, filters, ConsumeOptions{}); err != nil {
		return err
	}
	if tg.topicDef == nil {
		ts.addInterest(filters)
	}
	return nil
}

func (r *Router) ensureDurable(ctx context.Context, ts *tenantState, stream, cname, subName string, filters []string, opts ConsumeOptions) error {
	if _, err := ts.js.Consumer(ctx, stream, cname); err == nil {
		return nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	cc := jetstream.ConsumerConfig{
		Durable:       cname,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       ackWait,
		MaxDeliver:    -1,
		MaxAckPending: 1 << 16,
		MaxWaiting:    4096,
		Metadata:      map[string]string{"throng.subscription": subName},
	}
	setStart(&cc, opts)
	switch len(filters) {
	case 0:
	case 1:
		cc.FilterSubject = filters[0]
	default:
		cc.FilterSubjects = filters
	}
	_, err := ts.js.CreateConsumer(ctx, stream, cc)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return nil
	}
	return err
}

func setStart(cc *jetstream.ConsumerConfig, opts ConsumeOptions) {
	switch {
	case opts.StartSequence > 0:
		cc.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cc.OptStartSeq = opts.StartSequence
	case !opts.StartTime.IsZero():
		t := opts.StartTime
		cc.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		cc.OptStartTime = &t
	default:
		cc.DeliverPolicy = jetstream.DeliverNewPolicy
	}
}

// startTopic attaches to a defined topic or the topic space with a durable
// name or a replay start.
func (c *Consumer) startTopic(ctx context.Context) error {
	var stream string
	var filters []string
	if c.tg.space {
		if err := c.r.ensureTopicSpace(ctx, c.ts); err != nil {
			return err
		}
		stream = topicSpaceStream
		filters = address.FilterSubjects("s", c.tg.name)
	} else {
		sn, err := c.r.ensureStream(ctx, c.ts, c.tg.def)
		if err != nil {
			return err
		}
		stream = sn
	}
	if c.opts.Durable != "" {
		// A durable subscription is identified by its name within the
		// topic (or topic-space filter).
		subName := c.tg.name + "::" + c.opts.Durable
		cname := address.ConsumerName("S", subName)
		if err := c.r.ensureDurable(ctx, c.ts, stream, cname, subName, filters, c.opts); err != nil {
			return err
		}
		if c.tg.space {
			c.ts.addInterest(filters)
		}
		return c.startPull(stream, cname)
	}
	cc := jetstream.ConsumerConfig{
		AckPolicy:         jetstream.AckExplicitPolicy,
		AckWait:           ackWait,
		MaxDeliver:        -1,
		MaxAckPending:     1 << 16,
		InactiveThreshold: time.Minute,
	}
	setStart(&cc, c.opts)
	switch len(filters) {
	case 0:
	case 1:
		cc.FilterSubject = filters[0]
	default:
		cc.FilterSubjects = filters
	}
	cons, err := c.ts.js.CreateConsumer(ctx, stream, cc)
	if err != nil {
		return fmt.Errorf("router: subscribe %q: %w", c.tg.name, err)
	}
	c.ephemeral = true
	if c.tg.space {
		c.ts.addInterest(filters)
	}
	return c.startPull(stream, cons.CachedInfo().Name)
}

func (c *Consumer) startPull(stream, cons string) error {
	c.stream, c.cons = stream, cons
	inbox := c.ts.nc.NewInbox()
	sub, err := c.ts.nc.Subscribe(inbox+".*", c.onPulled)
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, -1)
	c.subs = append(c.subs, sub)
	c.mu.Lock()
	c.inbox = inbox
	c.mu.Unlock()
	return nil
}

// pullRequest is JetStream's "next messages" request.
type pullRequest struct {
	Batch   int   `json:"batch"`
	Expires int64 `json:"expires,omitempty"` // nanoseconds
	NoWait  bool  `json:"no_wait,omitempty"`
}

const pullExpiry = 30 * time.Second

// maxPullEntries bounds the entries a consumer has asked for and not
// received: with batch entries (up to message.MaxBatch messages each) a
// pull sized by credit alone could bring far more than the credit.
const maxPullEntries = 32

// pumpLocked asks the engine for as many entries as the credit not yet
// covered by waiting requests needs (an entry holds perEntry messages on
// average). Called with c.mu held.
func (c *Consumer) pumpLocked(noWait bool) {
	if c.closed || c.inbox == "" {
		return
	}
	if len(c.backlog) > 0 || c.flushing {
		// The backlog is delivered first; its flush pumps when done.
		return
	}
	need := 0
	if c.credit > 0 {
		// At most maxPullEntries: an entry may hold many messages, and
		// what exceeds the credit waits in the backlog.
		need = min(max(int(float64(c.credit)/max(c.perEntry, 1)+0.5), 1), maxPullEntries)
	}
	want := need - c.outstanding
	if want <= 0 {
		if noWait && c.drainFn != nil && c.outstanding == 0 {
			c.finishDrainLocked()
		}
		return
	}
	// While requests are outstanding, top up only in batches of at least
	// half the need: a consumer returning credit one message at a time
	// would otherwise cost a pull request per message.
	if !noWait && c.outstanding > 0 && want < need/2 {
		return
	}
	c.nextReq++
	id := strconv.FormatUint(c.nextReq, 36)
	req := pullRequest{Batch: want}
	if noWait {
		req.NoWait = true
	} else {
		req.Expires = int64(pullExpiry)
	}
	body, _ := json.Marshal(req)
	subj := "$JS.API.CONSUMER.MSG.NEXT." + c.stream + "." + c.cons
	if err := c.ts.nc.PublishRequest(subj, c.inbox+"."+id, body); err != nil {
		return
	}
	c.reqs = append(c.reqs, pullReq{id: id, due: want})
	c.outstanding += want
}

// flush delivers the backlog within the credit, then asks for more or
// ends a drain. Only one goroutine flushes at a time, so deliveries keep
// their order.
func (c *Consumer) flush() {
	c.mu.Lock()
	c.flushLocked()
}

// flushLocked is flush with c.mu held; it returns with c.mu released.
func (c *Consumer) flushLocked() {
	if c.flushing {
		c.mu.Unlock()
		return
	}
	c.flushing = true
	for !c.closed && c.credit > 0 && len(c.backlog) > 0 {
		d := c.backlog[0]
		c.backlog[0] = nil
		c.backlog = c.backlog[1:]
		if len(c.backlog) == 0 {
			c.backlog = nil
		}
		c.credit--
		c.giveUnlock(d)
		c.mu.Lock()
	}
	c.flushing = false
	if len(c.backlog) > 0 {
		c.armKeepaliveLocked()
	}
	if c.drainFn != nil {
		if c.credit <= 0 {
			c.finishDrainLocked()
		} else if c.outstanding == 0 {
			c.pumpLocked(true)
		}
	} else {
		c.pumpLocked(false)
	}
	c.mu.Unlock()
}

// pullReq is a pull request in flight.
type pullReq struct {
	id        string
	due       int  // messages still to come
	abandoned bool // its credit was withdrawn: what arrives is released
}

// abandonLocked withdraws the credit of all requests in flight.
func (c *Consumer) abandonLocked() {
	for i := range c.reqs {
		c.reqs[i].abandoned = true
	}
	c.outstanding = 0
}

func (c *Consumer) finishDrainLocked() {
	fn := c.drainFn
	c.drainFn = nil
	c.credit = 0
	// Credit is gone: waiting requests are withdrawn too.
	c.abandonLocked()
	go fn()
}

// onPulled handles a message or a status for one of the pull requests.
func (c *Consumer) onPulled(msg *nats.Msg) {
	if len(msg.Data) == 0 && msg.Header != nil && msg.Header.Get("Status") != "" {
		// 404 no messages, 408 request expired, 409 consumer gone or
		// limits: the request is over.
		id := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
		c.mu.Lock()
		for i, rq := range c.reqs {
			if rq.id != id {
				continue
			}
			c.reqs = append(c.reqs[:i], c.reqs[i+1:]...)
			if !rq.abandoned {
				c.outstanding -= rq.due
			}
			switch {
			case c.drainFn != nil && c.outstanding == 0 && len(c.backlog) == 0 && !c.flushing:
				c.finishDrainLocked()
			case c.drainFn == nil && msg.Header.Get("Status") != "409":
				c.pumpLocked(false)
			}
			break
		}
		c.mu.Unlock()
		return
	}
	if msg.Reply == "" {
		return
	}
	count, seq, ts := parseAck(msg.Reply)
	c.mu.Lock()
	abandoned := false
	if len(c.reqs) > 0 {
		rq := &c.reqs[0]
		abandoned = rq.abandoned
		if !abandoned {
			c.outstanding--
		}
		if rq.due--; rq.due <= 0 {
			c.reqs = c.reqs[1:]
		}
	}
	if c.closed || abandoned {
		c.mu.Unlock()
		_ = msg.Respond([]byte("-NAK"))
		return
	}
	prior, msgs, err := decodeEntry(msg.Data)
	if err != nil {
		c.mu.Unlock()
		c.r.log.Warn("undecodable stored entry, terminated", "tenant", c.ts.name, "address", c.tg.name, "seq", seq, "err", err)
		_ = msg.Respond([]byte("+TERM"))
		c.refill()
		return
	}
	c.onEntryLocked(msg, msgs, count+prior, seq, ts)
}

// decodeEntry decodes an engine entry: a batch (batch.go) or a plain
// message, which is an entry of one with no prior deliveries.
func decodeEntry(b []byte) (prior uint64, msgs []*message.Message, err error) {
	if message.IsBatch(b) {
		return message.UnmarshalBatch(b)
	}
	m, err := message.Unmarshal(b)
	if err != nil {
		return 0, nil, err
	}
	return 0, []*message.Message{m}, nil
}

// keepalive is how often a consumer reports its stored deliveries in
// progress to the engine (+WPI restarts the ack wait): a delivery stays
// with its consumer until it is settled or the consumer goes away, as
// AMQP and MQTT expect, rather than being redelivered elsewhere when the
// engine's ack wait passes. Only a dead node's deliveries reach the ack
// wait. This matters for batch entries: one unsettled message would
// otherwise bring the whole entry back, settled messages included; and
// messages waiting in the backlog have not even been delivered yet.
var keepalive = ackWait / 3

// ackWait is the engine's ack wait for stored consumers (a variable for
// tests).
var ackWait = 30 * time.Second

// armKeepaliveLocked starts the keepalive timer if it is not running.
// c.mu held.
func (c *Consumer) armKeepaliveLocked() {
	if !c.keepArmed && !c.closed {
		c.keepArmed = true
		time.AfterFunc(keepalive, c.keepAlive)
	}
}

// keepAlive sends +WPI for every entry with messages in the backlog or
// delivered and unsettled. A backlog that made no progress for a whole
// period while the consumer had no credit (a receiver that stopped
// granting, or drained) is released instead, so that other consumers get
// those messages.
func (c *Consumer) keepAlive() {
	c.mu.Lock()
	c.keepArmed = false
	if c.closed {
		c.mu.Unlock()
		return
	}
	var release []*Delivery
	if len(c.backlog) > 0 && c.credit <= 0 && !c.flushing && c.given == c.givenAtKeep {
		release, c.backlog = c.backlog, nil
	}
	c.givenAtKeep = c.given
	var replies []string
	seen := map[string]bool{}
	add := func(d *Delivery) {
		if e := d.entry; e != nil && !seen[e.reply] {
			seen[e.reply] = true
			replies = append(replies, e.reply)
		}
	}
	for _, d := range c.backlog {
		add(d)
	}
	for d := c.unsettled; d != nil; d = d.next {
		add(d)
	}
	if len(replies) > 0 {
		c.armKeepaliveLocked()
	}
	c.mu.Unlock()
	for _, r := range replies {
		_ = c.ts.nc.Publish(r, []byte("+WPI"))
	}
	for _, d := range release {
		d.Settle(Outcome{Kind: Released})
	}
	if release != nil {
		c.refill()
	}
}

// entryName is the address a stored message was published to.
func (c *Consumer) entryName(subject string) string {
	if c.tg.space {
		if n, err := address.NameFromSubject("s", subject); err == nil {
			return n
		}
	}
	return c.tg.name
}

// onEntryLocked turns the messages of an entry into deliveries, queued in
// the backlog and delivered within the credit; the entry (batch.go) is
// settled with the engine when all of them are. count is the delivery
// attempt. Called with c.mu held; returns with it released.
func (c *Consumer) onEntryLocked(msg *nats.Msg, msgs []*message.Message, count, seq uint64, ts time.Time) {
	c.perEntry += (float64(len(msgs)) - c.perEntry) / 8
	e := &entry{c: c, reply: msg.Reply, subject: msg.Subject, count: count, left: len(msgs)}
	if c.maxDeliver > 0 && count > uint64(c.maxDeliver) {
		c.mu.Unlock()
		for _, m := range msgs {
			e.settled(m, Outcome{Kind: Rejected, Description: "delivery count exceeded"})
		}
		c.refill()
		return
	}
	name := c.entryName(msg.Subject)
	now := time.Now()
	var skipped []*message.Message // settled without delivery
	var refused []*message.Message // refused by the filter
	for i, m := range msgs {
		switch {
		case m.Expired(now):
			skipped = append(skipped, m)
		case c.opts.Filter != nil && !c.opts.Filter(m):
			refused = append(refused, m)
		default:
			d := &Delivery{Message: m, Address: name, Count: count, Sequence: seq, Time: ts, Part: i, entry: e}
			d.settle = func(o Outcome) {
				c.forget(d)
				c.countSettle(o)
				e.settled(d.Message, o)
			}
			c.backlog = append(c.backlog, d)
		}
	}
	c.flushLocked()
	for _, m := range skipped {
		c.r.metrics.dropped.WithLabelValues(c.ts.name, "expired").Inc()
		e.settled(m, Outcome{Kind: Accepted})
	}
	for _, m := range refused {
		if c.tg.typ == address.Queue {
			e.settled(m, Outcome{Kind: Released}) // for other consumers
		} else {
			e.settled(m, Outcome{Kind: Accepted})
		}
	}
}

// repull forgets the pull requests of a lost engine connection and asks
// again for the credit they covered.
func (c *Consumer) repull() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inbox == "" || c.closed {
		return
	}
	c.reqs = nil
	c.outstanding = 0
	if c.drainFn != nil {
		c.pumpLocked(true)
		return
	}
	c.pumpLocked(false)
}

// refill re-issues credit that a skipped message did not use.
func (c *Consumer) refill() {
	c.mu.Lock()
	switch {
	case c.drainFn == nil:
		c.pumpLocked(false)
	case c.outstanding == 0 && len(c.backlog) == 0 && !c.flushing:
		// A drain whose request was used up by skipped messages gets
		// no status from the engine: end it (asking again could fetch
		// the same refused message for ever).
		c.finishDrainLocked()
	}
	c.mu.Unlock()
}

// toDeadLetter publishes a copy of a queue message to the queue's
// dead-letter address, with the reason and the original address as
// properties, and calls done with the outcome (an error: not moved). The
// message's entry is settled only after that publish (entry.settled), so
// the message is never lost in between.
func (c *Consumer) toDeadLetter(m *message.Message, reason string, done func(error)) {
	dla := c.tg.def.DeadLetterAddress()
	dm := *m
	props := make(map[string]any, len(m.Properties)+2)
	for k, v := range m.Properties {
		props[k] = v
	}
	props["x-throng-dead-letter-reason"] = reason
	props["x-throng-original-address"] = c.tg.name
	dm.Properties = props
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	p, err := c.r.Producer(ctx, c.ts.name, dla)
	if err == nil && p.tg.typ == address.Anycast {
		err = fmt.Errorf("dead-letter address %q is anycast", dla)
	}
	if err != nil {
		c.r.log.Warn("dead-letter address unusable; message released", "tenant", c.ts.name, "address", c.tg.name, "dla", dla, "err", err)
		done(err)
		return
	}
	p.Publish(&dm, func(_ Outcome, err error) { done(err) })
}

// parseAck reads the delivery count, stream sequence and timestamp from a
// JetStream ack subject:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
//	$JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<token>]
func parseAck(s string) (count, seq uint64, ts time.Time) {
	toks := strings.Split(s, ".")
	i := 4
	if len(toks) >= 11 {
		i = 6
	}
	if len(toks) < i+4 {
		return 1, 0, time.Time{}
	}
	count, _ = strconv.ParseUint(toks[i], 10, 64)
	seq, _ = strconv.ParseUint(toks[i+1], 10, 64)
	if n, err := strconv.ParseInt(toks[i+3], 10, 64); err == nil {
		ts = time.Unix(0, n)
	}
	return count, seq, ts
}
