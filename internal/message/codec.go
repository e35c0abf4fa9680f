package message

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// The stored encoding is a version byte followed by tagged fields, each a
// one-byte tag and a value. Unknown tags are an error (the encoding is ours
// and versioned). It is deliberately simple: a decoder checks every length
// against the remaining input before slicing, never allocates from a length
// alone, and never panics.
//
// Version 2 adds two tags, and is written only when one of them is used,
// so that every other message is encoded exactly as version 1 (and read
// by older nodes):
//   - tagBodyIn: the body is a range of Native (an AMQP data section
//     inside the bare message), stored once instead of twice;
//   - tagLarge: Native and Body are in the chunk store (Message.Large);
//     neither tagNative nor a body tag may appear with it.
const (
	version1 = 1
	version2 = 2
)

const (
	tagEnd byte = iota
	tagMessageID
	tagCorrelationID
	tagUserID
	tagTo
	tagSubject
	tagReplyTo
	tagContentType
	tagContentEncoding
	tagGroupID
	tagCreation
	tagExpiry
	tagTTL
	tagPriority
	tagDurable
	tagProperty
	tagBody
	tagNative
	tagOrigin
	tagBodyIn // version 2: body kind, uvarint offset and length within Native
	tagLarge  // version 2: see appendLarge
)

// value kinds inside MessageID, CorrelationID and properties
const (
	kindNil byte = iota
	kindString
	kindUint
	kindInt
	kindBytes
	kindUUID
	kindBool
	kindFloat
	// 32-bit integers keep their width, so that an AMQP int (Hono's qos,
	// ttd and status application properties) stays an int after the
	// store or another node, not a long.
	kindInt32
	kindUint32
)

// ErrDecode is wrapped by every decoding error.
var ErrDecode = errors.New("message: malformed encoding")

// MaxProperties bounds the application properties of one message.
const MaxProperties = 1024

// Append appends the encoding of m to b.
func (m *Message) Append(b []byte) []byte {
	bodyIn, in := m.BodyInNative()
	if m.Large != nil || in {
		b = append(b, version2)
	} else {
		b = append(b, version1)
	}
	if m.MessageID != nil {
		b = appendValue(append(b, tagMessageID), m.MessageID)
	}
	if m.CorrelationID != nil {
		b = appendValue(append(b, tagCorrelationID), m.CorrelationID)
	}
	b = appendBytesField(b, tagUserID, m.UserID)
	b = appendStringField(b, tagTo, m.To)
	b = appendStringField(b, tagSubject, m.Subject)
	b = appendStringField(b, tagReplyTo, m.ReplyTo)
	b = appendStringField(b, tagContentType, m.ContentType)
	b = appendStringField(b, tagContentEncoding, m.ContentEncoding)
	b = appendStringField(b, tagGroupID, m.GroupID)
	if !m.CreationTime.IsZero() {
		b = binary.AppendVarint(append(b, tagCreation), m.CreationTime.UnixMilli())
	}
	if !m.Expiry.IsZero() {
		b = binary.AppendVarint(append(b, tagExpiry), m.Expiry.UnixMilli())
	}
	if m.TTL >= time.Millisecond {
		b = binary.AppendVarint(append(b, tagTTL), int64(m.TTL/time.Millisecond))
	}
	if m.Priority != 0 {
		b = append(b, tagPriority, m.Priority)
	}
	if m.Durable {
		b = append(b, tagDurable)
	}
	b = appendStringField(b, tagOrigin, m.Origin)
	for k, v := range m.Properties {
		b = appendString(append(b, tagProperty), k)
		b = appendValue(b, v)
	}
	if m.Large != nil {
		return append(appendLarge(b, m), tagEnd)
	}
	if m.NativeFormat != NativeNone {
		b = append(b, tagNative, byte(m.NativeFormat))
		b = appendBytes(b, m.Native)
	}
	if in {
		b = append(b, tagBodyIn, byte(m.BodyKind))
		b = binary.AppendUvarint(b, uint64(bodyIn))
		b = binary.AppendUvarint(b, uint64(len(m.Body)))
	} else {
		b = append(b, tagBody, byte(m.BodyKind))
		b = appendBytes(b, m.Body)
	}
	return append(b, tagEnd)
}

