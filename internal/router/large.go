package router

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/clock"
	"github.com/throngmq/throng/internal/message"
)

// Large messages (docs/router.md, "Large messages").
//
// Engine entries stay small: a stored message whose bytes (Native, and
// Body unless it lies inside Native) exceed largeThreshold has them
// written in chunks of chunkSize to the tenant's LARGE stream, on a
// subject of their own (lg.<stream>.<id>), before its entry is stored;
// the entry carries only the reference (message.Large, codec version 2)
// and is always an entry of its own. A consumer loads the chunks when the
// entry is delivered (Router.loadLarge), into one buffer of the message's
// size. The chunks of a queue message are purged when it is consumed;
// those of a topic message expire with the topic's maximum age (the
// engine's per-message TTL), since any number of subscriptions read them.
// A reference whose chunks are gone is terminated with a warning.
//
// Direct types (anycast, multicast, live topic space) are not chunked:
// on this node they are handed over in memory (local.go); between nodes
// they travel as one core message, up to the engine's maximum payload.

const (
	largeStream = "LARGE"
	chunkSize   = 1 << 20
	// largeMargin is how much longer than its entry a chunk lives when
	// the entry can expire (message TTL, queue maximum age).
	largeMargin = 10 * time.Minute
)

// largeThreshold is the message size above which its bytes go to chunks
// (a variable for tests).
var largeThreshold = 1 << 20

// ErrLargeMissing: the chunks of a large message are gone (expired with a
// topic's maximum age, or purged).
var ErrLargeMissing = errors.New("router: large message chunks missing")

// largeBytes is what a message stores in chunks: Native, then Body unless
// it is a range of Native.
func largeBytes(m *message.Message) int {
	n := 0
	if m.NativeFormat != message.NativeNone {
		n = len(m.Native)
	}
	if _, in := m.BodyInNative(); !in {
		n += len(m.Body)
	}
	return n
}

// ownLarge returns m without a chunk reference it was delivered with: a
// message published anew (a dead-letter copy, a message forwarded by a
// front-end) gets chunks of its own, which the original's removal does
// not delete. m itself is not modified (deliveries are shared).
func ownLarge(m *message.Message) *message.Message {
	if m.Large == nil {
		return m
	}
	c := *m
	c.Large = nil
	return &c
}

// chunk writes a large message's bytes to the chunk store before its entry
// is stored on subject (a stream subject of the producer's address) and
// returns the message to encode in the entry, with a done that purges the
// chunks if the entry is not stored. Small messages are returned as they
// are. ok false: the chunks could not be written and done was called.
func (p *Producer) chunk(m *message.Message, done func(Outcome, error)) (*message.Message, func(Outcome, error), bool) {
	if m.Large != nil || largeBytes(m) <= largeThreshold {
		return m, done, true
	}
	ref, err := p.r.storeLarge(p.ts, p.largeSubject(), m, p.largeTTL(m))
	if err != nil {
		done(Outcome{}, err)
		return nil, nil, false
	}
	c := *m
	c.Large = ref
	r, ts := p.r, p.ts
	return &c, func(o Outcome, err error) {
		if err != nil {
			r.dropLarge(ts, ref)
		}
		done(o, err)
	}, true
}

// largeSubject is a new chunk subject for a message of the producer's
// address: the address's stream name makes the chunks of a deleted
// address easy to find.
func (p *Producer) largeSubject() string {
	stream := topicSpaceStream
	if p.tg.def != nil && !p.tg.space {
		stream = streamFor(p.tg.def)
	}
	id := make([]byte, 12)
	_, _ = rand.Read(id)
	return "lg." + stream + "." + hex.EncodeToString(id)
}

