package router

import (
	"encoding/json"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
)

// Cross-node back-pressure for live topic-space subscriptions.
//
// On one node a durable live publish waits for every consumer on that
// node that took it while behind (live.go, heldPublish). A publisher on
// another node was not held: its messages reached the slow consumer
// through the engine, were acknowledged at once, and beyond the
// consumer's queue bound (mqtt.maxQueuedMessages) they were dropped —
// acknowledged and lost (docs/cluster.md, an unpaced cross-node QoS 1
// flood to a paused clean-session subscriber).
//
// So a live topic-space consumer of a clustered tenant announces on
// holdSubject, in the tenant's account, when it falls behind (with its
// subjects) and when it has caught up. Every other node's router keeps
// the announced holds, and a durable live publish there whose subject
// one of them matches waits, like a local one, until that consumer has
// caught up: its producer's window (MQTT receive maximum, AMQP credit)
// then paces it. A consumer still behind announces itself again every
// holdRefresh; a hold not renewed for holdExpiry (its node died or was
// cut off, an announcement lost) ends, and the publishes it held
// complete.
const (
	holdSubject = "_throng.live.hold"
	holdRefresh = time.Second
	holdExpiry  = 3 * time.Second
)

// holdNote is one announcement.
type holdNote struct {
	Node     string   `json:"n"`
	ID       uint64   `json:"i"`
	On       bool     `json:"o,omitempty"`
	Subjects []string `json:"s,omitempty"`
}

type holdKey struct {
	node string
	id   uint64
}

// remoteHold is another node's consumer that is behind.
type remoteHold struct {
	filters [][]string // tokenized subjects
	expires time.Time
	waiters []*heldPublish
}

// remoteHolds are the holds other nodes announced for a tenant.
type remoteHolds struct {
	n       atomic.Int32 // len(m): read on every durable live publish
	mu      sync.Mutex
	m       map[holdKey]*remoteHold // guarded by mu
	ticking bool                    // the expiry goroutine runs; guarded by mu
	closed  bool                    // guarded by mu
}

// behindSet are this node's consumers of a tenant that announced a hold,
// renewed every holdRefresh while they are behind.
type behindSet struct {
	mu      sync.Mutex
	m       map[*Consumer]struct{} // guarded by mu
	ticking bool                   // guarded by mu
}

var holdIDs atomic.Uint64

// listenHolds subscribes to other nodes' announcements (clustered
// tenants only).
func (t *tenantState) listenHolds(self string) error {
	_, err := t.nc.Subscribe(holdSubject, func(msg *nats.Msg) {
		var n holdNote
		if json.Unmarshal(msg.Data, &n) != nil || n.Node == self {
			return
		}
		t.holdNoted(n)
	})
	return err
}

func (t *tenantState) holdNoted(n holdNote) {
	rh := &t.holds
	k := holdKey{n.Node, n.ID}
	rh.mu.Lock()
	if rh.closed {
		rh.mu.Unlock()
		return
	}
	if !n.On {
		h := rh.m[k]
		delete(rh.m, k)
		rh.n.Store(int32(len(rh.m)))
		rh.mu.Unlock()
		if h != nil {
			for _, w := range h.waiters {
				w.release()
			}
		}
		return
	}
	if rh.m == nil {
		rh.m = map[holdKey]*remoteHold{}
	}
	h := rh.m[k]
	if h == nil {
		h = &remoteHold{}
		rh.m[k] = h
		rh.n.Store(int32(len(rh.m)))
	}
	if len(n.Subjects) > 0 {
		h.filters = h.filters[:0]
		for _, s := range n.Subjects {
			h.filters = append(h.filters, splitSubject(s))
		}
	}
	h.expires = time.Now().Add(holdExpiry)
	if !rh.ticking {
		rh.ticking = true
		go t.expireHolds()
	}
	rh.mu.Unlock()
}

