package router

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/message"
)

// A feed is this node's reader of one engine consumer (a queue's shared
// consumer, a durable subscription, or a replaying topic subscriber's
// ephemeral one). Every Consumer of the node attached to that engine
// consumer is a member of its feed: the feed pulls entries for the sum of
// its members' credit, unpacks them (an entry may hold several messages,
// batch.go) into a node-level list of ready messages, and gives each
// ready message to one member that has credit for it, round-robin among
// them, draining members first.
//
// Why one reader per node rather than one per Consumer: a message may only
// be assigned to a consumer that has credit for it. With a reader per
// consumer, what an entry brought beyond a consumer's credit waited in
// that consumer's own backlog, out of reach of the others (a second
// receiver with credit got nothing), the first consumer's pull requests
// took most entries (unfair shares), and a drain's no-wait request was
// overtaken by the consumer's own long-poll requests (drain answered
// empty). Ready messages at node level can go to any member with credit.
//
// Ordering: a single goroutine at a time gives ready messages out
// (running), in ready order, so each member sees them in stream order
// (released ones go back to their place, by sequence and part). What no
// member can take stays ready; when other nodes share the tenant it goes
// back to the engine after idleRelease, so that their consumers get it.
//
// Lock order: feed.mu, then Consumer.mu, then entry.mu. deliver is never
// called with feed.mu held.
type feed struct {
	r            *Router
	ts           *tenantState
	key          string
	stream, cons string
	tg           target
	queue        bool // dead letters and filter refusals as a queue
	maxDeliver   int
	prog         progressKey // names this engine consumer's progress records
	// reclaimed is the last stream sequence delivered before a consumer
	// reset (reclaim): entries up to it come as first deliveries but were
	// delivered before. Set before the feed subscribes.
	reclaimed uint64

	mu          sync.Mutex
	members     []*member           // in attach order; guarded by mu
	rr          int                 // round-robin position in members; guarded by mu
	ready       []*Delivery         // received, not given yet, in (sequence, part) order; guarded by mu
	reqs        []pullReq           // pull requests not finished, oldest first; guarded by mu
	outstanding int                 // entries still due on reqs; guarded by mu
	perEntry    float64             // moving average of messages per entry, at least 1; guarded by mu
	nextReq     uint64              // guarded by mu
	inbox       string              // guarded by mu
	sub         *nats.Subscription  // guarded by mu
	running     bool                // a goroutine is giving out ready messages; guarded by mu
	again       bool                // work arrived while running; guarded by mu
	open        map[*entry]struct{} // entries not settled in full; guarded by mu
	keepArmed   bool                // guarded by mu
	expiryArmed bool                // pullexpiry.go; guarded by mu
	idleArmed   bool                // guarded by mu
	lastGive    time.Time           // when a message was last given; guarded by mu
	closed      bool                // guarded by mu
	outPaused   bool                // the tenant's rate out is used up; run again is armed (quota.go); guarded by mu
	excluded    map[partKey][]*Consumer
	// excluded: members a message must not go to again (modified with
	// undeliverable-here), until it is consumed or they leave, also
	// across its return to the engine; guarded by mu
	nExcluded atomic.Int32 // len(excluded), read without mu on the settle path

	// acked are the entries this feed acknowledged in full in the last
	// ackedKeep (only with other nodes in the account; ackedlog.go). An
	// acknowledgement is a plain publish to the engine
	// consumer's leader: when that node dies before the ack reached its
	// replicas, the new leader delivers the entry again after the ack
	// wait, to this same feed, while the consumers that settled it are
	// still connected (an MQTT QoS 2 subscriber then got a completed
	// message again under a new packet id: cluster soak, session 15). Such
	// a redelivery is acknowledged again and not given out. Guarded by mu.
	acked ackedLog
}

// ackedKeep is how long a feed remembers the entries it acknowledged: a
// lost ack comes back as a redelivery after the ack wait, plus the
// election that lost it.
func ackedKeep() time.Duration { return 2*ackWait + 10*time.Second }

// member is a Consumer's state in its feed; guarded by the feed's mu.
type member struct {
	c        *Consumer
	credit   int
	drainFn  func()
	drainReq string    // the no-wait request a drain waits for ("" none yet)
	retryAt  time.Time // a drain asks again from then (the engine said earlier requests take what is there)
}

