package mqtt

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/audit"
	"github.com/throngmq/throng/internal/auth"
	"github.com/throngmq/throng/internal/conns"
	"github.com/throngmq/throng/internal/guard"
	"github.com/throngmq/throng/internal/router"
	"github.com/throngmq/throng/internal/tenant"
)

// conn is one client connection and, while it lives, its session.
type conn struct {
	s     *Server
	nc    netConn
	raddr net.Addr   // the client's address as accepted (nc changes when the poller takes over)
	pr    *connSetup // nil once the poller reads the connection

	// Set during CONNECT by the reader, read-only afterwards. The
	// tenant is the principal's (tenant()); the client id shares key's
	// bytes. Narrow types: conn stays in the 416-byte size class
	// (TestConnSize; DESIGN §9, ≤ 2 KiB per idle connection).
	ti          *tenantInfo
	clientID    string
	key         string
	principal   *auth.Principal
	maxOut      uint32 // client's maximum packet size (0: no limit)
	maxIn       uint32 // our maximum packet size for this client (limits.go)
	kaSecs      uint16 // keep-alive in seconds, the server's maximum applied
	recvMax     uint16 // client's receive maximum (our QoS>0 in flight)
	aliasMaxOut uint16 // client's topic alias maximum
	problemInfo bool
	version     byte // 4 (3.1.1) or 5
	// kickInfo is what kick, which other goroutines call (Shutdown), may
	// know of the above: set once CONNACK is queued, 0 before (then no
	// DISCONNECT goes out: it may not precede CONNACK).
	kickInfo atomic.Uint32 // kickV5 | kickProblemInfo
	// ce is the connection in the registry (observe.go), set once
	// CONNECT is accepted; nil before and without a registry.
	ce atomic.Pointer[conns.Entry]

	// Owned by the reader (goroutine, or the read-pool worker holding
	// the connection).
	inAliases map[uint16]string
	producers *producerCache // made on the first PUBLISH

	// Event-driven reading (pr.rc nil: a reader goroutine); see evread.go.
	fdc    *fdConn // the socket once taken over; set by watch
	poller *poller
	token  uint64       // set by watch, read-only afterwards
	due    atomic.Int64 // read deadline for the wheel (see dueAt); written by the reader
	in     inbuf        // owned by the reader
	wPrev  *conn        // deadline wheel links; guarded by poller.mu
	wNext  *conn
	wDue   atomic.Int64 // wheel tick of the slot the connection is in, 0: not in the wheel; written under poller.mu

	mu         sync.Mutex // guards the fields below up to smu, and those marked so; see lock order in server.go
	subs       map[string]*subscription
	inflight   map[uint16]*outMsg // server→client QoS 1/2 awaiting PUBACK/PUBREC/PUBCOMP
	pending    []*outMsg          // deliveries waiting for the client's receive maximum
	outAliases map[string]uint16
	inQoS2     map[uint16]struct{} // client→server QoS 2 ids received, PUBREL not yet
	will       *will
	x          *connExtra    // made on demand (extraLocked); never reset
	endCh      chan struct{} // closed when ended; made on demand (closedCh)

	smu     sync.Mutex // send order of QoS 1/2 publishes: taken with mu held (sendUnlock)
	wmu     sync.Mutex // guards the write queue
	wq      []wItem
	wqBytes int
	wdone   chan struct{} // closed when the writer exits, if set

	// The small fields, packed together so that conn stays in the
	// 416-byte size class (docs/mqtt.md, memory per idle connection;
	// TestConnSize); each says what guards it.
	inFlightIn int32         // client→server QoS 1/2 awaiting our ack; guarded by mu
	sessExpiry uint32        // guarded by mu
	handoff    atomic.Uint32 // see arm
	nextID     uint16        // guarded by mu
	discRC     int16         // reason of the client's DISCONNECT; -1 none; guarded by mu
	kicked     byte          // reason the server disconnects with; 0 none; guarded by mu
	armed      bool          // owned by the reader
	persistent bool          // guarded by mu
	gone       bool          // cleanup started; deliveries are refused; guarded by mu
	ended      bool          // cleanup finished; guarded by mu
	writing    bool          // a writer runs; guarded by wmu
	wclosed    bool          // guarded by wmu
	closeAft   bool          // close the socket once the queue is written; guarded by wmu
	polled     bool          // the poller watches the socket: shut it down, do not close it
	// fillWanted: QoS 1/2 publishes wait in conn.pending because the
	// queue was full (writeRoomLocked); the writer moves them on
	// (fillPending) once it has written half of it. Guarded by wmu.
	fillWanted bool
	bridge     bool // the CONNECT had the bridge bit (bridge.go); set before connect, read-only afterwards
	isTLS      bool // set by observe, read-only afterwards
	counted    bool // in the tenant's maxConnections count (router AcquireConn); cleared by cleanup
	swapNC     bool // fdc replaces nc when the writer is idle (see watch); guarded by wmu
}

// tenant is the connection's tenant, its principal's; "" before the
// CONNECT is authenticated.
func (c *conn) tenant() string {
	if c.principal == nil {
		return ""
	}
	return c.principal.Tenant
}

// keepAlive is the keep-alive in force, the server's maximum applied.
func (c *conn) keepAlive() time.Duration { return time.Duration(c.kaSecs) * time.Second }

