package amqp

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/guard"
	"github.com/throngmq/throng/internal/quota"
	"github.com/throngmq/throng/internal/router"
)

// conn is one AMQP connection. Fields below "loop state" are owned by the
// connection loop (run) and touched by no other goroutine; the handshake
// fields are written by serve before run starts.
type conn struct {
	s      *Server
	nc     net.Conn // replaced by a *tls.Conn after a TLS protocol header
	remote net.Addr
	log    *slog.Logger
	closed chan struct{} // closed when serve returns
	rate   quota.Bucket  // the connection's message rate bucket (link.go, router/quota.go)
	// releaseConn uncounts the connection from its tenant's
	// maxConnections (set by open; called by serve).
	releaseConn func()

	shutdownCh   chan struct{} // closed by shutdown
	shutdownOnce sync.Once
	revoked      chan string  // Revoke's cause (auth.Live); buffered 1
	admin        chan func()  // the registry's requests, run by the loop (observe.go)
	ce           *conns.Entry // the connection in the registry (observe.go); nil before open
	nlinks       linkCounter  // attached links, for the registry's lists (observe.go)

	in chan readBatch // reader → loop; small, so a busy loop stops the reader
	ev eventQueue     // router callbacks → loop
	w  *writer

	// handshake results
	principal    *auth.Principal
	plainUser    string // PLAIN credentials kept until open (hostname → tenant)
	plainPass    string
	tlsVerified  bool   // a user's client certificate, verified by the node's client CA
	deviceCert   bool   // a client certificate of a tenant's trust anchor (SASL EXTERNAL for devices)
	containerID  string // the peer's
	maxFrameIn   uint32 // the largest frame we accept
	maxFrameOut  uint32 // the largest frame the peer accepts
	channelMax   uint16 // the highest channel the peer may begin
	peerChanMax  uint16 // the highest channel we may use
	idleIn       time.Duration
	peerIdleHalf time.Duration

	// loop state
	dec       frames.Decoder
	out       []byte              // frames assembled by the loop, pushed to the writer
	sessions  map[uint16]*session // by the peer's channel
	ours      map[uint16]*session // by our channel
	dirty     []*session          // sessions with dispositions or flows to send
	draining  bool                // shutdown requested: no new credit
	done      bool                // close sent or received: the loop ends
	inflight  int                 // messages being published, awaiting an outcome
	inBytes   int                 // their bytes
	closeCond *encoding.Error     // what we closed with (nil: normal)
}

type readBatch struct {
	frames []frames.Frame
	err    error
}

func newConn(s *Server, nc net.Conn, remote net.Addr) *conn {
	if remote == nil {
		remote = nc.RemoteAddr()
	}
	return &conn{
		s: s, nc: nc, remote: remote,
		log:        s.log.With("remote", addrString(remote)),
		closed:     make(chan struct{}),
		shutdownCh: make(chan struct{}),
		revoked:    make(chan string, 1),
		admin:      make(chan func()),
		in:         make(chan readBatch, 4),
		ev:         eventQueue{signal: make(chan struct{}, 1)},
		sessions:   map[uint16]*session{},
		ours:       map[uint16]*session{},
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

func (c *conn) shutdown() { c.shutdownOnce.Do(func() { close(c.shutdownCh) }) }

// Revoke closes the connection with amqp:unauthorized-access: its user,
// device or tenant lost its access (auth.Live, on any goroutine).
func (c *conn) Revoke(cause string) {
	select {
	case c.revoked <- cause:
	default:
	}
}

func (c *conn) loopback() bool {
	switch a := c.remote.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	if ap, err := netip.ParseAddrPort(addrString(c.remote)); err == nil {
		return ap.Addr().IsLoopback()
	}
	return false
}

func netipAddrPort(s string) (*net.TCPAddr, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return nil, err
	}
	return net.TCPAddrFromAddrPort(ap), nil
}

// serve runs the connection to its end.
func (c *conn) serve() {
	defer close(c.closed)
	defer func() {
		if c.releaseConn != nil {
			c.releaseConn()
		}
	}()
	c.s.m.conns.Inc()
	defer c.s.m.conns.Dec()
	_ = c.nc.SetDeadline(time.Now().Add(c.s.cfg.HandshakeTimeout))
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			c.s.leaveHandshake()
			guard.HandshakeDone(c.nc)
			c.log.Debug("tls handshake failed", "err", err)
			c.nc.Close()
			return
		}
		c.checkClientCert(tc)
	}
	hs := &handshake{c: c}
	err := hs.run()
	hs.refund()
	c.s.leaveHandshake()
	guard.HandshakeDone(c.nc) // the node's count of connections in their handshake
	if err != nil {
		c.log.Debug("handshake failed", "err", err)
		c.nc.Close()
		return
	}
	_ = c.nc.SetDeadline(time.Time{})
	c.w = newWriter(c.nc, c.s.cfg.WriteBuffer, c.peerIdleHalf)
	go c.w.loop()
	// Hono's connection event for a device, before our open (device.go).
	c.deviceConnected()
	c.out = hs.out // our open
	c.flushOut()
	loopDone := make(chan struct{})
	go c.readLoop(hs.rest, loopDone)
	c.log.Debug("connection open", "tenant", c.principal.Tenant, "user", c.principal.User, "container", c.containerID)
	live := c.s.cfg.Auth.Live()
	live.Register(c, c.principal, auth.AdapterAMQP)
	c.observe()
	c.run()
	c.s.cfg.Conns.Unregister(c.ce)
	live.Unregister(c, c.principal)
	close(loopDone)
	c.deviceGone() // Hono's ttd 0 notifications and connection event (device.go)
	c.teardown()
	c.flushOut()
	c.w.close()
	c.nc.Close()
}