// partKey identifies a stored message: its entry's sequence and its
// position in the entry.
type partKey struct {
	seq  uint64
	part int
}

// pullReq is a pull request in flight.
type pullReq struct {
	id   string
	due  int       // entries still to come
	sent time.Time // a long poll not answered by sent+pullExpiry+pullGrace is dropped (pullexpiry.go)
}

// pullRequest is JetStream's "next messages" request.
type pullRequest struct {
	Batch   int   `json:"batch"`
	Expires int64 `json:"expires,omitempty"` // nanoseconds
	NoWait  bool  `json:"no_wait,omitempty"`
}

// pullExpiry bounds a long-poll request: credit withdrawn from a feed
// (a drain, a consumer leaving) stops being asked for when its request
// expires.
const pullExpiry = 5 * time.Second

// maxPullEntries bounds the entries a feed has asked for and not
// received: with batch entries (up to message.MaxBatch messages each) a
// pull sized by credit alone could bring far more than the credit.
const maxPullEntries = 32

// drainRetry is how long a drain waits before asking the engine again
// when it answered that earlier requests take the stored messages.
const drainRetry = 5 * time.Millisecond

// idleRelease is how long ready messages that no member can take stay on
// this node before they go back to the engine (for other nodes'
// consumers; on a single node they stay).
var idleRelease = 2 * time.Second

// keepalive is how often a feed reports its entries in progress to the
// engine (+WPI restarts the ack wait): a message stays with this node
// until it is settled or given back, as AMQP and MQTT expect, rather than
// being redelivered elsewhere when the engine's ack wait passes. Only a
// dead node's entries reach the ack wait.
var keepalive = ackWait / 3

// ackWait is the engine's ack wait for stored consumers (a variable for
// tests).
var ackWait = 30 * time.Second

// join makes c a member of the feed of (stream, cons), starting the feed
// if this node has none.
func (ts *tenantState) join(c *Consumer, stream, cons string) error {
	key := stream + "/" + cons
	for {
		ts.mu.Lock()
		f := ts.feeds[key]
		if f == nil {
			f = &feed{r: c.r, ts: ts, key: key, stream: stream, cons: cons, tg: c.tg, perEntry: 1,
				queue: c.tg.typ == address.Queue, maxDeliver: c.maxDeliver,
				open: map[*entry]struct{}{}, excluded: map[partKey][]*Consumer{}}
			ts.feeds[key] = f
			ts.mu.Unlock()
			if err := f.start(); err != nil {
				ts.mu.Lock()
				if ts.feeds[key] == f {
					delete(ts.feeds, key)
				}
				ts.mu.Unlock()
				return err
			}
		} else {
			ts.mu.Unlock()
		}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			continue // it closed in between: start another
		}
		f.members = append(f.members, &member{c: c})
		c.f = f
		f.mu.Unlock()
		return nil
	}
}

func (ts *tenantState) openFeeds() []*feed {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	fs := make([]*feed, 0, len(ts.feeds))
	for _, f := range ts.feeds {
		fs = append(fs, f)
	}
	return fs
}

func (f *feed) start() error {
	prog, ci, err := f.ts.progress.key(f.ts, f.stream, f.cons)
	if err != nil {
		return err
	}
	f.prog = prog
	if ci.NumAckPending > 0 && f.ts.peers() <= 1 && (ci.Delivered.Last == nil || ci.Delivered.Last.Before(f.r.started)) {
		f.reclaim(ci)
	}
	inbox := f.ts.nc.NewInbox()
	sub, err := f.ts.nc.Subscribe(inbox+".*", f.onPulled)
	if err != nil {
		return err
	}
	_ = sub.SetPendingLimits(-1, -1)
	f.mu.Lock()
	f.inbox, f.sub = inbox, sub
	f.mu.Unlock()
	return nil
}

