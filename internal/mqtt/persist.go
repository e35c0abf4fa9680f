package mqtt

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/router"
)

// ---- ordered acknowledgements

// ackSlot is the acknowledgement of one client PUBLISH. Slots are sent in
// the order the PUBLISH packets arrived [MQTT-4.6.0-2], [MQTT-4.6.0-3],
// although router outcomes (anycast consumers, stores, the session write
// of QoS 2 ids) complete in any order.
type ackSlot struct {
	x     *connExtra
	b     []byte
	ready bool
}

// newAckSlotLocked reserves the next place in the acknowledgement
// order. c.mu held.
func (c *conn) newAckSlotLocked() *ackSlot {
	x := c.extraLocked()
	s := &ackSlot{x: x}
	x.amu.Lock()
	x.ackq = append(x.ackq, s)
	x.amu.Unlock()
	return s
}

// completeAck fills a slot and queues every acknowledgement that is now
// in order. The queueing happens under amu so that two completions cannot
// overtake each other on the way to the write queue.
func (c *conn) completeAck(s *ackSlot, typ byte, id uint16, rc byte, text string) {
	if !c.problemInfo {
		text = ""
	}
	b := encodeAck(typ, c.version, id, rc, text)
	x := s.x
	x.amu.Lock()
	s.b, s.ready = b, true
	n := 0
	for n < len(x.ackq) && x.ackq[n].ready {
		if x.ackq[n].b != nil { // nil: skipped (skipAck)
			c.enqueue(x.ackq[n].b, false, nil)
		}
		x.ackq[n] = nil
		n++
	}
	x.ackq = x.ackq[n:]
	if len(x.ackq) == 0 {
		x.ackq = nil
	}
	x.amu.Unlock()
}

// skipAck completes a slot without an acknowledgement (a device's
// publish with Hono's on-error skip-ack): the ones after it go out.
func (c *conn) skipAck(s *ackSlot) {
	x := s.x
	x.amu.Lock()
	s.ready = true
	n := 0
	for n < len(x.ackq) && x.ackq[n].ready {
		if x.ackq[n].b != nil {
			c.enqueue(x.ackq[n].b, false, nil)
		}
		x.ackq[n] = nil
		n++
	}
	x.ackq = x.ackq[n:]
	if len(x.ackq) == 0 {
		x.ackq = nil
	}
	x.amu.Unlock()
}

// ---- session writes

// saveWaiter is work that must wait for the session writes asked for
// before it (a PUBREC after its packet id is stored, ...). fn and either
// nil: a bare write (persist(true, nil)), waited for by nobody but
// counted when writes fail (see saveLoop).
type saveWaiter struct {
	gen    uint64
	fn     func()        // runs only if the writes succeeded
	either func(ok bool) // runs in any case, told whether they did
}

// persist asks for the session record to be written (if save) and calls
// fn once every write asked for so far has completed; fns run in call
// order. Writes are coalesced: one goroutine per connection writes while
// requests are pending, each write a snapshot of the state at that time.
// Without a persistent session fn runs at once. It never blocks, so it
// may be called from router callbacks.
//
// A write that keeps failing (saveLoop) fails the session: fn then never
// runs, for it acts on state the engine does not have (issue 16: the
// routing of a QoS 2 message whose token was not stored, a PUBCOMP whose
// forgotten packet id was still stored), and the connection is closed.
func (c *conn) persist(save bool, fn func()) {
	if !c.persistent {
		if fn != nil {
			fn()
		}
		return
	}
	c.persistWait(save, saveWaiter{fn: fn})
}

// persistEither is persist with a fn that runs whether the writes
// succeeded or not, and is told which.
func (c *conn) persistEither(save bool, fn func(ok bool)) {
	if !c.persistent {
		fn(true)
		return
	}
	c.persistWait(save, saveWaiter{either: fn})
}

