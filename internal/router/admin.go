package router

import (
	"context"
	"errors"
	"fmt"
	"time"

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
// topic space) behind the subscription's durable consumer; purging or
// peeking them is not built yet (409).

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
		what := "queues and topics"
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
