package router

import (
	"context"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/message"
)

// Queue group commit.
//
// The engine's cost of a stored message is per entry: the stream write,
// the PubAck, the pull delivery, the ack and the removal. A queue whose
// producers publish faster than one entry's round trip would be held at
// the engine's per-entry rate (~50k/s on two cores). So the messages
// published to a queue while batchInflight entries are already on their
// way to the engine wait, and go together in the next entry when one of
// those is acknowledged (message.AppendBatch). A lone message still goes
// out at once, as a plain entry, so latency at low load is unchanged.
// Every message of an entry is accepted when the entry is stored.
//
// Consumers unpack an entry into one delivery per message (feed.go;
// credit is counted in messages; what an entry brings beyond the credit
// waits in the node's ready list for any consumer with credit). The entry
// is acknowledged to the engine when all its messages are settled, and a
// progress record keeps which messages of a partly settled entry were
// consumed (entry.go).

const (
	// batchInflight is the number of entries of one queue on their way to
	// the engine before further messages wait to be grouped.
	batchInflight = 2
	// batchMaxInflight allows more entries in flight when a full entry
	// is waiting.
	batchMaxInflight = 8
	batchMaxMsgs     = 256
	batchMaxBytes    = 256 << 10
)

// queueBatcher forms the entries of one queue subject on this node.
type queueBatcher struct {
	ts      *tenantState
	subject string
	name    string

	mu       sync.Mutex
	inflight int         // entries sent, PubAck pending; guarded by mu
	waiting  []batchItem // guarded by mu
	full     bool        // waiting holds at least one full entry; guarded by mu
	bytes    int         // encoded size of waiting; guarded by mu
	used     bool        // published to since the last prune; guarded by mu
	gone     bool        // pruned: dropped from ts.batchers (prune.go); guarded by mu
}

type batchItem struct {
	m     *message.Message
	enc   []byte
	alone bool   // stored as its own entry: an expiry (the engine's TTL is per entry) or a message-count limit
	limit int    // largest entry this message may be part of
	once  string // deduplication id (PublishOnce): alone
	done  func(Outcome, error)
}

func (ts *tenantState) batcher(subject string) *queueBatcher {
	if b, ok := ts.batchers.Load(subject); ok {
		return b.(*queueBatcher)
	}
	b, _ := ts.batchers.LoadOrStore(subject, &queueBatcher{ts: ts, subject: subject})
	return b.(*queueBatcher)
}

func (b *queueBatcher) publish(p *Producer, m *message.Message, once string, done func(Outcome, error)) {
	m, done, ok := p.chunk(m, done) // large.go
	if !ok {
		return
	}
	it := batchItem{m: m, enc: m.Marshal(), limit: batchMaxBytes, once: once, done: done}
	l := p.tg.def.Limits
	if l.MaxMessageSize > 0 {
		// The stream's maximum message size applies to whole entries.
		it.limit = min(it.limit, int(l.MaxMessageSize))
	}
	// A chunk reference is alone too: its entry is removed (and its
	// chunks purged) as a whole.
	it.alone = !m.Expiry.IsZero() || l.MaxMessages > 0 || len(it.enc) > it.limit/2 || m.Large != nil || once != ""
	b.mu.Lock()
	for b.gone {
		// Pruned since it was looked up: the tenant's current one.
		b.mu.Unlock()
		b = b.ts.batcher(b.subject)
		b.mu.Lock()
	}
	b.used = true
	if b.name == "" {
		b.name = p.tg.name
	}
	var items []batchItem
	if b.inflight < batchInflight && len(b.waiting) == 0 {
		items = []batchItem{it}
	} else {
		b.waiting = append(b.waiting, it)
		b.bytes += len(it.enc)
		b.full = b.full || it.alone || len(b.waiting) >= batchMaxMsgs || b.bytes >= it.limit
		if !b.full || b.inflight >= batchMaxInflight {
			b.mu.Unlock()
			return
		}
		items = b.takeLocked()
	}
	b.inflight++
	err := b.sendLocked(items)
	b.mu.Unlock()
	if err != nil {
		b.finished(items, Outcome{}, err)
	}
}