func (c *conn) persistWait(save bool, w saveWaiter) {
	x := c.x // made in connect, before anything calls persist
	x.svMu.Lock()
	if save {
		x.svWant++
	}
	dropped := x.svFailed && w.fn != nil
	if dropped {
		// The connection is on its way out (saveLoop): nothing more
		// acts. (A save is still made: cleanup's final write may get
		// through.)
		w.fn = nil
	}
	if !x.svRunning && x.svDone == x.svWant {
		failed := x.failedAt(x.svWant)
		x.svMu.Unlock()
		switch {
		case w.either != nil:
			w.either(!failed)
		case w.fn != nil:
			w.fn()
		}
	} else {
		if w.fn != nil || w.either != nil || save {
			w.gen = x.svWant
			x.svWaiters = append(x.svWaiters, w)
		}
		if !x.svRunning {
			x.svRunning = true
			go c.saveLoop()
		}
		x.svMu.Unlock()
	}
	if dropped {
		// Not here: sendPublish calls persist holding smu, which is
		// taken after c.mu (sendUnlock), and kick takes c.mu.
		go c.kick(rcServerUnavailable, "session not saved: server unavailable")
	}
}

// failedAt reports whether the write of generation gen (and so the state
// it holds) failed. svMu held, or called by the save loop (the only
// writer of svFailed and svGood).
func (x *connExtra) failedAt(gen uint64) bool {
	return x.svFailed && gen > x.svGood
}

// savesPending reports whether persist(false, fn) would have to wait for
// a session write rather than run fn at once.
func (c *conn) savesPending() bool {
	if !c.persistent {
		return false
	}
	x := c.x
	x.svMu.Lock()
	pending := x.svRunning || x.svDone != x.svWant || x.svFailed
	x.svMu.Unlock()
	return pending
}

// persistSync writes the session record (if save) and waits for it and
// every earlier write. It reports false if one of them failed (the
// session's state is not all in the engine); it never hangs.
func (c *conn) persistSync(save bool) bool {
	done := make(chan bool, 1)
	c.persistEither(save, func(ok bool) { done <- ok })
	return <-done
}

// Session writes that fail are tried again until sessionWriteFor from
// the start of the first try (a fresh snapshot each time, each try
// bounded by sessionRetryTry) while the connection is open: in a
// cluster, the bucket's stream has no leader for a few seconds after its
// node died (nats-server's election timeout is 4–9 s), and every Put
// fails or times out meanwhile. Tries are short because a request may
// go unanswered: in the cluster soak a single 15 s try (what writes had)
// timed out around a 3.5 s SIGSTOP, and the QoS 2 publisher waiting for
// its PUBREC gave up and moved. Once the connection is closed (taken
// over by another node, which waits takeoverWait for this one's last
// write and then goes on with the record as it is), retries would only
// overwrite the new owner's record later: the closed connection's write
// (cleanup's) has one try, of sessionWriteTry. testSessionWriteFor (ns),
// when set, replaces sessionWriteFor (tests).
const (
	sessionWriteFor = 20 * time.Second
	sessionWriteTry = 15 * time.Second
	sessionRetryTry = 5 * time.Second
)

var testSessionWriteFor atomic.Int64

// testSessionWrite, when set, is called before each session write; an
// error fails that write as the engine's would (tests).
var testSessionWrite atomic.Pointer[func(*conn) error]

