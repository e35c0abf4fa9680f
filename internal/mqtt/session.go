package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// Engine state of MQTT, per tenant (router.StateBucket in the tenant's
// account):
//
//	bucket "mqtt_sessions": client id → sessionRecord (persistent sessions)
//	bucket "mqtt_wills":    client id → will (wills waiting for their delay)
//
// Messages of a persistent session are kept by the router's durable
// subscriptions named "mqtt/<client id>"; retained messages by the
// router's retained store.
const (
	sessionsBucket = router.SessionsBucket // the admin API's usage counts its keys
	willsBucket    = "mqtt_wills"
)

// sessionRecord is a persistent session as stored. It is written on
// connect, (un)subscribe and disconnect, and whenever QoS 2 state changes
// (see persist.go): a crash between PUBREC and PUBREL/PUBCOMP finds the
// packet ids in the engine.
type sessionRecord struct {
	Expiry uint32          `json:"expiry"` // seconds after disconnect
	Subs   []*subscription `json:"subs"`
	QoS2   []uint16        `json:"qos2,omitempty"` // client→server QoS 2 ids PUBRECed, PUBREL not yet
	Rel    []uint16        `json:"rel,omitempty"`  // server→client QoS 2 ids PUBRECed, PUBCOMP not yet
	// RelOut names the stored messages of Rel (those that were stored):
	// the engine may not have heard of their settlement before a crash.
	RelOut []outRef `json:"relOut,omitempty"`
	// QoS2In are client→server QoS 2 ids not known to be routed, with
	// the name their message is stored under (qos2in.go).
	QoS2In []inRef `json:"qin,omitempty"`
	// Done names stored messages whose QoS 2 exchange is over but whose
	// settlement the engine may not have recorded (persist.go, doneRef).
	Done         []doneRef `json:"done,omitempty"`
	Out          []outRef  `json:"out,omitempty"`  // server→client PUBLISHes not yet acknowledged
	Node         string    `json:"node,omitempty"` // node holding the connection; empty once disconnected
	Disconnected time.Time `json:"disconnected,omitzero"`
}

// will is a will message; stored while its connection lives ("armed":
// Node set, Due zero, so that a surviving node publishes it if that node
// dies) and while its delay runs.
type will struct {
	Topic  string    `json:"topic"`
	QoS    byte      `json:"qos"`
	Retain bool      `json:"retain"`
	Delay  uint32    `json:"delay"`
	Msg    []byte    `json:"msg"` // message.Marshal
	Due    time.Time `json:"due,omitzero"`
	Node   string    `json:"node,omitempty"`   // armed: the node holding the connection
	Claim  string    `json:"claim,omitempty"`  // node publishing it (sweeper)
	Claimd time.Time `json:"claimed,omitzero"` // when claimed

	rev uint64 // the connection's: revision of its armed will; guarded by conn.mu
}

// buckets opens (creating if asked) a tenant's state buckets. With
// create, this node starts serving the tenant: its node lease is written
// and it listens for takeovers from other nodes.
func (s *Server) buckets(ctx context.Context, ten string, create bool) (sessions, wills *router.State, err error) {
	ti := s.tenantInfo(ten)
	ti.mu.Lock()
	defer ti.mu.Unlock()
	for _, b := range []struct {
		st   **router.State
		name string
	}{{&ti.sessions, sessionsBucket}, {&ti.wills, willsBucket}, {&ti.nodes, nodesBucket}} {
		if *b.st != nil {
			continue
		}
		st, err := s.r.StateBucket(ctx, ten, b.name, create)
		if err != nil {
			return nil, nil, err
		}
		*b.st = st
	}
	if create && !ti.serving {
		lb, _ := json.Marshal(nodeLease{Seen: clock.Now()})
		if _, err := ti.nodes.Put(ctx, s.node, lb); err != nil {
			return nil, nil, err
		}
		stop, err := s.r.Listen(ctx, ten, takeoverTopic, func(b []byte) { s.onTakeover(ten, b) })
		if err != nil {
			return nil, nil, err
		}
		ti.stopListen = stop
		ti.serving = true
	}
	return ti.sessions, ti.wills, nil
}

// takeoverWait bounds how long a connection waits for another node to
// finish with the same session.
const takeoverWait = 5 * time.Second

