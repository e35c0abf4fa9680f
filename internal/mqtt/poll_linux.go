package mqtt

import (
	"errors"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// poller is one epoll loop (see evread.go). After CONNECT a watched
// connection's socket is taken over from its *net.TCPConn (fdConn): the
// net.Conn keeps a descriptor, its netFD, addresses and a runtime poll
// descriptor (~0.5 KiB together) per connection. Epoll events carry a
// per-connection token, not the descriptor, so an event that races with
// a close finds nothing.
type poller struct {
	s      *Server
	epfd   int
	wakefd int // eventfd; token 0; written to stop the loop

	mu    sync.Mutex
	conns map[uint64]*conn // token → connection; guarded by mu
	next  uint64           // guarded by mu
	wheel wheel            // guarded by mu
}

// newPollers starts the epoll loops: one per four cores (at least one).
func newPollers(s *Server) ([]*poller, error) {
	n := min(max(1, (runtime.GOMAXPROCS(0)+3)/4), 8)
	var ps []*poller
	for range n {
		p, err := newPoller(s)
		if err != nil {
			for _, p := range ps {
				p.wake()
			}
			return nil, err
		}
		ps = append(ps, p)
	}
	for _, p := range ps {
		s.bg.Add(1)
		go p.loop()
	}
	return ps, nil
}

func newPoller(s *Server) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, err
	}
	p := &poller{s: s, epfd: epfd, wakefd: wfd, conns: map[uint64]*conn{}}
	p.wheel.now = s.clock() / wheelTick
	return p, nil
}

// wake stops the loop.
func (p *poller) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(p.wakefd, one[:])
}

func (p *poller) loop() {
	defer p.s.bg.Done()
	defer unix.Close(p.wakefd)
	defer unix.Close(p.epfd)
	events := make([]unix.EpollEvent, 128)
	var expired []*conn
	for {
		n, err := unix.EpollWait(p.epfd, events, wheelTick)
		if err != nil && !errors.Is(err, unix.EINTR) {
			p.s.log.Error("epoll wait failed", "err", err)
			return
		}
		for i := range max(n, 0) {
			tok := uint64(uint32(events[i].Fd)) | uint64(uint32(events[i].Pad))<<32
			if tok == 0 {
				return
			}
			p.mu.Lock()
			c := p.conns[tok]
			p.mu.Unlock()
			if c != nil {
				c.handoff.Load() // pairs with arm's Add: see there
				p.s.pool.submit(c)
			}
		}
		p.mu.Lock()
		expired = p.wheel.advance(p.s.clock(), expired[:0])
		p.mu.Unlock()
		for i, c := range expired {
			if c.due.Load()&1 != 0 {
				c.fatal(errReadTimeout)
			} else {
				c.fatal(errKeepAlive) // [MQTT-3.1.2-24]
			}
			expired[i] = nil
		}
	}
}

// pollable returns the raw connection and the poller for a plain TCP
// connection, or nils when it must use a reader goroutine.
func (s *Server) pollable(nc net.Conn) (syscall.RawConn, *poller) {
	tc, ok := nc.(*net.TCPConn)
	if !ok || len(s.pollers) == 0 {
		return nil, nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, nil
	}
	s.mu.Lock()
	s.nextPoller++
	p := s.pollers[s.nextPoller%len(s.pollers)]
	s.mu.Unlock()
	return rc, p
}

// watch hands the connection to its poller (after CONNECT), taking its
// socket over. It reports false if that failed (the caller falls back to
// a reader goroutine, which also notices a connection closed meanwhile).
func (c *conn) watch() bool {
	nfd, derr := -1, error(nil)
	if err := c.pr.rc.Control(func(fd uintptr) { nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return false
	}
	f := &fdConn{fd: int32(nfd)}
	c.wmu.Lock()
	if c.wclosed {
		c.wmu.Unlock()
		_ = f.Close()
		return false
	}
	c.polled = true
	c.fdc = f
	var old netConn
	if c.writing {
		// The writer still uses the net.Conn (CONNACK, resumed
		// messages); it switches when its queue is empty.
		c.swapNC = true
	} else {
		old, c.nc = c.nc, f
	}
	c.wmu.Unlock()
	if old != nil {
		_ = old.Close() // the socket stays open through f
	}
	if ka := c.kaMillis(); ka > 0 {
		c.due.Store(dueAt(c.s.clock()+ka, false))
	}
	p := c.poller
	p.mu.Lock()
	p.next++
	c.token = p.next
	p.conns[c.token] = c
	if d := c.due.Load(); d != 0 {
		p.wheel.insert(c, d>>1)
	}
	p.mu.Unlock()
	// The poller's map is the connection's only entry from now on (one
	// map entry less per idle connection); Shutdown reads both, this
	// one after s.conns, so it sees the connection at least once.
	c.s.mu.Lock()
	delete(c.s.conns, c)
	c.s.mu.Unlock()
	return true
}

// polledConns appends the connections the pollers watch to out.
func (s *Server) polledConns(out []*conn) []*conn {
	for _, p := range s.pollers {
		p.mu.Lock()
		for _, c := range p.conns {
			out = append(out, c)
		}
		p.mu.Unlock()
	}
	return out
}

// schedule makes sure the connection's wheel slot is no later than due
// (ms): only a deadline earlier than its slot, or a connection not in the
// wheel, needs the lock.
func (p *poller) schedule(c *conn, due int64) {
	if t := c.wDue.Load(); t != 0 && t <= wheelTickOf(due) {
		return
	}
	p.mu.Lock()
	if t := c.wDue.Load(); t == 0 || t > wheelTickOf(due) {
		if _, ok := p.conns[c.token]; ok {
			p.wheel.remove(c)
			p.wheel.insert(c, due)
		}
	}
	p.mu.Unlock()
}

// arm (re-)enables the one-shot read event; the first call adds the
// descriptor to the epoll set.
func (c *conn) arm() error {
	op := unix.EPOLL_CTL_MOD
	if !c.armed {
		op = unix.EPOLL_CTL_ADD
		c.armed = true
	}
	// The kernel orders this worker's turn before the next one, but the
	// race detector cannot see that; this atomic and the loop's Load
	// make the hand-off visible to it.
	c.handoff.Add(1)
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(c.token)), Pad: int32(uint32(c.token >> 32))}
	return c.fdc.control(func(fd int) error { return unix.EpollCtl(c.poller.epfd, op, fd, &ev) })
}