// connSetup is what only the CONNECT handshake needs: dropped once the
// poller reads the connection, so an idle connection does not keep it.
type connSetup struct {
	packetReader
	ip net.IP          // the client's address (auth's per-source checks)
	rc syscall.RawConn // for watch to take the socket over; nil: no poller
}

// connExtra is state only some connections need (those that publish
// with QoS 1/2, persistent sessions), kept out of conn so that an idle
// connection stays small (DESIGN §9: ≤ 2 KiB each).
type connExtra struct {
	amu  sync.Mutex // guards ackq; after conn.mu, before conn.wmu
	ackq []*ackSlot // acknowledgements of client publishes, in arrival order

	svMu      sync.Mutex // guards the session-write state below; held only briefly
	svWant    uint64     // writes asked for
	svDone    uint64     // writes done
	svRunning bool       // a saveLoop goroutine runs
	svWaiters []saveWaiter
	svGood    uint64 // writes done that reached the engine (persist.go)
	svFailed  bool   // a write failed for good: the connection closes (persist.go)

	// Guarded by conn.mu.
	discAt    time.Time           // set by cleanup: the stored session is disconnected
	dropped   bool                // the stored session is being deleted: no more writes
	resume    map[outKey]uint16   // ids of messages the previous connection left unacknowledged (persist.go)
	resumeIDs map[uint16]struct{} // the ids in resume, not to be reused meanwhile
	// relDone are QoS 2 messages the client had PUBRECed when the previous
	// connection ended (persist.go): the client has them, so a redelivery
	// by the engine is settled without being sent again.
	relDone map[outKey]struct{}
	// recentRel are the last QoS 2 messages completed (PUBCOMP), kept in
	// the session record for a moment: the engine hears of a settlement
	// a little later (router progress records, entry acks), and a crash in
	// between must not send them again under a new packet id.
	recentRel []recentRel
	// inTok are client→server QoS 2 ids whose routing is under way, or
	// was when the session was stored, with the name their message is
	// stored under (qos2in.go).
	inTok map[uint16]string
	// inSeq names this connection's sequence of QoS 2 messages, inN
	// counts them: a message's name is "<inSeq>.<n>" (qos2in.go).
	inSeq string
	inN   uint64

	pendingLive int // bytes of live (pre-settled) messages in conn.pending; guarded by conn.mu

	seen        map[outKey]int // overlapping subscriptions: stored copies still to come (overlap.go); guarded by conn.mu
	crashResume bool           // the resumed session's last connection ended without saving it (node crash); guarded by conn.mu
}

// extraLocked returns the connection's connExtra, making it. c.mu held.
func (c *conn) extraLocked() *connExtra {
	if c.x == nil {
		c.x = &connExtra{}
	}
	return c.x
}

type wItem struct {
	b    []byte
	post func() // run after the write (settlement, credit)
}

func newConn(s *Server, nc netConn, ip net.IP) *conn {
	raddr := nc.RemoteAddr()
	if ta, ok := raddr.(*net.TCPAddr); ok {
		raddr = compactAddr(ta)
	} else if raddr == nil && ip != nil {
		raddr = &net.TCPAddr{IP: ip}
	}
	return &conn{s: s, nc: nc, raddr: raddr, pr: &connSetup{packetReader: packetReader{conn: nc}, ip: ip}, discRC: -1}
}

// compactAddr is a client's TCP address in 8 bytes (IPv4) or 32. The
// *net.TCPAddr of an accepted connection holds its IP inside the syscall
// sockaddr it was parsed from: 80 bytes kept as long as the connection.
func compactAddr(ta *net.TCPAddr) net.Addr {
	ap := ta.AddrPort()
	if a := ap.Addr().Unmap(); a.Is4() {
		return &addr4{ip: a.As4(), port: ap.Port()}
	}
	return &addr6{ap}
}

type addr4 struct {
	ip   [4]byte
	port uint16
}

func (a *addr4) Network() string { return "tcp" }
func (a *addr4) String() string {
	return netip.AddrPortFrom(netip.AddrFrom4(a.ip), a.port).String()
}

type addr6 struct{ ap netip.AddrPort }

func (a *addr6) Network() string { return "tcp" }
func (a *addr6) String() string  { return a.ap.String() }

// closedCh returns a channel that is closed once the connection has
// finished its cleanup. It is made on demand: most connections never
// need one.
func (c *conn) closedCh() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.endCh == nil {
		c.endCh = make(chan struct{})
		if c.ended {
			close(c.endCh)
		}
	}
	return c.endCh
}

// markEnded records the end of the cleanup.
func (c *conn) markEnded() {
	c.mu.Lock()
	c.ended = true
	if c.endCh != nil {
		close(c.endCh)
	}
	c.mu.Unlock()
}

// serve runs the connection in the calling goroutine: CONNECT, then
// either it hands the connection to its poller and reports true (the
// teardown runs later in a read-pool worker), or it reads packets until
// the connection ends, cleans up and reports false. The caller holds one
// of the server's handshake slots (Server.enterHandshake), which serve
// releases once CONNECT is handled.
func (c *conn) serve() (handedOff bool) {
	ok := c.handshake()
	c.s.leaveHandshake()
	guard.HandshakeDone(c.nc) // the node's count of connections in their handshake
	if !ok {
		c.flushAndClose()
		c.markEnded()
		return false
	}
	if c.pr.rc != nil && c.watch() {
		// Bytes that followed CONNECT are already buffered.
		c.in.buf, c.in.r, c.in.w = c.pr.buf, c.pr.r, c.pr.w
		c.pr = nil
		c.readable()
		return true
	}
	c.readLoop()
	c.cleanup()
	c.flushAndClose()
	c.markEnded()
	return false
}