// largeTTL is how long a message's chunks are kept by the engine; zero:
// until they are purged. Queue chunks are purged when the message is
// consumed, and expire only when the entry can (message expiry, queue
// maximum age). Topic chunks live as long as the topic keeps messages
// (its maximum age; the topic space's for topic space and for topics
// without one), as every subscription may read them.
func (p *Producer) largeTTL(m *message.Message) time.Duration {
	var ttl time.Duration
	if p.tg.typ == address.Queue {
		if p.tg.def != nil && p.tg.def.Limits.MaxAge > 0 {
			ttl = time.Duration(p.tg.def.Limits.MaxAge) + largeMargin
		}
	} else {
		ttl = p.r.cfg.TopicSpaceMaxAge
		if ttl <= 0 {
			ttl = DefaultTopicSpaceMaxAge
		}
		if !p.tg.space && p.tg.def != nil && p.tg.def.Limits.MaxAge > 0 {
			ttl = time.Duration(p.tg.def.Limits.MaxAge)
		}
	}
	if !m.Expiry.IsZero() {
		if e := clock.Until(m.Expiry) + largeMargin; ttl == 0 || e < ttl {
			ttl = e
		}
	}
	return ttl
}

// ensureLarge creates the tenant's chunk stream. Direct gets (AllowDirect)
// load a chunk with one request and no consumer.
func (r *Router) ensureLarge(ctx context.Context, ts *tenantState) error {
	ts.mu.Lock()
	ok := ts.streams[largeStream]
	ts.mu.Unlock()
	if ok {
		return nil
	}
	_, err := ts.createOrUpdate(ctx, (jetstream.StreamConfig{
		Name:        largeStream,
		Subjects:    []string{"lg.>"},
		Storage:     jetstream.FileStorage,
		MaxMsgs:     -1,
		MaxBytes:    -1,
		AllowDirect: true,
		AllowMsgTTL: true,
		Description: "chunks of large messages",
	}))
	if err != nil {
		return fmt.Errorf("router: chunk stream: %w", err)
	}
	ts.mu.Lock()
	ts.streams[largeStream] = true
	ts.mu.Unlock()
	return nil
}

// storeLarge writes the chunks of m (Native, then Body unless inside
// Native) on subject and returns the reference. The chunks are slices of
// the message, not copies; they are written one after the other, each
// acknowledged before the next, on the publish connection. It blocks for
// the time the engine takes to store them.
func (r *Router) storeLarge(ts *tenantState, subject string, m *message.Message, ttl time.Duration) (*message.Large, error) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := r.ensureLarge(ctx, ts); err != nil {
		return nil, err
	}
	ref := &message.Large{Subject: subject, BodyLen: len(m.Body), BodyIn: -1}
	var segs [][]byte
	if m.NativeFormat != message.NativeNone {
		ref.NativeLen = len(m.Native)
		segs = append(segs, m.Native)
	}
	if off, in := m.BodyInNative(); in {
		ref.BodyIn = off
	} else {
		segs = append(segs, m.Body)
	}
	var hdr nats.Header
	if ttl > 0 {
		hdr = nats.Header{"Nats-TTL": []string{strconv.FormatInt(int64((ttl+time.Second-1)/time.Second), 10) + "s"}}
	}
	js, err := jetstream.New(ts.pub)
	if err != nil {
		return nil, err
	}
	for _, seg := range segs {
		for off := 0; off < len(seg); off += chunkSize {
			// Each chunk has its own deadline: a 256 MiB message is 256
			// round trips.
			cctx, ccancel := context.WithTimeout(context.Background(), publishTimeout)
			ack, err := js.PublishMsg(cctx, &nats.Msg{Subject: subject, Data: seg[off:min(off+chunkSize, len(seg))], Header: hdr})
			ccancel()
			if err != nil {
				r.dropLarge(ts, ref)
				return nil, fmt.Errorf("router: storing a large message: %w", err)
			}
			if ref.Chunks == 0 {
				ref.First = ack.Sequence
			}
			ref.Chunks++
		}
	}
	if ref.Chunks == 0 {
		return nil, fmt.Errorf("%w: large message without bytes", ErrInvalid)
	}
	return ref, nil
}

// dropLarge purges a message's chunks, in the background (it may be
// called where blocking is not allowed). A failure leaves them to their
// TTL, if any, and is logged.
func (r *Router) dropLarge(ts *tenantState, ref *message.Large) {
	go func() {
		req, _ := json.Marshal(struct {
			Filter string `json:"filter"`
		}{ref.Subject})
		resp, err := ts.nc.Request("$JS.API.STREAM.PURGE."+largeStream, req, publishTimeout)
		if err == nil && !json.Valid(resp.Data) {
			err = errors.New("bad purge response")
		}
		if err != nil {
			r.log.Warn("large message chunks not purged", "component", "router", "tenant", ts.name, "chunks", ref.Subject, "err", err)
		}
	}()
}

