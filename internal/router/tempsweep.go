package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// Temporary addresses.
//
// A temporary address ($temp/<random>, anycast) belongs to the link that
// asked for it (AMQP dynamic source or target). The link deletes it when
// it goes; a node that crashes cannot, so without more the address would
// stay defined in the engine's store for ever. RabbitMQ and Artemis users
// expect such a queue to vanish with its owner.
//
// Whether an owner is alive is asked of the engine, like anycast
// consumers' presence: the owner's node subscribes to to.<name> (before the
// address is stored, so nobody can see the address without its owner) and
// answers probes there. Every node runs a sweeper that, every
// TempSweepInterval, probes each temporary address of every tenant: first
// its owner, and if none answers, its consumers (ap.<name>; this also keeps
// addresses made by nodes without owner probes while they are in use). A
// probe the engine answers "no responders" is a definite absence; a probe
// with no answer in time proves nothing. An address is deleted once it
// has been found absent for TempGrace without a present answer in between,
// counted on this node's clock from the first such sweep: never earlier
// than TempGrace after its creation, and a short loss of cluster interest
// (a route that reconnects) does not delete anything. When owner and
// consumers went with a crashed node, the address goes at most
// TempGrace + 2×TempSweepInterval later (60–90 s with the defaults).
//
// Owners subscribe with a channel that one goroutine of the router
// serves, not with a goroutine per address.
//
// Consumer presence alone would not do: the owner of a dynamic target is a
// producer (a JMS temporary queue is a sender link with a dynamic target),
// and its address may rightly have no consumer for a long time.
//
// Several nodes may sweep at once: deleting an address another node has
// just deleted is not an error. Only anycast addresses whose name starts
// with TempPrefix are ever considered.

// TempPrefix starts the names of temporary addresses (CreateTemp). The
// prefix is reserved: front-ends let any connection of the tenant send to
// such names, and the sweeper deletes those without owner or consumer.
const TempPrefix = "$temp/"

// Defaults of Config.TempSweepInterval and Config.TempGrace.
const (
	DefaultTempSweepInterval = 30 * time.Second
	DefaultTempGrace         = 60 * time.Second
)

const (
	// tempProbeTimeout bounds the wait for a presence answer; the engine
	// answers "no responders" at once, so only a slow engine hits it.
	tempProbeTimeout = 2 * time.Second
	// tempMaxProbes bounds the probes one sweep has in flight.
	tempMaxProbes = 256
	// tempOwnerBacklog is the buffer of owner probes waiting for an
	// answer on this node; a probe that finds it full goes unanswered
	// (unknown to the sweeper, which then deletes nothing).
	tempOwnerBacklog = 4096
)

// isTemp reports whether a is a temporary address: anycast, named with
// TempPrefix.
func isTemp(a *address.Address) bool {
	return a != nil && a.Type == address.Anycast && strings.HasPrefix(a.Name, TempPrefix)
}

// tempTarget resolves a temporary address name that this node's copy of
// the store does not hold: it is anycast all the same, never topic space,
// an auto-created address or not-found on a strict tenant. Another node
// may have created it a moment ago (the store reaches this node's copy
// through a watch), and a service replying from here must reach the
// requester's consumer, or be told there is none (ErrNoConsumers, no
// producer credit), not have its reply accepted into the topic space and
// dropped. One that is gone for good behaves the same: no consumer.
func tempTarget(name string) (target, bool) {
	if !strings.HasPrefix(name, TempPrefix) {
		return target{}, false
	}
	return target{name: name, typ: address.Anycast, def: &address.Address{Name: name, Type: address.Anycast}}, true
}

// Temp is a temporary address and its owner's claim on it (CreateTemp).
type Temp struct {
	r      *Router
	tenant string
	name   string
	sub    *nats.Subscription
}