// reclaim takes back at once the entries a dead process had in progress.
// It runs when a feed starts on the only node of the account and the
// engine counts entries pending that it delivered before this process
// started: they belong to no live process, but to a node killed before it
// settled them. (An entry delivered by this process — to an earlier feed
// of the same consumer, whose acknowledgements may still be on their way —
// is never taken back this way.) Left alone, they would come again only
// after the engine's ack wait (30 s), behind newer entries: a persistent
// MQTT session would get a dead node's unacknowledged messages after newer
// ones. The engine's consumer reset rewinds the consumer to its ack floor,
// so they come first, in order.
//
// A reset also brings again what was acknowledged above the floor (out of
// order), which would be a second delivery of a settled message; so the
// feed resets only when every entry between the floor and the last one
// delivered is pending (counted in the stream, per filter subject; at most
// maxReclaim). Otherwise, and with other nodes in the account (pending
// entries may be theirs), the ack wait decides as before.
func (f *feed) reclaim(ci *jetstream.ConsumerInfo) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	log := f.r.log.With("tenant", f.ts.name, "stream", f.stream, "consumer", f.cons, "pending", ci.NumAckPending)
	if ok, err := f.onlyPendingAboveFloor(ctx, ci); !ok {
		if err != nil {
			log.Warn("entries in progress at a crash come after the ack wait", "err", err)
		} else {
			log.Info("entries in progress at a crash come after the ack wait (some later ones were settled)")
		}
		return
	}
	if _, err := f.ts.js.ResetConsumer(ctx, f.stream, f.cons); err != nil {
		log.Warn("entries in progress at a crash come after the ack wait", "err", err)
		return
	}
	f.reclaimed = ci.Delivered.Stream
	log.Info("took back the entries in progress at a crash", "ackFloor", ci.AckFloor.Stream)
}

// maxReclaim bounds the stream lookups of onlyPendingAboveFloor.
const maxReclaim = 1024

// onlyPendingAboveFloor reports whether every stream entry the consumer
// takes between its ack floor and its last delivery is pending, that is,
// none was settled out of order.
func (f *feed) onlyPendingAboveFloor(ctx context.Context, ci *jetstream.ConsumerInfo) (bool, error) {
	lo, hi, pending := ci.AckFloor.Stream+1, ci.Delivered.Stream, uint64(ci.NumAckPending)
	switch {
	case hi < lo || pending > maxReclaim:
		return false, nil
	case hi-lo+1 == pending:
		return true, nil // no room for anything settled
	}
	filters := ci.Config.FilterSubjects
	if ci.Config.FilterSubject != "" {
		filters = append(filters, ci.Config.FilterSubject)
	}
	if len(filters) == 0 {
		filters = []string{">"}
	}
	st, err := f.ts.js.Stream(ctx, f.stream)
	if err != nil {
		return false, err
	}
	var n uint64
	for _, subj := range filters { // a consumer's filters do not overlap
		for seq := lo; seq <= hi; {
			m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			} else if err != nil {
				return false, err
			}
			if m.Sequence > hi {
				break
			}
			if n++; n > pending {
				return false, nil
			}
			seq = m.Sequence + 1
		}
	}
	return n == pending, nil
}

func (f *feed) memberLocked(c *Consumer) *member {
	for _, m := range f.members {
		if m.c == c {
			return m
		}
	}
	return nil
}

// addCredit grants c n more messages.
func (f *feed) addCredit(c *Consumer, n int) {
	f.mu.Lock()
	m := f.memberLocked(c)
	if m == nil {
		f.mu.Unlock()
		return
	}
	m.credit += n
	if len(f.ready) > 0 {
		f.mu.Unlock()
		// Not on the caller's goroutine: deliver may need a lock the
		// caller of AddCredit holds.
		go f.run()
		return
	}
	f.pumpLocked()
	f.mu.Unlock()
}

func (f *feed) credit(c *Consumer) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	if m := f.memberLocked(c); m != nil {
		return m.credit
	}
	return 0
}

// drain gives c what is available now within its credit, then sets its
// credit to zero and calls done (AMQP drain).
func (f *feed) drain(c *Consumer, done func()) {
	f.mu.Lock()
	m := f.memberLocked(c)
	if m == nil || m.credit == 0 {
		if m != nil {
			m.credit = 0
		}
		f.mu.Unlock()
		done()
		return
	}
	if m.drainFn != nil {
		prev := m.drainFn
		m.drainFn = func() { prev(); done() }
	} else {
		m.drainFn = done
		m.drainReq = ""
	}
	f.mu.Unlock()
	go f.run()
}