// handshake reads and handles CONNECT within the connect timeout. Before
// authentication a client gets little: a CONNECT of at most
// MaxConnectSize, a body that grows with the bytes it sends and is
// charged to the server's handshake memory budget.
func (c *conn) handshake() bool {
	cfg := &c.s.cfg
	_ = c.nc.SetReadDeadline(time.Now().Add(cfg.ConnectTimeout))
	c.pr.budget = &c.s.hsBudget
	defer c.pr.refund()
	fh, body, err := c.pr.readPacket(min(cfg.MaxConnectSize, cfg.MaxPacketSize))
	switch {
	case err == errTooLarge && fh.Type == packets.Connect:
		// An MQTT 5 client is told why [MQTT-3.2.2.2]; 3.1.1 has no
		// return code for it: closed.
		if c.pr.peekVersion() == 5 {
			return c.refuse(5, rcPacketTooLarge, "CONNECT too large", "too_large")
		}
		c.s.m.connects.WithLabelValues("too_large").Inc()
		return false
	case err == errBudget:
		c.s.m.connects.WithLabelValues("server_busy").Inc()
		return false
	case err != nil || fh.Type != packets.Connect:
		// [MQTT-3.1.0-1] the first packet must be CONNECT.
		c.s.m.connects.WithLabelValues("protocol_error").Inc()
		return false
	}
	c.bridge = stripBridgeBit(body) // bridge.go
	var pk packets.Packet
	if err := decodePacket(fh, body, 0, &pk); err != nil {
		c.s.m.connects.WithLabelValues("malformed").Inc()
		return false
	}
	return c.connect(&pk)
}

// readLoop reads packets until the connection ends (reader goroutine
// mode: TLS, WebSocket, and platforms without epoll). Keep-alive counts
// complete packets: the deadline for the next one is set when the last
// one was read whole; once a packet has started and needs more bytes, it
// must also be complete within the read timeout.
func (c *conn) readLoop() {
	var kaDL time.Time
	c.pr.onStart = func() {
		dl := time.Now().Add(c.s.cfg.ReadTimeout)
		if !kaDL.IsZero() && kaDL.Before(dl) {
			dl = kaDL
		}
		_ = c.nc.SetReadDeadline(dl)
	}
	for {
		kaDL = time.Time{}
		if c.kaSecs > 0 {
			kaDL = time.Now().Add(c.keepAlive() * 3 / 2) // [MQTT-3.1.2-24]
		}
		_ = c.nc.SetReadDeadline(kaDL)
		fh, body, err := c.pr.readPacket(int(c.maxIn))
		if err != nil {
			var re *ReasonError
			switch {
			case errors.As(err, &re):
				c.fatal(re)
			case isTimeout(err) && c.pr.inPacket && (kaDL.IsZero() || time.Now().Before(kaDL)):
				c.fatal(errReadTimeout)
			case isTimeout(err):
				c.fatal(errKeepAlive)
			}
			return
		}
		var pk packets.Packet
		if err := decodePacket(fh, body, c.version, &pk); err != nil {
			var re *ReasonError
			errors.As(err, &re)
			c.fatal(re)
			return
		}
		if err := c.handle(&pk); err != nil {
			if errors.Is(err, errClientDisconnect) {
				return
			}
			var re *ReasonError
			if !errors.As(err, &re) {
				re = reason(rcUnspecified, "unspecified error", err)
			}
			c.fatal(re)
			return
		}
		if d := c.in.pause; d > 0 && (d >= maxRatePause || c.pr.buf == nil || c.pr.r == c.pr.w) {
			// Over the rate (ratepause.go): what is buffered is
			// parsed, then the socket is not read for the time the
			// rate needs for what was refused.
			c.in.pause = 0
			c.pauseReading(min(d, maxRatePause))
		}
	}
}

var (
	errKeepAlive = reason(rcKeepAliveTimeout, "keep alive timeout", nil)
	// errReadTimeout: a packet was started but not completed within
	// Config.ReadTimeout. MQTT 5 has no closer reason code than 0x8D.
	errReadTimeout = reason(rcKeepAliveTimeout, "packet not completed within the read timeout", nil)
)

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

var errClientDisconnect = errors.New("client disconnected")

// fatal ends the connection because of a protocol problem: MQTT 5 clients
// get a DISCONNECT with the reason code, 3.1.1 clients are just closed
// [MQTT-4.13.1-1].
func (c *conn) fatal(re *ReasonError) {
	if re == nil {
		re = errMalformed
	}
	c.s.log.Debug("disconnecting client", "tenant", c.tenant(), "client_id", c.clientID, "reason", re.Error())
	c.kick(re.Code, re.Reason)
}

// Bits of conn.kickInfo.
const (
	kickV5 = 1 << iota
	kickProblemInfo
)

