package bridge

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// One node runs a bridge at a time: its owner, which holds the bridge's
// lease in the KV bucket throng_bridge_owners (system account, replicated
// as the definitions; key as the definition's, value the owner's node
// name). A node creates the key (Create fails when it exists) or, when
// the key names this node (it restarted), updates it at once; the owner
// updates it with its revision every leaseRefresh. Another node takes it
// over (Update on the revision it saw, so only one of them wins) when
// that revision has not changed for leaseTime by its own clock: no
// comparison of clocks across nodes. An owner that could not refresh for
// ownerGiveUp stops the bridge, before any other node may take it, so
// two nodes never hold the remote session for long. A stopping node
// deletes its leases: another takes them over at its next look.
const (
	ownersBucket = "throng_bridge_owners"
	leaseRefresh = 2 * time.Second
	leaseTime    = 10 * time.Second
	ownerGiveUp  = leaseTime * 2 / 3
)

// lease is what this node knows of a bridge's lease.
type lease struct {
	owner     string    // node that held it at the last look ("" unknown)
	rev       uint64    // the revision seen at the last look
	seenAt    time.Time // when rev was first seen (this node's clock)
	refreshed time.Time // when this node last created or refreshed it
}

// owns reports whether this node holds the lease (refreshed recently).
func (mg *Manager) owns(l *lease, now time.Time) bool {
	return l != nil && l.owner == mg.node && now.Sub(l.refreshed) < ownerGiveUp
}

// claim looks at a bridge's lease once: creates, refreshes or takes it
// over as the rules above say. Called by Start, for a new definition and
// every leaseRefresh; one claim at a time (claimMu).
func (mg *Manager) claim(ten, name string) {
	mg.claimMu.Lock()
	defer mg.claimMu.Unlock()
	k := key(ten, name)
	mg.mu.Lock()
	if mg.closed {
		mg.mu.Unlock()
		return
	}
	l := mg.leases[k]
	if l == nil {
		l = &lease{}
		mg.leases[k] = l
	}
	mg.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv := mg.store.owners
	var (
		rev uint64
		err error
	)
	e, gerr := kv.Get(ctx, k)
	now := time.Now()
	switch {
	case errors.Is(gerr, jetstream.ErrKeyNotFound):
		rev, err = kv.Create(ctx, k, []byte(mg.node))
	case gerr != nil:
		return // cannot tell: an owner gives up after ownerGiveUp
	case string(e.Value()) == mg.node:
		rev, err = kv.Update(ctx, k, []byte(mg.node), e.Revision())
	default:
		mg.mu.Lock()
		if e.Revision() != l.rev || l.seenAt.IsZero() {
			l.owner, l.rev, l.seenAt = string(e.Value()), e.Revision(), now
		}
		stale := now.Sub(l.seenAt) >= leaseTime
		mg.mu.Unlock()
		if !stale {
			return
		}
		rev, err = kv.Update(ctx, k, []byte(mg.node), e.Revision())
		if err == nil {
			mg.log.Info("bridge taken over from a silent node", "tenant", ten, "bridge", name, "from", string(e.Value()))
		}
	}
	if err != nil {
		return // another node won; seen at the next look
	}
	mg.mu.Lock()
	l.owner, l.rev, l.seenAt, l.refreshed = mg.node, rev, now, now
	mg.mu.Unlock()
}

// release deletes this node's lease of a bridge (stopped, deleted or
// disabled here), if it still holds it.
func (mg *Manager) release(k string) {
	mg.mu.Lock()
	l := mg.leases[k]
	delete(mg.leases, k)
	var rev uint64
	mine := l != nil && l.owner == mg.node
	if mine {
		rev = l.rev
	}
	mg.mu.Unlock()
	if !mine {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = mg.store.owners.Delete(ctx, k, jetstream.LastRevision(rev))
}

// keepLeases claims every enabled bridge's lease each leaseRefresh and
// starts or stops the runners whose ownership changed.
func (mg *Manager) keepLeases(stop <-chan struct{}) {
	t := time.NewTicker(leaseRefresh)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		for ten, bs := range mg.store.All() {
			for _, b := range bs {
				if b.Disabled {
					continue
				}
				mg.claim(ten, b.Name)
				mg.sync(ten, b.Name)
			}
		}
	}
}