// takeLocked removes the next entry's messages from waiting: one message
// that must be alone, or consecutive others within the count and size
// bounds. b.mu held.
func (b *queueBatcher) takeLocked() []batchItem {
	n, size := 1, len(b.waiting[0].enc)
	if !b.waiting[0].alone {
		limit := b.waiting[0].limit
		for n < len(b.waiting) && n < batchMaxMsgs {
			it := b.waiting[n]
			limit = min(limit, it.limit)
			if it.alone || size+len(it.enc)+message.BatchOverhead(n+1) > limit {
				break
			}
			size += len(it.enc)
			n++
		}
	}
	items := b.waiting[:n:n]
	b.waiting = b.waiting[n:]
	if len(b.waiting) == 0 {
		b.waiting = nil // let the backing array go
	}
	b.bytes -= size
	b.full = len(b.waiting) >= batchMaxMsgs || (len(b.waiting) > 0 && b.waiting[0].alone)
	return items
}

// sendLocked sends an entry to the engine. It is called with b.mu held so
// that entries reach the engine in the order they were formed: a send
// after unlocking could be overtaken by the next one, and a producer's
// messages would be stored out of order. An error means the entry was not
// sent (finished must then be called, without b.mu).
func (b *queueBatcher) sendLocked(items []batchItem) error {
	var data []byte
	var hdr nats.Header
	if len(items) == 1 {
		data, hdr = items[0].enc, entryHeader(items[0].m, items[0].once)
	} else {
		enc := make([][]byte, len(items))
		size := message.BatchOverhead(len(items))
		for i, it := range items {
			enc[i] = it.enc
			size += len(it.enc)
		}
		data = message.AppendBatch(make([]byte, 0, size), 0, enc)
	}
	subject := b.subject
	if len(items) > 1 {
		subject = batchSubject(b.subject, len(items))
	}
	if err := b.ts.checkStored(len(subject) + len(data)); err != nil {
		return err // maxStoredBytes (quota.go)
	}
	return b.ts.sendEntry(subject, b.name, data, hdr, func(o Outcome, err error) {
		b.finished(items, o, err)
	})
}

// finished reports an entry's outcome to its messages' producers and sends
// the next entry if messages are waiting.
func (b *queueBatcher) finished(items []batchItem, o Outcome, err error) {
	for {
		b.mu.Lock()
		b.inflight--
		var next []batchItem
		var nerr error
		if len(b.waiting) > 0 {
			b.inflight++
			next = b.takeLocked()
			nerr = b.sendLocked(next)
		}
		b.mu.Unlock()
		for _, it := range items {
			it.done(o, err)
		}
		if nerr == nil {
			return
		}
		items, o, err = next, Outcome{}, nerr
	}
}

// batchSubject is the subject of a batch entry of n messages of the queue
// subject q.<name>: qn.<name>.<n>. The queue's stream takes both
// (batchSubjects), its consumer reads them in stream order, and the
// per-subject counts the engine keeps give the backlog in messages.
func batchSubject(subject string, n int) string {
	return "qn" + subject[1:] + "." + strconv.Itoa(n)
}

// batchSubjects is the stream subject filter of a queue's batch entries.
func batchSubjects(subject string) string { return "qn" + subject[1:] + ".*" }

// queueBacklog turns a queue stream's entry count into a message count:
// each batch entry counts as its messages. Messages of an entry that is
// being consumed count until the whole entry is settled. On error the
// entry count is returned.
func queueBacklog(ctx context.Context, s jetstream.Stream, subject string, entries int64) int64 {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(batchSubjects(subject)))
	if err != nil {
		return entries
	}
	n := entries
	for subj, count := range info.State.Subjects {
		k, err := strconv.Atoi(subj[strings.LastIndexByte(subj, '.')+1:])
		if err != nil || k < 1 {
			continue
		}
		n += int64(count) * int64(k-1)
	}
	return n
}