// leave removes c from the feed; the last member closes it. What c holds
// unsettled is its caller's to release (Consumer.Close).
func (f *feed) leave(c *Consumer) {
	f.mu.Lock()
	var drain func()
	for i, m := range f.members {
		if m.c == c {
			drain = m.drainFn
			f.members = slices.Delete(f.members, i, i+1)
			break
		}
	}
	for k, cs := range f.excluded {
		if i := slices.Index(cs, c); i >= 0 {
			if cs = slices.Delete(cs, i, i+1); len(cs) == 0 {
				delete(f.excluded, k)
			} else {
				f.excluded[k] = cs
			}
		}
	}
	f.nExcluded.Store(int32(len(f.excluded)))
	var release []*Delivery
	var sub *nats.Subscription
	others := len(f.members) > 0
	if !others && !f.closed {
		f.closed = true
		release, f.ready = f.ready, nil
		sub = f.sub
	}
	f.mu.Unlock()
	if drain != nil {
		drain()
	}
	if sub == nil {
		if others {
			go f.run() // c's credit is gone: others may need more
		}
		return
	}
	f.ts.mu.Lock()
	if f.ts.feeds[f.key] == f {
		delete(f.ts.feeds, f.key)
	}
	f.ts.mu.Unlock()
	// Drain, not Unsubscribe: the UNSUB goes ahead of the releases on the
	// same connection, so the engine drops the waiting pull requests
	// before it redelivers; what is already on its way is still handled
	// (given back, since the feed is closed).
	_ = sub.Drain()
	for _, d := range release {
		d.entry.giveBack(d.Part, false)
	}
}

// settled handles the outcome of a message given to c.
func (f *feed) settled(d *Delivery, o Outcome) {
	e := d.entry
	switch o.Kind {
	case Accepted:
		e.consumed(d.Part)
		return
	case Rejected:
		if !f.queue {
			e.consumed(d.Part)
			return
		}
		f.toDeadLetter(d.Message, o.Description, func(err error) {
			if err != nil {
				f.requeue(d, nil) // not moved: deliver it again
				return
			}
			e.consumed(d.Part)
		})
		return
	case Modified:
		var not *Consumer
		if o.UndeliverableHere {
			not = d.c
		}
		f.requeue(d, not)
	default:
		// Released: counted as an attempt too (as the engine counts
		// every delivery), so that a consumer releasing a message for
		// ever ends with it dead-lettered after MaxDeliveries.
		f.requeue(d, nil)
	}
}

// requeueSame puts a released message back without counting a failed
// delivery attempt.
func (f *feed) requeueSame(d *Delivery) {
	f.requeueCount(d, nil, d.Count)
}

// requeue puts a message back in its place among the ready ones, for
// another delivery attempt (not to not); with no members left it goes
// back to the engine.
func (f *feed) requeue(d *Delivery, not *Consumer) {
	f.requeueCount(d, not, d.Count+1)
}

func (f *feed) requeueCount(d *Delivery, not *Consumer, count uint64) {
	nd := &Delivery{Message: d.Message, Address: d.Address, Count: count, Sequence: d.Sequence,
		Time: d.Time, Part: d.Part, entry: d.entry}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		d.entry.giveBack(d.Part, false)
		return
	}
	if not != nil {
		k := partKey{d.Sequence, d.Part}
		if !slices.Contains(f.excluded[k], not) {
			f.excluded[k] = append(f.excluded[k], not)
			f.nExcluded.Store(int32(len(f.excluded)))
		}
	}
	f.insertLocked(nd)
	f.mu.Unlock()
	go f.run()
}

// insertLocked puts d in ready in (sequence, part) order: a released
// message keeps its place at the head. f.mu held.
func (f *feed) insertLocked(d *Delivery) {
	i := len(f.ready)
	for i > 0 {
		p := f.ready[i-1]
		if p.Sequence < d.Sequence || (p.Sequence == d.Sequence && p.Part < d.Part) {
			break
		}
		i--
	}
	d.readyAt = time.Now()
	f.ready = slices.Insert(f.ready, i, d)
}

