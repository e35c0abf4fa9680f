package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

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
	sessionsBucket = "mqtt_sessions"
	willsBucket    = "mqtt_wills"
)

// sessionRecord is a persistent session as stored.
type sessionRecord struct {
	Expiry       uint32          `json:"expiry"` // seconds after disconnect
	Subs         []*subscription `json:"subs"`
	QoS2         []uint16        `json:"qos2,omitempty"` // client→server QoS 2 ids awaiting PUBREL
	Disconnected time.Time       `json:"disconnected,omitzero"`
}

// will is a will message; stored while its delay runs.
type will struct {
	Topic  string    `json:"topic"`
	QoS    byte      `json:"qos"`
	Retain bool      `json:"retain"`
	Delay  uint32    `json:"delay"`
	Msg    []byte    `json:"msg"` // message.Marshal
	Due    time.Time `json:"due,omitzero"`
}

// buckets opens (creating if asked) a tenant's state buckets.
func (s *Server) buckets(ctx context.Context, ten string, create bool) (sessions, wills *router.State, err error) {
	ti := s.tenantInfo(ten)
	ti.mu.Lock()
	defer ti.mu.Unlock()
	if ti.sessions == nil {
		st, err := s.r.StateBucket(ctx, ten, sessionsBucket, create)
		if err != nil {
			return nil, nil, err
		}
		ti.sessions = st
	}
	if ti.wills == nil {
		st, err := s.r.StateBucket(ctx, ten, willsBucket, create)
		if err != nil {
			return nil, nil, err
		}
		ti.wills = st
	}
	return ti.sessions, ti.wills, nil
}

