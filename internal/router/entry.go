package router

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/message"
)

// An entry follows the messages of one engine entry (a batch of messages,
// or a plain message, which is an entry of one) until each is settled:
// consumed (accepted, dead-lettered, expired, refused by a subscription's
// selector) or given back (to be delivered again by the engine, for
// another node: released while the feed had no member, or idle).
// Released messages normally never reach the entry: the feed gives them to
// another member (feed.requeue).
//
// The entry is acknowledged once every message is settled: +ACK when all
// were consumed, -NAK when some are to come again. The engine's state is
// per entry, so which messages of a NAKed (or, after a crash, redelivered)
// entry were consumed is kept in a progress record (one per entry, in the
// tenant's PROGRESS stream, only for entries partly consumed): a
// redelivered entry delivers only the messages not consumed before, in
// their place at the head of the queue. A record is written before a
// partly consumed entry is NAKed, and soon (progressDelay) after a
// message of an entry still being consumed is settled, so that a crash
// redelivers at most what was settled in that last moment — as with a
// plain message, whose +ACK may be lost with the node.
type entry struct {
	f     *feed
	reply string // the engine's ack subject
	seq   uint64
	count uint64 // delivery attempt of the entry

	mu       sync.Mutex
	state    []partState // guarded by mu
	left     int         // parts still open; guarded by mu
	prior    bool        // parts were consumed in an earlier delivery (progress record); guarded by mu
	delay    bool        // given back idle: the engine waits before redelivering; guarded by mu
	recorded bool        // a progress record was written; guarded by mu
	dirty    bool        // a progress record is due (progressStore.flush); guarded by mu

	large *message.Large // a queue message's chunks, purged when it is consumed (large.go)
}

type partState uint8

const (
	partOpen partState = iota
	partConsumed
	partBack
)

func (e *entry) consumed(part int) { e.settle(part, partConsumed, false) }

// giveBack returns a message to the engine; idle: nobody here could take
// it for a while, so the engine should not hand it straight back.
func (e *entry) giveBack(part int, idle bool) { e.settle(part, partBack, idle) }

func (e *entry) settle(part int, st partState, idle bool) {
	e.mu.Lock()
	if part < 0 || part >= len(e.state) || e.state[part] != partOpen {
		e.mu.Unlock()
		return
	}
	e.state[part] = st
	e.delay = e.delay || idle
	e.left--
	last := e.left == 0
	mark := !last && st == partConsumed && !e.dirty
	if mark {
		e.dirty = true
	}
	e.mu.Unlock()
	if st == partConsumed {
		e.f.consumedPart(e.seq, part)
	}
	switch {
	case last:
		e.finish()
	case mark:
		e.f.ts.progress.mark(e)
	}
}

// restore marks the parts a progress record says were consumed.
func (e *entry) restore(done []byte) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := range e.state {
		if i/8 < len(done) && done[i/8]&(1<<(i%8)) != 0 && e.state[i] == partOpen {
			e.state[i] = partConsumed
			e.left--
			e.prior = true
		}
	}
	e.recorded = e.prior
}

// bitmapLocked is the progress record of the entry. e.mu held.
func (e *entry) bitmapLocked() []byte {
	b := make([]byte, (len(e.state)+7)/8)
	for i, s := range e.state {
		if s == partConsumed {
			b[i/8] |= 1 << (i % 8)
		}
	}
	return b
}

// finish acknowledges the entry to the engine once every part is settled.
func (e *entry) finish() {
	f := e.f
	f.entryDone(e)
	e.mu.Lock()
	consumed, back := 0, 0
	for _, s := range e.state {
		switch s {
		case partConsumed:
			consumed++
		case partBack:
			back++
		}
	}
	recorded, delay := e.recorded, e.delay
	var record []byte
	if back > 0 && consumed > 0 {
		record = e.bitmapLocked()
		e.recorded = true
	}
	e.mu.Unlock()
	nc := f.ts.nc
	nak := []byte("-NAK")
	if delay {
		nak = []byte(`-NAK {"delay": 1000000000}`)
	}
	switch {
	case back == 0:
		_ = ackPublish(nc, e.reply, []byte("+ACK"))
		f.noteAcked(e.seq)
		if e.large != nil {
			f.r.dropLarge(f.ts, e.large)
		}
		if recorded {
			f.ts.progress.forget(f.ts, f.prog.subject(e.seq))
		}
	case consumed == 0:
		_ = nc.Publish(e.reply, nak)
	default:
		// The record must be stored before the entry comes back.
		f.ts.storeEntry(f.prog.subject(e.seq), f.tg.name, record, nil, func(_ Outcome, err error) {
			if err != nil {
				f.r.log.Warn("progress record not stored; settled messages of the entry may come again",
					"tenant", f.ts.name, "address", f.tg.name, "seq", e.seq, "err", err)
			}
			_ = nc.Publish(e.reply, nak)
		})
	}
}

