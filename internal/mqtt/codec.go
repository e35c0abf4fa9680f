package mqtt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/message"
)

// ReasonError is an MQTT reason code carried as a Go error: the layer that
// detects a problem returns one, and the connection turns it into the
// CONNACK, PUBACK, SUBACK or DISCONNECT reason code (v5) or the v3.1.1
// equivalent.
type ReasonError struct {
	Code   byte
	Reason string
	Err    error // underlying cause, if any
}

func (e *ReasonError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("mqtt: %s (0x%02x): %v", e.Reason, e.Code, e.Err)
	}
	return fmt.Sprintf("mqtt: %s (0x%02x)", e.Reason, e.Code)
}

func (e *ReasonError) Unwrap() error { return e.Err }

func reason(code byte, text string, err error) *ReasonError {
	return &ReasonError{Code: code, Reason: text, Err: err}
}

// MQTT 5 reason codes used by the server.
const (
	rcSuccess              = 0x00
	rcNoMatchingSubs       = 0x10
	rcNoSubscriptionExist  = 0x11
	rcUnspecified          = 0x80
	rcMalformed            = 0x81
	rcProtocolError        = 0x82
	rcImplementation       = 0x83
	rcUnsupportedVersion   = 0x84
	rcClientIDInvalid      = 0x85
	rcBadCredentials       = 0x86
	rcNotAuthorized        = 0x87
	rcServerUnavailable    = 0x88
	rcServerBusy           = 0x89
	rcServerShuttingDown   = 0x8B
	rcBadAuthMethod        = 0x8C
	rcKeepAliveTimeout     = 0x8D
	rcSessionTakenOver     = 0x8E
	rcTopicFilterInvalid   = 0x8F
	rcTopicNameInvalid     = 0x90
	rcPacketIDNotFound     = 0x92
	rcReceiveMaxExceeded   = 0x93
	rcTopicAliasInvalid    = 0x94
	rcPacketTooLarge       = 0x95
	rcQuotaExceeded        = 0x97
	rcQoSNotSupported      = 0x9B
	rcSharedSubUnsupported = 0x9E
)

// v3ConnackCode maps a v5 CONNACK reason code onto the v3.1.1 return codes
// [MQTT-3.2.2.3].
func v3ConnackCode(rc byte) byte {
	switch rc {
	case rcSuccess:
		return 0x00
	case rcUnsupportedVersion:
		return 0x01
	case rcClientIDInvalid:
		return 0x02
	case rcServerUnavailable, rcServerBusy, rcServerShuttingDown, rcQuotaExceeded:
		return 0x03
	case rcBadCredentials, rcBadAuthMethod:
		return 0x04
	default:
		return 0x05 // not authorized
	}
}

// readBufSize is the size of the pooled read buffer a connection borrows
// while it has bytes to parse; an idle connection holds none.
const readBufSize = 4096

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// packetReader reads MQTT packets from a connection. While the
// connection is idle (nothing buffered at a packet boundary) it returns
// its buffer to the pool and blocks on a one-byte read, so an idle
// connection costs no read buffer. A packet's body grows with the bytes
// that arrive, never to the remaining length a client merely claims.
type packetReader struct {
	conn io.Reader
	buf  *[]byte // nil while idle
	r, w int
	one  [1]byte

	// onStart, if set, runs before the first read from the connection
	// that a started packet needs (not when the packet was buffered
	// whole): the reader goroutine sets the read timeout there.
	onStart  func()
	inPacket bool // the first byte of a packet was read
	waited   bool // onStart ran for this packet

	// budget, if set, is charged for body bytes (CONNECT before
	// authentication); held is what this reader has charged.
	budget *byteBudget
	held   int64
}

// byteBudget bounds the memory a group of readers may allocate for packet
// bodies (connections in their handshake).
type byteBudget struct {
	used atomic.Int64
	max  int64
}

// take charges n bytes; false if that would exceed the budget.
func (b *byteBudget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *byteBudget) give(n int64) { b.used.Add(-n) }