// give is one message for one member.
type give struct {
	c *Consumer
	d *Delivery
}

// run gives ready messages to members with credit, finishes drains, and
// asks the engine for more. One goroutine at a time runs it; a call while
// it runs makes the running one go round again.
func (f *feed) run() {
	f.mu.Lock()
	if f.running {
		f.again = true
		f.mu.Unlock()
		return
	}
	f.running = true
	var gives []give
	var drained []func()
	for {
		f.again = false
		gives = f.assignLocked(gives[:0])
		drained = f.drainsLocked(drained[:0])
		f.pumpLocked()
		if len(gives) == 0 && len(drained) == 0 && !f.again {
			break
		}
		f.mu.Unlock()
		for i, g := range gives {
			g.c.give(g.d)
			gives[i] = give{}
		}
		for i, fn := range drained {
			fn()
			drained[i] = nil
		}
		f.mu.Lock()
	}
	f.running = false
	if len(f.ready) > 0 && !f.idleArmed && !f.closed {
		f.idleArmed = true
		time.AfterFunc(idleRelease, f.idle)
	}
	f.mu.Unlock()
}

func (f *feed) hasDrainerLocked() bool {
	for _, m := range f.members {
		if m.drainFn != nil {
			return true
		}
	}
	return false
}

// assignLocked picks a member for each ready message it can: draining
// members first, then round-robin among those with credit. Messages no
// member can take now stay ready. f.mu held.
func (f *feed) assignLocked(out []give) []give {
	total := 0
	for _, m := range f.members {
		total += m.credit
	}
	if total == 0 || len(f.ready) == 0 {
		return out
	}
	now, wall := time.Now(), clock.Now() // wall: expiry decisions (package clock)
	outRate := f.r.outRate(f.ts.name)    // maxMessagesOutPerSecond (quota.go)
	kept := f.ready[:0]
	for i, d := range f.ready {
		f.ready[i] = nil
		if total == 0 {
			kept = append(kept, d)
			continue
		}
		switch {
		case d.Message.Expired(wall):
			f.r.metrics.dropped.WithLabelValues(f.ts.name, "expired").Inc()
			go d.entry.consumed(d.Part)
			continue
		case f.maxDeliver > 0 && d.Count > uint64(f.maxDeliver):
			go f.deadLetter(d, "delivery count exceeded")
			continue
		}
		m := f.pickLocked(d)
		if m == nil {
			if !f.queue && !f.anyAcceptsLocked(d) {
				// A subscription's selector consumes only what it
				// matches (as JMS selectors on topics do).
				go d.entry.consumed(d.Part)
				continue
			}
			kept = append(kept, d)
			continue
		}
		if outRate > 0 && !f.takeOutLocked(now, outRate) {
			// Slowed down, not dropped: it and those after it wait, in
			// order, until the tenant's bucket has a token.
			kept = append(kept, d)
			total = 0
			continue
		}
		m.credit--
		total--
		f.lastGive = now
		out = append(out, give{m.c, d})
	}
	clear(f.ready[len(kept):])
	f.ready = kept
	if len(f.ready) == 0 {
		f.ready = nil
	}
	return out
}

// pickLocked chooses the member for d. f.mu held.
func (f *feed) pickLocked(d *Delivery) *member {
	not := f.excluded[partKey{d.Sequence, d.Part}]
	ok := func(m *member) bool {
		return m.credit > 0 && !slices.Contains(not, m.c) && (m.c.opts.Filter == nil || m.c.opts.Filter(d.Message))
	}
	for _, m := range f.members {
		if m.drainFn != nil && ok(m) {
			return m
		}
	}
	n := len(f.members)
	for i := range n {
		j := (f.rr + i) % n
		if m := f.members[j]; ok(m) {
			f.rr = (j + 1) % n
			return m
		}
	}
	return nil
}

func (f *feed) anyAcceptsLocked(d *Delivery) bool {
	for _, m := range f.members {
		if m.c.opts.Filter == nil || m.c.opts.Filter(d.Message) {
			return true
		}
	}
	return false
}