// kick disconnects the client with a reason code (v5) and closes the
// connection once the DISCONNECT is written. It reports false if the
// connection was kicked before (and does nothing then).
func (c *conn) kick(code byte, text string) bool {
	c.mu.Lock()
	if c.kicked != 0 {
		// Already on its way out (one DISCONNECT is enough; a full
		// queue kicks for every message it drops).
		c.mu.Unlock()
		return false
	}
	c.kicked = code
	c.mu.Unlock()
	if k := c.kickInfo.Load(); k&kickV5 != 0 {
		pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: 5, ReasonCode: code}
		if k&kickProblemInfo != 0 {
			pk.Properties.ReasonString = text
		}
		if b, err := encodePacket(pk); err == nil {
			c.enqueue(b, false, nil)
		}
	}
	c.wmu.Lock()
	if c.writing {
		c.closeAft = true
		c.wmu.Unlock()
		// Do not wait forever for a stuck client.
		time.AfterFunc(5*time.Second, c.closeNet)
		return true
	}
	c.wmu.Unlock()
	c.closeNet()
	return true
}

// Revoke disconnects the client with 0x87 (not authorized; a 3.1.1
// client is just closed): its user, device or tenant lost its access
// (auth.Live, on any goroutine).
func (c *conn) Revoke(cause string) { c.kick(rcNotAuthorized, "access revoked: "+cause) }

// addressGone disconnects the client with 0x8F (topic filter not
// accepted; 3.1.1: closed): the defined address one of its subscriptions
// consumed was deleted (router ConsumeOptions.Gone). MQTT has no way to
// end one subscription; a client that subscribes again gets what the
// name means now.
func (c *conn) addressGone(name string) {
	c.kick(rcTopicFilterInvalid, "address "+name+" deleted")
}

// flushAndClose closes the connection after the queued packets (such as
// a DISCONNECT) are written, waiting at most a few seconds.
func (c *conn) flushAndClose() {
	c.wmu.Lock()
	if !c.writing {
		c.wmu.Unlock()
		c.closeNet()
		return
	}
	c.closeAft = true
	done := make(chan struct{})
	c.wdone = done
	c.wmu.Unlock()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	c.closeNet()
}

// closeNet ends the transport. A socket the poller watches is shut down,
// not closed, so that its reader sees the end and runs the teardown.
func (c *conn) closeNet() {
	c.wmu.Lock()
	c.wclosed = true
	polled := c.polled
	c.wmu.Unlock()
	c.endNet(polled)
}

// endNet closes the transport or, if polled, shuts it down.
func (c *conn) endNet(polled bool) {
	if polled {
		c.shutdownNet()
		return
	}
	c.wmu.Lock()
	nc := c.nc
	c.wmu.Unlock()
	_ = nc.Close()
}

// ---- writing

// enqueue queues an encoded packet. Droppable packets (QoS 0 publishes)
// are dropped when the queue is over its limit; post runs after the write
// or the drop. It never blocks.
func (c *conn) enqueue(b []byte, droppable bool, post func()) bool {
	c.wmu.Lock()
	// A packet larger than the queue's bound (a large message) counts
	// only with what is queued before it: an empty queue takes it.
	limit := c.s.cfg.WriteQueueBytes + max(len(b)-c.s.cfg.WriteQueueBytes, 0)
	if c.wclosed || (droppable && c.wqBytes+len(b) > limit) {
		c.wmu.Unlock()
		if droppable && c.ti != nil {
			c.ti.mDropSlow.Inc()
		}
		if post != nil {
			go post()
		}
		return false
	}
	if c.wqBytes+len(b) > 3*c.s.cfg.WriteQueueBytes+limit {
		// The client does not read even its acknowledgements. (QoS 1/2
		// publishes wait in conn.pending rather than fill this queue:
		// writeRoomLocked.)
		c.wclosed = true
		polled := c.polled
		c.wmu.Unlock()
		c.s.m.disconnects.WithLabelValues("write_queue_full").Inc()
		c.endNet(polled)
		if post != nil {
			go post()
		}
		return false
	}
	c.wq = append(c.wq, wItem{b: b, post: post})
	c.wqBytes += len(b)
	if !c.writing {
		c.writing = true
		go c.writeLoop()
	}
	c.wmu.Unlock()
	return true
}

const maxCoalesce = 64 << 10

var writeBufPool = sync.Pool{New: func() any { b := make([]byte, 0, maxCoalesce); return &b }}

// writeLoop writes the queue, coalescing packets into one write; it exits
// when the queue is empty so an idle connection has no writer.
func (c *conn) writeLoop() {
	bp := writeBufPool.Get().(*[]byte)
	defer writeBufPool.Put(bp)
	var posts []func()
	for {
		c.wmu.Lock()
		if c.fillWanted && !c.wclosed && c.wqBytes <= c.s.cfg.WriteQueueBytes/2 {
			c.fillWanted = false
			c.wmu.Unlock()
			c.fillPending()
			continue
		}
		if len(c.wq) == 0 || c.wclosed {
			c.writing = false
			closeAft := c.closeAft || c.wclosed
			polled := c.polled
			rest := c.wq
			c.wq, c.wqBytes = nil, 0
			wd := c.wdone
			c.wdone = nil
			var old netConn
			if c.swapNC && !c.wclosed {
				old, c.nc, c.swapNC = c.nc, c.fdc, false
			}
			c.wmu.Unlock()
			if old != nil {
				_ = old.Close() // the socket stays open through c.fdc
			}
			for _, it := range rest {
				if it.post != nil {
					it.post()
				}
			}
			if closeAft {
				c.endNet(polled)
			}
			if wd != nil {
				close(wd)
			}
			return
		}
		buf := (*bp)[:0]
		n := 0
		for n < len(c.wq) && (n == 0 || len(buf)+len(c.wq[n].b) <= maxCoalesce) {
			buf = append(buf, c.wq[n].b...)
			if c.wq[n].post != nil {
				posts = append(posts, c.wq[n].post)
			}
			c.wqBytes -= len(c.wq[n].b)
			c.wq[n] = wItem{}
			n++
		}
		c.wq = c.wq[n:]
		if len(c.wq) == 0 {
			c.wq = nil
		}
		nc := c.nc
		c.wmu.Unlock()
		err := c.writeAll(nc, buf)
		if cap(buf) <= maxCoalesce {
			*bp = buf[:0]
		}
		for _, p := range posts {
			p()
		}
		posts = posts[:0]
		if err != nil {
			c.writeFailed(err)
		}
	}
}

