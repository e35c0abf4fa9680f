package router

import (
	"context"
	"strings"
	"time"

	"github.com/throngmq/throng/internal/address"
)

// Pruning of per-name state.
//
// Several of a tenant's structures are keyed by address name and made on
// first use of a name: address counters, queue batchers, the cache of
// streams known to exist. Names come and go by the million (devices
// publishing to their own topics, $temp/ reply addresses, addresses
// deleted on another node), so none of them may keep a name for ever:
//
//   - counters are kept only for defined addresses (AddressStats reports
//     nothing else): a producer or consumer of an undefined name counts
//     into counters of its own that no map holds; those of an address
//     that was deleted (here or on another node) are dropped by
//     DeleteAddress or by the next prune;
//   - a queue batcher not published to since the previous prune and with
//     nothing in flight is dropped (marked gone, so that a publish that
//     had looked it up takes the current one; batch.go);
//   - the streams cache forgets Q_/T_ streams of addresses no longer
//     defined (ensureStream asks the engine again if one is used).
//
// Pruning runs every pruneInterval on a goroutine of the router
// (tempsweep.go starts it) and never on the publish path. Anycast groups
// (anycast.go) and live index nodes (local.go) are dropped at once when
// their last consumer leaves.
//
// The engine, too, keeps state per deleted name: the delete marker each
// deleted address definition leaves in the store's bucket (with its
// per-subject state in the engine's memory, ~200 bytes). Every
// markerPurgeInterval the loop has the store purge markers older than
// markerAge (tenant.Store.PurgeDeleted); several nodes doing it at once
// is harmless.
const (
	pruneInterval       = 30 * time.Second
	markerPurgeInterval = 10 * time.Minute
	markerAge           = 30 * time.Minute
)

// pruneLoop prunes every tenant every pruneInterval until ctx ends.
func (r *Router) pruneLoop(ctx context.Context) {
	t := time.NewTicker(pruneInterval)
	defer t.Stop()
	lastPurge := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.prune()
		if time.Since(lastPurge) >= markerPurgeInterval {
			lastPurge = time.Now()
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			if n, err := r.store.PurgeDeleted(pctx, markerAge); err != nil && ctx.Err() == nil {
				r.log.Warn("purging delete markers of the store failed", "err", err)
			} else if n > 0 {
				r.log.Debug("purged delete markers of the store", "count", n)
			}
			cancel()
		}
	}
}

// prune drops the idle per-name state of every tenant.
func (r *Router) prune() {
	r.mu.Lock()
	ts := make([]*tenantState, 0, len(r.tenants))
	for _, t := range r.tenants {
		ts = append(ts, t)
	}
	r.mu.Unlock()
	for _, t := range ts {
		t.prune()
	}
}

func (t *tenantState) prune() {
	defined := map[string]bool{}
	streams := map[string]bool{}
	for _, a := range t.store.Addresses(t.name) {
		defined[a.Name] = true
		if s := streamFor(a); s != "" {
			streams[s] = true
		}
	}
	t.mu.Lock()
	for name := range t.counters {
		if !defined[name] {
			delete(t.counters, name)
		}
	}
	for s := range t.streams {
		if (strings.HasPrefix(s, "Q_") || strings.HasPrefix(s, "T_")) && !streams[s] {
			delete(t.streams, s)
		}
	}
	t.mu.Unlock()
	t.batchers.Range(func(k, v any) bool {
		b := v.(*queueBatcher)
		b.mu.Lock()
		if !b.used && b.inflight == 0 && len(b.waiting) == 0 {
			b.gone = true
			t.batchers.CompareAndDelete(k, b)
		}
		b.used = false
		b.mu.Unlock()
		return true
	})
}

// forget drops the per-name state of an address deleted on this node at
// once; prune does it for those deleted elsewhere.
func (t *tenantState) forget(a *address.Address) {
	t.mu.Lock()
	delete(t.counters, a.Name)
	t.mu.Unlock()
}
