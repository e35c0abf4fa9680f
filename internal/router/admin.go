package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/tenant"
)

// Queue actions for the admin API (docs/admin-api.md, "Queue actions"):
// purge, peek and move the messages a queue stores (a topic's retained
// messages too, for purge and peek). They act on the address's stream,
// not through a consumer, so they change no delivery count and need no
// credit.
//
// What they do not reach: messages a consumer's connection already holds
// (pulled by the feed, in flight to the client) are delivered still; a
// purged or moved entry's settlement then finds it gone and does
// nothing. A subscription's messages live in its topic's stream (or the
// topic space) behind the subscription's durable consumer, shared with
// other subscriptions: purge acknowledges them through the consumer
// (subscriptionPurge), peek reads the stream from the consumer's
// acknowledgement floor with its filters (subscriptionPeek).

// StoredMessage is a message as a peek returns it.
type StoredMessage struct {
	Sequence uint64    // the engine entry's sequence in the address's stream
	Time     time.Time // when it was stored
	Message  *message.Message
}

// storedStream finds the stream of a queue or topic address; other types
// are refused with tenant.ErrConflict (409 in the admin API).
func (r *Router) storedStream(ctx context.Context, tenantName, name string, queueOnly bool) (*tenantState, *address.Address, jetstream.Stream, error) {
	a, ok := r.store.Address(tenantName, name)
	if !ok {
		return nil, nil, nil, fmt.Errorf("address %q %w", name, tenant.ErrNotFound)
	}
	if a.Type != address.Queue && (queueOnly || a.Type != address.Topic) {
		what := "queues, topics and subscriptions"
		if queueOnly {
			what = "queues"
		}
		return nil, nil, nil, fmt.Errorf("%w: %q is a %s; this works on %s only", tenant.ErrConflict, name, a.Type, what)
	}
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return nil, nil, nil, err
	}
	sname, err := r.ensureStream(ctx, ts, a)
	if err != nil {
		return nil, nil, nil, err
	}
	s, err := ts.js.Stream(ctx, sname)
	if err != nil {
		return nil, nil, nil, err
	}
	return ts, a, s, nil
}

// Purge removes every message a queue or topic address stores and
// returns how many (a queue's batch entries count their messages, as
// its backlog does).
func (r *Router) Purge(ctx context.Context, tenantName, name string) (int64, error) {
	if a, ok := r.store.Address(tenantName, name); ok && a.Type == address.Subscription {
		return r.subscriptionPurge(ctx, tenantName, a)
	}
	_, a, s, err := r.storedStream(ctx, tenantName, name, false)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	n := int64(info.State.Msgs)
	if a.Type == address.Queue {
		n = queueBacklog(ctx, s, subjectFor(a), n)
	}
	// Up to the last entry seen: one stored meanwhile stays, and is not
	// counted.
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(info.State.LastSeq+1)); err != nil {
		return 0, err
	}
	return n, nil
}

// Peek returns the first limit messages a queue or topic address stores,
// oldest first, without consuming them: they are read from the stream,
// not delivered, so no delivery count changes. A large message's body is
// not loaded (Message.Large tells its size). A queue's batch entry that
// is partly consumed shows its consumed messages too.
func (r *Router) Peek(ctx context.Context, tenantName, name string, limit int) ([]StoredMessage, error) {
	if a, ok := r.store.Address(tenantName, name); ok && a.Type == address.Subscription {
		return r.subscriptionPeek(ctx, tenantName, a, limit)
	}
	_, _, s, err := r.storedStream(ctx, tenantName, name, false)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := []StoredMessage{}
	for seq := info.State.FirstSeq; len(out) < limit && seq <= info.State.LastSeq && info.State.Msgs > 0; {
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		_, msgs, err := decodeEntry(raw.Data)
		if err != nil {
			return nil, fmt.Errorf("router: entry %d of %q: %w", raw.Sequence, name, err)
		}
		for _, m := range msgs {
			if len(out) == limit {
				break
			}
			out = append(out, StoredMessage{Sequence: raw.Sequence, Time: raw.Time, Message: m})
		}
		seq = raw.Sequence + 1
	}
	return out, nil
}