// appendLarge encodes a chunk reference: tagLarge, native format, body
// kind, subject, uvarint first sequence, chunks, native length, body
// length, and varint body offset in Native (-1: none).
func appendLarge(b []byte, m *Message) []byte {
	l := m.Large
	b = append(b, tagLarge, byte(m.NativeFormat), byte(m.BodyKind))
	b = appendString(b, l.Subject)
	b = binary.AppendUvarint(b, l.First)
	b = binary.AppendUvarint(b, uint64(l.Chunks))
	b = binary.AppendUvarint(b, uint64(l.NativeLen))
	b = binary.AppendUvarint(b, uint64(l.BodyLen))
	return binary.AppendVarint(b, int64(l.BodyIn))
}

// Marshal returns the encoding of m.
func (m *Message) Marshal() []byte {
	n := 48 + len(m.To) + len(m.ReplyTo)
	if m.Large == nil {
		n += len(m.Native)
		if _, in := m.BodyInNative(); !in {
			n += len(m.Body)
		}
	}
	return m.Append(make([]byte, 0, n))
}

func appendStringField(b []byte, tag byte, s string) []byte {
	if s == "" {
		return b
	}
	return appendString(append(b, tag), s)
}

func appendBytesField(b []byte, tag byte, p []byte) []byte {
	if p == nil {
		return b
	}
	return appendBytes(append(b, tag), p)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b []byte, p []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(p)))
	return append(b, p...)
}

func appendValue(b []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(b, kindNil)
	case string:
		return appendString(append(b, kindString), v)
	case uint64:
		return binary.AppendUvarint(append(b, kindUint), v)
	case uint32:
		return binary.AppendUvarint(append(b, kindUint32), uint64(v))
	case uint:
		return binary.AppendUvarint(append(b, kindUint), uint64(v))
	case int64:
		return binary.AppendVarint(append(b, kindInt), v)
	case int:
		return binary.AppendVarint(append(b, kindInt), int64(v))
	case int32:
		return binary.AppendVarint(append(b, kindInt32), int64(v))
	case []byte:
		return appendBytes(append(b, kindBytes), v)
	case [16]byte:
		return append(append(b, kindUUID), v[:]...)
	case bool:
		if v {
			return append(b, kindBool, 1)
		}
		return append(b, kindBool, 0)
	case float64:
		return binary.BigEndian.AppendUint64(append(b, kindFloat), math.Float64bits(v))
	case float32:
		return binary.BigEndian.AppendUint64(append(b, kindFloat), math.Float64bits(float64(v)))
	default:
		return appendString(append(b, kindString), fmt.Sprint(v))
	}
}

// decodeLarge reads what appendLarge wrote.
func (m *Message) decodeLarge(d *decoder) {
	m.NativeFormat = NativeFormat(d.byte())
	m.BodyKind = BodyKind(d.byte())
	l := &Large{Subject: d.string(), First: d.uvarint()}
	chunks, nl, bl := d.uvarint(), d.uvarint(), d.uvarint()
	in := d.varint()
	if d.err != nil {
		return
	}
	switch {
	case chunks == 0 || chunks > MaxSize || nl > MaxSize || bl > MaxSize:
		d.fail("chunk reference out of range")
	case in < -1 || (in >= 0 && (bl == 0 || uint64(in) > nl || bl > nl-uint64(in))):
		d.fail("chunk reference body range")
	case m.NativeFormat == NativeNone && nl != 0:
		d.fail("chunk reference native without format")
	default:
		l.Chunks, l.NativeLen, l.BodyLen, l.BodyIn = int(chunks), int(nl), int(bl), int(in)
		m.Large = l
	}
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrDecode, what)
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail("truncated")
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// bytes returns a sub-slice of the input (no copy).
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length beyond input")
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) string() string { return string(d.bytes()) }