func (c *conn) saveLoop() {
	x := c.x
	kick := false // a failed write had waiters that must not act: close once they are settled
	for {
		x.svMu.Lock()
		n := 0
		for n < len(x.svWaiters) && x.svWaiters[n].gen <= x.svDone {
			n++
		}
		run := x.svWaiters[:n:n]
		x.svWaiters = x.svWaiters[n:]
		if len(x.svWaiters) == 0 {
			x.svWaiters = nil
		}
		want := x.svWant
		if n == 0 && want == x.svDone {
			x.svRunning = false
			x.svMu.Unlock()
			return
		}
		x.svMu.Unlock()
		if n > 0 {
			// Nothing acts for a connection that has closed meanwhile:
			// a write that took long (the engine without a leader) may
			// complete after the client moved to another node, which read
			// the record before it — routing a QoS 2 message now would
			// store it a second time, beside the resend routed there
			// under the name that node gave it.
			open := c.open()
			for _, w := range run {
				switch {
				case w.either != nil:
					w.either(!x.failedAt(w.gen))
				case w.fn != nil && !x.failedAt(w.gen) && open:
					w.fn()
				}
			}
			if kick {
				// After the waiters that run anyway (a PUBREC whose
				// message's token is stored) queued their packets.
				kick = false
				c.kick(rcServerUnavailable, "session not saved: server unavailable")
			}
			continue
		}
		// want is read before the snapshot is taken: the snapshot holds
		// every change made before persist asked for write want.
		until := time.Now().Add(c.writeFor())
		try := sessionWriteTry
		if c.open() {
			try = sessionRetryTry
		}
		err := c.writeSession(try)
		for wait := 100 * time.Millisecond; err != nil && time.Until(until) > wait && c.open(); wait = min(2*wait, time.Second) {
			time.Sleep(wait)
			x.svMu.Lock()
			want = x.svWant
			x.svMu.Unlock()
			err = c.writeSession(min(max(time.Until(until), time.Second), sessionRetryTry))
		}
		x.svMu.Lock()
		if err != nil {
			// Whatever waits for this write must not act (persist): a
			// bare write or a waiter that would have acted closes the
			// connection, so that the client sends again what it has not
			// had an answer for, on a connection whose session record
			// the engine has. Waiters that run anyway are told
			// (persistSync: the CONNECT refuses with 0x88; cleanup ends as
			// it is).
			x.svFailed = true
			for _, w := range x.svWaiters {
				if w.gen > x.svGood && w.gen <= want && w.either == nil {
					kick = true
				}
			}
		} else {
			x.svGood = want
		}
		x.svDone = want
		x.svMu.Unlock()
		if err != nil {
			c.s.log.Warn("session not saved", "tenant", c.tenant(), "client_id", c.clientID, "err", err, "closing", kick)
		}
	}
}

// open reports whether the connection is neither closing nor closed.
func (c *conn) open() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.gone && c.kicked == 0
}

func (c *conn) writeFor() time.Duration {
	if d := testSessionWriteFor.Load(); d > 0 {
		return time.Duration(d)
	}
	return sessionWriteFor
}

// writeSession writes a snapshot of the session. Only the save loop
// calls it, so snapshots reach the engine in the order they were taken.
func (c *conn) writeSession(d time.Duration) error {
	if c.s.halted.Load() {
		return nil // test hook: the process is gone
	}
	c.mu.Lock()
	if c.x.dropped || c.sessExpiry == 0 {
		c.mu.Unlock()
		return nil
	}
	rec := c.recordLocked()
	c.mu.Unlock()
	if h := testSessionWrite.Load(); h != nil {
		if err := (*h)(c); err != nil {
			return err
		}
	}
	b, _ := json.Marshal(rec)
	ctx, cancel := context.WithTimeout(context.Background(), min(d, sessionWriteTry))
	defer cancel()
	sessions, _, err := c.s.buckets(ctx, c.tenant(), true)
	if err == nil {
		_, err = sessions.Put(ctx, c.clientID, b)
	}
	return err
}

// recordLocked is the session as stored. c.mu held.
func (c *conn) recordLocked() *sessionRecord {
	x := c.extraLocked()
	rec := &sessionRecord{Expiry: c.sessExpiry, Disconnected: x.discAt}
	if x.discAt.IsZero() {
		rec.Node = c.s.node
	}
	for _, s := range c.subs {
		rec.Subs = append(rec.Subs, s)
	}
	for id := range c.inQoS2 {
		rec.QoS2 = append(rec.QoS2, id)
	}
	for id, tok := range x.inTok {
		rec.QoS2In = append(rec.QoS2In, inRef{ID: id, Tok: tok})
	}
	for id, om := range c.inflight {
		switch {
		case om.rel:
			rec.Rel = append(rec.Rel, id)
			if k := om.relKeyOf(); k != (outKey{}) {
				rec.RelOut = append(rec.RelOut, outRef{ID: id, Filter: k.filter, Seq: k.seq, Part: k.part})
			}
		case om.d != nil && om.d.Sequence > 0 && om.sub != nil:
			rec.Out = append(rec.Out, outRef{ID: id, Filter: om.sub.Filter, Seq: om.d.Sequence, Part: om.d.Part})
		}
	}
	rec.Done = x.doneRefs(time.Now())
	for k, id := range x.resume {
		rec.Out = append(rec.Out, outRef{ID: id, Filter: k.filter, Seq: k.seq, Part: k.part})
	}
	slices.Sort(rec.QoS2)
	slices.Sort(rec.Rel)
	return rec
}

