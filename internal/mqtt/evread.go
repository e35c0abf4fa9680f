package mqtt

import (
	"errors"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/quota"
)

// Event-driven reading (plain TCP on Linux, see poll_linux.go).
//
// After CONNECT, a connection has no goroutine of its own: an epoll loop
// watches its socket (EPOLLONESHOT, so at most one worker has it), hands it
// to the read pool when it is readable, and the worker reads what is
// available without blocking, parses and handles the complete packets,
// then re-arms the socket. The worker borrows a pooled read buffer and
// keeps it only while a packet is incomplete. Keep-alive is enforced by a
// timing wheel per epoll loop, not by read deadlines. The connection's
// end is always seen by its reader: other goroutines shut the socket down
// (closeNet), which makes it readable, and the worker that reads the EOF
// runs the teardown (cleanup, flush, close).

// inbuf is the input state of an event-driven connection; owned by the
// worker that holds the connection (EPOLLONESHOT serialises them).
type inbuf struct {
	buf  *[]byte // pooled; nil while idle at a packet boundary
	r, w int
	big  *bigPacket // a packet larger than buf, read straight into its body
	// pause is how long the tenant's (or connection's) message rate needs
	// for the publishes refused over it in this turn (overRate): the
	// connection is not read again before then.
	pause time.Duration
}

// maxRatePause bounds a pause over the message rate, so that a paused
// connection still answers PINGREQ well within its keep-alive.
const maxRatePause = time.Second

// overRate records a publish refused over a message rate (err wraps a
// *quota.Error of a rate limit): reading the connection pauses for the
// time the rate needs for it. Backpressure instead of parse-and-drop: a
// client publishing faster than its tenant may is slowed by TCP flow
// control, so what it costs the node is bounded by its rate, not by its
// bandwidth (docs/benchmarks.md, "Tenant isolation"). Called on the
// reader's goroutine (the refusal is synchronous in Producer.Publish).
func (in *inbuf) overRate(err error) {
	var qe *quota.Error
	// Bounded, as one parsed read buffer can refuse many: the reader
	// consumes it after the buffer (readable; readLoop for TLS and
	// WebSocket, ratepause.go).
	if in.pause < maxRatePause && errors.As(err, &qe) && qe.Rate > 0 && (qe.Limit == quota.MessagesIn || qe.Limit == quota.MessagesInPerConnection) {
		in.pause += time.Duration(float64(time.Second) / qe.Rate)
	}
}

// bigPacket is a packet larger than the read buffer. Its body grows with
// the bytes received (doubling), up to the remaining length.
type bigPacket struct {
	fh   packets.FixedHeader
	body []byte // allocated so far
	n    int    // bytes read into body
	rem  int    // the packet's remaining length
}

// partial reports whether a packet has started and is incomplete.
func (in *inbuf) partial() bool { return in.big != nil || (in.buf != nil && in.r < in.w) }

// errWouldBlock reports that a non-blocking read found nothing.
var errWouldBlock = errors.New("mqtt: would block")

// maxReadsPerTurn bounds the reads one worker turn does on a connection
// so a busy client cannot monopolise a worker; the socket is re-armed
// (level-triggered) and queued again.
const maxReadsPerTurn = 16

// readable is a worker turn on an event-driven connection.
func (c *conn) readable() {
	in := &c.in
	wasPartial := in.partial()
	done := 0 // packets handled this turn
	// Bytes that followed CONNECT may be buffered already.
	if err := c.parse(&done); err != nil {
		c.readFailed(err)
		return
	}
	for range maxReadsPerTurn {
		if in.pause > 0 {
			break // over the rate: read no more this turn
		}
		var dst []byte
		if in.big != nil {
			if in.big.n == len(in.big.body) {
				// Grow with the bytes received, never to the claimed
				// length at once.
				nb := make([]byte, min(in.big.rem, 2*len(in.big.body)))
				copy(nb, in.big.body)
				in.big.body = nb
			}
			dst = in.big.body[in.big.n:]
		} else {
			if in.buf == nil {
				in.buf = readBufPool.Get().(*[]byte)
				in.r, in.w = 0, 0
			}
			if in.r > 0 {
				// Keep the partial packet at the start of the buffer.
				in.w = copy(*in.buf, (*in.buf)[in.r:in.w])
				in.r = 0
			}
			dst = (*in.buf)[in.w:]
		}
		n, err := c.readSome(dst)
		if n == 0 {
			if err == errWouldBlock {
				break
			}
			c.teardown()
			return
		}
		if in.big != nil {
			in.big.n += n
		} else {
			in.w += n
		}
		if err := c.parse(&done); err != nil {
			c.readFailed(err)
			return
		}
	}
	if in.buf != nil && in.r == in.w {
		readBufPool.Put(in.buf)
		in.buf, in.r, in.w = nil, 0, 0
	}
	c.updateDue(done > 0, wasPartial, in.partial())
	if d := in.pause; d > 0 {
		// Re-armed once the rate has room again; until then nobody
		// owns the connection but this timer (an end meanwhile is seen
		// when it is read again).
		in.pause = 0
		time.AfterFunc(min(d, maxRatePause), func() {
			if err := c.arm(); err != nil {
				c.teardown()
			}
		})
		return
	}
	if err := c.arm(); err != nil {
		c.teardown()
	}
}

