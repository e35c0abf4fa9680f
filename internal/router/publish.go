package router

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/quota"
	"github.com/throngmq/throng/internal/tenant"
)

// OutcomeKind is how a delivery was settled (the AMQP outcomes; MQTT and
// HTTP front-ends use Accepted and Released).
type OutcomeKind uint8

const (
	Accepted OutcomeKind = iota
	Rejected
	Released
	Modified
)

func (k OutcomeKind) String() string {
	switch k {
	case Accepted:
		return "accepted"
	case Rejected:
		return "rejected"
	case Released:
		return "released"
	case Modified:
		return "modified"
	}
	return "unknown"
}

// Outcome is a settlement.
type Outcome struct {
	Kind OutcomeKind
	// DeliveryFailed (modified) counts the attempt as a failed delivery.
	DeliveryFailed bool
	// UndeliverableHere (modified) asks not to deliver it to this consumer
	// again. JetStream cannot exclude one consumer, so it is redelivered to
	// any consumer like a release.
	UndeliverableHere bool
	// Condition and Description describe a rejection.
	Condition   string
	Description string
}

// Producer publishes to one resolved address. Resolving once per link
// keeps strict-mode and auto-create decisions out of the per-message path.
type Producer struct {
	r   *Router
	ts  *tenantState
	tg  target
	ctr *addrCounters

	subject string             // engine subject for this address
	stored  bool               // JetStream publish (PubAck) rather than core
	in      prometheus.Counter // metrics.in for this tenant and type, resolved once

	interestCache atomic.Uint64                // generation<<1 | stored interest (see storedInterest)
	group         atomic.Pointer[anycastGroup] // anycast: this node's consumers, once known
	checkedGen    atomic.Uint64                // tenantState.addrGen when Stale last looked (lifecycle.go)
	gone          atomic.Bool                  // the defined address was deleted

	conn   *quota.Bucket // the publishing connection's rate bucket (SetConn; quota.go)
	exempt bool          // platform-made messages: no rate limit (quota.go)
	meters *tenantMeters // the tenant's usage meters (quota.go), resolved once: a sync.Map look-up per message was ~1 % of a QoS 1 publish's CPU
}

// Producer resolves an address for publishing: a defined address, a
// "topic::sub" name (refused: subscriptions are consumed, not published
// to), a name matched by an auto-create rule (created now), or topic
// space. ErrNotFound on a strict tenant for an unknown name.
func (r *Router) Producer(ctx context.Context, tenantName, name string) (*Producer, error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return nil, err
	}
	tg, err := r.resolve(ctx, ts, name)
	if err != nil {
		return nil, err
	}
	p := &Producer{r: r, ts: ts, tg: tg, ctr: ts.counter(name)}
	switch {
	case tg.typ == address.Subscription:
		return nil, fmt.Errorf("%w: %q is a subscription; publish to its topic", ErrInvalid, name)
	case tg.space:
		p.subject = address.Subject("t", name)
	case tg.typ == address.Queue || tg.typ == address.Topic:
		if _, err := r.ensureStream(ctx, ts, tg.def); err != nil {
			return nil, err
		}
		p.subject = subjectFor(tg.def)
		p.stored = true
	case tg.typ == address.Multicast:
		p.subject = address.Subject("t", name)
	case tg.typ == address.Anycast:
		p.subject = address.Subject("a", name)
	}
	p.in = r.metrics.in.WithLabelValues(ts.name, string(tg.typ))
	p.meters = r.meters(ts.name)
	return p, nil
}

// Type is the resolved address type (topic space reports Topic).
func (p *Producer) Type() address.Type { return p.tg.typ }

// TopicSpace reports whether the name is in the tenant's topic space.
func (p *Producer) TopicSpace() bool { return p.tg.space }

// Address is the address definition (nil in topic space).
func (p *Producer) Address() *address.Address { return p.tg.def }

// Publish publishes a message and calls done with its outcome:
//   - queue, topic, durable topic-space message: Accepted once stored;
//   - anycast: the consumer's outcome (Released if it goes away or none
//     takes it in time; ErrNoConsumers if there is none);
//   - multicast and non-durable topic space: Accepted at once (at-most-once).
//
// done may run on an engine goroutine: it must not block. m must not be
// modified after the call.
func (p *Producer) Publish(m *message.Message, done func(Outcome, error)) { p.publish(m, "", done) }

