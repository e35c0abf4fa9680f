package mqtt

import "github.com/throngmq/throng/internal/conns"

// The connection registry (internal/conns): an MQTT connection is
// registered once its CONNECT is accepted and unregistered with its
// session's teardown (Server.unregister). It counts every PUBLISH it
// receives (onPublish) and sends (encodePublish), payload bytes. The
// entry is an atomic pointer in conn (8 bytes) because deliveries read it
// on other goroutines than the reader that sets it.

// rcAdministrativeAction is MQTT 5's DISCONNECT reason 0x98: the
// administrator closed the connection.
const rcAdministrativeAction = 0x98

// observe registers the connection (connect, once accepted; c.principal
// is set).
func (c *conn) observe() {
	c.isTLS = c.tlsState() != nil // c.nc is the writer's: Info may not read it
	c.ce.Store(c.s.cfg.Conns.Register(c))
}

// Info describes the connection from the fields CONNECT set, which do not
// change afterwards (conns.Conn; the registry keeps no copy).
func (c *conn) Info() conns.Info {
	proto := conns.MQTT3
	if c.version == 5 {
		proto = conns.MQTT5
	}
	in := conns.Info{Tenant: c.tenant(), Protocol: proto, ClientID: c.clientID, Remote: c.remote(), TLS: c.isTLS}
	if p := c.principal; p != nil {
		in.User, in.Device = p.User, p.Device
	}
	return in
}

// CloseByAdmin disconnects the client with 0x98 (administrative action;
// a 3.1.1 client is just closed); any goroutine (conns.Conn).
func (c *conn) CloseByAdmin(reason string) { c.kick(rcAdministrativeAction, reason) }

// Links lists the connection's subscriptions with their QoS, and the
// connection's unsettled and waiting QoS 1/2 deliveries on each (they are
// the connection's, not a subscription's: MQTT has one window per
// connection).
func (c *conn) Links() []conns.Link {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]conns.Link, 0, len(c.subs))
	unsettled, waiting := len(c.inflight), len(c.pending)
	for _, sub := range c.subs {
		qos := int(sub.QoS)
		out = append(out, conns.Link{Kind: "subscription", Address: sub.Filter, QoS: &qos, Unsettled: &unsettled, Backlog: &waiting})
	}
	return out
}

// LinkCount is the number of subscriptions (conns.Conn).
func (c *conn) LinkCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.subs)
}