// readLoop cuts frames out of the socket. Frames alias the read buffer,
// which is never written again where a frame was cut: the unread tail is
// reused for the next read and a new buffer is allocated only when it is
// too small.
//
// Deadlines: the idle-time-out (part 2.4.5) runs from the last complete
// frame, not from the last bytes, so a peer trickling a frame a byte at a
// time is closed too; and a frame that has started must be complete
// within Config.ReadTimeout.
func (c *conn) readLoop(buf []byte, loopDone <-chan struct{}) {
	const readSize = 64 << 10
	nb := make([]byte, len(buf), max(readSize, len(buf)+4096))
	copy(nb, buf)
	buf = nb
	need := 0
	lastFrame := time.Now()
	var started time.Time // when the incomplete frame at the start of buf began
	for {
		var batch []frames.Frame
		for {
			f, n, err := frames.ReadFrame(buf, c.maxFrameIn)
			if errors.Is(err, frames.ErrNeedMore) {
				need = n
				break
			}
			if err != nil {
				c.sendRead(readBatch{frames: batch, err: err}, loopDone)
				return
			}
			batch = append(batch, f)
			buf = buf[n:]
		}
		if len(batch) > 0 {
			lastFrame = time.Now()
			started = time.Time{}
			if !c.sendRead(readBatch{frames: batch}, loopDone) {
				return
			}
		}
		if len(buf) > 0 && started.IsZero() {
			started = time.Now()
		}
		if cap(buf)-len(buf) < 4096 || cap(buf) < need {
			nb := make([]byte, len(buf), max(readSize, need, len(buf)+4096))
			copy(nb, buf)
			buf = nb
		}
		var dl time.Time
		if c.idleIn > 0 {
			dl = lastFrame.Add(c.idleIn)
		}
		frameDL := false
		if !started.IsZero() {
			if fd := started.Add(c.s.cfg.ReadTimeout); dl.IsZero() || fd.Before(dl) {
				dl, frameDL = fd, true
			}
		}
		_ = c.nc.SetReadDeadline(dl)
		n, err := c.nc.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil && n == 0 {
			if frameDL && isTimeout(err) {
				err = errFrameTimeout
			}
			c.sendRead(readBatch{err: err}, loopDone)
			return
		}
	}
}

// errFrameTimeout: a frame was started but not completed within
// Config.ReadTimeout.
var errFrameTimeout = errors.New("amqp: frame not completed within the read timeout")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded)
}

func (c *conn) sendRead(b readBatch, loopDone <-chan struct{}) bool {
	select {
	case c.in <- b:
		return true
	case <-loopDone:
		return false
	}
}