// loadSession cancels a pending delayed will of the client, then returns
// its stored session (nil if there is none or clean is set, in which case
// any stored one is discarded). A session still held by another live
// node (which was told to disconnect it) is waited for until that node
// has saved it.
func (c *conn) loadSession(ctx context.Context, clean bool) (*sessionRecord, error) {
	s := c.s
	sessions, wills, err := s.buckets(ctx, c.tenant(), true)
	if err != nil {
		return nil, err
	}
	var rec sessionRecord
	var b []byte
	for deadline := time.Now().Add(takeoverWait); ; {
		b, _, err = sessions.Get(ctx, c.clientID)
		if errors.Is(err, router.ErrNoState) {
			break
		}
		if err != nil {
			return nil, err
		}
		rec = sessionRecord{}
		if err := json.Unmarshal(b, &rec); err != nil {
			s.log.Warn("discarding unreadable session", "tenant", c.tenant(), "client_id", c.clientID, "err", err)
			clean = true
			break
		}
		if rec.Node == "" || rec.Node == s.node || !rec.Disconnected.IsZero() || time.Now().After(deadline) {
			break
		}
		_, _, nodes := s.stateOf(c.tenant())
		if !s.alive(s.liveNodes(ctx, nodes), rec.Node, clock.Now()) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	// A new connection before the will delay ends cancels the will [MQTT-3.1.3-9].
	if _, wrev, err := wills.Get(ctx, c.clientID); err == nil {
		_ = wills.Delete(ctx, c.clientID, wrev)
	}
	if b == nil {
		return nil, nil
	}
	disc := rec.Disconnected
	if disc.IsZero() && rec.Node != "" && rec.Node != s.node {
		disc = clock.Now() // its node died; the session ends now at the latest
	}
	if clean || (!disc.IsZero() && clock.Since(disc) > time.Duration(rec.Expiry)*time.Second) {
		s.dropSession(ctx, c.tenant(), c.clientID, &rec, sessions, 0)
		return nil, nil
	}
	return &rec, nil
}

// stateOf returns a tenant's opened buckets (nil if not opened).
func (s *Server) stateOf(ten string) (sessions, wills, nodes *router.State) {
	ti := s.tenantInfo(ten)
	ti.mu.Lock()
	defer ti.mu.Unlock()
	return ti.sessions, ti.wills, ti.nodes
}

// armWill stores the will while the connection lives, so that another
// node publishes it if this one dies.
func (c *conn) armWill(ctx context.Context) {
	c.mu.Lock()
	w := *c.will
	c.mu.Unlock()
	if c.version != 5 {
		w.Delay = 0
	}
	w.Delay = min(w.Delay, c.sessExpiry)
	w.Node = c.s.node
	b, _ := json.Marshal(&w)
	_, wills, err := c.s.buckets(ctx, c.tenant(), true)
	var rev uint64
	if err == nil {
		rev, err = wills.Put(ctx, c.clientID, b)
	}
	if err != nil {
		c.s.log.Warn("will not stored", "tenant", c.tenant(), "client_id", c.clientID, "err", err)
		return
	}
	c.mu.Lock()
	c.will.rev = rev
	c.mu.Unlock()
}

// dropSession deletes a stored session (if still at rev, when rev > 0)
// and its durable subscriptions.
func (s *Server) dropSession(ctx context.Context, ten, clientID string, rec *sessionRecord, sessions *router.State, rev uint64) {
	if err := sessions.Delete(ctx, clientID, rev); err != nil {
		return // changed meanwhile (reconnected elsewhere)
	}
	for _, sub := range rec.Subs {
		_, topic, shared, err := parseShare(sub.Filter)
		if shared || err != nil {
			continue
		}
		if err := s.r.DeleteDurable(ctx, ten, topic, "mqtt/"+clientID); err != nil {
			s.log.Warn("delete durable subscription", "tenant", ten, "client_id", clientID, "err", err)
		}
	}
}

// cleanup ends the session's connection: consumers are closed (what the
// client did not acknowledge is released for redelivery), the session is
// saved or dropped, and the will is published or stored.
func (c *conn) cleanup() {
	s := c.s
	c.mu.Lock()
	c.gone = true
	subs := c.subs
	kicked := c.kicked
	disc := int(c.discRC)
	w := c.will
	var willRev uint64
	if w != nil {
		willRev = w.rev
	}
	expiry := c.sessExpiry
	c.mu.Unlock()
	for _, sub := range subs {
		c.closeRefs(sub)
	}
	if c.principal != nil && c.principal.IsDevice() {
		subList := make([]*subscription, 0, len(subs))
		for _, sub := range subs {
			subList = append(subList, sub)
		}
		c.deviceGone(subList)
	}
	s.unregister(c)
	c.ti.connected.Add(-1)
	if c.counted {
		c.counted = false
		c.s.r.ReleaseConn(c.tenant())
	}
	s.m.connections.WithLabelValues(c.tenant()).Dec()
	if s.halted.Load() {
		return // test hook: the process died, nothing is written
	}

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if expiry > 0 {
		c.mu.Lock()
		c.extraLocked().discAt = clock.Now()
		c.mu.Unlock()
		c.persistSync(true)
	} else if c.persistent {
		// Resumed or created persistent, ended with expiry 0.
		c.mu.Lock()
		c.extraLocked().dropped = true
		c.mu.Unlock()
		c.persistSync(false) // writes in flight end first
		if sessions, _, err := s.buckets(ctx, c.tenant(), true); err == nil {
			rec := &sessionRecord{}
			for _, sub := range subs {
				rec.Subs = append(rec.Subs, sub)
			}
			s.dropSession(ctx, c.tenant(), c.clientID, rec, sessions, 0)
		}
	}
	// Will [MQTT-3.1.2-8..10], [MQTT-3.14.4-3].
	if w == nil {
		return
	}
	_, wills, err := s.buckets(ctx, c.tenant(), true)
	if err != nil {
		if disc != 0x00 {
			s.publishWill(ctx, c.tenant(), w)
		}
		return
	}
	disarm := func() {
		if willRev > 0 {
			_ = wills.Delete(ctx, c.clientID, willRev)
		}
	}
	if disc == 0x00 {
		disarm()
		return
	}
	delay := w.Delay
	if c.version != 5 {
		delay = 0
	}
	delay = min(delay, expiry)
	if kicked == rcSessionTakenOver && delay > 0 {
		return // the new connection cancels a delayed will (and deletes it)
	}
	if delay == 0 {
		s.publishWill(ctx, c.tenant(), w)
		disarm()
		return
	}
	dw := *w
	dw.Due = clock.Now().Add(time.Duration(delay) * time.Second)
	dw.Node = ""
	b, _ := json.Marshal(&dw)
	if willRev > 0 {
		_, err = wills.Update(ctx, c.clientID, b, willRev)
		if errors.Is(err, router.ErrStateChanged) {
			return // a new connection cancelled it
		}
	} else {
		_, err = wills.Put(ctx, c.clientID, b)
	}
	if err != nil {
		s.log.Warn("delayed will not stored; publishing now", "tenant", c.tenant(), "client_id", c.clientID, "err", err)
		s.publishWill(ctx, c.tenant(), w)
	}
}

func (s *Server) publishWill(ctx context.Context, ten string, w *will) {
	m, err := message.Unmarshal(w.Msg)
	if err != nil {
		return
	}
	if m.TTL > 0 {
		m.Expiry = time.Time{} // from now, not from the CONNECT
	}
	if w.Retain {
		if err := s.r.Retain(ctx, ten, w.Topic, m); err != nil {
			s.log.Warn("will not retained", "tenant", ten, "topic", w.Topic, "err", err)
		}
	}
	if _, err := s.r.Publish(ctx, ten, w.Topic, m); err != nil {
		s.log.Info("will not delivered", "tenant", ten, "topic", w.Topic, "err", err)
	}
}

// sweepLoop publishes delayed wills when due and removes expired
// sessions, for every tenant, and refreshes this node's leases. It reads
// the engine, so any node can do it; a will is claimed (conditional
// update on the revision read) before it is published, so it fires once
// even when nodes sweep concurrently (a node dying between claim and
// publish leaves a claim that others take over once it is a lease old:
// a duplicate is possible then, a loss is not). Sessions and armed wills
// of a node whose lease ran out count as disconnected at its last
// heartbeat.
func (s *Server) sweepLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for n := 0; ; n++ {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		for _, tn := range s.cfg.Store.Tenants() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			s.sweepTenant(ctx, tn.Name, n%10 == 0)
			cancel()
		}
	}
}