// unwatch removes the connection from its poller (teardown, before the
// close).
func (c *conn) unwatch() {
	p := c.poller
	p.mu.Lock()
	delete(p.conns, c.token)
	p.wheel.remove(c)
	p.mu.Unlock()
	if c.armed {
		_ = c.fdc.control(func(fd int) error { return unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, fd, nil) })
	}
}

// readSome reads what is available without blocking.
func (c *conn) readSome(dst []byte) (int, error) {
	var n int
	err := c.fdc.control(func(fd int) error {
		var err error
		for {
			n, err = unix.Read(fd, dst)
			if err != unix.EINTR {
				return err
			}
		}
	})
	switch {
	case err == unix.EAGAIN:
		return 0, errWouldBlock
	case err != nil:
		return 0, err
	case n <= 0:
		return 0, net.ErrClosed // EOF
	}
	return n, nil
}

// shutdownNet shuts the socket down in both directions: a blocked write
// fails and the poller sees the end (closing the descriptor instead would
// silently remove it from the epoll set).
func (c *conn) shutdownNet() {
	_ = c.fdc.control(func(fd int) error { return unix.Shutdown(fd, unix.SHUT_RDWR) })
}

// fdConn is a non-blocking TCP socket taken over from a *net.TCPConn.
// The read side is the poller's (readSome). Writes are direct; only when
// the socket buffer is full does the writer make a duplicate *os.File,
// which the Go runtime can block on with a deadline, and keep it until
// the connection closes.
type fdConn struct {
	// use is the number of calls using fd (control), plus fdClosed once
	// Close began: an atomic rather than a sync.RWMutex, so that an idle
	// connection's fdConn is 24 bytes, not 48 (memory per idle
	// connection, docs/mqtt.md). Close waits for the users to leave; each
	// holds it for one non-blocking system call.
	use  atomic.Int32
	fd   int32
	slow *os.File // owned by the writer; closed by Close
	wdl  int64    // write deadline, Unix nanoseconds, 0 none; owned by the writer (not a time.Time: 16 bytes less per connection)
}

const fdClosed = -1 << 31 // the sign bit of fdConn.use

var errFDClosed = errors.New("mqtt: connection closed")

// control runs f on the descriptor unless it is closed; the descriptor
// cannot be closed (and its number reused) meanwhile.
func (f *fdConn) control(fn func(fd int) error) error {
	for {
		u := f.use.Load()
		if u < 0 {
			return errFDClosed
		}
		if f.use.CompareAndSwap(u, u+1) {
			break
		}
	}
	defer f.use.Add(-1)
	return fn(int(f.fd))
}

func (f *fdConn) Read([]byte) (int, error) { return 0, errors.ErrUnsupported }

func (f *fdConn) Write(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		if f.slow != nil {
			_ = f.slow.SetWriteDeadline(unixNanoTime(f.wdl))
			m, err := f.slow.Write(b[n:])
			return n + m, err
		}
		var m int
		err := f.control(func(fd int) error {
			var err error
			m, err = unix.Write(fd, b[n:])
			if err == unix.EAGAIN {
				// Socket buffer full: block in the runtime poller.
				m = 0
				nfd, derr := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
				if derr != nil {
					return derr
				}
				f.slow = os.NewFile(uintptr(nfd), "mqtt")
				return nil
			}
			return err
		})
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		n += max(m, 0)
	}
	return n, nil
}

func (f *fdConn) Close() error {
	for {
		u := f.use.Load()
		if u < 0 {
			return nil // closed already
		}
		if f.use.CompareAndSwap(u, u|fdClosed) {
			break
		}
	}
	// No new user gets in; wait for those inside (one system call each).
	for f.use.Load() != fdClosed {
		runtime.Gosched()
	}
	if f.slow != nil {
		_ = f.slow.Close()
	}
	return unix.Close(int(f.fd))
}

func (f *fdConn) RemoteAddr() net.Addr            { return nil }
func (f *fdConn) SetReadDeadline(time.Time) error { return nil }
func (f *fdConn) SetWriteDeadline(t time.Time) error {
	f.wdl = 0
	if !t.IsZero() {
		f.wdl = t.UnixNano()
	}
	return nil
}

// unixNanoTime is the time of ns (0: the zero time, no deadline).
func unixNanoTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