// Read deadlines of event-driven connections. conn.due holds the next
// deadline in Server.clock() milliseconds, shifted left by one, with the
// low bit set when it is a started packet's read timeout rather than the
// keep-alive; 0 is none. Keep-alive counts complete packets [MQTT-3.1.2-24]:
// its deadline moves when a packet was handled, not when bytes arrive,
// so a client trickling a byte at a time is closed at the keep-alive or,
// sooner, at the read timeout of the packet it started.
func dueAt(ms int64, partial bool) int64 {
	d := ms << 1
	if partial {
		d |= 1
	}
	return d
}

// updateDue sets the connection's deadline after a turn: done reports
// that packets were handled, wasPartial and partial whether a packet was
// incomplete before and after the turn.
func (c *conn) updateDue(done, wasPartial, partial bool) {
	old := c.due.Load()
	d := old
	switch {
	case done:
		d = 0
		if ka := c.kaMillis(); ka > 0 {
			d = dueAt(c.s.clock()+ka, false)
		}
		if partial {
			d = minDue(d, dueAt(c.s.clock()+c.s.cfg.ReadTimeout.Milliseconds(), true))
		}
	case partial && !wasPartial:
		d = minDue(d, dueAt(c.s.clock()+c.s.cfg.ReadTimeout.Milliseconds(), true))
	}
	if d == old {
		return
	}
	c.due.Store(d)
	if d != 0 {
		c.poller.schedule(c, d>>1)
	}
}

func minDue(a, b int64) int64 {
	if a == 0 || (b != 0 && b>>1 < a>>1) {
		return b
	}
	return a
}

// readFailed ends the connection after a protocol error or the client's
// DISCONNECT.
func (c *conn) readFailed(err error) {
	if !errors.Is(err, errClientDisconnect) {
		var re *ReasonError
		if !errors.As(err, &re) {
			re = reason(rcUnspecified, "unspecified error", err)
		}
		c.fatal(re)
	}
	c.teardown()
}

// parse handles the complete packets in the input buffer, counting them
// in *done.
func (c *conn) parse(done *int) error {
	in := &c.in
	for {
		if in.big != nil {
			if in.big.n < in.big.rem {
				return nil
			}
			fh, body := in.big.fh, in.big.body
			in.big = nil
			*done++
			if err := c.dispatch(fh, body); err != nil {
				return err
			}
			continue
		}
		if in.buf == nil {
			return nil
		}
		b := (*in.buf)[in.r:in.w]
		if len(b) < 2 {
			return nil
		}
		var fh packets.FixedHeader
		if err := fh.Decode(b[0]); err != nil {
			return codeError(err)
		}
		if fh.Type == packets.Reserved || fh.Type > packets.Auth {
			return errMalformed
		}
		// Remaining length: a variable byte integer of at most four
		// bytes [MQTT-1.5.5].
		rem, hl := 0, 0
		for shift := 0; ; shift += 7 {
			if hl == 4 {
				return errMalformed
			}
			if 1+hl >= len(b) {
				return nil // header incomplete
			}
			d := b[1+hl]
			hl++
			rem |= int(d&0x7f) << shift
			if d&0x80 == 0 {
				break
			}
		}
		fh.Remaining = rem
		total := 1 + hl + rem
		if max := int(c.maxIn); max > 0 && total > max {
			return errTooLarge
		}
		switch {
		case len(b) >= total:
			// The body is copied because decoded strings and payloads
			// alias it.
			body := make([]byte, rem)
			copy(body, b[1+hl:total])
			in.r += total
			*done++
			if err := c.dispatch(fh, body); err != nil {
				return err
			}
		case total > len(*in.buf):
			// The body starts at what arrived (at least a read buffer's
			// worth) and grows in readable.
			have := b[1+hl:]
			in.big = &bigPacket{fh: fh, rem: rem, body: make([]byte, min(rem, max(len(have), readBufSize)))}
			in.big.n = copy(in.big.body, have)
			in.r = in.w
		default:
			return nil // wait for the rest
		}
	}
}

// dispatch decodes and handles one packet after CONNECT.
func (c *conn) dispatch(fh packets.FixedHeader, body []byte) error {
	var pk packets.Packet
	if err := decodePacket(fh, body, c.version, &pk); err != nil {
		return err
	}
	return c.handle(&pk)
}