// run is the connection loop: the only goroutine that touches connection,
// session and link state.
func (c *conn) run() {
	for !c.done {
		select {
		case b := <-c.in:
			for _, f := range b.frames {
				if c.done {
					break
				}
				c.handleErr(c.handleFrame(f))
			}
			if b.err != nil && !c.done {
				c.readFailed(b.err)
			}
		case <-c.ev.signal:
			c.processEvents()
		case <-c.shutdownCh:
			c.shutdownCh = nil // fires once
			c.beginShutdown()
		case cause := <-c.revoked:
			c.closeWith(&ConnError{Condition: frames.CondUnauthorizedAccess, Description: "access revoked: " + cause})
		case f := <-c.admin:
			f()
		case <-c.w.failed:
			c.done = true
		}
		c.flush()
	}
}

func (c *conn) readFailed(err error) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		c.done = true // the peer went away without close
	case errors.Is(err, errFrameTimeout):
		c.closeWith(&ConnError{Condition: frames.CondResourceLimitExceeded, Description: err.Error()})
	case errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded):
		// The peer sent nothing, not even a heartbeat, within our
		// idle-time-out (part 2.4.5).
		c.closeWith(&ConnError{Condition: frames.CondResourceLimitExceeded, Description: "local-idle-timeout expired"})
	default:
		if errors.Is(err, frames.ErrFraming) || errors.Is(err, frames.ErrFrameTooLarge) {
			c.closeWith(asConnError(err))
			return
		}
		c.done = true
	}
}

// handleErr turns a handler's error into the frame that ends its scope.
func (c *conn) handleErr(err error) {
	if err == nil {
		return
	}
	var le *LinkError
	var se *SessionError
	switch {
	case errors.As(err, &le) && le.l != nil:
		c.s.m.errors.WithLabelValues("link", string(le.Condition)).Inc()
		c.log.Debug("link error", "link", le.l.name, "err", err)
		le.l.detachWith(&encoding.Error{Condition: le.Condition, Description: le.Description})
	case errors.As(err, &se) && se.s != nil:
		c.s.m.errors.WithLabelValues("session", string(se.Condition)).Inc()
		c.log.Debug("session error", "err", err)
		se.s.endWith(&encoding.Error{Condition: se.Condition, Description: se.Description})
	default:
		ce := asConnError(err)
		c.closeWith(ce)
	}
}

func (c *conn) closeWith(ce *ConnError) {
	if c.done {
		return
	}
	c.s.m.errors.WithLabelValues("connection", string(ce.Condition)).Inc()
	c.log.Debug("closing connection", "condition", ce.Condition, "description", ce.Description)
	c.closeCond = ce.amqp()
	c.writeFrame(0, &frames.Close{Error: c.closeCond}, nil)
	c.done = true
}

func (c *conn) handleFrame(f frames.Frame) error {
	if len(f.Body) == 0 {
		return nil // heartbeat
	}
	if f.Type != frames.TypeAMQP {
		return connErr(frames.CondFramingError, "SASL frame after the SASL exchange")
	}
	p, payload, err := c.dec.DecodeFrame(f)
	if err != nil {
		return err
	}
	switch p := p.(type) {
	case *frames.Open:
		return connErr(frames.CondIllegalState, "second open")
	case *frames.Close:
		if p.Error != nil {
			c.log.Debug("peer closed with error", "condition", p.Error.Condition, "description", p.Error.Description)
		}
		c.writeFrame(0, &frames.Close{}, nil)
		c.done = true
		return nil
	case *frames.Begin:
		return c.onBegin(f.Channel, p)
	}
	s := c.sessions[f.Channel]
	if s == nil {
		return connErr(frames.CondNotFound, "no session on channel %d", f.Channel)
	}
	return s.handle(p, payload)
}