// loadSession cancels a pending delayed will of the client, then returns
// its stored session (nil if there is none or clean is set, in which case
// any stored one is discarded).
func (c *conn) loadSession(ctx context.Context, clean bool) (*sessionRecord, error) {
	sessions, wills, err := c.s.buckets(ctx, c.tenant, true)
	if err != nil {
		return nil, err
	}
	// A new connection before the will delay ends cancels the will [MQTT-3.1.3-9].
	if _, rev, err := wills.Get(ctx, c.clientID); err == nil {
		_ = wills.Delete(ctx, c.clientID, rev)
	}
	b, _, err := sessions.Get(ctx, c.clientID)
	if errors.Is(err, router.ErrNoState) {
		if c.persistent {
			c.saveSession(ctx, false)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var rec sessionRecord
	if err := json.Unmarshal(b, &rec); err != nil {
		c.s.log.Warn("discarding unreadable session", "tenant", c.tenant, "client_id", c.clientID, "err", err)
		clean = true
	}
	if clean || (!rec.Disconnected.IsZero() && time.Since(rec.Disconnected) > time.Duration(rec.Expiry)*time.Second) {
		c.s.dropSession(ctx, c.tenant, c.clientID, &rec, sessions)
		if c.persistent {
			c.saveSession(ctx, false)
		}
		return nil, nil
	}
	if c.persistent {
		c.saveSession(ctx, false)
	}
	return &rec, nil
}

// restore re-attaches a resumed session's subscriptions.
func (c *conn) restore(ctx context.Context, rec *sessionRecord) {
	c.mu.Lock()
	for _, id := range rec.QoS2 {
		if c.inQoS2 == nil {
			c.inQoS2 = map[uint16]struct{}{}
		}
		c.inQoS2[id] = struct{}{}
		c.inFlightIn++
	}
	c.mu.Unlock()
	for _, sub := range rec.Subs {
		if _, err := c.subscribe(ctx, sub); err != nil {
			c.s.log.Warn("cannot restore subscription", "tenant", c.tenant, "client_id", c.clientID, "filter", sub.Filter, "err", err)
			continue
		}
		c.mu.Lock()
		if c.subs == nil {
			c.subs = map[string]*subscription{}
		}
		c.subs[sub.Filter] = sub
		c.mu.Unlock()
	}
}

// saveSession writes the session record.
func (c *conn) saveSession(ctx context.Context, disconnected bool) {
	c.mu.Lock()
	rec := sessionRecord{Expiry: c.sessExpiry}
	for _, s := range c.subs {
		rec.Subs = append(rec.Subs, s)
	}
	for id := range c.inQoS2 {
		rec.QoS2 = append(rec.QoS2, id)
	}
	c.mu.Unlock()
	if disconnected {
		rec.Disconnected = time.Now()
	}
	b, _ := json.Marshal(&rec)
	sessions, _, err := c.s.buckets(ctx, c.tenant, true)
	if err == nil {
		_, err = sessions.Put(ctx, c.clientID, b)
	}
	if err != nil {
		c.s.log.Warn("session not saved", "tenant", c.tenant, "client_id", c.clientID, "err", err)
	}
}

// dropSession deletes a stored session and its durable subscriptions.
func (s *Server) dropSession(ctx context.Context, ten, clientID string, rec *sessionRecord, sessions *router.State) {
	for _, sub := range rec.Subs {
		_, topic, shared, err := parseShare(sub.Filter)
		if shared || err != nil {
			continue
		}
		if err := s.r.DeleteDurable(ctx, ten, topic, "mqtt/"+clientID); err != nil {
			s.log.Warn("delete durable subscription", "tenant", ten, "client_id", clientID, "err", err)
		}
	}
	_ = sessions.Delete(ctx, clientID, 0)
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
	disc := c.discRC
	w := c.will
	expiry := c.sessExpiry
	c.mu.Unlock()
	for _, sub := range subs {
		c.closeRefs(sub)
	}
	s.unregister(c)
	c.ti.connected.Add(-1)
	s.m.connections.WithLabelValues(c.tenant).Dec()

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if expiry > 0 {
		c.saveSession(ctx, true)
	} else if c.persistent {
		// Resumed or created persistent, ended with expiry 0.
		if sessions, _, err := s.buckets(ctx, c.tenant, true); err == nil {
			rec := &sessionRecord{}
			for _, sub := range subs {
				rec.Subs = append(rec.Subs, sub)
			}
			s.dropSession(ctx, c.tenant, c.clientID, rec, sessions)
		}
	}
	// Will [MQTT-3.1.2-8..10], [MQTT-3.14.4-3].
	if w == nil || disc == 0x00 {
		return
	}
	delay := w.Delay
	if c.version != 5 {
		delay = 0
	}
	delay = min(delay, expiry)
	if kicked == rcSessionTakenOver && delay > 0 {
		return // the new connection cancels a delayed will
	}
	if delay == 0 {
		s.publishWill(ctx, c.tenant, w)
		return
	}
	w.Due = time.Now().Add(time.Duration(delay) * time.Second)
	b, _ := json.Marshal(w)
	_, wills, err := s.buckets(ctx, c.tenant, true)
	if err == nil {
		_, err = wills.Put(ctx, c.clientID, b)
	}
	if err != nil {
		s.log.Warn("delayed will not stored; publishing now", "tenant", c.tenant, "client_id", c.clientID, "err", err)
		s.publishWill(ctx, c.tenant, w)
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
// sessions, for every tenant. It reads the engine, so any node can do it;
// deletes are conditional on the revision it read so that a will fires
// once even when nodes sweep concurrently (a node dying between publish
// and delete can cause a duplicate, never a loss).
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

func (s *Server) sweepTenant(ctx context.Context, ten string, sessionsToo bool) {
	sessions, wills, err := s.buckets(ctx, ten, false)
	if err != nil {
		return // no MQTT state in this tenant yet
	}
	now := time.Now()
	keys, _ := wills.Keys(ctx)
	for _, k := range keys {
		b, rev, err := wills.Get(ctx, k)
		if err != nil {
			continue
		}
		var w will
		if json.Unmarshal(b, &w) != nil || now.Before(w.Due) {
			continue
		}
		s.publishWill(ctx, ten, &w)
		_ = wills.Delete(ctx, k, rev)
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
		b, _, err := sessions.Get(ctx, k)
		if err != nil {
			continue
		}
		var rec sessionRecord
		if json.Unmarshal(b, &rec) != nil || rec.Disconnected.IsZero() {
			continue
		}
		if now.Sub(rec.Disconnected) > time.Duration(rec.Expiry)*time.Second {
			s.dropSession(ctx, ten, k, &rec, sessions)
		}
	}
}

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
