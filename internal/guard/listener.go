package guard

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"sync"
	"time"
)

// Refusal is how a listener refuses a connection.
type Refusal int

const (
	// RefuseClose closes the connection: MQTT (before CONNECT there is
	// nothing to answer) and every TLS listener (the refusal comes before
	// the TLS handshake, so nothing readable could be sent).
	RefuseClose Refusal = iota
	// RefuseAMQP sends the AMQP protocol header and closes: the client
	// reads a well-formed start and then the end of the connection.
	RefuseAMQP
	// RefuseHTTP answers 429 with a JSON error body and Retry-After.
	RefuseHTTP
)

// Handshake is how a listener's connections end their handshake.
type Handshake int

const (
	// Reported: the front-end calls HandshakeDone (MQTT, AMQP). The
	// connection is handed on unwrapped.
	Reported Handshake = iota
	// FirstByte: the handshake ends with the first byte received (HTTP,
	// WebSocket); the connection is wrapped to see it.
	FirstByte
)

// Listener returns ln guarded: Accept returns admitted connections only
// and refuses the others as how says. protocol labels the refusals
// (mqtt, amqp, http, admin).
func (g *Guard) Listener(ln net.Listener, protocol string, how Refusal, hs Handshake) net.Listener {
	return &listener{Listener: ln, g: g, how: how, hs: hs, protocol: protocol}
}

type listener struct {
	net.Listener
	g        *Guard
	how      Refusal
	hs       Handshake
	protocol string
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		reason, src, retry := l.g.admit(sourceOf(c.RemoteAddr()))
		if reason == "" {
			if l.hs == FirstByte {
				return &firstByteConn{Conn: c, g: l.g, src: src}, nil
			}
			l.g.track(c, src)
			return c, nil
		}
		l.g.refused.WithLabelValues(l.protocol, reason).Inc()
		l.g.warn(l.protocol, reason, c.RemoteAddr())
		refuse(c, l.how, retry)
	}
}

// warn logs refusals, at most one line every 10 s per node: a flood must
// not flood the log too (the metric counts every one).
func (g *Guard) warn(protocol, reason string, remote net.Addr) {
	now := g.cfg.Now()
	g.mu.Lock()
	if now.Sub(g.lastWarn) < 10*time.Second {
		g.mu.Unlock()
		return
	}
	g.lastWarn = now
	g.mu.Unlock()
	g.log.Warn("connections refused (further refusals in the next 10s only counted in throng_connections_refused_total)",
		"protocol", protocol, "reason", reason, "remote", remote.String())
}

// amqpHeader is the AMQP 1.0 protocol header (id 0).
var amqpHeader = []byte{'A', 'M', 'Q', 'P', 0, 1, 0, 0}

// lingering bounds the refused connections being drained at once; beyond
// it they are closed at once.
var lingering = make(chan struct{}, 256)

// refuse answers and closes a refused connection. Bytes the client sent
// are read (for up to a second) before the close, so that its kernel does
// not discard the answer on a reset.
func refuse(c net.Conn, how Refusal, retry time.Duration) {
	var answer []byte
	switch how {
	case RefuseAMQP:
		answer = amqpHeader
	case RefuseHTTP:
		secs := max(1, int((retry+time.Second-1)/time.Second))
		const body = `{"error":{"code":"too_many_connections","message":"too many connections from this address or to this node; retry later"}}` + "\n"
		answer = []byte("HTTP/1.1 429 Too Many Requests\r\n" +
			"Content-Type: application/json\r\n" +
			"Retry-After: " + strconv.Itoa(secs) + "\r\n" +
			"Connection: close\r\n" +
			"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	}
	if answer == nil {
		_ = c.Close()
		return
	}
	select {
	case lingering <- struct{}{}:
	default:
		_ = c.Close()
		return
	}
	go func() {
		defer func() { <-lingering }()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if how == RefuseHTTP {
			// HTTP clients take a response that comes before their request
			// for a broken connection (Go's: "unsolicited response"): the
			// request's head is read first (what arrives within the second,
			// up to 16 KiB).
			readHead(c)
		}
		if _, err := c.Write(answer); err == nil {
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
				_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
			}
		}
		_ = c.Close()
	}()
}

// readHead reads until the end of an HTTP request head ("\r\n\r\n"),
// 16 KiB, an error or the connection's deadline.
func readHead(c net.Conn) {
	buf := make([]byte, 16<<10)
	n := 0
	for n < len(buf) {
		m, err := c.Read(buf[n:])
		n += m
		if bytes.Contains(buf[max(0, n-m-3):n], []byte("\r\n\r\n")) || err != nil {
			return
		}
	}
}

// firstByteConn is an HTTP connection in its handshake until its first
// byte arrives (or it closes).
type firstByteConn struct {
	net.Conn
	g    *Guard
	src  *source
	once sync.Once
}

func (c *firstByteConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 || err != nil {
		c.once.Do(func() { c.g.release(c.src) })
	}
	return n, err
}

func (c *firstByteConn) Close() error {
	c.once.Do(func() { c.g.release(c.src) })
	return c.Conn.Close()
}

// CloseWrite lets net/http shut the sending side down before a close (it
// looks for the method on the connection).
func (c *firstByteConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
