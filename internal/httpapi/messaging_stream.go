package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/router"
)

// Event streams (docs/http-messaging.md, "Streaming"): GET on an address's
// messages answers text/event-stream (Server-Sent Events), one event per
// message, for topics, multicast addresses and the topic space (MQTT-style
// filters with + and # included). Delivery is at most once: a message is
// settled when its event has been written, and what a slow client cannot
// take is dropped by the router as for any live subscriber.

// Bounds of an event stream.
const (
	// streamWindow is the credit of a stream's consumer: messages given
	// to it and not yet written. Its channel holds as many, so the
	// router's callback never blocks.
	streamWindow = 256
	// streamLiveQueue bounds the durable live messages held for a
	// stream without credit (router.ConsumeOptions.LiveQueue); beyond it
	// they are dropped for this stream.
	streamLiveQueue = 4096
	// streamHeartbeat is how often an idle stream writes a comment, so
	// that proxies keep it open and a dead client is noticed.
	streamHeartbeat = 15 * time.Second
)

// parseStream parses a stream request's query: encoding=auto|base64.
func parseStream(q url.Values) (base64Body bool, err error) {
	for k, vs := range q {
		if k != "encoding" || len(vs) != 1 {
			return false, fmt.Errorf("%w: a stream takes one parameter, encoding", ErrBadRequest)
		}
		switch vs[0] {
		case "auto":
		case "base64":
			base64Body = true
		default:
			return false, fmt.Errorf("%w: encoding=%q: auto or base64", ErrBadRequest, vs[0])
		}
	}
	return base64Body, nil
}

// streamRevoke is a stream as auth.Live sees it: a live connection that
// a change of its user (deleted, password, roles or permissions changed)
// or tenant ends. Other requests authenticate each time; a stream is one
// request that lasts.
type streamRevoke struct {
	once  sync.Once
	ch    chan struct{}
	cause string // written before ch is closed
}

func (sr *streamRevoke) Revoke(cause string) {
	sr.once.Do(func() { sr.cause = cause; close(sr.ch) })
}

// apiStream serves an event stream until the client goes, a write
// fails, the server shuts down, the address is deleted or the user's
// access changes.
func (s *Server) apiStream(w http.ResponseWriter, r *http.Request, pr *auth.Principal, key rkey) int {
	base64Body, err := parseStream(r.URL.Query())
	if err != nil {
		return s.answerError(w, err)
	}
	if s.msg.streams.Add(1) > maxStreams {
		s.msg.streams.Add(-1)
		return s.answerError(w, errLimit(fmt.Sprintf("this node serves %d event streams, its maximum", maxStreams)))
	}
	defer s.msg.streams.Add(-1)
	ch := make(chan *router.Delivery, streamWindow)
	gone := make(chan struct{}) // closed when the address is deleted
	var goneOnce sync.Once
	ctx, cancel := context.WithTimeout(r.Context(), registryLookupTime)
	opts := router.ConsumeOptions{LiveQueue: streamLiveQueue, Gone: func() { goneOnce.Do(func() { close(gone) }) }}
	c, err := s.cfg.Router.Consume(ctx, key.tenant, key.name, opts,
		func(d *router.Delivery) {
			select {
			case ch <- d:
			default:
				// Not reached: credit never exceeds the channel's room.
				d.Settle(router.Outcome{Kind: router.Released})
			}
		})
	cancel()
	if err != nil {
		return s.answerError(w, err)
	}
	defer func() {
		c.Close()
		for {
			select {
			case d := <-ch:
				d.Settle(router.Outcome{Kind: router.Released})
			default:
				return
			}
		}
	}()
	switch c.Type() {
	case address.Topic, address.Multicast:
	default:
		return s.answerError(w, newAPIError(codeWrongType, fmt.Sprintf("%q is a %s: its messages are received (POST …/messages/receive), not streamed", key.name, c.Type())))
	}
	revoked := &streamRevoke{ch: make(chan struct{})}
	live := s.cfg.Auth.Live()
	live.Register(revoked, pr, "")
	defer live.Unregister(revoked, pr)
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.ReadTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	// Credit first: a message published once the client has seen the
	// stream open must not find the consumer without credit (at-most-once
	// messages would be dropped).
	c.AddCredit(streamWindow)
	w.WriteHeader(http.StatusOK)
	if !write([]byte("retry: 2000\n\n")) {
		return http.StatusOK
	}
	hb := time.NewTicker(streamHeartbeat)
	defer hb.Stop()
	var n uint64
	var buf []byte
	for {
		select {
		case d := <-ch:
			n++
			id := d.Sequence
			if id == 0 {
				id = n
			}
			buf = append(buf[:0], "id: "...)
			buf = strconv.AppendUint(buf, id, 10)
			buf = append(buf, "\nevent: message\ndata: "...)
			buf = append(buf, marshalAPI(toAPIMessage(d, base64Body))...)
			buf = append(buf, "\n\n"...)
			ok := write(buf)
			if !ok {
				d.Settle(router.Outcome{Kind: router.Released})
				return http.StatusOK
			}
			d.Settle(router.Outcome{Kind: router.Accepted})
			c.AddCredit(1)
		case <-hb.C:
			if !write([]byte(": keepalive\n\n")) {
				return http.StatusOK
			}
		case <-r.Context().Done():
			return http.StatusOK
		case <-s.closing:
			return http.StatusOK
		case <-revoked.ch:
			write(append(append([]byte("event: revoked\ndata: "), marshalAPI(map[string]string{"reason": revoked.cause})...), "\n\n"...))
			return http.StatusOK
		case <-gone:
			// The address was deleted: the stream ends with an event
			// that says so (an EventSource would otherwise reconnect
			// to a name that is not the same address any more).
			write([]byte("event: deleted\ndata: {}\n\n"))
			return http.StatusOK
		}
	}
}
