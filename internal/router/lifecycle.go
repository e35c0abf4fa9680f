package router

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
)

// Lifecycle of a defined address on live producers and consumers (issue
// 14.4, 14.5, 14.11).
//
// Front-ends resolve a name once per link (Producer, Consume). When the
// definition is deleted — on this node by DeleteAddress, on every node
// when the store's watch delivers the deletion (addressChanged) — this
// node's consumers of it are closed and told (ConsumeOptions.Gone: AMQP
// detaches with amqp:resource-deleted, MQTT disconnects with 0x8F), and
// producers resolved to it refuse every later publish with ErrDeleted
// (AMQP rejected amqp:not-found, MQTT PUBACK 0x90): a message is never
// acknowledged into an address that no longer exists. A producer knows
// by a generation counter of the tenant's definition changes, one atomic
// load per publish; only after a change does it look at the store.
// The address's counters go with it on every node, so an address
// defined again under the same name starts at zero.
//
// An updated definition (UpdateAddress) keeps its stream and messages;
// the engine applies the new limits at once (maxMessages, maxBytes,
// maxAge, maxMessageSize, overflow); maxDeliveries and deadLetter apply
// to consumers attached after the change.

// ErrDeleted: the defined address a producer was resolved to has been
// deleted. It wraps ErrNotFound, so front-ends answer as for an unknown
// address.
var ErrDeleted = fmt.Errorf("%w: deleted", ErrNotFound)

// Stale reports whether the producer's defined address was deleted (or
// deleted and defined again: a new address, to be resolved anew) since
// the producer was resolved. A producer of the topic space, an implicit
// or a temporary address is never stale.
func (p *Producer) Stale() bool {
	if !p.tg.defined {
		return false
	}
	g := p.ts.addrGen.Load()
	if p.checkedGen.Load() == g {
		return p.gone.Load()
	}
	if !p.gone.Load() {
		a, ok := p.r.store.Address(p.ts.name, p.tg.name)
		if !ok || !a.Created.Equal(p.tg.def.Created) {
			p.gone.Store(true)
		}
	}
	p.checkedGen.Store(g)
	return p.gone.Load()
}

// addressChanged is the store's OnAddressChange (its watch goroutine, on
// every node, this one included).
func (r *Router) addressChanged(tenantName string, a *address.Address, deleted bool) {
	r.mu.Lock()
	ts := r.tenants[tenantName]
	r.mu.Unlock()
	if ts == nil {
		return
	}
	if !strings.HasPrefix(a.Name, TempPrefix) {
		// Temporary addresses come and go with request/response links;
		// no producer is bound to one (targetFor), so they do not make
		// every producer look again.
		ts.addrGen.Add(1)
	}
	if deleted {
		ts.forget(a)
		// Consumer.Close may wait for the engine: not on the watch.
		go ts.detach(a, false)
	}
}

// detach closes this node's consumers of the defined address a (those
// attached to the current definition of the name are kept: a delete
// seen late, after the name was defined again) and tells each (Gone).
// own: called by DeleteAddress before the definition is deleted, so every
// consumer of the name goes.
func (t *tenantState) detach(a *address.Address, own bool) {
	var gone []*Consumer
	t.mu.Lock()
	for c := range t.consumers {
		if !c.tg.defined || c.tg.name != a.Name {
			continue
		}
		if !own {
			if cur, ok := t.store.Address(t.name, a.Name); ok && cur.Created.Equal(c.tg.def.Created) {
				continue
			}
		}
		gone = append(gone, c)
	}
	t.mu.Unlock()
	for _, c := range gone {
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		c.Close()
		if !closed && c.opts.Gone != nil {
			c.opts.Gone()
		}
	}
}

// UpdateAddress changes a defined address's limits, dead-letter address
// or overflow policy, keeping its stored messages. The type cannot
// change, nor a subscription's topic (tenant.ErrInvalid); limits below
// what a queue or topic holds now are refused (tenant.ErrConflict)
// rather than have the engine drop messages.
func (r *Router) UpdateAddress(ctx context.Context, tenantName string, a *address.Address) error {
	if err := a.Validate(); err != nil {
		return fmt.Errorf("%w: %v", tenant.ErrInvalid, err)
	}
	old, ok := r.store.Address(tenantName, a.Name)
	if !ok {
		return fmt.Errorf("address %q %w", a.Name, tenant.ErrNotFound)
	}
	switch {
	case old.Type != a.Type:
		return fmt.Errorf("%w: address %q is a %s; its type cannot change (delete it and create it again)", tenant.ErrInvalid, a.Name, old.Type)
	case a.Type == address.Subscription && a.Topic != old.Topic:
		return fmt.Errorf("%w: subscription %q is on topic %q; its topic cannot change", tenant.ErrInvalid, a.Name, old.Topic)
	}
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return err
	}
	if a.Type == address.Queue || a.Type == address.Topic {
		s, err := ts.js.Stream(ctx, streamFor(a))
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		if err == nil {
			st, err := s.Info(ctx)
			if err != nil {
				return err
			}
			l := a.Limits
			if a.Type == address.Queue || l.Overflow == address.RejectNew {
				switch {
				case l.MaxMessages > 0 && int64(st.State.Msgs) > l.MaxMessages:
					return fmt.Errorf("%w: address %q holds %d messages (engine entries), more than maxMessages %d would allow; consume some first", tenant.ErrConflict, a.Name, st.State.Msgs, l.MaxMessages)
				case l.MaxBytes > 0 && int64(st.State.Bytes) > l.MaxBytes:
					return fmt.Errorf("%w: address %q holds %d bytes, more than maxBytes %d would allow; consume some first", tenant.ErrConflict, a.Name, st.State.Bytes, l.MaxBytes)
				}
			}
			if _, err := ts.js.UpdateStream(ctx, ts.replicated(streamConfig(a))); err != nil {
				return fmt.Errorf("router: update stream of %q: %w", a.Name, err)
			}
		}
	}
	return r.store.UpdateAddress(ctx, tenantName, a)
}