// writeStall is how long a write may make no progress before the
// connection ends: 1.5 × the keep-alive, as on the read side
// [MQTT-3.1.2-24]; none without a keep-alive (the read side waits
// forever then too; mqtt.maxKeepAlive bounds both). A client that keeps
// its keep-alive but stops reading is paused, not dead: its messages
// wait (back-pressure, docs/mqtt.md "Slow subscribers") until it reads
// again or the stall limit ends the connection. (A fixed 30 s deadline
// ended paused subscribers after 30 s once their socket buffer was full.)
func (c *conn) writeStall() time.Duration { return c.keepAlive() * 3 / 2 }

// writeAll writes buf. The stall limit counts from the last progress: a
// slow reader is not cut off while it reads, only one that stopped. A
// transport whose write cannot resume after a deadline (TLS, WebSocket)
// ends at the first one.
func (c *conn) writeAll(nc netConn, buf []byte) error {
	stall := c.writeStall()
	for {
		var dl time.Time
		if stall > 0 {
			dl = time.Now().Add(stall)
		}
		_ = nc.SetWriteDeadline(dl)
		n, err := nc.Write(buf)
		if err == nil || n == 0 || n >= len(buf) || !isTimeout(err) || !resumable(nc) {
			return err
		}
		buf = buf[n:]
	}
}

// resumable reports whether a write on nc may go on after a deadline.
func resumable(nc netConn) bool {
	switch nc.(type) {
	case *fdConn, *net.TCPConn:
		return true
	}
	return false
}

// writeFailed ends the connection after a failed write: the socket is
// closed (shut down if the poller watches it, so that its reader runs
// the teardown: live consumers closed, held PUBACKs of publishers
// released, session saved or ended, will published) and the failure is
// counted.
func (c *conn) writeFailed(err error) {
	c.wmu.Lock()
	closing := c.wclosed // ended by someone else (kick, teardown): counted there
	c.wmu.Unlock()
	why := "write_error"
	if isTimeout(err) {
		why = "write_timeout"
	}
	if !closing {
		c.s.m.disconnects.WithLabelValues(why).Inc()
	}
	c.s.log.Debug("write failed; closing", "tenant", c.tenant(), "client_id", c.clientID, "reason", why, "err", err)
	c.closeNet()
}

func (c *conn) send(pk *packets.Packet) {
	pk.ProtocolVersion = c.version
	b, err := encodePacket(pk)
	if err != nil {
		c.s.log.Warn("encode failed", "type", pk.FixedHeader.Type, "err", err)
		return
	}
	c.enqueue(b, false, nil)
}

func (c *conn) ack(typ byte, id uint16, rc byte, text string) {
	if !c.problemInfo {
		text = ""
	}
	c.enqueue(encodeAck(typ, c.version, id, rc, text), false, nil)
}

// ---- CONNECT

func newClientID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "throng-" + hex.EncodeToString(b[:])
}

// refuseAuth refuses a CONNECT whose credentials the authenticator
// refused: 0x87 (3.1.1: 5) for a device whose tenant or adapter is
// disabled, 0x88 (3.1.1: 3) when the registry cannot answer, else 0x86
// (3.1.1: 4). The client learns nothing more; the log has the reason.
func (c *conn) refuseAuth(v byte, user string, err error) bool {
	c.s.log.Debug("authentication failed", "client_id", c.clientID, "remote", c.remote(), "user", user, "err", err)
	switch {
	case errors.Is(err, auth.ErrNotAuthorized):
		c.auditRefused(user, "not_authorized", err)
		return c.refuse(v, rcNotAuthorized, "not authorized", "not_authorized")
	case errors.Is(err, auth.ErrUnavailable):
		c.auditRefused(user, "unavailable", err)
		return c.refuse(v, rcServerUnavailable, "server unavailable", "server_unavailable")
	}
	c.auditRefused(user, "bad_credentials", err)
	return c.refuse(v, rcBadCredentials, "bad user name or password", "bad_credentials")
}

// remote is the client's address for logs and the audit log.
func (c *conn) remote() string {
	if c.raddr != nil {
		return c.raddr.String()
	}
	return ""
}

// auditRefused records a refused CONNECT in the audit log (the rate-
// limited record of refusals; the log line above is at debug level).
func (c *conn) auditRefused(user, reason string, err error) {
	e := audit.Event{Kind: audit.LoginFailed, Protocol: audit.MQTT, Remote: c.remote(),
		User: user, ClientID: c.clientID, Reason: reason}
	if err != nil {
		e.Detail = err.Error()
	}
	c.s.cfg.Audit.Record(e)
}

