package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

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