// PublishOnce is Publish for a message that its producer may publish
// again, not knowing whether the first attempt was stored: an MQTT QoS 2
// PUBLISH resent after the node that received it died between storing it
// and recording its packet id. once names the message: a stored copy
// (queue, topic, durable topic-space message) is stored once per name
// within the engine's duplicate window (JetStream Nats-Msg-Id, 2
// minutes), a second store being answered as stored. It goes in an entry
// of its own (no group commit). A live topic-space consumer takes one
// message of a name when once has the form "<sequence>.<n>" (once.go);
// anycast and multicast deliveries are not deduplicated.
func (p *Producer) PublishOnce(m *message.Message, once string, done func(Outcome, error)) {
	p.publish(m, once, done)
}

func (p *Producer) publish(m *message.Message, once string, done func(Outcome, error)) {
	if p.Stale() {
		// Never accepted into nothing (issue 14.4): the address this
		// producer was resolved to is gone.
		err := fmt.Errorf("%w: address %q was deleted", ErrDeleted, p.tg.name)
		p.count(0, Outcome{}, err)
		done(Outcome{}, err)
		return
	}
	// One look-up of the tenant's limits for the size and the rates (each
	// took the tenant store's lock).
	var lim *tenant.Limits
	if t, ok := p.r.store.Tenant(p.ts.name); ok {
		lim = t.EffectiveLimits()
	}
	if err := p.checkSize(m, lim); err != nil {
		p.count(0, Outcome{}, err)
		done(Outcome{}, err)
		return
	}
	if err := p.admit(lim); err != nil { // rate limits (quota.go)
		p.count(0, Outcome{}, err)
		done(Outcome{}, err)
		return
	}
	m = ownLarge(m) // large.go
	if m.TTL > 0 && m.Expiry.IsZero() {
		m.Expiry = clock.Now().Add(m.TTL) // wall clock: stored, compared after restarts
	}
	if p.tg.typ != address.Multicast && !p.tg.space {
		// Counted when the outcome is known (stats.go). A durable
		// topic-space message is counted below without the wrapper when
		// it goes out live (the common case: no closure per message).
		done = p.counted(m, done)
	}
	switch {
	case p.tg.typ == address.Anycast:
		p.publishAnycast(m, done)
	case p.tg.typ == address.Queue:
		if err := p.r.diskFull(); err != nil {
			done(Outcome{}, err)
			return
		}
		p.ts.batcher(p.subject).publish(p, m, once, done)
	case p.stored:
		p.publishStored(p.subject, m, once, done)
	case p.tg.space && m.Durable:
		// Durable topic-space messages are stored when a stored consumer
		// (durable subscription, share group, replay) wants them; live
		// subscribers see them on the s. subject too. Without such
		// interest they go out live, still marked durable (interest.go).
		if err := p.r.ensureTopicSpace(context.Background(), p.ts); err != nil {
			p.count(0, Outcome{}, err)
			done(Outcome{}, err)
			return
		}
		// On a cluster, accepted once the other nodes have the live
		// copies (liveack.go).
		done = p.ts.afterPeers(done)
		if p.storedInterest() {
			p.publishStored(address.Subject("s", p.tg.name), m, once, p.counted(m, done))
			return
		}
		// Held while a live subscriber of it on this node is behind
		// (live.go); counted when accepted (heldPublish).
		if err := p.deliverLive(m, once, done); err != nil {
			p.count(0, Outcome{}, err)
			done(Outcome{}, err)
		}
	default:
		// Multicast and non-durable topic space: at-most-once, accepted
		// at once.
		if err := p.publishLive(m); err != nil {
			p.count(0, Outcome{}, err)
			done(Outcome{}, err)
			return
		}
		p.count(bodyLen(m), Outcome{Kind: Accepted}, nil)
		done(Outcome{Kind: Accepted}, nil)
	}
}

// publishLive delivers an at-most-once live message (live.go).
func (p *Producer) publishLive(m *message.Message) error { return p.deliverLive(m, "", nil) }