// tlsState returns the TLS connection state (client certificates), or
// nil on a connection without TLS.
func (c *conn) tlsState() *tls.ConnectionState {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return nil
	}
	cs := tc.ConnectionState()
	return &cs
}

// refuse answers a CONNECT with a failure reason code and reports false.
func (c *conn) refuse(version byte, rc byte, text string, result string) bool {
	c.s.m.connects.WithLabelValues(result).Inc()
	pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: version}
	if version == 5 {
		pk.ReasonCode = rc
		pk.Properties.ReasonString = text
	} else {
		pk.ReasonCode = v3ConnackCode(rc)
	}
	c.version = version
	if b, err := encodePacket(pk); err == nil {
		_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.nc.Write(b)
	}
	c.s.log.Debug("connect refused", "client_id", c.clientID, "remote", c.remote(), "reason", text)
	return false
}

func (c *conn) connect(pk *packets.Packet) bool {
	s := c.s
	v := pk.ProtocolVersion
	if v != 4 && v != 5 {
		// 3.1 (MQIsdp, version 3) and unknown versions [MQTT-3.1.2-2].
		return c.refuse(4, rcUnsupportedVersion, "unsupported protocol version", "unsupported_version")
	}
	if code := pk.ConnectValidate(); code != packets.CodeSuccess {
		return c.refuse(v, code.Code, code.Reason, "protocol_error")
	}
	if v == 4 && pk.Connect.PasswordFlag && !pk.Connect.UsernameFlag {
		// [MQTT-3.1.2-22] a 3.1.1 CONNECT with a password needs a user
		// name; it is malformed: closed without CONNACK (4.8). MQTT 5
		// allows a password alone (3.1.2.9): it is accepted there.
		c.s.m.connects.WithLabelValues("malformed").Inc()
		return false
	}
	c.version = v
	c.clientID = pk.Connect.ClientIdentifier
	props := &pk.Properties
	c.recvMax = 65535
	c.problemInfo = true
	if v == 5 {
		if props.ReceiveMaximum > 0 {
			c.recvMax = props.ReceiveMaximum
		}
		c.maxOut = props.MaximumPacketSize
		c.aliasMaxOut = props.TopicAliasMaximum
		if props.RequestProblemInfoFlag && props.RequestProblemInfo == 0 {
			c.problemInfo = false
		}
		c.sessExpiry = min(props.SessionExpiryInterval, s.cfg.MaxSessionExpiry)
	} else if !pk.Connect.Clean {
		c.sessExpiry = s.cfg.MaxSessionExpiry // 3.1.1: a persistent session lasts until it is cleaned
	}
	c.persistent = c.sessExpiry > 0

	// Authentication.
	var p *auth.Principal
	switch {
	case v == 5 && props.AuthenticationMethod != "":
		if s.cfg.EnhancedAuth == nil {
			return c.refuse(v, rcBadAuthMethod, "authentication method not supported", "bad_auth_method")
		}
		ctx, cancel := context.WithTimeout(s.authCtx, s.cfg.ConnectTimeout)
		var err error
		p, err = s.cfg.EnhancedAuth(ctx, props.AuthenticationMethod, props.AuthenticationData, c.clientID)
		cancel()
		if err != nil || p == nil {
			c.auditRefused("", "bad_credentials", err)
			return c.refuse(v, rcBadCredentials, "authentication failed", "bad_credentials")
		}
	case s.cfg.Auth.HasDeviceCert(c.tlsState()):
		// A device's client certificate decides, whatever the user name
		// says (Hono: the certificate is tried first; a device may send
		// no user name at all).
		ctx, cancel := context.WithTimeout(s.authCtx, s.cfg.ConnectTimeout)
		var err error
		p, err = s.cfg.Auth.AuthenticateCert(ctx, auth.AdapterMQTT, c.tlsState())
		cancel()
		if err != nil {
			return c.refuseAuth(v, "", err)
		}
	case pk.Connect.UsernameFlag:
		user, ten := auth.SplitUser(string(pk.Connect.Username), tenant.Default)
		ctx, cancel := context.WithTimeout(s.authCtx, s.cfg.ConnectTimeout)
		var err error
		// The client id names a JWT's tenant and auth-id (Hono; auth/jwt.go).
		p, err = s.cfg.Auth.AuthenticateFor(auth.WithClientID(auth.WithSource(ctx, c.pr.ip), c.clientID), auth.AdapterMQTT, ten, user, string(pk.Connect.Password))
		cancel()
		if err != nil {
			return c.refuseAuth(v, string(pk.Connect.Username), err)
		}
	default:
		// Hono's unauthenticated devices where a tenant waives device
		// authentication (hono.go: every topic names the tenant and the
		// device; the tenant's explicit choice wins over the node's
		// default), else anonymous access from loopback if allowed.
		if p = s.unauthenticatedDevices(); p == nil && s.cfg.AllowAnonymous && c.pr.ip != nil && c.pr.ip.IsLoopback() {
			p = s.anonymous // shared: anonymous permissions do not name ${client_id}
		}
		if p == nil {
			c.auditRefused("", "anonymous_refused", nil)
			return c.refuse(v, rcNotAuthorized, "anonymous access not allowed", "not_authorized")
		}
	}
	c.principal = p
	if p.IsDevice() {
		// Hono's MQTT adapter keeps no session state (session present
		// is always 0) and ignores wills.
		c.sessExpiry, c.persistent = 0, false
		pk.Connect.Clean = true
		pk.Connect.WillFlag = false
	}
	c.maxIn = uint32(s.maxPacketFor(c.tenant()))

	// Client identifier [MQTT-3.1.3-6..8].
	assigned := false
	if c.clientID == "" {
		if v == 4 && !pk.Connect.Clean {
			return c.refuse(v, rcClientIDInvalid, "a persistent session needs a client identifier", "client_id_rejected")
		}
		c.clientID = newClientID()
		assigned = true
	}
	c.key = c.tenant() + "\x00" + c.clientID
	// Share the key's bytes rather than keep the CONNECT packet alive.
	c.clientID = c.key[len(c.tenant())+1:]
	if p != s.anonymous {
		p.ClientID = c.clientID // for ${client_id} in permissions
	}

	ti := s.tenantInfo(c.tenant())
	if _, ok := s.cfg.Store.Tenant(c.tenant()); !ok {
		return c.refuse(v, rcNotAuthorized, "unknown tenant", "not_authorized")
	}
	// maxConnections counts the tenant's connections of every protocol
	// on this node (router/quota.go); released by cleanup, or below when
	// the CONNECT is refused after all.
	if err := s.r.AcquireConn(c.tenant()); err != nil {
		return c.refuse(v, rcQuotaExceeded, "tenant connection limit reached", "quota_exceeded")
	}
	accepted := false
	defer func() {
		if !accepted {
			s.r.ReleaseConn(c.tenant())
		}
	}()

	// Will [MQTT-3.1.2-8].
	if pk.Connect.WillFlag {
		w := &will{
			Topic: pk.Connect.WillTopic, QoS: pk.Connect.WillQos, Retain: pk.Connect.WillRetain,
		}
		if err := address.ValidateName(w.Topic); err != nil {
			return c.refuse(v, rcTopicNameInvalid, "will topic invalid", "protocol_error")
		}
		if re := c.mayPublish(w.Topic); re != nil {
			return c.refuse(v, re.Code, "will: "+re.Reason, "not_authorized")
		}
		wp := pk.Connect.WillProperties
		w.Delay = wp.WillDelayInterval
		w.Msg = toMessage(w.Topic, w.QoS, w.Retain, pk.Connect.WillPayload, &wp, c.clientID).Marshal()
		c.will = w
	}

	// Keep-alive [MQTT-3.1.2-22], server keep-alive [MQTT-3.2.2-21]:
	// an MQTT 5 client asking for more than MaxKeepAlive, or for none,
	// is told the maximum in CONNACK; a 3.1.1 client cannot be told, the
	// maximum is enforced all the same.
	ka := pk.Connect.Keepalive
	serverKA := false
	if s.cfg.MaxKeepAlive > 0 && (ka == 0 || ka > s.cfg.MaxKeepAlive) {
		ka = s.cfg.MaxKeepAlive
		serverKA = v == 5
	}
	c.kaSecs = ka

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	// The tenant's state, node lease and takeover listener exist before
	// the client id is registered here.
	if _, _, err := s.buckets(ctx, c.tenant(), true); err != nil {
		s.log.Warn("session store unavailable", "tenant", c.tenant(), "err", err)
		return c.refuse(v, rcServerUnavailable, "session store unavailable", "server_unavailable")
	}
	if c.persistent {
		// maxSessions (quota.go), before anything is registered.
		if err := c.checkSessions(ctx); errors.Is(err, router.ErrLimitExceeded) {
			return c.refuse(v, rcQuotaExceeded, "tenant session limit reached", "quota_exceeded")
		} else if err != nil {
			s.log.Warn("session store unavailable", "tenant", c.tenant(), "err", err)
			return c.refuse(v, rcServerUnavailable, "session store unavailable", "server_unavailable")
		}
	}

	// Session takeover [MQTT-3.1.4-2]: on this node, then on the others
	// (which disconnect theirs; loadSession waits for their session write).
	old, err := s.register(c)
	if err != nil {
		return c.refuse(v, rcServerUnavailable, err.Error(), "shutting_down")
	}
	c.ti = ti
	if old != nil {
		old.kick(rcSessionTakenOver, "session taken over")
		select {
		case <-old.closedCh():
		case <-time.After(10 * time.Second):
		}
	}
	c.announce(ctx)

	rec, err := c.loadSession(ctx, pk.Connect.Clean)
	if err != nil {
		s.unregister(c)
		s.log.Warn("session load failed", "tenant", c.tenant(), "client_id", c.clientID, "err", err)
		return c.refuse(v, rcServerUnavailable, "session store unavailable", "server_unavailable")
	}
	if rec != nil {
		c.persistent = true // a resumed session ends with this connection if expiry is 0
		c.restoreState(rec)
	}
	if c.persistent {
		c.mu.Lock()
		c.extraLocked() // before anything calls persist
		c.mu.Unlock()
		if !c.persistSync(true) { // owner node, subscriptions, in-flight state
			s.unregister(c)
			return c.refuse(v, rcServerUnavailable, "session store unavailable", "server_unavailable")
		}
	}
	if c.will != nil {
		c.armWill(ctx)
	}
	present := rec != nil
	c.deviceConnected() // Hono's connection event (hono.go)

	ti.connected.Add(1)
	accepted, c.counted = true, true
	s.m.connections.WithLabelValues(c.tenant()).Inc()
	s.m.connects.WithLabelValues("accepted").Inc()

	ack := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, SessionPresent: present}
	if v == 5 {
		ap := &ack.Properties
		if assigned {
			ap.AssignedClientID = c.clientID // [MQTT-3.2.2-16]
		}
		if serverKA {
			ap.ServerKeepAlive, ap.ServerKeepAliveFlag = ka, true
		}
		if props.SessionExpiryInterval != c.sessExpiry {
			ap.SessionExpiryInterval, ap.SessionExpiryIntervalFlag = c.sessExpiry, true
		}
		ap.ReceiveMaximum = s.cfg.ReceiveMaximum
		ap.MaximumPacketSize = c.maxIn
		ap.TopicAliasMaximum = s.cfg.TopicAliasMaximum
		ap.RetainAvailable, ap.RetainAvailableFlag = 1, true
		ap.WildcardSubAvailable, ap.WildcardSubAvailableFlag = 1, true
		ap.SubIDAvailable, ap.SubIDAvailableFlag = 1, true
		ap.SharedSubAvailable, ap.SharedSubAvailableFlag = 1, true
	}
	c.send(ack)
	s.cfg.Audit.Record(audit.Event{Kind: audit.Login, Protocol: audit.MQTT, Remote: c.remote(),
		Tenant: p.Tenant, User: p.User + p.AuthID, Device: p.Device, ClientID: c.clientID})
	k := uint32(0)
	if v == 5 {
		k |= kickV5
	}
	if c.problemInfo {
		k |= kickProblemInfo
	}
	c.kickInfo.Store(k)
	// From here a change that takes the principal's access away closes
	// the connection (auth.Live; unregistered in Server.unregister).
	s.cfg.Auth.Live().Register(c, p, auth.AdapterMQTT)
	c.observe()
	if rec != nil {
		c.resendRel(rec)
		c.attach(ctx, rec.Subs)
	}
	return true
}