// expireHolds ends holds that were not renewed in time, while there are
// any.
func (t *tenantState) expireHolds() {
	rh := &t.holds
	tick := time.NewTicker(holdRefresh / 2)
	defer tick.Stop()
	for range tick.C {
		now := time.Now()
		var release []*heldPublish
		rh.mu.Lock()
		for k, h := range rh.m {
			if rh.closed || now.After(h.expires) {
				release = append(release, h.waiters...)
				delete(rh.m, k)
			}
		}
		rh.n.Store(int32(len(rh.m)))
		done := len(rh.m) == 0
		if done {
			rh.ticking = false
		}
		rh.mu.Unlock()
		for _, w := range release {
			w.release()
		}
		if done {
			return
		}
	}
}

// holdRemote makes a durable live publish to subject wait for the other
// nodes' consumers that are behind and want it. *hp is the publish's
// hold, made here if nil (with one count for the publish itself, as
// deliverLive does).
func (t *tenantState) holdRemote(subject string, hp **heldPublish, mk func() *heldPublish) {
	rh := &t.holds
	toks := splitSubject(subject)
	rh.mu.Lock()
	defer rh.mu.Unlock()
	for _, h := range rh.m {
		for _, f := range h.filters {
			if subjectMatch(f, toks) {
				if *hp == nil {
					*hp = mk()
				}
				(*hp).n.Add(1)
				h.waiters = append(h.waiters, *hp)
				break
			}
		}
	}
}

// closeHolds completes every publish held for other nodes (the tenant's
// state is closing).
func (t *tenantState) closeHolds() {
	rh := &t.holds
	rh.mu.Lock()
	rh.closed = true
	var release []*heldPublish
	for k, h := range rh.m {
		release = append(release, h.waiters...)
		delete(rh.m, k)
	}
	rh.n.Store(0)
	rh.mu.Unlock()
	for _, w := range release {
		w.release()
	}
}

// announceBehind tells the other nodes that c fell behind (on) or caught
// up. Called by the consumer when its lv.behind changes (c.mu held: the
// publish only buffers).
func (c *Consumer) announceBehind(on bool) {
	if !c.clustered {
		return
	}
	n := holdNote{Node: c.r.eng.NodeName(), ID: c.holdID, On: on}
	if on {
		n.Subjects = c.liveSubjects
	}
	if b, err := json.Marshal(n); err == nil {
		_ = c.ts.nc.Publish(holdSubject, b)
	}
	bs := &c.ts.behind
	bs.mu.Lock()
	if on {
		if bs.m == nil {
			bs.m = map[*Consumer]struct{}{}
		}
		bs.m[c] = struct{}{}
		if !bs.ticking {
			bs.ticking = true
			go c.ts.renewHolds()
		}
	} else {
		delete(bs.m, c)
	}
	bs.mu.Unlock()
}

// renewHolds announces this node's consumers that are still behind
// again every holdRefresh, while there are any.
func (t *tenantState) renewHolds() {
	bs := &t.behind
	tick := time.NewTicker(holdRefresh)
	defer tick.Stop()
	for range tick.C {
		bs.mu.Lock()
		cs := make([]*Consumer, 0, len(bs.m))
		for c := range bs.m {
			cs = append(cs, c)
		}
		if len(cs) == 0 {
			bs.ticking = false
			bs.mu.Unlock()
			return
		}
		bs.mu.Unlock()
		node := t.r.eng.NodeName()
		for _, c := range cs {
			// Under c.mu, as announceBehind is called: a renewal cannot
			// follow the consumer's "caught up" on the connection.
			c.mu.Lock()
			if c.lv.behind && !c.closed {
				if b, err := json.Marshal(holdNote{Node: node, ID: c.holdID, On: true, Subjects: c.liveSubjects}); err == nil {
					_ = t.nc.Publish(holdSubject, b)
				}
			}
			c.mu.Unlock()
		}
	}
}