// charge takes n bytes from the reader's budget, if it has one.
func (pr *packetReader) charge(n int) bool {
	if pr.budget == nil {
		return true
	}
	if !pr.budget.take(int64(n)) {
		return false
	}
	pr.held += int64(n)
	return true
}

// refund returns what the reader has charged and stops charging.
func (pr *packetReader) refund() {
	if pr.budget != nil {
		pr.budget.give(pr.held)
		pr.budget, pr.held = nil, 0
	}
}

// waiting runs onStart once per packet, before a blocking read that the
// started packet needs.
func (pr *packetReader) waiting() {
	if pr.inPacket && !pr.waited && pr.onStart != nil {
		pr.waited = true
		pr.onStart()
	}
}

func (pr *packetReader) release() {
	if pr.buf != nil && pr.r == pr.w {
		readBufPool.Put(pr.buf)
		pr.buf = nil
		pr.r, pr.w = 0, 0
	}
}

func (pr *packetReader) readByte() (byte, error) {
	if pr.r < pr.w {
		b := (*pr.buf)[pr.r]
		pr.r++
		return b, nil
	}
	if pr.buf == nil {
		// Idle: wait for one byte without holding a buffer.
		if _, err := io.ReadFull(pr.conn, pr.one[:]); err != nil {
			return 0, err
		}
		pr.buf = readBufPool.Get().(*[]byte)
		pr.r, pr.w = 0, 0
		return pr.one[0], nil
	}
	pr.r, pr.w = 0, 0
	pr.waiting()
	n, err := pr.conn.Read(*pr.buf)
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		return 0, err
	}
	pr.w = n
	pr.r = 1
	return (*pr.buf)[0], nil
}

// readFull fills dst from the buffer, then directly from the connection.
func (pr *packetReader) readFull(dst []byte) error {
	n := 0
	if pr.buf != nil {
		n = copy(dst, (*pr.buf)[pr.r:pr.w])
		pr.r += n
	}
	if n == len(dst) {
		return nil
	}
	if len(dst)-n < readBufSize/2 && pr.buf != nil {
		// Small remainder: refill the buffer to batch the next packets.
		for n < len(dst) {
			pr.r, pr.w = 0, 0
			pr.waiting()
			m, err := pr.conn.Read(*pr.buf)
			if m == 0 && err != nil {
				return err
			}
			pr.w = m
			c := copy(dst[n:], (*pr.buf)[:m])
			pr.r = c
			n += c
		}
		return nil
	}
	pr.waiting()
	_, err := io.ReadFull(pr.conn, dst[n:])
	return err
}

var (
	errMalformed = reason(rcMalformed, "malformed packet", nil)
	errTooLarge  = reason(rcPacketTooLarge, "packet too large", nil)
	// errBudget: the handshake memory budget is spent (Config.HandshakeMemory).
	errBudget = reason(rcServerBusy, "server busy", nil)
)

// readPacket reads one packet: the fixed header and the body. The body is
// freshly allocated because decoded strings and payloads alias it; it
// grows with the bytes received (see readBody).
func (pr *packetReader) readPacket(maxSize int) (packets.FixedHeader, []byte, error) {
	var fh packets.FixedHeader
	pr.release()
	pr.inPacket, pr.waited = false, false
	b, err := pr.readByte()
	if err != nil {
		return fh, nil, err
	}
	pr.inPacket = true
	if err := fh.Decode(b); err != nil {
		return fh, nil, codeError(err)
	}
	if fh.Type == packets.Reserved || fh.Type > packets.Auth {
		return fh, nil, errMalformed
	}
	// Remaining length: a variable byte integer of at most four bytes
	// [MQTT-1.5.5].
	var rem, shift int
	for i := 0; ; i++ {
		if i == 4 {
			return fh, nil, errMalformed
		}
		c, err := pr.readByte()
		if err != nil {
			return fh, nil, err
		}
		rem |= int(c&0x7f) << shift
		if c&0x80 == 0 {
			break
		}
		shift += 7
	}
	fh.Remaining = rem
	if maxSize > 0 && 1+varintLen(rem)+rem > maxSize {
		return fh, nil, errTooLarge
	}
	body, err := pr.readBody(rem)
	if err != nil {
		return fh, nil, err
	}
	pr.inPacket = false
	return fh, body, nil
}