// mayPublish checks that the client may publish to topic: nil, or the
// reason to refuse it with (0x90 for a name that can never be a topic,
// such as "$share/…"; 0x87 for the reserved "$SYS/…" and for a missing
// permission). Other '$' topics are application topics (auth.Reserved).
func (c *conn) mayPublish(topic string) *ReasonError {
	if c.ownBridgeState(topic) {
		return nil // a bridge's own state topic (bridge.go)
	}
	return c.mayUse(topic, tenant.ActionSend, rcTopicNameInvalid)
}

// maySubscribe is mayPublish for a subscription's topic filter (without
// its "$share/group/" prefix): 0x8F for a reserved name, 0x87 otherwise.
func (c *conn) maySubscribe(filter string) *ReasonError {
	return c.mayUse(filter, tenant.ActionReceive, rcTopicFilterInvalid)
}

func (c *conn) mayUse(name string, action tenant.Action, invalid byte) *ReasonError {
	if err := auth.Reserved(name, action); err != nil {
		if errors.Is(err, auth.ErrReservedName) {
			return reason(invalid, err.Error(), err)
		}
		return reason(rcNotAuthorized, err.Error(), err)
	}
	if !auth.Authorize(c.principal, name, action) {
		c.s.cfg.Audit.Record(audit.Event{Kind: audit.Denied, Protocol: audit.MQTT, Remote: c.remote(),
			Tenant: c.principal.Tenant, User: c.principal.User + c.principal.AuthID, Device: c.principal.Device,
			ClientID: c.clientID, Resource: name, Action: string(action), Reason: "no_permission"})
		return reason(rcNotAuthorized, "not authorized", nil)
	}
	return nil
}

