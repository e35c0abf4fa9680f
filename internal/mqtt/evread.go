package mqtt

import (
	"errors"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
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
}

type bigPacket struct {
	fh   packets.FixedHeader
	body []byte
	n    int
}

// errWouldBlock reports that a non-blocking read found nothing.
var errWouldBlock = errors.New("mqtt: would block")

// maxReadsPerTurn bounds the reads one worker turn does on a connection
// so a busy client cannot monopolise a worker; the socket is re-armed
// (level-triggered) and queued again.
const maxReadsPerTurn = 16

// readable is a worker turn on an event-driven connection.
func (c *conn) readable() {
	in := &c.in
	// Bytes that followed CONNECT may be buffered already.
	if err := c.parse(); err != nil {
		c.readFailed(err)
		return
	}
	for range maxReadsPerTurn {
		var dst []byte
		if in.big != nil {
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
		c.lastIn.Store(c.s.clock())
		if in.big != nil {
			in.big.n += n
		} else {
			in.w += n
		}
		if err := c.parse(); err != nil {
			c.readFailed(err)
			return
		}
	}
	if in.buf != nil && in.r == in.w {
		readBufPool.Put(in.buf)
		in.buf, in.r, in.w = nil, 0, 0
	}
	if err := c.arm(); err != nil {
		c.teardown()
	}
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

// parse handles the complete packets in the input buffer.
func (c *conn) parse() error {
	in := &c.in
	for {
		if in.big != nil {
			if in.big.n < len(in.big.body) {
				return nil
			}
			fh, body := in.big.fh, in.big.body
			in.big = nil
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
		if max := c.maxIn; max > 0 && total > max {
			return errTooLarge
		}
		switch {
		case len(b) >= total:
			// The body is copied because decoded strings and payloads
			// alias it.
			body := make([]byte, rem)
			copy(body, b[1+hl:total])
			in.r += total
			if err := c.dispatch(fh, body); err != nil {
				return err
			}
		case total > len(*in.buf):
			in.big = &bigPacket{fh: fh, body: make([]byte, rem)}
			in.big.n = copy(in.big.body, b[1+hl:])
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

// teardown ends an event-driven connection; run by the worker that holds
// it, never concurrently with readable.
func (c *conn) teardown() {
	c.cleanup()
	c.flushAndClose()
	c.wmu.Lock()
	c.polled = false
	c.wclosed = true
	nc, next := c.nc, c.nextNC
	c.nextNC = nil
	c.wmu.Unlock()
	c.unwatch()
	_ = nc.Close()
	if next != nil {
		_ = next.Close()
	}
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

// ---- keep-alive timing wheel

// The wheel holds the event-driven connections that have a keep-alive,
// in slots of wheelTick by deadline. It is lazy: a connection is
// inserted with the deadline known then and, when its slot comes, either
// expires or is moved to its current deadline (last read + 1.5 × keep
// alive), so reading a packet costs one atomic store, not a wheel update.
const (
	wheelTick  = 250 // ms
	wheelSlots = 1024
)

type wheel struct {
	slots [wheelSlots]*conn // heads of intrusive lists (conn.wNext/wPrev)
	now   int64             // last tick processed
}

func (w *wheel) insert(c *conn, due int64) {
	t := (due + wheelTick - 1) / wheelTick
	if t <= w.now {
		t = w.now + 1
	}
	c.wDue = t
	s := &w.slots[t%wheelSlots]
	c.wPrev, c.wNext, c.wIn = nil, *s, true
	if *s != nil {
		(*s).wPrev = c
	}
	*s = c
}

func (w *wheel) remove(c *conn) {
	if !c.wIn {
		return
	}
	if c.wPrev != nil {
		c.wPrev.wNext = c.wNext
	} else {
		w.slots[c.wDue%wheelSlots] = c.wNext
	}
	if c.wNext != nil {
		c.wNext.wPrev = c.wPrev
	}
	c.wPrev, c.wNext, c.wIn = nil, nil, false
}

// advance processes the ticks up to now (ms) and returns the connections
// whose keep-alive expired (removed from the wheel).
func (w *wheel) advance(now int64, expired []*conn) []*conn {
	for end := now / wheelTick; w.now < end; {
		w.now++
		for c := w.slots[w.now%wheelSlots]; c != nil; {
			next := c.wNext
			if c.wDue <= w.now {
				w.remove(c)
				if due := c.lastIn.Load() + c.kaMillis; due > now {
					w.insert(c, due)
				} else {
					expired = append(expired, c)
				}
			}
			c = next
		}
	}
	return expired
}
