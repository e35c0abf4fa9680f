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
)

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
}

// Expired reports whether the message has expired at now.
func (m *Message) Expired(now time.Time) bool {
	return !m.Expiry.IsZero() && !now.Before(m.Expiry)
}

// Size is an estimate of the message's size in bytes, used for limits.
func (m *Message) Size() int {
	n := len(m.Body) + len(m.Native) + len(m.To) + len(m.ReplyTo) + len(m.Subject) + len(m.ContentType)
	for k, v := range m.Properties {
		n += len(k) + 8
		if s, ok := v.(string); ok {
			n += len(s)
		}
	}
	return n
}