// storedInterest reports whether a stored consumer's filter matches this
// topic-space name; the answer is cached per generation of the set.
func (p *Producer) storedInterest() bool {
	gen := p.ts.interest.gen.Load()
	if c := p.interestCache.Load(); c != 0 && c>>1 == gen {
		return c&1 == 1
	}
	match := p.ts.interest.match(address.Subject("s", p.tg.name))
	c := gen << 1
	if match {
		c |= 1
	}
	p.interestCache.Store(c)
	return match
}

// PublishSync publishes and waits for the outcome.
func (p *Producer) PublishSync(ctx context.Context, m *message.Message) (Outcome, error) {
	type res struct {
		o   Outcome
		err error
	}
	ch := make(chan res, 1)
	p.Publish(m, func(o Outcome, err error) { ch <- res{o, err} })
	select {
	case r := <-ch:
		return r.o, r.err
	case <-ctx.Done():
		return Outcome{}, ctx.Err()
	}
}

// Publish resolves name and publishes one message, waiting for the outcome.
func (r *Router) Publish(ctx context.Context, tenantName, name string, m *message.Message) (Outcome, error) {
	p, err := r.Producer(ctx, tenantName, name)
	if err != nil {
		return Outcome{}, err
	}
	p.exempt = true // the platform's own messages (wills, events): not rate limited
	return p.PublishSync(ctx, m)
}

// checkSize refuses a message over the tenant's (lim, nil: no tenant
// limits) or the address's maximum size.
func (p *Producer) checkSize(m *message.Message, lim *tenant.Limits) error {
	tenantMax, addrMax := 0, int32(0)
	if lim != nil {
		tenantMax = lim.MaxMessageSize
	}
	if p.tg.def != nil {
		addrMax = p.tg.def.Limits.MaxMessageSize
	}
	if tenantMax <= 0 && addrMax <= 0 {
		return nil // no limit: the size (a walk over the properties) is not needed
	}
	size := m.Size()
	if tenantMax > 0 && size > tenantMax {
		return fmt.Errorf("%w: message of %d bytes exceeds the tenant's maximum of %d", ErrLimitExceeded, size, tenantMax)
	}
	if addrMax > 0 && size > int(addrMax) {
		return fmt.Errorf("%w: message of %d bytes exceeds the address maximum of %d", ErrLimitExceeded, size, p.tg.def.Limits.MaxMessageSize)
	}
	return nil
}

