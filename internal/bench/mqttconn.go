package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// A raw MQTT 3.1.1 / 5.0 client made for load: one reader goroutine per
// connection, writes coalesced in a bufio.Writer and flushed only when the
// sender is about to wait, no per-message allocation on the send path.
// paho (both libraries) allocates a packet and a token per publish and
// round-trips every write through channels; at 4→1 QoS 0 it became the
// bottleneck before the broker did. Only what the bench needs is here: no
// session resumption, no topic aliases, no retained or will messages.

// MQTT packet types (high nibble of the fixed header).
const (
	pktConnect    = 1
	pktConnack    = 2
	pktPublish    = 3
	pktPuback     = 4
	pktPubrec     = 5
	pktPubrel     = 6
	pktPubcomp    = 7
	pktSubscribe  = 8
	pktSuback     = 9
	pktPingreq    = 12
	pktPingresp   = 13
	pktDisconnect = 14
)

// mqttOptions configures one connection.
type mqttOptions struct {
	Addr      string
	LocalIP   net.IP // source address (nil: any)
	ClientID  string
	User      string
	Password  string
	Version   int // 3 (3.1.1) or 5
	KeepAlive time.Duration
	Timeout   time.Duration // dial + CONNACK
}

// mqttConn is one client connection.
type mqttConn struct {
	conn    net.Conn
	br      *bufio.Reader
	v5      bool
	recvMax int // the server's receive maximum (v5), else 65535

	wmu sync.Mutex
	bw  *bufio.Writer
	buf []byte // scratch for encoding, guarded by wmu

	// Set before readLoop starts.
	onPublish func(payload []byte)
	onAck     func(pid uint16) // PUBACK or PUBCOMP of our publish
	subacks   chan []byte      // SUBACK reason codes
}

// reasonError is a negative CONNACK / SUBACK / PUBACK code.
type reasonError struct {
	packet string
	code   byte
}

func (e reasonError) Error() string {
	return fmt.Sprintf("mqtt: %s refused: reason 0x%02x", e.packet, e.code)
}