// kaMillis is the read deadline's distance in milliseconds: 1.5 × the
// keep-alive [MQTT-3.1.2-24]; 0 none. Derived, not stored: keepAlive is
// set by CONNECT and read-only afterwards.
func (c *conn) kaMillis() int64 { return c.keepAlive().Milliseconds() * 3 / 2 }

// teardown ends an event-driven connection; run by the worker that holds
// it, never concurrently with readable.
func (c *conn) teardown() {
	c.cleanup()
	c.flushAndClose()
	c.wmu.Lock()
	c.polled = false
	c.wclosed = true
	nc := c.nc
	c.swapNC = false // c.fdc is closed below
	c.wmu.Unlock()
	c.unwatch()
	_ = nc.Close()
	if c.fdc != nil {
		_ = c.fdc.Close()
	}
	if c.in.buf != nil {
		readBufPool.Put(c.in.buf)
	}
	c.in = inbuf{}
	c.markEnded()
	c.s.connDone(c)
}

// clock is the coarse time used for keep-alive: milliseconds since the
// server started (monotonic).
func (s *Server) clock() int64 { return int64(time.Since(s.started) / time.Millisecond) }

// ---- read pool

// readPool runs worker turns with a bounded number of goroutines, which
// exist only while there is work (they leave after readPoolIdle without).
// When all are busy, submit blocks: back-pressure on the epoll loop.
type readPool struct {
	work chan *conn
	sem  chan struct{}
	stop chan struct{}
	wg   *sync.WaitGroup
}

const readPoolIdle = 10 * time.Second

func newReadPool(n int, stop chan struct{}, wg *sync.WaitGroup) *readPool {
	return &readPool{work: make(chan *conn), sem: make(chan struct{}, n), stop: stop, wg: wg}
}

func (p *readPool) submit(c *conn) {
	select {
	case p.work <- c:
		return
	default:
	}
	select {
	case p.work <- c:
	case p.sem <- struct{}{}:
		p.wg.Add(1)
		go p.worker(c)
	}
}

func (p *readPool) worker(c *conn) {
	defer p.wg.Done()
	defer func() { <-p.sem }()
	t := time.NewTimer(readPoolIdle)
	defer t.Stop()
	for {
		c.readable()
		t.Reset(readPoolIdle)
		select {
		case c = <-p.work:
		case <-t.C:
			return
		case <-p.stop:
			return
		}
	}
}

// ---- deadline timing wheel

// The wheel holds the event-driven connections that have a read deadline
// (keep-alive, or a started packet's read timeout: conn.due), in slots of
// wheelTick by deadline. It is lazy: a connection is inserted with the
// deadline known then and, when its slot comes, either expires or is
// moved to its current deadline, so handling a packet costs one atomic
// store, not a wheel update; only a deadline earlier than the slot (a
// packet started on a connection whose keep-alive is further away)
// moves it at once (poller.schedule).
const (
	wheelTick  = 250 // ms
	wheelSlots = 1024
)

type wheel struct {
	slots [wheelSlots]*conn // heads of intrusive lists (conn.wNext/wPrev)
	now   int64             // last tick processed
}

func wheelTickOf(ms int64) int64 { return (ms + wheelTick - 1) / wheelTick }

func (w *wheel) insert(c *conn, due int64) {
	t := wheelTickOf(due)
	if t <= w.now {
		t = w.now + 1
	}
	c.wDue.Store(t)
	s := &w.slots[t%wheelSlots]
	c.wPrev, c.wNext = nil, *s
	if *s != nil {
		(*s).wPrev = c
	}
	*s = c
}

func (w *wheel) remove(c *conn) {
	t := c.wDue.Load()
	if t == 0 {
		return
	}
	if c.wPrev != nil {
		c.wPrev.wNext = c.wNext
	} else {
		w.slots[t%wheelSlots] = c.wNext
	}
	if c.wNext != nil {
		c.wNext.wPrev = c.wPrev
	}
	c.wPrev, c.wNext = nil, nil
	c.wDue.Store(0)
}

// advance processes the ticks up to now (ms) and returns the connections
// whose deadline passed (removed from the wheel).
func (w *wheel) advance(now int64, expired []*conn) []*conn {
	for end := now / wheelTick; w.now < end; {
		w.now++
		for c := w.slots[w.now%wheelSlots]; c != nil; {
			next := c.wNext
			if c.wDue.Load() <= w.now {
				w.remove(c)
				switch d := c.due.Load(); {
				case d == 0:
					// No deadline any more; the reader inserts it again.
				case d>>1 > now:
					w.insert(c, d>>1)
				default:
					expired = append(expired, c)
				}
			}
			c = next
		}
	}
	return expired
}
