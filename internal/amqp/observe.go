package amqp

import (
	"crypto/tls"
	"sync/atomic"
	"time"

	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/conns"
)

// The connection registry (internal/conns): an AMQP connection is
// registered once open, with its container id, and counts every message
// it receives (link.publish: the encoded message's bytes) and sends
// (session: once its last frame is written). The administrator's close
// and the list of links go through the connection loop (conn.admin),
// the only goroutine that touches connection state.

// observe registers the connection (serve, before run).
func (c *conn) observe() { c.ce = c.s.cfg.Conns.Register(c) }

// Info describes the connection from what SASL and open set, which does
// not change afterwards (conns.Conn; the registry keeps no copy).
func (c *conn) Info() conns.Info {
	p := c.principal
	_, isTLS := c.nc.(*tls.Conn)
	return conns.Info{
		Tenant: p.Tenant, Protocol: conns.AMQP, ClientID: c.containerID,
		User: p.User, Device: p.Device, Remote: addrString(c.remote), TLS: isTLS,
	}
}

// CloseByAdmin closes the connection with amqp:connection:forced (any
// goroutine; conns.Conn).
func (c *conn) CloseByAdmin(reason string) {
	c.onLoop(func() {
		if !c.done {
			c.closeWith(&ConnError{Condition: frames.CondConnectionForced, Description: reason})
		}
	})
}

// onLoop runs f on the connection loop; it reports false if the loop has
// ended or does not take f within a second.
func (c *conn) onLoop(f func()) bool {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case c.admin <- f:
		return true
	case <-c.closed:
	case <-t.C:
	}
	return false
}

// Links lists the connection's links with their credit and unsettled
// deliveries (conns.Conn); nil when the loop is gone or busy.
func (c *conn) Links() []conns.Link {
	done := make(chan []conns.Link, 1)
	if !c.onLoop(func() {
		var out []conns.Link
		for _, s := range c.sessions {
			for _, l := range s.links {
				out = append(out, l.view())
			}
		}
		done <- out
	}) {
		return nil
	}
	select {
	case out := <-done:
		return out
	case <-c.closed:
		return nil
	}
}

// view is a link as the admin API shows it.
func (l *link) view() conns.Link {
	if l.isReceiver() {
		// We receive: the client sends to the address.
		credit := int64(int32(l.limit - l.count)) // serial arithmetic
		inflight := l.inflight
		return conns.Link{Kind: "receiver", Name: l.name, Address: l.addr, Credit: &credit, Unsettled: &inflight}
	}
	credit := int64(l.credit)
	unsettled := l.unsettled
	backlog := l.pending.len()
	return conns.Link{Kind: "sender", Name: l.name, Address: l.addr, Credit: &credit, Unsettled: &unsettled, Backlog: &backlog}
}

// LinkCount is the number of attached links (conns.Conn), kept by the
// loop as links attach and detach (nlinks), so a list waits for no loop.
func (c *conn) LinkCount() int { return int(c.nlinks.Load()) }

// linkCounter counts a connection's attached links: written by the loop,
// read by the registry's lists.
type linkCounter struct{ atomic.Int32 }