func dialMQTT(ctx context.Context, o mqttOptions) (*mqttConn, error) {
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: o.Timeout}
	if o.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: o.LocalIP}
	}
	nc, err := d.DialContext(ctx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	c := &mqttConn{conn: nc, v5: o.Version == 5, recvMax: 65535}
	c.br = bufio.NewReaderSize(nc, 4096)
	c.bw = bufio.NewWriterSize(nc, 32*1024)
	_ = nc.SetDeadline(time.Now().Add(o.Timeout))
	if err := c.connect(o); err != nil {
		nc.Close()
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

func appendVarInt(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func (c *mqttConn) connect(o mqttOptions) error {
	var vh []byte
	vh = appendString(vh, "MQTT")
	level, flags := byte(4), byte(0x02) // clean session / clean start
	if c.v5 {
		level = 5
	}
	if o.User != "" {
		flags |= 0x80
	}
	if o.Password != "" {
		flags |= 0x40
	}
	vh = append(vh, level, flags)
	vh = binary.BigEndian.AppendUint16(vh, uint16(o.KeepAlive/time.Second))
	if c.v5 {
		vh = append(vh, 0) // no properties: receive maximum 65535
	}
	vh = appendString(vh, o.ClientID)
	if o.User != "" {
		vh = appendString(vh, o.User)
	}
	if o.Password != "" {
		vh = appendString(vh, o.Password)
	}
	pkt := appendVarInt([]byte{pktConnect << 4}, len(vh))
	pkt = append(pkt, vh...)
	if _, err := c.conn.Write(pkt); err != nil {
		return err
	}
	typ, body, err := c.readPacket(nil)
	if err != nil {
		return fmt.Errorf("mqtt: reading CONNACK: %w", err)
	}
	if typ>>4 != pktConnack || len(body) < 2 {
		return fmt.Errorf("mqtt: expected CONNACK, got packet type %d", typ>>4)
	}
	if body[1] != 0 {
		return reasonError{"CONNECT", body[1]}
	}
	if c.v5 && len(body) > 2 {
		props, _, err := readVarIntFrom(body[2:])
		if err == nil {
			c.parseConnackProps(props)
		}
	}
	return nil
}

// parseConnackProps reads the receive maximum; props starts at the
// property bytes proper.
func (c *mqttConn) parseConnackProps(p []byte) {
	for len(p) > 0 {
		id := p[0]
		p = p[1:]
		var n int
		switch id {
		case 0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A:
			n = 1
		case 0x13, 0x21, 0x22, 0x23:
			if len(p) >= 2 && id == 0x21 {
				c.recvMax = int(binary.BigEndian.Uint16(p))
			}
			n = 2
		case 0x02, 0x11, 0x18, 0x27:
			n = 4
		case 0x0B:
			_, used, err := readVarInt(p)
			if err != nil {
				return
			}
			n = used
		case 0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F:
			if len(p) < 2 {
				return
			}
			n = 2 + int(binary.BigEndian.Uint16(p))
		case 0x26:
			if len(p) < 2 {
				return
			}
			k := 2 + int(binary.BigEndian.Uint16(p))
			if len(p) < k+2 {
				return
			}
			n = k + 2 + int(binary.BigEndian.Uint16(p[k:]))
		default:
			return
		}
		if n > len(p) {
			return
		}
		p = p[n:]
	}
}

// readVarInt decodes a variable byte integer at the start of b.
func readVarInt(b []byte) (v, used int, err error) {
	mult := 1
	for i := 0; i < 4; i++ {
		if i >= len(b) {
			return 0, 0, io.ErrUnexpectedEOF
		}
		v += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
		mult *= 128
	}
	return 0, 0, errors.New("mqtt: malformed variable byte integer")
}

// readVarIntFrom decodes a length-prefixed property block and returns it
// and what follows.
func readVarIntFrom(b []byte) (props, rest []byte, err error) {
	n, used, err := readVarInt(b)
	if err != nil || used+n > len(b) {
		return nil, nil, errors.New("mqtt: malformed properties")
	}
	return b[used : used+n], b[used+n:], nil
}

// readPacket reads one packet into buf (grown as needed).
func (c *mqttConn) readPacket(buf []byte) (typ byte, body []byte, err error) {
	typ, err = c.br.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	n, mult := 0, 1
	for i := 0; ; i++ {
		b, err := c.br.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		n += int(b&0x7f) * mult
		if b&0x80 == 0 {
			break
		}
		if i == 3 {
			return 0, nil, errors.New("mqtt: malformed remaining length")
		}
		mult *= 128
	}
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return 0, nil, err
	}
	return typ, buf, nil
}

// writeLocked appends a packet to the write buffer; c.wmu must be held.
func (c *mqttConn) writeLocked(pkt []byte) error {
	_, err := c.bw.Write(pkt)
	return err
}

// publish buffers a PUBLISH; it is sent when the buffer fills or on Flush.
func (c *mqttConn) publish(topic string, qos byte, pid uint16, payload []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	rl := 2 + len(topic) + len(payload)
	if qos > 0 {
		rl += 2
	}
	if c.v5 {
		rl++
	}
	b := c.buf[:0]
	b = append(b, pktPublish<<4|qos<<1)
	b = appendVarInt(b, rl)
	b = appendString(b, topic)
	if qos > 0 {
		b = binary.BigEndian.AppendUint16(b, pid)
	}
	if c.v5 {
		b = append(b, 0)
	}
	c.buf = b
	if err := c.writeLocked(b); err != nil {
		return err
	}
	_, err := c.bw.Write(payload)
	return err
}

// flush sends what is buffered.
func (c *mqttConn) flush() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.bw.Flush()
}

// control writes a 2-byte-body packet (acks) and flushes it unless more
// input is already waiting to be read (then the read loop flushes later).
func (c *mqttConn) ack(first byte, pid uint16, flush bool) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeLocked([]byte{first, 2, byte(pid >> 8), byte(pid)}); err != nil {
		return err
	}
	if flush {
		return c.bw.Flush()
	}
	return nil
}

func (c *mqttConn) ping() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.writeLocked([]byte{pktPingreq << 4, 0}); err != nil {
		return err
	}
	return c.bw.Flush()
}