// ---- dispatch

func (c *conn) handle(pk *packets.Packet) error {
	switch pk.FixedHeader.Type {
	case packets.Publish:
		return c.onPublish(pk)
	case packets.Puback:
		c.onPuback(pk.PacketID)
	case packets.Pubrec:
		c.onPubrec(pk.PacketID, pk.ReasonCode)
	case packets.Pubrel:
		c.onPubrel(pk.PacketID)
	case packets.Pubcomp:
		c.onPubcomp(pk.PacketID)
	case packets.Subscribe:
		return c.onSubscribe(pk)
	case packets.Unsubscribe:
		return c.onUnsubscribe(pk)
	case packets.Pingreq:
		c.send(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}})
	case packets.Disconnect:
		return c.onDisconnect(pk)
	case packets.Auth:
		// Re-authentication [MQTT-4.12.1]: only with a hook for the method.
		if c.s.cfg.EnhancedAuth == nil {
			return reason(rcBadAuthMethod, "authentication method not supported", nil)
		}
		return reason(rcProtocolError, "re-authentication is not supported", nil)
	case packets.Connect:
		return reason(rcProtocolError, "second CONNECT", nil) // [MQTT-3.1.0-2]
	}
	return nil
}

func (c *conn) onDisconnect(pk *packets.Packet) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.discRC = int16(pk.ReasonCode)
	if c.version == 5 && pk.Properties.SessionExpiryIntervalFlag {
		if c.sessExpiry == 0 && pk.Properties.SessionExpiryInterval > 0 {
			c.discRC = -1
			return reason(rcProtocolError, "session expiry cannot be set on DISCONNECT when it was 0", nil) // [MQTT-3.14.2-2]
		}
		c.sessExpiry = min(pk.Properties.SessionExpiryInterval, c.s.cfg.MaxSessionExpiry)
	}
	return errClientDisconnect
}