// outKey identifies a stored message of a subscription.
type outKey struct {
	filter string
	seq    uint64
	part   int // position in a batch entry (router.Delivery.Part)
}

// outRef is a server→client PUBLISH not yet acknowledged, as stored: when
// the engine redelivers that message to the resumed session, it goes out
// with the same packet id (and DUP) [MQTT-4.4.0-1].
type outRef struct {
	ID     uint16 `json:"i"`
	Filter string `json:"f"`
	Seq    uint64 `json:"s"`
	Part   int    `json:"p,omitempty"`
}

// recentRel is a QoS 2 message completed a moment ago.
type recentRel struct {
	key outKey
	at  time.Time
}

// recentRelKeep is how long a completed QoS 2 message stays in the session
// record, and maxRecentRel how many at most. The engine hears of a
// settlement late: the router's progress record of a batch entry 20 ms
// after it, the +ACK when the whole entry is settled, and nats-server
// writes a consumer's state at most every 100 ms; on a node busy with a
// reconnect storm all of it lags by far more. A crash before it is written
// makes the engine deliver the message again, and without its key in the
// record it went out under a new packet id (docs/reliability.md, issue
// 11: 55 in one storm, when at most 64 keys, a third of a second at the
// soak's 200 msg/s, were kept). Keys are stored compactly (doneRef).
const (
	recentRelKeep = 5 * time.Second
	maxRecentRel  = 2048
)

// noteCompleted remembers a completed QoS 2 message (recentRel). c.mu held.
func (c *conn) noteCompletedLocked(k outKey) {
	x := c.extraLocked()
	now := time.Now()
	i := 0
	for i < len(x.recentRel) && (now.Sub(x.recentRel[i].at) >= recentRelKeep || len(x.recentRel)-i >= maxRecentRel) {
		i++
	}
	if i > 0 {
		clear(x.recentRel[:i])
		x.recentRel = x.recentRel[i:]
	}
	x.recentRel = append(x.recentRel, recentRel{key: k, at: now})
}

// doneRef lists, for one subscription, the stored messages whose QoS 2
// exchange is over but whose settlement the engine may not know yet:
// those completed in the last recentRelKeep, and those restored from the
// previous record that the engine has not redelivered yet (relDone). A
// redelivery of one of them is settled without being sent (exactly once
// [MQTT-4.3.3]). SP holds sequence and part pairs, sorted, each sequence
// as the difference from the one before.
type doneRef struct {
	Filter string   `json:"f"`
	SP     []uint64 `json:"sp"`
}

// doneRefs encodes recentRel (those kept at now) and relDone. c.mu held.
func (x *connExtra) doneRefs(now time.Time) []doneRef {
	var keys []outKey
	for _, r := range x.recentRel {
		if now.Sub(r.at) < recentRelKeep {
			keys = append(keys, r.key)
		}
	}
	// Restored keys not seen again yet are written again: a second crash,
	// or the next connection of the client, must still know them.
	for k := range x.relDone {
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil
	}
	slices.SortFunc(keys, func(a, b outKey) int {
		if a.filter != b.filter {
			return strings.Compare(a.filter, b.filter)
		}
		if a.seq != b.seq {
			return cmp.Compare(a.seq, b.seq)
		}
		return cmp.Compare(a.part, b.part)
	})
	keys = slices.Compact(keys)
	var out []doneRef
	var prev uint64
	for _, k := range keys {
		if len(out) == 0 || out[len(out)-1].Filter != k.filter {
			out = append(out, doneRef{Filter: k.filter})
			prev = 0
		}
		d := &out[len(out)-1]
		d.SP = append(d.SP, k.seq-prev, uint64(k.part))
		prev = k.seq
	}
	return out
}

