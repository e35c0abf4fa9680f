package soak

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"

	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// paho.mqtt.golang (v1.5.1, eclipse-paho/paho.mqtt.golang#788, open)
// keeps a QoS 2 PUBLISH in its store until PUBCOMP: it answers PUBREC
// with PUBREL but never stores that PUBREL. When the connection ends
// after the broker handled the PUBREL and before the PUBCOMP arrived (a
// kill -9 of the broker right after its session write), the client
// resumes the session by sending the PUBLISH again, with DUP — after
// PUBREL, which MQTT 3.1.1 §4.3.3 forbids ("MUST NOT re-send the PUBLISH
// once it has sent the corresponding PUBREL"). The broker completed that
// exchange and forgot the packet id, as it must (§4.3.3: after PUBCOMP
// a PUBLISH with that id is a new publication — a compliant client may
// reuse it at once): it routes the message again, and the subscriber
// gets it twice. That was issue 11's last "QoS 2 under a new packet id"
// failure of the soak (kill9-purge: the purge slows the session write
// down, so a kill often lands between the write and the PUBCOMP): a run
// of up to 16 messages (the publisher's window) stored and delivered a
// second time. Any broker does the same with this client.
//
// The soak checks the broker, so its MQTT 3.1.1 clients behave as the
// protocol requires: pubrelConn reads what the broker sends and, for each
// PUBREC, replaces the stored PUBLISH by a PUBREL before the client sees
// the PUBREC, so that a resumed session sends PUBREL (the client's own
// resume code handles stored PUBRELs). docs/reliability.md.

// pubrelFix opens connections for one paho.mqtt.golang client that keep
// its store right on PUBREC. addr, when not nil, says where to connect
// (the client's current node of a cluster) instead of the broker URL.
func pubrelFix(store mqtt3.Store, addr func() string) mqtt3.OpenConnectionFunc {
	return func(uri *url.URL, o mqtt3.ClientOptions) (net.Conn, error) {
		d := net.Dialer{Timeout: o.ConnectTimeout}
		host := uri.Host
		if addr != nil {
			host = addr()
		}
		nc, err := d.Dial("tcp", host)
		if err != nil {
			return nil, err
		}
		return &pubrelConn{Conn: nc, store: store}, nil
	}
}

// pubrelConn follows the MQTT packets read from the broker.
type pubrelConn struct {
	net.Conn
	store mqtt3.Store

	// seen, when set, is told the type of each packet as its header is
	// read; false ends the connection there, as if the packets read with
	// it were lost (tests).
	seen func(typ byte) bool

	mu   sync.Mutex
	hdr  []byte // fixed header and the first two body bytes of the packet being read
	need int    // bytes of the current packet still to come once hdr is complete
}

var errCut = errors.New("soak: connection cut (test)")

func (c *pubrelConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 && !c.follow(b[:n]) {
		c.Conn.Close()
		return 0, errCut
	}
	return n, err
}

// follow parses the stream: fixed header (type, remaining length), then
// for PUBREC the packet id. false: seen cut the connection.
func (c *pubrelConn) follow(b []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(b) > 0 {
		if c.need > 0 { // the rest of a packet already seen
			k := min(c.need, len(b))
			c.need -= k
			b = b[k:]
			continue
		}
		c.hdr = append(c.hdr, b[0])
		b = b[1:]
		rem, hl, ok := remaining(c.hdr)
		if !ok {
			continue // more header bytes to come
		}
		typ := c.hdr[0] >> 4
		if c.seen != nil && (len(c.hdr) == hl) && !c.seen(typ) {
			return false
		}
		if typ == packets.Pubrec && rem >= 2 {
			if len(c.hdr) < hl+2 {
				continue // the packet id comes next
			}
			id := binary.BigEndian.Uint16(c.hdr[hl : hl+2])
			rel := packets.NewControlPacket(packets.Pubrel).(*packets.PubrelPacket)
			rel.MessageID = id
			if c.store != nil { // nil: paho as it is (tests)
				c.store.Put(fmt.Sprintf("o.%d", id), rel) // the key paho uses for an outbound id
			}
			c.need = rem - 2
		} else {
			c.need = rem
		}
		c.hdr = c.hdr[:0]
	}
	return true
}

// remaining decodes the remaining length of a fixed header: the length,
// the header's size, and whether it is complete.
func remaining(h []byte) (int, int, bool) {
	v, mult := 0, 1
	for i := 1; i < len(h) && i <= 4; i++ {
		v += int(h[i]&0x7f) * mult
		if h[i]&0x80 == 0 {
			return v, i + 1, true
		}
		mult *= 128
	}
	return 0, 0, false
}