// pubAck is JetStream's answer to a publish.
type pubAck struct {
	Stream string `json:"stream"`
	Seq    uint64 `json:"seq"`
	Error  *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

const publishTimeout = 10 * time.Second

// pubAckOK recognises a successful publish ack ({"stream":…,"seq":…}
// without an "error" member) without decoding it: the JSON decoder was a
// visible per-message cost on the queue path. Anything else takes the full
// decode.
func pubAckOK(b []byte) bool {
	return len(b) > 2 && b[0] == '{' && b[len(b)-1] == '}' &&
		bytes.Contains(b, []byte(`"seq":`)) && !bytes.Contains(b, []byte(`"error"`))
}

func (p *Producer) publishStored(subject string, m *message.Message, once string, done func(Outcome, error)) {
	if err := p.r.diskFull(); err != nil {
		done(Outcome{}, err)
		return
	}
	m, done, ok := p.chunk(m, done) // large.go
	if !ok {
		return
	}
	data := m.Marshal()
	if err := p.ts.checkStored(len(subject) + len(data)); err != nil {
		done(Outcome{}, err) // maxStoredBytes (quota.go)
		return
	}
	p.ts.storeEntry(subject, p.tg.name, data, entryHeader(m, once), done)
}

// entryHeader is ttlHeader plus, with once, the engine's deduplication
// id (PublishOnce).
func entryHeader(m *message.Message, once string) nats.Header {
	h := ttlHeader(m)
	if once != "" {
		if h == nil {
			h = nats.Header{}
		}
		h[onceHeader] = []string{once}
	}
	return h
}

// ttlHeader is the engine's per-message TTL for a message with an expiry.
func ttlHeader(m *message.Message) nats.Header {
	if m.Expiry.IsZero() {
		return nil
	}
	ttl := clock.Until(m.Expiry)
	if ttl < time.Second {
		ttl = time.Second // the engine's smallest per-message TTL
	}
	return nats.Header{"Nats-TTL": []string{fmt.Sprintf("%ds", int64((ttl+time.Second-1)/time.Second))}}
}

// storeEntry stores one engine entry (a message or a batch) on a stream
// subject and calls done with Accepted once the engine acknowledged it.
// name is the address, for errors.
func (ts *tenantState) storeEntry(subject, name string, data []byte, hdr nats.Header, done func(Outcome, error)) {
	if err := ts.sendEntry(subject, name, data, hdr, done); err != nil {
		done(Outcome{}, err)
	}
}

// sendEntry is storeEntry for callers that hold a lock done needs: an
// entry that cannot be sent is reported by the error, and done is then
// never called; otherwise done is called later, on another goroutine.
func (ts *tenantState) sendEntry(subject, name string, data []byte, hdr nats.Header, done func(Outcome, error)) error {
	e := &entrySend{ts: ts, subject: subject, name: name, data: data, hdr: hdr, done: done}
	return e.send()
}

// Leader waits. In a cluster, right after a node died, a stream whose
// leader was on it has none until its other replicas elect one (the
// engine's Raft election timeouts: 4–9 s; 5.3 s measured after a kill -9
// on this 2-core machine), and a publish to it is answered 503 (no
// responders: nobody takes the stream's subjects). Refusing it at once
// made an MQTT QoS 1 publish get PUBACK 0x80 (an MQTT 3.1.1 client cannot
// even be told: it just sees its message dropped) and an AMQP transfer
// come back released. A 503 means the entry was not stored, so sending it
// again cannot duplicate it: the entry is sent again after a short
// backoff for up to leaderWait, and refused only after that. Entries of
// one producer that wait for the same election may be stored out of order
// (each has its own backoff); refused, as before, they were out of order
// as well once the client sent them again.
const (
	leaderWait     = 10 * time.Second
	leaderRetryMin = 50 * time.Millisecond
	leaderRetryMax = 500 * time.Millisecond
)

// entrySend is one entry on its way to the engine, kept for sending it
// again while its stream has no leader. data is not reused by the
// callers (message.Marshal and batch entries are fresh allocations), so
// it may be held across the retries.
type entrySend struct {
	ts            *tenantState
	subject, name string
	data          []byte
	hdr           nats.Header
	done          func(Outcome, error)
	first         time.Time // first 503; zero before
	tries         int
}

func (e *entrySend) send() error {
	ts := e.ts
	reply, ok := ts.pubMux.register(publishTimeout, e.answer)
	if !ok {
		return ErrClosed
	}
	if err := ts.pub.PublishMsg(&nats.Msg{Subject: e.subject, Reply: reply, Data: e.data, Header: e.hdr}); err != nil {
		ts.pubMux.cancel(reply)
		return fmt.Errorf("router: publish: %w", err)
	}
	return nil
}

// answer handles the engine's reply; it runs on the reply mux's
// goroutine, so it must not block: a retry is scheduled, not waited for.
func (e *entrySend) answer(msg *nats.Msg) {
	ts, done, name := e.ts, e.done, e.name
	if msg == nil {
		done(Outcome{}, ErrTimeout)
		return
	}
	if len(msg.Data) == 0 && msg.Header.Get("Status") == "503" {
		if ts.replicas > 1 {
			// In a cluster: the stream has no leader for the moment
			// (its node failed, an election is on): sent again a
			// moment later, refused after leaderWait.
			if e.retry() {
				return
			}
			done(Outcome{}, fmt.Errorf("%w: no leader for the stream of %q yet", ErrTimeout, name))
			return
		}
		done(Outcome{}, fmt.Errorf("%w: no stream for %q", ErrNotFound, name))
		return
	}
	if pubAckOK(msg.Data) {
		done(Outcome{Kind: Accepted}, nil)
		return
	}
	var ack pubAck
	if err := json.Unmarshal(msg.Data, &ack); err != nil {
		done(Outcome{}, fmt.Errorf("router: bad publish ack: %w", err))
		return
	}
	if ack.Error != nil {
		done(Outcome{}, ts.storeError(ack.Error.ErrCode, ack.Error.Description))
		return
	}
	done(Outcome{Kind: Accepted}, nil)
}

// retry schedules the entry to be sent again, unless it has waited
// leaderWait already.
func (e *entrySend) retry() bool {
	now := time.Now()
	if e.first.IsZero() {
		e.first = now
	}
	if now.Sub(e.first) >= leaderWait {
		return false
	}
	delay := min(leaderRetryMin<<min(e.tries, 4), leaderRetryMax)
	e.tries++
	time.AfterFunc(delay, func() {
		if err := e.send(); err != nil {
			e.done(Outcome{}, err)
		}
	})
	return true
}

// ErrDiskFull refuses a stored message while the engine's disk guard is
// on (engine/disk.go): the front-ends answer as for any limit (AMQP
// amqp:resource-limit-exceeded, MQTT 0x97 quota exceeded).
var ErrDiskFull = fmt.Errorf("%w: the data directory's disk is nearly full; stored messages are refused until space is freed", ErrLimitExceeded)

func (r *Router) diskFull() error {
	if r.eng.DiskAlarm() {
		return ErrDiskFull
	}
	return nil
}

// mapStoreError turns a JetStream publish error into a router error.
func mapStoreError(code int, desc string) error {
	d := strings.ToLower(desc)
	switch {
	case strings.Contains(d, "maximum messages"), strings.Contains(d, "maximum bytes"),
		strings.Contains(d, "message size exceeds"), strings.Contains(d, "resources exceeded"),
		strings.Contains(d, "insufficient resources"):
		return fmt.Errorf("%w: %s", ErrLimitExceeded, desc)
	}
	return fmt.Errorf("router: store error %d: %s", code, desc)
}

// ---- anycast

// Anycast replies: a consumer without credit answers noCredit so the
// producer tries again (possibly reaching another consumer); otherwise it
// answers with the encoded outcome once the consumer settles.
const (
	anycastNoCredit = 'N'
	anycastOutcome  = 'O'
)

func encodeOutcome(o Outcome) []byte {
	b := []byte{anycastOutcome, byte(o.Kind), 0}
	if o.DeliveryFailed {
		b[2] |= 1
	}
	if o.UndeliverableHere {
		b[2] |= 2
	}
	b = append(b, o.Condition...)
	b = append(b, 0)
	return append(b, o.Description...)
}

func decodeOutcome(b []byte) (Outcome, bool) {
	if len(b) < 4 || b[0] != anycastOutcome || b[1] > byte(Modified) {
		return Outcome{}, false
	}
	o := Outcome{Kind: OutcomeKind(b[1]), DeliveryFailed: b[2]&1 != 0, UndeliverableHere: b[2]&2 != 0}
	cond, desc, _ := strings.Cut(string(b[3:]), "\x00")
	o.Condition, o.Description = cond, desc
	return o, true
}

// HasConsumers reports whether an anycast address has a consumer anywhere
// in the cluster (for other types it is always true). Front-ends grant
// producer credit only while it holds.
func (p *Producer) HasConsumers(ctx context.Context) bool {
	if p.tg.typ != address.Anycast {
		return true
	}
	ch := make(chan bool, 1)
	reply, ok := p.ts.mux.register(time.Second, func(msg *nats.Msg) {
		ch <- msg != nil && len(msg.Data) > 0
	})
	if !ok {
		return false
	}
	if err := p.ts.nc.PublishMsg(&nats.Msg{Subject: address.Subject("ap", p.tg.name), Reply: reply}); err != nil {
		p.ts.mux.cancel(reply)
		return false
	}
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		return false
	}
}

// WatchConsumers calls fn with the current answer of HasConsumers and
// again whenever it changes, until stop is called. Changes are noticed
// through announcements consumers publish when they attach and detach,
// and by a re-check every second (a node that dies cannot announce).
func (p *Producer) WatchConsumers(fn func(bool)) (stop func()) {
	if p.tg.typ != address.Anycast {
		fn(true)
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	kick := make(chan struct{}, 1)
	sub, err := p.ts.nc.Subscribe(address.Subject("aa", p.tg.name), func(*nats.Msg) {
		select {
		case kick <- struct{}{}:
		default:
		}
	})
	if err != nil {
		cancel()
		fn(false)
		return func() {}
	}
	go func() {
		defer sub.Unsubscribe()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		last, first := false, true
		for {
			has := p.HasConsumers(ctx)
			if ctx.Err() != nil {
				return
			}
			if first || has != last {
				fn(has)
				last, first = has, false
			}
			select {
			case <-ctx.Done():
				return
			case <-kick:
			case <-t.C:
			}
		}
	}()
	return cancel
}