// heartbeatLoop refreshes this node's leases every NodeLease/3, on its
// own: in the sweep loop it waited for every tenant's sweep, which may
// take seconds (engine round trips per session and will, a stream
// electing a leader after a node failed), and a lease refreshed that late
// made the other nodes take this live node for dead — they fired its
// clients' wills 1.3 and 6.6 s after another node's kill
// (internal/cluster TestKillUnderLoad).
func (s *Server) heartbeatLoop() {
	defer s.bg.Done()
	s.heartbeat()
	t := time.NewTicker(s.cfg.NodeLease / 3)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.heartbeat()
		}
	}
}

func (s *Server) sweepTenant(ctx context.Context, ten string, sessionsToo bool) {
	if s.halted.Load() {
		return
	}
	sessions, wills, err := s.buckets(ctx, ten, false)
	if err != nil {
		return // no MQTT state in this tenant yet
	}
	_, _, nodes := s.stateOf(ten)
	now := clock.Now() // session expiry, will delays, leases: stored wall-clock times
	seen := s.liveNodes(ctx, nodes)
	lastSeen := func(node string) time.Time { return seen[node] } // zero: unknown, long dead
	if h := testAfterLeases.Load(); h != nil {
		(*h)()
	}
	keys, _ := wills.Keys(ctx)
	for _, k := range keys {
		b, rev, err := wills.Get(ctx, k)
		if err != nil {
			continue
		}
		var w will
		if json.Unmarshal(b, &w) != nil {
			continue
		}
		due := w.Due
		if due.IsZero() {
			// Armed: its connection lives unless its node died.
			if w.Node == "" || !s.knowLease(ctx, nodes, seen, w.Node) || s.alive(seen, w.Node, now) {
				continue
			}
			due = lastSeen(w.Node).Add(time.Duration(w.Delay) * time.Second)
		}
		if now.Before(due) || (w.Claim != "" && now.Sub(w.Claimd) <= s.cfg.NodeLease) {
			continue
		}
		w.Claim, w.Claimd = s.node, now
		cb, _ := json.Marshal(&w)
		crev, err := wills.Update(ctx, k, cb, rev)
		if err != nil {
			continue // another node has it, or the client reconnected
		}
		s.publishWill(ctx, ten, &w)
		_ = wills.Delete(ctx, k, crev)
	}
	if !sessionsToo {
		return
	}
	keys, _ = sessions.Keys(ctx)
	for _, k := range keys {
		s.mu.Lock()
		_, online := s.clients[ten+"\x00"+k]
		s.mu.Unlock()
		if online {
			continue
		}
		b, rev, err := sessions.Get(ctx, k)
		if err != nil {
			continue
		}
		var rec sessionRecord
		if json.Unmarshal(b, &rec) != nil {
			continue
		}
		disc := rec.Disconnected
		if disc.IsZero() {
			if rec.Node == "" || !s.knowLease(ctx, nodes, seen, rec.Node) || s.alive(seen, rec.Node, now) {
				continue
			}
			disc = lastSeen(rec.Node) // its node died without saving it
		}
		if now.Sub(disc) > time.Duration(rec.Expiry)*time.Second {
			s.dropSession(ctx, ten, k, &rec, sessions, rev)
		}
	}
	if nodes != nil {
		// Leases of nodes gone for longer than any session can last.
		for node, t := range seen {
			if now.Sub(t) > time.Duration(s.cfg.MaxSessionExpiry)*time.Second+s.cfg.NodeLease {
				_ = nodes.Delete(ctx, node, 0)
			}
		}
	}
}