// readBody reads a body of rem bytes. It starts with what is buffered (at
// least readBufSize) and doubles as the bytes arrive, so a client that
// claims a large packet and sends little costs little: at most about
// twice what it sent.
func (pr *packetReader) readBody(rem int) ([]byte, error) {
	avail := 0
	if pr.buf != nil {
		avail = pr.w - pr.r
	}
	size := min(rem, max(avail, readBufSize))
	if !pr.charge(size) {
		return nil, errBudget
	}
	body := make([]byte, size)
	if err := pr.readFull(body); err != nil {
		return nil, err
	}
	for len(body) < rem {
		n := min(rem, 2*len(body))
		if !pr.charge(n - len(body)) { // the old body becomes garbage
			return nil, errBudget
		}
		nb := make([]byte, n)
		copy(nb, body)
		old := len(body)
		body = nb
		if err := pr.readFull(body[old:]); err != nil {
			return nil, err
		}
	}
	return body, nil
}

// peekVersion reads the start of a CONNECT body (protocol name and
// level) to learn the client's protocol version, for answering a CONNECT
// that is refused before it was read whole; 0 if it cannot tell.
func (pr *packetReader) peekVersion() byte {
	var b [7]byte // name length, "MQTT", level
	if err := pr.readFull(b[:]); err != nil || b[0] != 0 || b[1] != 4 || string(b[2:6]) != "MQTT" {
		return 0
	}
	return b[6]
}

func varintLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	}
	return 4
}

// codeError converts a mochi packets.Code (or wrapped one) into a
// ReasonError.
func codeError(err error) error {
	var c packets.Code
	if errors.As(err, &c) {
		return reason(c.Code, c.Reason, nil)
	}
	return reason(rcMalformed, "malformed packet", err)
}

// decodePacket decodes the body of a packet of the given protocol version
// into pk. Malformed input yields a ReasonError; a panic in the codec on
// hostile input is turned into one too.
func decodePacket(fh packets.FixedHeader, body []byte, version byte, pk *packets.Packet) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = reason(rcMalformed, "malformed packet", fmt.Errorf("decoder: %v", r))
		}
	}()
	pk.FixedHeader = fh
	pk.ProtocolVersion = version
	switch fh.Type {
	case packets.Connect:
		err = pk.ConnectDecode(body)
	case packets.Publish:
		err = pk.PublishDecode(body)
	case packets.Puback:
		err = pk.PubackDecode(body)
	case packets.Pubrec:
		err = pk.PubrecDecode(body)
	case packets.Pubrel:
		err = pk.PubrelDecode(body)
	case packets.Pubcomp:
		err = pk.PubcompDecode(body)
	case packets.Subscribe:
		err = pk.SubscribeDecode(body)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(body)
	case packets.Pingreq:
		if len(body) != 0 {
			err = errMalformed
		}
	case packets.Disconnect:
		err = pk.DisconnectDecode(body)
	case packets.Auth:
		if version != 5 {
			return reason(rcProtocolError, "AUTH is an MQTT 5 packet", nil)
		}
		err = pk.AuthDecode(body)
	default:
		// CONNACK, SUBACK, UNSUBACK, PINGRESP are server-to-client only.
		return reason(rcProtocolError, "packet type not allowed from a client", nil)
	}
	if err != nil {
		return codeError(err)
	}
	return nil
}

var encBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encodePacket encodes pk into a new byte slice sized to fit.
func encodePacket(pk *packets.Packet) ([]byte, error) {
	buf := encBufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer func() {
		if buf.Cap() <= 64<<10 {
			encBufPool.Put(buf)
		}
	}()
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackEncode(buf)
	case packets.Publish:
		err = pk.PublishEncode(buf)
	case packets.Puback:
		err = pk.PubackEncode(buf)
	case packets.Pubrec:
		err = pk.PubrecEncode(buf)
	case packets.Pubrel:
		err = pk.PubrelEncode(buf)
	case packets.Pubcomp:
		err = pk.PubcompEncode(buf)
	case packets.Suback:
		err = pk.SubackEncode(buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(buf)
	case packets.Auth:
		err = pk.AuthEncode(buf)
	default:
		err = fmt.Errorf("mqtt: cannot encode packet type %d", pk.FixedHeader.Type)
	}
	if err != nil {
		return nil, err
	}
	return bytes.Clone(buf.Bytes()), nil
}

// netConn is what a connection needs from its transport.
type netConn interface {
	io.ReadWriteCloser
	RemoteAddr() net.Addr
	SetReadDeadline(t time.Time) error
	SetWriteDeadline(t time.Time) error
}

// encodeAck encodes PUBACK, PUBREC, PUBREL and PUBCOMP. The codec omits
// reason codes below 0x80 without properties, which would turn 0x10 (no
// matching subscribers) into success; this writes them [MQTT-3.4.2.1].
func encodeAck(typ byte, version byte, id uint16, rc byte, text string) []byte {
	flags := byte(0)
	if typ == packets.Pubrel {
		flags = 0x02
	}
	if version != 5 || (rc == 0 && text == "") {
		return []byte{typ<<4 | flags, 2, byte(id >> 8), byte(id)}
	}
	var props []byte
	if text != "" {
		if len(text) > 1024 {
			text = text[:1024]
		}
		props = append(props, 0x1F, byte(len(text)>>8), byte(len(text)))
		props = append(props, text...)
	}
	body := []byte{byte(id >> 8), byte(id), rc}
	body = appendVarint(body, len(props))
	body = append(body, props...)
	out := []byte{typ<<4 | flags}
	out = appendVarint(out, len(body))
	return append(out, body...)
}

func appendVarint(b []byte, n int) []byte {
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

// noV5Properties reports whether an MQTT 5 PUBLISH of m carries no
// properties (see fillPublish): then it is encoded like 3.1.1 plus an
// empty property length.
func noV5Properties(m *message.Message) bool {
	if m.ContentType != "" || m.ReplyTo != "" || m.CorrelationID != nil || !m.Expiry.IsZero() ||
		(m.BodyKind != message.BodyData && m.BodyKind != message.BodyAMQPString) {
		return false
	}
	for k := range m.Properties {
		if len(k) < len(propsPrefix) || k[:len(propsPrefix)] != propsPrefix || k == propFormat {
			return false // a user property, or the payload format indicator
		}
	}
	return true
}

// appendPublish appends a PUBLISH without properties [MQTT-3.3]: fixed
// header, remaining length, topic name, packet id (QoS > 0), for version 5
// a zero property length, and the payload. ok is false when the packet
// cannot be encoded (topic over 65535 bytes, packet over the protocol's
// 256 MiB): the caller falls back to the codec, which reports it.
func appendPublish(dst []byte, version, qos byte, retain, dup bool, topic string, id uint16, payload []byte) ([]byte, bool) {
	if len(topic) > 0xffff {
		return dst, false
	}
	n := 2 + len(topic) + len(payload)
	if qos > 0 {
		n += 2
	}
	if version == 5 {
		n++
	}
	if n > 268435455 {
		return dst, false
	}
	h := byte(packets.Publish<<4) | qos<<1
	if retain {
		h |= 1
	}
	if dup {
		h |= 1 << 3
	}
	if dst == nil {
		dst = make([]byte, 0, n+5)
	}
	dst = append(dst, h)
	for {
		b := byte(n & 0x7f)
		n >>= 7
		if n > 0 {
			b |= 0x80
		}
		dst = append(dst, b)
		if n == 0 {
			break
		}
	}
	dst = append(dst, byte(len(topic)>>8), byte(len(topic)))
	dst = append(dst, topic...)
	if qos > 0 {
		dst = append(dst, byte(id>>8), byte(id))
	}
	if version == 5 {
		dst = append(dst, 0)
	}
	return append(dst, payload...), true
}