// keys decodes a doneRef.
func (d doneRef) keys(fn func(outKey)) {
	var seq uint64
	for i := 0; i+1 < len(d.SP); i += 2 {
		seq += d.SP[i]
		fn(outKey{d.Filter, seq, int(d.SP[i+1])})
	}
}

// resumeHold bounds how long packet ids of the previous connection stay
// reserved for redeliveries (a message acknowledged after the last session
// write is never redelivered).
const resumeHold = 30 * time.Second

// restoreState takes over a stored session's state before CONNACK:
// subscriptions (attached later by attach), QoS 2 ids in both directions
// and the packet ids of unacknowledged messages.
func (c *conn) restoreState(rec *sessionRecord) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range rec.QoS2 {
		if c.inQoS2 == nil {
			c.inQoS2 = map[uint16]struct{}{}
		}
		c.inQoS2[id] = struct{}{}
		c.inFlightIn++
	}
	for _, in := range rec.QoS2In {
		x := c.extraLocked()
		if x.inTok == nil {
			x.inTok = map[uint16]string{}
		}
		if _, dup := x.inTok[in.ID]; !dup {
			x.inTok[in.ID] = in.Tok
			c.inFlightIn++
		}
	}
	relKeys := map[uint16]outKey{}
	done := func(k outKey) {
		x := c.extraLocked()
		if x.relDone == nil {
			x.relDone = map[outKey]struct{}{}
			time.AfterFunc(resumeHold, c.endResume)
		}
		x.relDone[k] = struct{}{}
	}
	for _, o := range rec.RelOut { // ID 0: completed just before (records of earlier versions)
		k := outKey{o.Filter, o.Seq, o.Part}
		relKeys[o.ID] = k
		done(k)
	}
	for _, d := range rec.Done {
		d.keys(done)
	}
	for _, id := range rec.Rel {
		if c.inflight == nil {
			c.inflight = map[uint16]*outMsg{}
		}
		c.inflight[id] = &outMsg{qos: 2, rel: true, x: &outExtra{relKey: relKeys[id]}}
	}
	if rec.Disconnected.IsZero() && rec.Node != "" && rec.Node != c.s.node {
		// Its node died holding the connection: what the engine
		// delivered before may have been sent (DUP), unrecorded.
		c.extraLocked().crashResume = true
	}
	for _, o := range rec.Out {
		if _, used := c.inflight[o.ID]; used || o.ID == 0 {
			continue
		}
		x := c.extraLocked()
		if x.resume == nil {
			x.resume = map[outKey]uint16{}
			x.resumeIDs = map[uint16]struct{}{}
			time.AfterFunc(resumeHold, c.endResume)
		}
		x.resume[outKey{o.Filter, o.Seq, o.Part}] = o.ID
		x.resumeIDs[o.ID] = struct{}{}
	}
	for _, sub := range rec.Subs {
		if c.subs == nil {
			c.subs = map[string]*subscription{}
		}
		c.subs[sub.Filter] = sub
	}
}

func (c *conn) endResume() {
	c.mu.Lock()
	c.x.resume, c.x.resumeIDs, c.x.relDone = nil, nil, nil
	c.mu.Unlock()
}

// resendRel resends PUBREL for messages the client had PUBRECed: it has
// them already, the exchange just has to finish [MQTT-4.4.0-1].
func (c *conn) resendRel(rec *sessionRecord) {
	for _, id := range rec.Rel {
		c.ack(packets.Pubrel, id, rcSuccess, "")
	}
}

// restoreTimeout bounds the attachment of each subscription of a resumed
// session; testRestoreTimeout (ns), when set, replaces it (tests).
const restoreTimeout = 15 * time.Second

var testRestoreTimeout atomic.Int64

// testRestoreErr, when set, is what attaching a resumed session's
// subscriptions fails with (tests: an engine error of a cluster without
// a leader, a withdrawn permission).
var testRestoreErr atomic.Pointer[error]