func (c *conn) onBegin(ch uint16, b *frames.Begin) error {
	if b.HasRemoteChannel {
		return connErr(frames.CondIllegalState, "begin answers a session the server did not begin")
	}
	if ch > c.channelMax {
		return connErr(frames.CondFramingError, "channel %d exceeds channel-max %d", ch, c.channelMax)
	}
	if c.sessions[ch] != nil {
		return connErr(frames.CondIllegalState, "channel %d already has a session", ch)
	}
	var ours uint16
	for ours = 0; c.ours[ours] != nil; ours++ {
		if ours == c.peerChanMax || ours == math.MaxUint16 {
			return connErr(frames.CondResourceLimitExceeded, "no free channel")
		}
	}
	s := newSession(c, ch, ours, b)
	c.sessions[ch] = s
	c.ours[ours] = s
	cfg := &c.s.cfg
	c.writeFrame(ours, &frames.Begin{
		RemoteChannel: ch, HasRemoteChannel: true,
		NextOutgoingID: s.nextOutgoingID,
		IncomingWindow: s.incomingWindow,
		OutgoingWindow: math.MaxUint32,
		HandleMax:      cfg.HandleMax,
	}, nil)
	return nil
}

// writeFrame appends a frame for the writer; a large backlog is pushed to
// the writer at once, which waits while the writer's buffer is full.
func (c *conn) writeFrame(ch uint16, p encoding.Marshaler, payload []byte) {
	var err error
	c.out, err = frames.AppendFrame(c.out, frames.TypeAMQP, ch, p, payload)
	if err != nil {
		c.log.Error("encoding a frame failed", "err", err)
	}
	if len(c.out) >= 256<<10 {
		c.flushOut()
	}
}

func (c *conn) flushOut() {
	if len(c.out) == 0 || c.w == nil {
		return
	}
	c.out = c.w.push(c.out)
}

// flush sends what the loop collected this round: dispositions and flows
// per session, then the frames.
func (c *conn) flush() {
	for _, s := range c.dirty {
		s.flush()
	}
	clear(c.dirty)
	c.dirty = c.dirty[:0]
	if c.draining && !c.done && c.inflight == 0 {
		c.closeWith(&ConnError{Condition: frames.CondConnectionForced, Description: "server shutting down"})
	}
	c.flushOut()
}

func (c *conn) markDirty(s *session) {
	if !s.dirty {
		s.dirty = true
		c.dirty = append(c.dirty, s)
	}
}

// beginShutdown stops granting credit; the connection closes with
// amqp:connection:forced once the outcomes of in-flight publishes are sent
// (see flush).
func (c *conn) beginShutdown() {
	c.draining = true
	for _, s := range c.sessions {
		for _, l := range s.links {
			if l.isReceiver() {
				l.withdrawCredit()
			}
		}
		c.markDirty(s)
	}
}

// teardown releases what the connection holds in the router.
func (c *conn) teardown() {
	for _, s := range c.sessions {
		s.teardown()
	}
	// Events still queued: deliveries are released (their consumers are
	// closed, which releases them too); outcomes need nothing.
	for _, e := range c.ev.take() {
		if e.kind == evDelivery {
			e.d.Settle(releasedOutcome)
		}
	}
}

// ---- writer

// writer owns the socket for writing. The loop pushes encoded frames; the
// writer swaps the buffer out and writes it in one call, so frames queued
// while a write is in progress are coalesced. push waits while more than
// limit bytes are queued: a peer that does not read slows its own
// connection loop and nothing else.
type writer struct {
	nc    net.Conn
	limit int
	hb    time.Duration // heartbeat interval (half the peer's idle-time-out); 0: none

	mu      sync.Mutex
	cond    sync.Cond
	buf     []byte // queued bytes; guarded by mu
	closing bool   // guarded by mu
	err     error  // guarded by mu

	kick   chan struct{}
	failed chan struct{} // closed when a write fails
	done   chan struct{}
}

const writeTimeout = 30 * time.Second

func newWriter(nc net.Conn, limit int, hb time.Duration) *writer {
	w := &writer{nc: nc, limit: limit, hb: hb, kick: make(chan struct{}, 1),
		failed: make(chan struct{}), done: make(chan struct{})}
	w.cond.L = &w.mu
	return w
}

// push queues b and returns an empty buffer for the caller to reuse.
func (w *writer) push(b []byte) []byte {
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		return b[:0]
	}
	var spare []byte
	if len(w.buf) == 0 {
		w.buf, spare = b, w.buf[:0]
	} else {
		w.buf = append(w.buf, b...)
		spare = b[:0]
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
	for len(w.buf) > w.limit && w.err == nil {
		w.cond.Wait()
	}
	w.mu.Unlock()
	return spare
}