// CreateTemp defines a new temporary anycast address with an unguessable
// name and makes the caller its owner: the address stays while the Temp
// is not deleted and this node lives. Call Delete when the owner goes.
func (r *Router) CreateTemp(ctx context.Context, tenantName string) (*Temp, error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("tenant %q %w", tenantName, tenant.ErrNotFound)
		}
		return nil, err
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	name := TempPrefix + hex.EncodeToString(b[:])
	// The owner answers probes before the address exists (see above).
	sub, err := ts.nc.ChanSubscribe(address.Subject("to", name), r.temps.owners)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); ok {
		err = ts.nc.FlushWithContext(ctx)
	} else {
		err = ts.nc.Flush() // FlushWithContext needs a deadline
	}
	if err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	if err := r.CreateAddress(ctx, tenantName, &address.Address{Name: name, Type: address.Anycast}); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return &Temp{r: r, tenant: tenantName, name: name, sub: sub}, nil
}

// Name is the address name.
func (t *Temp) Name() string { return t.name }

// Delete deletes the address and gives up the ownership. An address
// already deleted (by a sweeper) is not an error. If the deletion fails,
// the ownership ends anyway and the sweepers delete the address later.
func (t *Temp) Delete(ctx context.Context) error {
	err := t.r.DeleteAddress(ctx, t.tenant, t.name)
	_ = t.sub.Unsubscribe()
	if errors.Is(err, tenant.ErrNotFound) {
		return nil
	}
	return err
}

// tempSweeper is a router's sweeper of temporary addresses and the
// responder of its owners' probes.
type tempSweeper struct {
	interval time.Duration // <0: no background sweeps
	grace    time.Duration
	now      func() time.Time

	owners chan *nats.Msg // owner probes of every Temp of this router
	stop   context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex           // held for a whole sweep: sweeps run one at a time
	absent map[string]time.Time // tenant+"\x00"+name → first sweep that found it absent; guarded by mu
	sweeps atomic.Uint64        // completed sweeps (tests)
}

// startTemps applies the defaults and starts the owners' responder and,
// unless disabled, the background sweeper.
func (r *Router) startTemps() {
	interval, grace := r.cfg.TempSweepInterval, r.cfg.TempGrace
	if interval == 0 {
		interval = DefaultTempSweepInterval
	}
	if grace <= 0 {
		grace = DefaultTempGrace
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &tempSweeper{
		interval: interval, grace: grace, now: time.Now,
		owners: make(chan *nats.Msg, tempOwnerBacklog),
		stop:   cancel,
		absent: map[string]time.Time{},
	}
	r.temps = s
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case m := <-s.owners:
				_ = m.Respond([]byte{1})
			}
		}
	}()
	// The pruning of per-name state (prune.go) shares the sweeper's
	// lifetime.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.pruneLoop(ctx)
	}()
	if interval < 0 {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			r.SweepTemps(ctx)
		}
	}()
}

// stopTemps ends the sweeper and the responder and waits for them. The
// owners' subscriptions die with the router's engine connections.
func (r *Router) stopTemps() {
	if s := r.temps; s != nil {
		s.stop()
		s.wg.Wait()
	}
}

// SweepTemps runs one sweep now (the background sweeper calls it every
// TempSweepInterval) and returns how many temporary addresses it deleted.
// It returns early when ctx ends.
func (r *Router) SweepTemps(ctx context.Context) int {
	s := r.temps
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.sweeps.Add(1)
	seen := map[string]bool{}
	deleted := 0
	for _, tn := range r.store.Tenants() {
		var temps []*address.Address
		for _, a := range r.store.Addresses(tn.Name) {
			if isTemp(a) {
				temps = append(temps, a)
			}
		}
		if len(temps) == 0 {
			continue
		}
		ts, err := r.tenant(ctx, tn.Name)
		if err != nil {
			if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrNotFound) {
				r.log.Warn("temporary address sweep skipped a tenant", "tenant", tn.Name, "err", err)
			}
			continue
		}
		deleted += r.sweepTenant(ctx, ts, temps, seen)
		if ctx.Err() != nil {
			return deleted
		}
	}
	for k := range s.absent {
		if !seen[k] {
			delete(s.absent, k) // deleted, here or elsewhere
		}
	}
	return deleted
}