// drainsLocked finishes the drains that can end: credit used up, or the
// no-wait request asked for them is over and nothing ready fits them.
// It asks the engine for the drains that have not asked yet. f.mu held.
func (f *feed) drainsLocked(out []func()) []func() {
	for _, m := range f.members {
		if m.drainFn == nil {
			continue
		}
		switch {
		case m.credit <= 0 || f.closed:
		case m.drainReq == "" && time.Now().Before(m.retryAt):
			continue // run is called again then
		case m.drainReq == "":
			m.drainReq = f.requestLocked(max(int(float64(m.credit)/max(f.perEntry, 1)+0.5), 1), true)
			if m.drainReq != "" {
				continue
			}
			// The engine could not be asked: end with what there was.
		case f.pendingLocked(m.drainReq) || f.fitsLocked(m):
			continue
		}
		out = append(out, m.drainFn)
		m.drainFn, m.drainReq, m.credit = nil, "", 0
	}
	return out
}

func (f *feed) pendingLocked(id string) bool {
	for _, rq := range f.reqs {
		if rq.id == id {
			return true
		}
	}
	return false
}

// fitsLocked: a ready message could go to m.
func (f *feed) fitsLocked(m *member) bool {
	for _, d := range f.ready {
		if !slices.Contains(f.excluded[partKey{d.Sequence, d.Part}], m.c) && (m.c.opts.Filter == nil || m.c.opts.Filter(d.Message)) {
			return true
		}
	}
	return false
}

// pumpLocked asks the engine for as many entries as the members' credit
// not covered by ready messages and waiting requests needs. f.mu held.
func (f *feed) pumpLocked() {
	if f.closed || f.sub == nil {
		return
	}
	credit := -len(f.ready)
	for _, m := range f.members {
		if m.drainFn == nil { // a drain asks for itself (drainsLocked)
			credit += m.credit
		}
	}
	need := 0
	if credit > 0 {
		need = min(max(int(float64(credit)/max(f.perEntry, 1)+0.5), 1), maxPullEntries)
	}
	want := need - f.outstanding
	if want <= 0 {
		return
	}
	// While requests are outstanding, top up only in batches of at least
	// half the need: a consumer returning credit one message at a time
	// would otherwise cost a pull request per message.
	if f.outstanding > 0 && want < need/2 {
		return
	}
	f.requestLocked(want, false)
}

// requestLocked sends a pull request for n entries and returns its id
// ("" if it could not be sent). f.mu held.
func (f *feed) requestLocked(n int, noWait bool) string {
	f.nextReq++
	id := strconv.FormatUint(f.nextReq, 36)
	req := pullRequest{Batch: n}
	if noWait {
		req.NoWait = true
	} else {
		req.Expires = int64(pullExpiry)
	}
	body, _ := json.Marshal(req)
	subj := "$JS.API.CONSUMER.MSG.NEXT." + f.stream + "." + f.cons
	if err := f.ts.nc.PublishRequest(subj, f.inbox+"."+id, body); err != nil {
		return ""
	}
	f.reqs = append(f.reqs, pullReq{id: id, due: n, sent: time.Now()})
	f.outstanding += n
	f.armExpiryLocked()
	return id
}