// knowLease makes sure seen has node's lease if the node has one: a node
// that started serving the tenant after seen was read has a lease now, as
// it writes it (buckets) before any session record or will names it.
// Without this, a sweep that read the leases just before such a node
// wrote its lease and then read a session it had just stored took the
// node for one long dead (no lease) and dropped the session as expired
// at once (TestQoS2InboundSurvivesCrash, 3 in 11 runs on a busy machine:
// "session lost"); an armed will was published likewise. false: the
// lease could not be read now (try at the next sweep).
func (s *Server) knowLease(ctx context.Context, nodes *router.State, seen map[string]time.Time, node string) bool {
	if _, ok := seen[node]; ok || node == s.node || nodes == nil {
		return true
	}
	b, _, err := nodes.Get(ctx, node)
	if errors.Is(err, router.ErrNoState) {
		return true // no lease: long dead
	}
	if err != nil {
		return false
	}
	var l nodeLease
	if json.Unmarshal(b, &l) != nil {
		return false
	}
	seen[node] = l.Seen
	return true
}

// testAfterLeases, when set, runs in a sweep once the leases are read
// (tests).
var testAfterLeases atomic.Pointer[func()]

// sysLoop publishes $SYS statistics into the topic space of every tenant
// that has had MQTT clients, as retained QoS 0 messages.
func (s *Server) sysLoop() {
	defer s.bg.Done()
	t := time.NewTicker(s.cfg.SysInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		s.publishSys()
	}
}

func (s *Server) publishSys() {
	s.mu.Lock()
	tis := make(map[string]*tenantInfo, len(s.tenants))
	for k, v := range s.tenants {
		tis[k] = v
	}
	s.mu.Unlock()
	uptime := strconv.FormatInt(int64(time.Since(s.started)/time.Second), 10)
	for ten, ti := range tis {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for topic, v := range map[string]string{
			"$SYS/broker/clients/connected": strconv.FormatInt(ti.connected.Load(), 10),
			"$SYS/broker/messages/received": strconv.FormatUint(ti.received.Load(), 10),
			"$SYS/broker/messages/sent":     strconv.FormatUint(ti.sent.Load(), 10),
			"$SYS/broker/uptime":            uptime + " seconds",
			"$SYS/broker/version":           "throng",
		} {
			m := &message.Message{Body: []byte(v), Properties: map[string]any{propRetain: true}}
			if err := s.r.Retain(ctx, ten, topic, m); err != nil {
				s.log.Debug("$SYS retain", "tenant", ten, "err", err)
			}
			if _, err := s.r.Publish(ctx, ten, topic, m); err != nil {
				s.log.Debug("$SYS publish", "tenant", ten, "err", err)
			}
		}
		cancel()
	}
}