func (w *writer) loop() {
	defer close(w.done)
	var tick <-chan time.Time
	if w.hb > 0 {
		t := time.NewTicker(w.hb)
		defer t.Stop()
		tick = t.C
	}
	var spare []byte
	wrote := false
	for {
		heartbeat := false
		select {
		case <-w.kick:
		case <-tick:
			heartbeat = !wrote
			wrote = false
		}
		w.mu.Lock()
		data := w.buf
		w.buf = spare
		closing := w.closing
		w.mu.Unlock()
		if len(data) == 0 && heartbeat {
			data = frames.AppendHeartbeat(data)
		}
		if len(data) > 0 {
			_ = w.nc.SetWriteDeadline(time.Now().Add(writeTimeout))
			if _, err := w.nc.Write(data); err != nil {
				w.mu.Lock()
				w.err = err
				w.cond.Broadcast()
				w.mu.Unlock()
				close(w.failed)
				return
			}
			wrote = true
		}
		if cap(data) > 4<<20 {
			data = nil // do not keep a huge buffer for an idle connection
		}
		spare = data[:0]
		w.mu.Lock()
		w.cond.Broadcast()
		empty := len(w.buf) == 0
		w.mu.Unlock()
		if closing && empty {
			return
		}
	}
}

// close flushes what is queued and stops the writer.
func (w *writer) close() {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	select {
	case <-w.done:
	case <-time.After(writeTimeout):
	}
}

// ---- events

type evKind uint8

const (
	evDelivery  evKind = iota // a router delivery for a sender link
	evOutcome                 // the outcome of a message published by a receiver link
	evConsumers               // anycast consumer presence changed
	evDrained                 // a consumer's drain completed
	evGone                    // the address of a sender link's consumer was deleted
	evHoldEnd                 // a receiver link's credit hold over the message rate ended (ratehold.go)
)

type event struct {
	kind    evKind
	l       *link
	d       *router.Delivery
	id      uint32 // delivery id of a published message
	size    int
	settled bool // the published transfer was pre-settled
	o       router.Outcome
	err     error
	has     bool
}

// eventQueue is how router goroutines talk to the connection loop. Its
// length is bounded by credit: deliveries by the credit given to router
// consumers, outcomes by the credit given to client senders.
type eventQueue struct {
	mu     sync.Mutex
	q      []event // guarded by mu
	spare  []event // an emptied batch to append to next; guarded by mu
	signal chan struct{}
}

// maxSpare bounds the batch kept for reuse (a burst's array is dropped).
const maxSpare = 4096

func (q *eventQueue) push(e event) {
	q.mu.Lock()
	q.q = append(q.q, e)
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *eventQueue) take() []event {
	q.mu.Lock()
	es := q.q
	q.q, q.spare = q.spare, nil
	q.mu.Unlock()
	return es
}

// recycle takes back a batch from take once its events are handled, so
// that pushes append to an array that has grown already instead of
// growing a new one from nothing after every take (growslice was a tenth
// of the CPU of an anycast flow).
func (q *eventQueue) recycle(es []event) {
	if cap(es) > maxSpare {
		return
	}
	clear(es) // no references kept
	q.mu.Lock()
	if q.spare == nil {
		q.spare = es[:0]
	}
	q.mu.Unlock()
}

func (c *conn) processEvents() {
	es := c.ev.take()
	defer c.ev.recycle(es)
	for _, e := range es {
		switch e.kind {
		case evDelivery:
			e.l.onDelivery(e.d)
		case evOutcome:
			e.l.onOutcome(e)
		case evConsumers:
			e.l.onConsumers(e.has)
		case evDrained:
			e.l.onDrained()
		case evHoldEnd:
			e.l.onHoldEnd()
		case evGone:
			if !c.done {
				e.l.detachWith(&encoding.Error{Condition: frames.CondResourceDeleted, Description: "address " + e.l.addr + " deleted"})
			}
		}
	}
}

// ---- helpers

func ctxTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}
