// Package message is throng's protocol-neutral message model and its
// compact binary encoding, which is what the engine stores and carries.
//
// Front-ends convert their protocol's message into a Message and back.
// AMQP messages additionally keep their bare-message bytes (Native with
// NativeAMQP format) so that they pass between AMQP peers byte for byte;
// the decoded fields are then a read-only view used for routing, TTL,
// selectors and cross-protocol conversion.
package message

import (
	"time"
	"unsafe"
)

// MaxSize is the largest message size any setting may allow (node and
// tenant maximum message sizes are validated against it): 256 MiB, the
// ceiling of DESIGN.md section 10.
const MaxSize = 256 << 20

// BodyKind tells how Body is to be understood.
type BodyKind uint8

const (
	// BodyData is opaque bytes (AMQP data section, MQTT payload, HTTP body).
	BodyData BodyKind = iota
	// BodyAMQPValue is the AMQP encoding of a single amqp-value section's value.
	BodyAMQPValue
	// BodyAMQPSequence is the AMQP encoding of amqp-sequence sections.
	BodyAMQPSequence
	// BodyAMQPString is a UTF-8 string that came as an amqp-value string.
	BodyAMQPString
)

// NativeFormat names the encoding of Message.Native.
type NativeFormat uint8

const (
	NativeNone NativeFormat = iota
	// NativeAMQP: Native holds the AMQP 1.0 bare message (properties,
	// application-properties, body sections, footer) as received.
	NativeAMQP
)

// Message is a message in flight or at rest.
type Message struct {
	// Properties (AMQP 1.0 properties section; MQTT 5 equivalents).
	MessageID       any // string, uint64, []byte or [16]byte (UUID)
	CorrelationID   any // same kinds as MessageID
	UserID          []byte
	To              string
	Subject         string
	ReplyTo         string
	ContentType     string
	ContentEncoding string
	GroupID         string
	CreationTime    time.Time // zero if unset
	// Expiry is the absolute expiry time; zero means none. TTL, when set,
	// is the time to live the producer asked for (relative to receipt).
	Expiry time.Time
	TTL    time.Duration

	Priority uint8
	Durable  bool

	// Origin identifies the publishing client within its protocol (the
	// MQTT client id), for MQTT's no-local; it is not shown to receivers.
	Origin string

	// Application properties. Values are string, bool, int64, uint64,
	// float64, []byte or nil.
	Properties map[string]any

	BodyKind BodyKind
	Body     []byte

	// Native is the originating protocol's own encoding of the message when
	// it must be preserved verbatim (see NativeFormat).
	NativeFormat NativeFormat
	Native       []byte

	// Large, when set, says that Native and Body are kept outside the
	// message's encoding, in the engine's chunk store (router/large.go):
	// the encoding carries this reference instead of the bytes, whether
	// or not they are loaded in Native and Body. A message being
	// published anew must not carry a Large of another message.
	Large *Large
}

// Large references a message's bytes stored in chunks. The chunks hold
// Native followed by Body, unless BodyIn ≥ 0: then Body is
// Native[BodyIn:BodyIn+BodyLen] (an AMQP data section inside the bare
// message) and is not stored twice.
type Large struct {
	// Subject is the engine subject of the chunks; First is the engine
	// sequence of the first chunk, Chunks how many there are.
	Subject string
	First   uint64
	Chunks  int
	// NativeLen and BodyLen are the lengths of Native and Body.
	NativeLen int
	BodyLen   int
	BodyIn    int
}

// Stored is the number of bytes the chunks of a Large hold.
func (l *Large) Stored() int {
	if l.BodyIn >= 0 {
		return l.NativeLen
	}
	return l.NativeLen + l.BodyLen
}

// BodyInNative reports whether Body is a range of Native (the same
// memory), and where. The encoding then stores the bytes once.
func (m *Message) BodyInNative() (off int, ok bool) {
	if m.NativeFormat == NativeNone {
		return 0, false // Native is not encoded then
	}
	return within(m.Native, m.Body)
}

// within reports whether inner is a sub-slice of outer's memory and at
// which offset. Comparing addresses is sound: Go's heap objects do not
// move, and both slices are live here.
func within(outer, inner []byte) (int, bool) {
	if len(inner) == 0 || len(outer) == 0 {
		return 0, false
	}
	o := uintptr(unsafe.Pointer(unsafe.SliceData(outer)))
	i := uintptr(unsafe.Pointer(unsafe.SliceData(inner)))
	if i < o || i-o > uintptr(len(outer)) || uintptr(len(inner)) > uintptr(len(outer))-(i-o) {
		return 0, false
	}
	return int(i - o), true
}

// Expired reports whether the message has expired at now.
func (m *Message) Expired(now time.Time) bool {
	return !m.Expiry.IsZero() && !now.Before(m.Expiry)
}

// Size is an estimate of the message's size in bytes, used for limits.
func (m *Message) Size() int {
	n := len(m.To) + len(m.ReplyTo) + len(m.Subject) + len(m.ContentType)
	switch _, in := m.BodyInNative(); {
	case m.Large != nil && m.Body == nil && m.Native == nil:
		n += m.Large.NativeLen
		if m.Large.BodyIn < 0 {
			n += m.Large.BodyLen
		}
	case in:
		n += len(m.Native) // an AMQP body section is counted once
	default:
		n += len(m.Body) + len(m.Native)
	}
	for k, v := range m.Properties {
		n += len(k) + 8
		if s, ok := v.(string); ok {
			n += len(s)
		}
	}
	return n
}

// Property maps a Go value onto the kinds of Properties: the sized
// integers and float32 widen, a time becomes Unix milliseconds. ok is
// false for any other type (a protocol's own types: the caller maps them).
func Property(v any) (p any, ok bool) {
	switch v := v.(type) {
	case string, bool, int64, uint64, float64, []byte, nil:
		return v, true
	case int:
		return int64(v), true
	case int8:
		return int64(v), true
	case int16:
		return int64(v), true
	case int32:
		return int64(v), true
	case uint8:
		return uint64(v), true
	case uint16:
		return uint64(v), true
	case uint32:
		return uint64(v), true
	case float32:
		return float64(v), true
	case time.Time:
		return v.UnixMilli(), true
	}
	return nil, false
}