// Move stores the messages of queue from at address to (any type that
// takes a publish), each entry's messages before the entry is removed
// from from, so that none is lost: a failure between the two leaves the
// message at both (at least once). It moves the entries stored when it
// starts, at most limit messages (0: all; a batch entry moves whole), and
// returns how many messages it moved; on an error, those moved before.
// The messages keep their properties; a large message's body is loaded
// and stored anew at the target.
func (r *Router) Move(ctx context.Context, tenantName, from, to string, limit int) (int64, error) {
	if _, ok := r.store.Address(tenantName, to); !ok {
		return 0, fmt.Errorf("address %q %w", to, tenant.ErrNotFound)
	}
	ts, _, s, err := r.storedStream(ctx, tenantName, from, true)
	if err != nil {
		return 0, err
	}
	p, err := r.Producer(ctx, tenantName, to)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", tenant.ErrConflict, err)
	}
	p.exempt = true // an administrator's action: not rate limited
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	var moved int64
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0 && (limit == 0 || moved < int64(limit)); {
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(">"))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return moved, err
		}
		if raw.Sequence > info.State.LastSeq {
			break
		}
		seq = raw.Sequence + 1
		_, msgs, err := decodeEntry(raw.Data)
		if err != nil {
			return moved, fmt.Errorf("router: entry %d of %q: %w", raw.Sequence, from, err)
		}
		var larges []*message.Large
		for _, m := range msgs {
			if m.Large != nil {
				ref := m.Large
				if m, err = r.loadMessage(ts, m); err != nil {
					return moved, err
				}
				m.Large = nil
				larges = append(larges, ref)
			}
			o, err := p.PublishSync(ctx, m)
			if err == nil && o.Kind != Accepted {
				err = fmt.Errorf("%s: %s", o.Kind, o.Description)
			}
			if err != nil {
				return moved, fmt.Errorf("%w: %q refused a message after %d moved: %v", tenant.ErrConflict, to, moved, err)
			}
		}
		// Stored at the target: now the entry may go. Consumed meanwhile
		// (not found) is fine: it was delivered and is at the target too.
		if err := s.DeleteMsg(ctx, raw.Sequence); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return moved, err
		}
		for _, ref := range larges {
			r.dropLarge(ts, ref)
		}
		moved += int64(len(msgs))
	}
	return moved, nil
}

// subscriptionConsumer finds a subscription's stream, durable consumer
// and the subjects it takes (none: the whole stream).
func (r *Router) subscriptionSource(ctx context.Context, tenantName string, a *address.Address) (jetstream.Stream, jetstream.Consumer, []string, error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return nil, nil, nil, err
	}
	tg := r.targetFor(ts, a)
	if err := r.ensureSubscription(ctx, ts, tg); err != nil {
		return nil, nil, nil, err
	}
	sname, cname := subscriptionConsumer(tg)
	s, err := ts.js.Stream(ctx, sname)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := s.Consumer(ctx, cname)
	if err != nil {
		return nil, nil, nil, err
	}
	ci := c.CachedInfo()
	filters := ci.Config.FilterSubjects
	if ci.Config.FilterSubject != "" {
		filters = []string{ci.Config.FilterSubject}
	}
	if len(filters) == 0 {
		filters = []string{">"}
	}
	return s, c, filters, nil
}

// subscriptionPurge acknowledges every message pending for the
// subscription up to the stream's last entry now: it pulls them through
// the durable consumer, as a member would, and acknowledges each. The
// topic's other subscriptions keep theirs. Messages a member holds
// unacknowledged are not reached (they are in flight).
func (r *Router) subscriptionPurge(ctx context.Context, tenantName string, a *address.Address) (int64, error) {
	s, c, _, err := r.subscriptionSource(ctx, tenantName, a)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	last := info.State.LastSeq
	var n int64
	for {
		batch, err := c.Fetch(256, jetstream.FetchMaxWait(250*time.Millisecond))
		if err != nil {
			return n, err
		}
		got, done := 0, false
		for m := range batch.Messages() {
			got++
			meta, err := m.Metadata()
			if err != nil || meta.Sequence.Stream > last {
				_ = m.Nak() // stored after the purge began: stays
				done = true
				continue
			}
			if err := m.DoubleAck(ctx); err != nil {
				return n, err
			}
			n++
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
			return n, err
		}
		if got == 0 || done {
			return n, nil
		}
	}
}

// subscriptionPeek reads the first limit messages pending for the
// subscription from its stream: above the consumer's acknowledgement
// floor, matching its filters. A message acknowledged out of order above
// the floor shows too.
func (r *Router) subscriptionPeek(ctx context.Context, tenantName string, a *address.Address, limit int) ([]StoredMessage, error) {
	s, c, filters, err := r.subscriptionSource(ctx, tenantName, a)
	if err != nil {
		return nil, err
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	out := []StoredMessage{}
	seq := ci.AckFloor.Stream + 1
	if ci.Delivered.Stream == 0 && ci.AckFloor.Stream == 0 {
		// Nothing delivered yet: pending starts at the first entry the
		// consumer may take (it was made with DeliverNew).
		seq = max(seq, ci.Config.OptStartSeq)
	}
	for len(out) < limit && ci.NumPending+uint64(ci.NumAckPending) > 0 {
		// The next entry at or after seq that matches any filter.
		var next *jetstream.RawStreamMsg
		for _, f := range filters {
			raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(f))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if next == nil || raw.Sequence < next.Sequence {
				next = raw
			}
		}
		if next == nil {
			break
		}
		_, msgs, err := decodeEntry(next.Data)
		if err != nil {
			return nil, fmt.Errorf("router: entry %d of %q: %w", next.Sequence, a.Name, err)
		}
		for _, m := range msgs {
			if len(out) < limit {
				out = append(out, StoredMessage{Sequence: next.Sequence, Time: next.Time, Message: m})
			}
		}
		seq = next.Sequence + 1
	}
	return out, nil
}