// sweepTenant probes one tenant's temporary addresses and deletes those
// absent for the grace period. s.mu held.
func (r *Router) sweepTenant(ctx context.Context, ts *tenantState, temps []*address.Address, seen map[string]bool) int {
	s := r.temps
	owners := make([]string, len(temps))
	for i, a := range temps {
		owners[i] = address.Subject("to", a.Name)
	}
	found := ts.probeAll(ctx, owners)
	// No owner: are there consumers?
	var idx []int
	var cons []string
	for i, p := range found {
		if p == presenceAbsent {
			idx = append(idx, i)
			cons = append(cons, address.Subject("ap", temps[i].Name))
		}
	}
	for j, p := range ts.probeAll(ctx, cons) {
		found[idx[j]] = p
	}
	now := s.now()
	deleted := 0
	for i, a := range temps {
		k := ts.name + "\x00" + a.Name
		seen[k] = true
		switch found[i] {
		case presencePresent:
			delete(s.absent, k)
			continue
		case presenceUnknown:
			continue // neither proof of life nor of absence
		}
		since, ok := s.absent[k]
		if !ok {
			s.absent[k] = now
			continue
		}
		if now.Sub(since) < s.grace || ctx.Err() != nil {
			continue
		}
		if r.deleteTemp(ctx, ts.name, a.Name, now.Sub(since)) {
			deleted++
		}
		delete(s.absent, k)
	}
	return deleted
}

// deleteTemp deletes a temporary address the sweeper found abandoned;
// false if it was not there any more.
func (r *Router) deleteTemp(ctx context.Context, tenantName, name string, unused time.Duration) bool {
	// Never anything but a temporary address, whatever happened since
	// the listing.
	if a, ok := r.store.Address(tenantName, name); !ok || !isTemp(a) {
		return false
	}
	err := r.DeleteAddress(ctx, tenantName, name)
	switch {
	case errors.Is(err, tenant.ErrNotFound):
		return false // another node was first
	case err != nil:
		r.log.Warn("deleting an abandoned temporary address failed", "tenant", tenantName, "address", name, "err", err)
		return false
	}
	r.log.Info("deleted temporary address: no owner and no consumer", "tenant", tenantName, "address", name, "unused_for", unused.Round(time.Millisecond))
	r.metrics.tempDeleted.WithLabelValues(tenantName).Inc()
	return true
}

// presence is what a probe found out.
type presence int8

const (
	presenceUnknown presence = iota // no answer in time (slow engine, router closing)
	presenceAbsent                  // the engine answered: no responders
	presencePresent                 // a responder answered
)

// probeAll probes each subject (a request answered by whoever listens
// there) with at most tempMaxProbes in flight, and returns what each one
// found; presenceUnknown for those not sent because ctx ended.
func (ts *tenantState) probeAll(ctx context.Context, subjects []string) []presence {
	res := make([]presence, len(subjects))
	sem := make(chan struct{}, tempMaxProbes)
	var wg sync.WaitGroup
	for i, subj := range subjects {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return res
		}
		wg.Add(1)
		ts.probe(subj, func(p presence) {
			res[i] = p
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	return res
}

// probe sends one presence probe; done gets the answer (it may run on an
// engine goroutine and must not block).
func (ts *tenantState) probe(subject string, done func(presence)) {
	reply, ok := ts.mux.register(tempProbeTimeout, func(msg *nats.Msg) {
		switch {
		case msg == nil:
			done(presenceUnknown)
		case len(msg.Data) > 0:
			done(presencePresent)
		case msg.Header.Get("Status") == "503":
			done(presenceAbsent)
		default:
			done(presenceUnknown)
		}
	})
	if !ok {
		done(presenceUnknown)
		return
	}
	if err := ts.nc.PublishMsg(&nats.Msg{Subject: subject, Reply: reply}); err != nil {
		ts.mux.cancel(reply)
		done(presenceUnknown)
	}
}