// ackPublish sends an entry's acknowledgement (tests lose one, as a dying
// consumer leader does).
var ackPublish = func(nc *nats.Conn, subj string, b []byte) error { return nc.Publish(subj, b) }

// progressStore keeps the progress records of a tenant's partly consumed
// entries in its PROGRESS stream (one message per entry subject).
type progressStore struct {
	mu     sync.Mutex
	stream jetstream.Stream // nil until ensured; guarded by mu
	dirty  []*entry         // guarded by mu
	armed  bool             // guarded by mu
}

const progressStream = "PROGRESS"

// progressDelay is how soon after a message of a partly consumed entry is
// settled its progress record is written (if the entry is still open).
var progressDelay = 20 * time.Millisecond

// progressKey names the records of one engine consumer. The creation
// times make a stream or consumer created again under the same name (an
// address deleted and defined again) start with no records.
type progressKey string

func (k progressKey) subject(seq uint64) string {
	return string(k) + "." + strconv.FormatUint(seq, 10)
}

func (p *progressStore) ensure(ts *tenantState) (jetstream.Stream, error) {
	p.mu.Lock()
	s := p.stream
	p.mu.Unlock()
	if s != nil {
		return s, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	s, err := ts.createOrUpdate(ctx, (jetstream.StreamConfig{
		Name:              progressStream,
		Subjects:          []string{"p.>"},
		Storage:           jetstream.FileStorage,
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		Discard:           jetstream.DiscardOld,
		AllowDirect:       true,
		Description:       "which messages of partly settled entries were consumed",
	}))
	if err != nil {
		return nil, fmt.Errorf("router: progress stream: %w", err)
	}
	p.mu.Lock()
	p.stream = s
	p.mu.Unlock()
	return s, nil
}

// key returns the record prefix for an engine consumer, and the
// consumer's state as the engine reports it.
func (p *progressStore) key(ts *tenantState, stream, cons string) (progressKey, *jetstream.ConsumerInfo, error) {
	if _, err := p.ensure(ts); err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	// retryAPI: right after a node's death these requests may go
	// unanswered until the election is over (pull.go).
	s, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Stream, error) { return ts.js.Stream(ctx, stream) })
	if err != nil {
		return "", nil, fmt.Errorf("router: stream %s: %w", stream, err)
	}
	cn, err := retryAPI(ctx, func(ctx context.Context) (jetstream.Consumer, error) { return ts.js.Consumer(ctx, stream, cons) })
	if err != nil {
		return "", nil, fmt.Errorf("router: consumer %s: %w", cons, err)
	}
	ci := cn.CachedInfo()
	return progressKey(fmt.Sprintf("p.%s.%d.%s.%d", stream, s.CachedInfo().Created.UnixNano(),
		cons, ci.Created.UnixNano())), ci, nil
}

// load returns the record of an entry (nil if none or unreadable: then
// the whole entry is delivered again, which is at-least-once).
func (p *progressStore) load(f *feed, subject string) []byte {
	s, err := p.ensure(f.ts)
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	m, err := s.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			f.r.log.Warn("progress record unreadable", "tenant", f.ts.name, "subject", subject, "err", err)
		}
		return nil
	}
	return m.Data
}

// forget removes the record of an acknowledged entry.
func (p *progressStore) forget(ts *tenantState, subject string) {
	go func() {
		s, err := p.ensure(ts)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
		defer cancel()
		_ = s.Purge(ctx, jetstream.WithPurgeSubject(subject))
	}()
}

// mark schedules a record for an entry being consumed.
func (p *progressStore) mark(e *entry) {
	p.mu.Lock()
	p.dirty = append(p.dirty, e)
	if !p.armed {
		p.armed = true
		time.AfterFunc(progressDelay, func() { p.flush(e.f.ts) })
	}
	p.mu.Unlock()
}

// flush writes the records of the marked entries still open.
func (p *progressStore) flush(ts *tenantState) {
	p.mu.Lock()
	dirty := p.dirty
	p.dirty, p.armed = nil, false
	p.mu.Unlock()
	for _, e := range dirty {
		e.mu.Lock()
		e.dirty = false
		if e.left == 0 {
			e.mu.Unlock()
			continue
		}
		rec := e.bitmapLocked()
		e.recorded = true
		e.mu.Unlock()
		ts.storeEntry(e.f.prog.subject(e.seq), e.f.tg.name, rec, nil, func(Outcome, error) {})
	}
}