// subscribe sends SUBSCRIBE and waits for its SUBACK (readLoop must run).
func (c *mqttConn) subscribe(ctx context.Context, filter string, qos byte) error {
	var b []byte
	b = binary.BigEndian.AppendUint16(b, 1)
	if c.v5 {
		b = append(b, 0)
	}
	b = appendString(b, filter)
	b = append(b, qos)
	pkt := appendVarInt([]byte{pktSubscribe<<4 | 2}, len(b))
	pkt = append(pkt, b...)
	c.wmu.Lock()
	err := c.writeLocked(pkt)
	if err == nil {
		err = c.bw.Flush()
	}
	c.wmu.Unlock()
	if err != nil {
		return err
	}
	select {
	case codes := <-c.subacks:
		if len(codes) == 0 || codes[0] >= 0x80 {
			code := byte(0x80)
			if len(codes) > 0 {
				code = codes[0]
			}
			return reasonError{"SUBSCRIBE " + filter, code}
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("mqtt: no SUBACK within 10s")
	}
}

// disconnect sends DISCONNECT and closes the connection.
func (c *mqttConn) disconnect() {
	c.wmu.Lock()
	_ = c.writeLocked([]byte{pktDisconnect << 4, 0})
	_ = c.bw.Flush()
	c.wmu.Unlock()
	c.conn.Close()
}

// readLoop reads packets until the connection fails or closes; it answers
// QoS 1/2 flows and calls the handlers.
func (c *mqttConn) readLoop() error {
	var buf []byte
	for {
		typ, body, err := c.readPacket(buf)
		if err != nil {
			return err
		}
		buf = body
		more := c.br.Buffered() > 0
		switch typ >> 4 {
		case pktPublish:
			qos := (typ >> 1) & 3
			if len(body) < 2 {
				return errors.New("mqtt: short PUBLISH")
			}
			tl := int(binary.BigEndian.Uint16(body))
			p := body[2:]
			if len(p) < tl {
				return errors.New("mqtt: short PUBLISH topic")
			}
			p = p[tl:]
			var pid uint16
			if qos > 0 {
				if len(p) < 2 {
					return errors.New("mqtt: short PUBLISH")
				}
				pid = binary.BigEndian.Uint16(p)
				p = p[2:]
			}
			if c.v5 {
				_, rest, err := readVarIntFrom(p)
				if err != nil {
					return err
				}
				p = rest
			}
			if c.onPublish != nil {
				c.onPublish(p)
			}
			switch qos {
			case 1:
				err = c.ack(pktPuback<<4, pid, !more)
			case 2:
				err = c.ack(pktPubrec<<4, pid, !more)
			}
		case pktPuback, pktPubcomp:
			if len(body) >= 3 && body[2] >= 0x80 {
				return reasonError{"PUBLISH", body[2]}
			}
			if len(body) >= 2 && c.onAck != nil {
				c.onAck(binary.BigEndian.Uint16(body))
			}
		case pktPubrec:
			if len(body) >= 3 && body[2] >= 0x80 {
				return reasonError{"PUBLISH", body[2]}
			}
			if len(body) >= 2 {
				err = c.ack(pktPubrel<<4|2, binary.BigEndian.Uint16(body), !more)
			}
		case pktPubrel:
			if len(body) >= 2 {
				err = c.ack(pktPubcomp<<4, binary.BigEndian.Uint16(body), !more)
			}
		case pktSuback:
			p := body[min(2, len(body)):]
			if c.v5 {
				if _, rest, e := readVarIntFrom(p); e == nil {
					p = rest
				}
			}
			if c.subacks != nil {
				c.subacks <- append([]byte(nil), p...)
			}
		case pktPingresp:
		case pktDisconnect:
			code := byte(0)
			if len(body) > 0 {
				code = body[0]
			}
			return reasonError{"connection (DISCONNECT)", code}
		}
		if err != nil {
			return err
		}
		if !more {
			// Flush acks coalesced while input was pending.
			if err := c.flush(); err != nil {
				return err
			}
		}
	}
}