// restoreGone reports whether a subscription that failed to attach can
// never be attached again: its filter is invalid or names an address that
// is gone, the client may not subscribe to it any more, or the tenant's
// quota refuses it. Anything else — the engine without a leader (503), no
// responders, a timeout, the router closing — is for now: the session
// keeps the subscription.
func restoreGone(err error) bool {
	var re *ReasonError
	if !errors.As(err, &re) {
		return false
	}
	switch re.Code {
	case rcTopicFilterInvalid, rcNotAuthorized, rcProtocolError, rcQuotaExceeded:
		return true
	}
	return false
}

// attach re-attaches a resumed session's subscriptions, each with its own
// time (the connect's may be spent on a busy node). One that can never be
// attached again (restoreGone: its address is gone, the permission
// withdrawn) is dropped from the session. One that fails for now — its
// time ran out on a node busy with a reconnect storm, the engine not
// available — stays in the session, and the connection is closed (0x89
// server busy), so that the client's next connection restores it: a
// session is resumed whole. It used to be dropped as well, and a client
// told that its session was present never subscribed again (issue 11:
// after a storm the soak's two MQTT 3.1.1 persistent sessions received
// nothing more; on a cluster, a 503 of a stream without a leader dropped
// a QoS 2 session's subscription for good — 1,906 acknowledged messages
// never delivered in the 25-minute cluster soak).
func (c *conn) attach(_ context.Context, subs []*subscription) {
	for _, sub := range subs {
		d := restoreTimeout
		if t := testRestoreTimeout.Load(); t > 0 {
			d = time.Duration(t)
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		var err error
		if e := testRestoreErr.Load(); e != nil {
			err = *e
		} else {
			_, err = c.subscribe(ctx, sub)
		}
		busy := ctx.Err() != nil || !restoreGone(err)
		cancel()
		if err != nil && busy {
			c.s.log.Warn("cannot restore subscription now; closing the connection so that the next one restores it",
				"tenant", c.tenant(), "client_id", c.clientID, "filter", sub.Filter, "err", err)
			c.kick(rcServerBusy, "session not restored: server busy")
			return
		}
		if err != nil {
			c.s.log.Warn("cannot restore subscription", "tenant", c.tenant(), "client_id", c.clientID, "filter", sub.Filter, "err", err)
			c.mu.Lock()
			if c.subs[sub.Filter] == sub {
				delete(c.subs, sub.Filter)
			}
			c.mu.Unlock()
		}
	}
}

// ---- nodes: leases and takeover across nodes

// Every server is a node with a random id. Per tenant it serves, it keeps
// a lease in KV bucket mqtt_nodes (node id → last heartbeat), refreshed
// every NodeLease/3. Session records and armed wills name the node that
// holds the connection; a sweeper on any node treats them as
// disconnected when that node's lease has run out (the node died
// without cleaning up).
const (
	nodesBucket   = "mqtt_nodes"
	takeoverTopic = "mqtt.takeover"
)

type nodeLease struct {
	Seen time.Time `json:"seen"`
}

type takeoverNote struct {
	ClientID string `json:"c"`
	Node     string `json:"n"`
}

// heartbeat refreshes this node's lease in every tenant it serves.
func (s *Server) heartbeat() {
	if s.halted.Load() {
		return
	}
	s.mu.Lock()
	tis := make([]*tenantInfo, 0, len(s.tenants))
	names := make([]string, 0, len(s.tenants))
	for name, ti := range s.tenants {
		tis = append(tis, ti)
		names = append(names, name)
	}
	s.mu.Unlock()
	b, _ := json.Marshal(nodeLease{Seen: clock.Now()})
	for i, ti := range tis {
		ti.mu.Lock()
		nodes := ti.nodes
		serving := ti.serving
		ti.mu.Unlock()
		if !serving || nodes == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if _, err := nodes.Put(ctx, s.node, b); err != nil {
			if _, ok := s.cfg.Store.Tenant(names[i]); !ok {
				s.forgetTenant(names[i], ti)
			} else {
				s.log.Warn("node lease not refreshed", "tenant", names[i], "err", err)
			}
		}
		cancel()
	}
}

// forgetTenant drops the state of a deleted tenant: its buckets went
// with its engine account, and refreshing the lease there failed every
// heartbeat, forever (issue 14 item 8). A tenant created again under the
// name is served afresh (buckets).
func (s *Server) forgetTenant(name string, ti *tenantInfo) {
	ti.mu.Lock()
	stop := ti.stopListen
	ti.sessions, ti.wills, ti.nodes, ti.serving, ti.stopListen = nil, nil, nil, false, nil
	ti.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.log.Info("tenant deleted: its MQTT session state is no longer served", "tenant", name)
}

// liveNodes reads the leases of a tenant: node id → last heartbeat.
// When they cannot be listed (in a cluster, while the bucket's stream
// elects a leader after its node died), the map holds unknownLeases:
// alive then takes a node without a lease in it for alive, rather than
// for long dead (which would publish the wills and end the sessions of
// every other node's clients).
func (s *Server) liveNodes(ctx context.Context, nodes *router.State) map[string]time.Time {
	out := map[string]time.Time{}
	if nodes == nil {
		return out
	}
	keys, err := nodes.Keys(ctx)
	if err != nil {
		out[unknownLeases] = clock.Now() // recent: never swept as an old lease
	}
	for _, k := range keys {
		b, _, err := nodes.Get(ctx, k)
		if err != nil {
			if !errors.Is(err, router.ErrNoState) {
				// Not read (State.Get waits for the bucket's leader, and
				// ctx ran out): the node is not known to be dead.
				out[unknownLeases] = clock.Now()
			}
			continue
		}
		var l nodeLease
		if json.Unmarshal(b, &l) == nil {
			out[k] = l.Seen
		}
	}
	return out
}

// alive reports whether a node's lease holds.
func (s *Server) alive(seen map[string]time.Time, node string, now time.Time) bool {
	if node == s.node {
		return true // this node's connections handle their own wills
	}
	if s.previousProcess(node) {
		return false
	}
	t, ok := seen[node]
	if _, unknown := seen[unknownLeases]; unknown && !ok {
		return true // cannot tell (liveNodes)
	}
	return ok && now.Sub(t) <= s.cfg.NodeLease
}

// nodeID is a node id for this process: name '=' a random part (no
// '=' can be in a name: see sanitizeNodeName), or only the random part
// without a name. Ids are keys in the engine's KV buckets.
func nodeID(name string) string {
	r := newClientID()[len("throng-"):]
	if name = sanitizeNodeName(name); name == "" {
		return r
	}
	return name + "=" + r
}

// sanitizeNodeName keeps the characters a KV key may hold, except '='.
func sanitizeNodeName(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
}

// previousProcess reports whether node is the id of an earlier process of
// this node (Config.NodeName): that process is dead, since this one holds
// the node's data directory.
func (s *Server) previousProcess(node string) bool {
	name, _, ok := strings.Cut(s.node, "=")
	if !ok || node == s.node {
		return false
	}
	other, _, ok := strings.Cut(node, "=")
	return ok && other == name
}

// unknownLeases marks the leases of liveNodes as not all known; no node
// id is empty.
const unknownLeases = ""

// onTakeover disconnects this node's connection of a client id that has
// connected to another node [MQTT-3.1.4-2].
func (s *Server) onTakeover(ten string, data []byte) {
	var n takeoverNote
	if json.Unmarshal(data, &n) != nil || n.Node == s.node {
		return
	}
	s.mu.Lock()
	old := s.clients[ten+"\x00"+n.ClientID]
	s.mu.Unlock()
	if old != nil {
		old.kick(rcSessionTakenOver, "session taken over")
	}
}

// announce tells the other nodes that this client id connected here.
func (c *conn) announce(ctx context.Context) {
	b, _ := json.Marshal(takeoverNote{ClientID: c.clientID, Node: c.s.node})
	if err := c.s.r.Signal(ctx, c.tenant(), takeoverTopic, b); err != nil {
		c.s.log.Warn("takeover not signalled", "tenant", c.tenant(), "client_id", c.clientID, "err", err)
	}
}

// halt stops the server as if its process died: no session, will or
// lease is written from now on (test hook for node failure).
func (s *Server) halt() {
	s.halted.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = s.Shutdown(ctx)
}