// loadLarge loads the chunks of the messages of an entry that carry a
// reference and returns the messages with Native and Body filled (new
// Message values; the reference is kept, so that a message stored again
// refers to the same chunks). Each message's bytes go into one buffer of
// their exact size. ErrLargeMissing (wrapped) when chunks are gone: the
// caller terminates the entry; this logs it and counts it as dropped.
func (r *Router) loadLarge(ts *tenantState, msgs []*message.Message) ([]*message.Message, error) {
	for i, m := range msgs {
		if m.Large == nil || m.Native != nil || m.Body != nil {
			continue
		}
		lm, err := r.loadOne(ts, m)
		if err != nil {
			r.metrics.dropped.WithLabelValues(ts.name, "large_missing").Inc()
			r.log.Warn("large message not loaded; its entry is terminated", "component", "router", "tenant", ts.name, "chunks", m.Large.Subject, "err", err)
			return nil, err
		}
		msgs[i] = lm
	}
	return msgs, nil
}

// loadMessage is loadLarge for one message: live consumers listening on
// a stored subject (s., d.) see the entries of stored messages, which for
// a large message hold only the reference. Each such consumer loads the
// chunks itself, on its own subscription's goroutine.
func (r *Router) loadMessage(ts *tenantState, m *message.Message) (*message.Message, error) {
	if m.Large == nil {
		return m, nil
	}
	ms, err := r.loadLarge(ts, []*message.Message{m})
	if err != nil {
		return nil, err
	}
	return ms[0], nil
}

func (r *Router) loadOne(ts *tenantState, m *message.Message) (*message.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	if err := r.ensureLarge(ctx, ts); err != nil {
		return nil, err
	}
	l := m.Large
	buf := make([]byte, l.Stored())
	off, seq := 0, l.First
	for i := 0; i < l.Chunks; i++ {
		req, _ := json.Marshal(struct {
			Seq  uint64 `json:"seq"`
			Next string `json:"next_by_subj"`
		}{seq, l.Subject})
		cctx, ccancel := context.WithTimeout(context.Background(), publishTimeout)
		resp, err := ts.nc.RequestWithContext(cctx, "$JS.API.DIRECT.GET."+largeStream, req)
		ccancel()
		if err != nil {
			return nil, fmt.Errorf("router: loading chunk %d of %s: %w", i, l.Subject, err)
		}
		if st := resp.Header.Get("Status"); st != "" || resp.Header.Get("Nats-Subject") != l.Subject {
			return nil, fmt.Errorf("%w: chunk %d of %d of %s (status %s)", ErrLargeMissing, i, l.Chunks, l.Subject, st)
		}
		got, err := strconv.ParseUint(resp.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil || got < seq || len(resp.Data) > len(buf)-off {
			return nil, fmt.Errorf("%w: chunk %d of %s does not fit", ErrLargeMissing, i, l.Subject)
		}
		off += copy(buf[off:], resp.Data)
		seq = got + 1
	}
	if off != len(buf) {
		return nil, fmt.Errorf("%w: %s holds %d of %d bytes", ErrLargeMissing, l.Subject, off, len(buf))
	}
	c := *m
	if l.NativeLen > 0 || m.NativeFormat != message.NativeNone {
		c.Native = buf[:l.NativeLen:l.NativeLen]
	}
	if l.BodyIn >= 0 {
		c.Body = c.Native[l.BodyIn : l.BodyIn+l.BodyLen : l.BodyIn+l.BodyLen]
	} else {
		c.Body = buf[l.NativeLen:]
	}
	return &c, nil
}

// LargeChunks reports how many chunks and bytes a tenant's chunk store
// holds (zero when it has none), for operators and tests.
func (r *Router) LargeChunks(ctx context.Context, tenantName string) (chunks, bytes uint64, err error) {
	ts, err := r.tenant(ctx, tenantName)
	if err != nil {
		return 0, 0, err
	}
	s, err := ts.js.Stream(ctx, largeStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	st := s.CachedInfo().State
	return st.Msgs, st.Bytes, nil
}