// onPulled handles an entry or a status for one of the pull requests.
func (f *feed) onPulled(msg *nats.Msg) {
	if len(msg.Data) == 0 && msg.Header != nil && msg.Header.Get("Status") != "" {
		// 404 no messages, 408 request expired, 409 consumer gone or
		// limits: the request is over.
		id := msg.Subject[strings.LastIndexByte(msg.Subject, '.')+1:]
		status := msg.Header.Get("Status")
		f.mu.Lock()
		for i, rq := range f.reqs {
			if rq.id == id {
				f.reqs = slices.Delete(f.reqs, i, i+1)
				f.outstanding -= rq.due
				break
			}
		}
		retry := false
		for _, m := range f.members {
			if m.drainReq == id && status == "408" {
				// "Requests Pending": what the stream holds goes to
				// earlier requests of this feed first; the drain asks
				// again shortly, until the engine answers 404 (which
				// it sends after everything it delivered before).
				m.drainReq, m.retryAt, retry = "", time.Now().Add(drainRetry), true
			}
		}
		if status == "409" && !f.hasDrainerLocked() {
			// The consumer is gone or at a limit, or its leader changed
			// (a cluster node failed): asking again at once would spin;
			// the next credit or drain asks again, and a second from now
			// in any case, since consumers waiting with their credit
			// given would never ask (pullexpiry.go).
			f.mu.Unlock()
			time.AfterFunc(time.Second, f.run)
			return
		}
		f.mu.Unlock()
		if retry {
			time.AfterFunc(drainRetry, f.run)
		}
		f.run()
		return
	}
	if msg.Reply == "" {
		return
	}
	count, seq, ts := parseAck(msg.Reply)
	f.mu.Lock()
	// The engine fills waiting requests in order and a delivered entry
	// carries its stream subject, not the request's reply subject, so an
	// entry is attributed to the oldest request.
	if len(f.reqs) > 0 {
		f.outstanding--
		if f.reqs[0].due--; f.reqs[0].due <= 0 {
			f.reqs = slices.Delete(f.reqs, 0, 1)
		}
	}
	if f.closed {
		f.mu.Unlock()
		_ = msg.Respond([]byte("-NAK"))
		return
	}
	f.mu.Unlock()
	prior, msgs, err := decodeEntry(msg.Data)
	if err == nil {
		msgs, err = f.r.loadLarge(f.ts, msgs) // large.go
	}
	if err != nil {
		f.r.log.Warn("undecodable stored entry, terminated", "tenant", f.ts.name, "address", f.tg.name, "seq", seq, "err", err)
		_ = msg.Respond([]byte("+TERM"))
		f.run()
		return
	}
	if count > 1 && f.ackedBefore(seq) {
		// Settled in full here already; the engine lost the ack.
		_ = msg.Respond([]byte("+ACK"))
		f.run()
		return
	}
	if count == 1 && seq <= f.reclaimed {
		count = 2 // delivered before the reset that took it back (reclaim)
	}
	e := &entry{f: f, reply: msg.Reply, seq: seq, count: count + prior, state: make([]partState, len(msgs)), left: len(msgs)}
	if f.queue && len(msgs) == 1 {
		e.large = msgs[0].Large // purged when consumed (large.go)
	}
	if count > 1 && len(msgs) > 1 {
		// Delivered before: parts settled then are not delivered again.
		if done := f.ts.progress.load(f, f.prog.subject(seq)); done != nil {
			e.restore(done)
		}
	}
	if e.left == 0 {
		e.finish()
		f.run()
		return
	}
	name := f.entryName(msg.Subject)
	f.mu.Lock()
	f.perEntry += (float64(len(msgs)) - f.perEntry) / 8
	if f.closed {
		f.mu.Unlock()
		_ = msg.Respond([]byte("-NAK"))
		return
	}
	f.open[e] = struct{}{}
	f.armKeepaliveLocked()
	for i, m := range msgs {
		if e.state[i] != partOpen {
			continue
		}
		f.insertLocked(&Delivery{Message: m, Address: name, Count: e.count, Sequence: seq, Time: ts, Part: i, entry: e})
	}
	f.mu.Unlock()
	f.run()
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

// entryName is the address a stored message was published to.
func (f *feed) entryName(subject string) string {
	if f.tg.space {
		if n, err := address.NameFromSubject("s", subject); err == nil {
			return n
		}
	}
	return f.tg.name
}

// deadLetter moves a message over MaxDeliveries to the dead-letter
// address (queues) or drops it (subscriptions).
func (f *feed) deadLetter(d *Delivery, reason string) {
	if !f.queue {
		d.entry.consumed(d.Part)
		return
	}
	f.toDeadLetter(d.Message, reason, func(err error) {
		if err != nil {
			d.entry.giveBack(d.Part, false)
			return
		}
		d.entry.consumed(d.Part)
	})
}

// consumedPart forgets the exclusions of a consumed message.
func (f *feed) consumedPart(seq uint64, part int) {
	if f.nExcluded.Load() == 0 {
		return
	}
	f.mu.Lock()
	delete(f.excluded, partKey{seq, part})
	f.nExcluded.Store(int32(len(f.excluded)))
	f.mu.Unlock()
}

// entryDone forgets a settled entry.
func (f *feed) entryDone(e *entry) {
	f.mu.Lock()
	delete(f.open, e)
	f.mu.Unlock()
}

func (f *feed) armKeepaliveLocked() {
	if !f.keepArmed && !f.closed {
		f.keepArmed = true
		time.AfterFunc(keepalive, f.keepAlive)
	}
}

// keepAlive sends +WPI for every entry not settled in full.
func (f *feed) keepAlive() {
	f.mu.Lock()
	f.keepArmed = false
	replies := make([]string, 0, len(f.open))
	for e := range f.open {
		replies = append(replies, e.reply)
	}
	if len(f.open) > 0 {
		f.armKeepaliveLocked()
	}
	f.mu.Unlock()
	for _, r := range replies {
		_ = f.ts.nc.Publish(r, []byte("+WPI"))
	}
}

// idle gives back to the engine the ready messages that waited here for
// idleRelease (no member had credit for them, or none may take them), so
// that consumers on other nodes get them.
func (f *feed) idle() {
	f.mu.Lock()
	stay := !f.closed && (time.Since(f.lastGive) < idleRelease || f.ts.peers() <= 1) && len(f.ready) > 0
	if !stay && !f.closed && len(f.ready) > 0 {
		// idleArmed stays set while the engine is asked: run does not
		// arm a second round meanwhile.
		own := len(f.reqs)
		f.mu.Unlock()
		stay = !f.othersWaiting(own)
		f.mu.Lock()
		stay = stay || time.Since(f.lastGive) < idleRelease // given out meanwhile
	}
	f.idleArmed = false
	var release []*Delivery
	if stay && !f.closed && len(f.ready) > 0 {
		// Members are taking messages (a slow consumer making
		// progress): what waits is theirs to come. With no other node
		// in the account, or none asking the engine for entries of this
		// consumer, there is nobody else to give it to, and giving it
		// back would put newer entries ahead of it (the engine delays
		// the redelivery, and a partly given entry comes back only once
		// its other messages are settled): it stays, in order.
		f.idleArmed = true
		time.AfterFunc(idleRelease, f.idle)
	} else if !f.closed {
		old := time.Now().Add(-idleRelease)
		kept := f.ready[:0]
		for _, d := range f.ready {
			if d.readyAt.After(old) {
				kept = append(kept, d)
				continue
			}
			release = append(release, d)
		}
		clear(f.ready[len(kept):])
		f.ready = kept
		if len(f.ready) == 0 {
			f.ready = nil
		} else {
			f.idleArmed = true
			time.AfterFunc(time.Until(f.ready[0].readyAt.Add(idleRelease))+time.Millisecond, f.idle)
		}
	}
	f.mu.Unlock()
	for _, d := range release {
		d.entry.giveBack(d.Part, true)
	}
	if len(release) > 0 {
		f.run()
	}
}

// othersWaiting reports whether pull requests other than this feed's own
// (own: its requests not finished) wait at the engine consumer: another
// node's feed whose members have credit, which the ready messages given
// back would reach. If the engine cannot say, nobody is taken to wait
// (the next idle round asks again). A request of this feed the engine has
// already expired but whose status is still on its way makes others look
// fewer: the messages stay one more round.
func (f *feed) othersWaiting(own int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), apiTry)
	defer cancel()
	cn, err := f.ts.js.Consumer(ctx, f.stream, f.cons)
	if err != nil {
		return false
	}
	return cn.CachedInfo().NumWaiting > own
}

// noteAcked remembers that the entry seq was acknowledged in full (with
// other nodes in the account: on a single node an ack is lost only with
// the process, and this feed with it).
func (f *feed) noteAcked(seq uint64) {
	if f.ts.peers() <= 1 {
		return
	}
	now := time.Now()
	f.mu.Lock()
	f.acked.add(seq, now)
	f.mu.Unlock()
}

// ackedBefore reports whether this feed acknowledged the entry seq in full
// within ackedKeep.
func (f *feed) ackedBefore(seq uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acked.has(seq)
}

// repull forgets the pull requests of a lost engine connection and asks
// again for the credit they covered.
func (f *feed) repull() {
	f.mu.Lock()
	f.reqs = nil
	f.outstanding = 0
	for _, m := range f.members {
		m.drainReq = ""
	}
	f.mu.Unlock()
	f.run()
}