func (d *decoder) value() any {
	switch d.byte() {
	case kindNil:
		return nil
	case kindString:
		return d.string()
	case kindUint:
		return d.uvarint()
	case kindInt:
		return d.varint()
	case kindInt32:
		v := d.varint()
		if v < math.MinInt32 || v > math.MaxInt32 {
			d.fail("int32 out of range")
			return nil
		}
		return int32(v)
	case kindUint32:
		v := d.uvarint()
		if v > math.MaxUint32 {
			d.fail("uint32 out of range")
			return nil
		}
		return uint32(v)
	case kindBytes:
		return append([]byte(nil), d.bytes()...)
	case kindUUID:
		if len(d.b) < 16 {
			d.fail("truncated uuid")
			return nil
		}
		var u [16]byte
		copy(u[:], d.b)
		d.b = d.b[16:]
		return u
	case kindBool:
		return d.byte() != 0
	case kindFloat:
		if len(d.b) < 8 {
			d.fail("truncated float")
			return nil
		}
		f := math.Float64frombits(binary.BigEndian.Uint64(d.b))
		d.b = d.b[8:]
		return f
	default:
		d.fail("unknown value kind")
		return nil
	}
}

// Unmarshal decodes an encoding produced by Append. Body and Native alias
// b; the caller must not modify b afterwards.
func Unmarshal(b []byte) (*Message, error) {
	m := new(Message)
	if err := m.Unmarshal(b); err != nil {
		return nil, err
	}
	return m, nil
}

// Unmarshal decodes into m (see the package function).
func (m *Message) Unmarshal(b []byte) error {
	d := decoder{b: b}
	v := d.byte()
	if v != version1 && v != version2 {
		return fmt.Errorf("%w: unknown version", ErrDecode)
	}
	// bytesSeen: a native or body field was decoded (excluded by tagLarge).
	bytesSeen := false
	for d.err == nil {
		switch tag := d.byte(); tag {
		case tagEnd:
			if d.err == nil && len(d.b) != 0 {
				d.fail("trailing bytes")
			}
			return d.err
		case tagMessageID:
			m.MessageID = d.value()
		case tagCorrelationID:
			m.CorrelationID = d.value()
		case tagUserID:
			m.UserID = d.bytes()
		case tagTo:
			m.To = d.string()
		case tagSubject:
			m.Subject = d.string()
		case tagReplyTo:
			m.ReplyTo = d.string()
		case tagContentType:
			m.ContentType = d.string()
		case tagContentEncoding:
			m.ContentEncoding = d.string()
		case tagGroupID:
			m.GroupID = d.string()
		case tagCreation:
			m.CreationTime = time.UnixMilli(d.varint())
		case tagExpiry:
			m.Expiry = time.UnixMilli(d.varint())
		case tagTTL:
			ms := d.varint()
			if ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
				d.fail("ttl out of range") // found by FuzzUnmarshal: the product overflowed
				break
			}
			m.TTL = time.Duration(ms) * time.Millisecond
		case tagPriority:
			m.Priority = d.byte()
		case tagDurable:
			m.Durable = true
		case tagProperty:
			if m.Properties == nil {
				m.Properties = make(map[string]any, 4)
			}
			if len(m.Properties) >= MaxProperties {
				d.fail("too many properties")
				break
			}
			k := d.string()
			m.Properties[k] = d.value()
		case tagNative:
			if m.Large != nil {
				d.fail("native bytes with a chunk reference")
				break
			}
			bytesSeen = true
			m.NativeFormat = NativeFormat(d.byte())
			m.Native = d.bytes()
			if m.NativeFormat == NativeNone {
				m.Native = nil
			}
		case tagBody:
			if m.Large != nil {
				d.fail("body with a chunk reference")
				break
			}
			bytesSeen = true
			m.BodyKind = BodyKind(d.byte())
			m.Body = d.bytes()
		case tagBodyIn:
			if v < version2 || m.Large != nil {
				d.fail("body range not allowed here")
				break
			}
			bytesSeen = true
			m.BodyKind = BodyKind(d.byte())
			off, n := d.uvarint(), d.uvarint()
			if d.err != nil {
				break
			}
			// Only a non-empty range is encoded so (an empty body is
			// never "within" Native), so accept only that.
			if n == 0 || off > uint64(len(m.Native)) || n > uint64(len(m.Native))-off {
				d.fail("body range beyond native")
				break
			}
			m.Body = m.Native[off : off+n : off+n]
		case tagLarge:
			if v < version2 || m.Large != nil || bytesSeen {
				d.fail("chunk reference not allowed here")
				break
			}
			m.decodeLarge(&d)
		case tagOrigin:
			m.Origin = d.string()
		default:
			d.fail(fmt.Sprintf("unknown tag %d", tag))
		}
	}
	return d.err
}
