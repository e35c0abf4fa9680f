package amqp

import (
	"slices"
	"time"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

// fromAMQP builds the router's message from a decoded AMQP message. The
// sections after the header and delivery annotations (message annotations,
// properties, application properties, body, footer) are kept byte for byte
// in Native, so AMQP receivers get them unchanged; the decoded fields are
// the view used for routing, TTL, selectors and other protocols
// (DESIGN.md 4.4). Slices alias the received payload, which nothing
// rewrites.
func fromAMQP(am *encoding.Message, payload []byte) *message.Message {
	m := &message.Message{Priority: encoding.DefaultPriority}
	if h := am.Header; h != nil {
		m.Durable = h.Durable
		m.Priority = h.Priority
		if h.TTL > 0 {
			m.TTL = time.Duration(h.TTL) * time.Millisecond
		}
	}
	if p := am.Properties; p != nil {
		m.MessageID = idFromAMQP(p.MessageID)
		m.CorrelationID = idFromAMQP(p.CorrelationID)
		m.UserID = p.UserID
		m.To = p.To
		m.Subject = p.Subject
		m.ReplyTo = p.ReplyTo
		m.ContentType = string(p.ContentType)
		m.ContentEncoding = string(p.ContentEncoding)
		m.GroupID = p.GroupID
		m.CreationTime = p.CreationTime
		m.Expiry = p.AbsoluteExpiryTime
	}
	if len(am.ApplicationProperties) > 0 {
		m.Properties = make(map[string]any, len(am.ApplicationProperties))
		for _, p := range am.ApplicationProperties {
			m.Properties[p.Key] = propFromAMQP(p.Value)
		}
	}
	switch am.Body {
	case encoding.BodyData:
		if len(am.Data) == 1 {
			m.Body = am.Data[0]
		} else {
			m.Body = slices.Concat(am.Data...)
		}
	case encoding.BodyValue:
		switch v := am.Value.(type) {
		case string:
			m.BodyKind, m.Body = message.BodyAMQPString, []byte(v)
		case []byte:
			m.Body = v
		default:
			m.BodyKind = message.BodyAMQPValue
			m.Body, _ = encoding.AppendValue(nil, v)
		}
	case encoding.BodySequence:
		m.BodyKind, m.Body = message.BodyAMQPSequence, am.Raw.Body
	}
	// Message annotations immediately precede the bare message, which
	// ends the payload.
	native := payload[len(payload)-len(am.Raw.Bare)-len(am.Raw.MessageAnnotations):]
	m.NativeFormat, m.Native = message.NativeAMQP, native
	return m
}

func idFromAMQP(v any) any {
	if u, ok := v.(encoding.UUID); ok {
		return [16]byte(u)
	}
	return v
}

func idToAMQP(v any) any {
	switch v := v.(type) {
	case [16]byte:
		return encoding.UUID(v)
	case string, uint64, []byte:
		return v
	}
	return nil
}

// propFromAMQP maps an application property onto the model's kinds.
func propFromAMQP(v any) any {
	if p, ok := message.Property(v); ok {
		return p
	}
	switch v := v.(type) {
	case encoding.Symbol:
		return string(v)
	case encoding.Char:
		return string(rune(v))
	case encoding.UUID:
		return encoding.UUID(v).String()
	}
	return nil
}

// appendDelivery encodes the message of a delivery as the server sends
// it: a new header (durable, priority, remaining ttl, first-acquirer,
// delivery-count from the router's attempt count), then the stored AMQP
// sections unchanged or, for messages from other protocols, sections
// built from the model.
func appendDelivery(dst []byte, d *router.Delivery) ([]byte, error) {
	m := d.Message
	h := encoding.Header{Durable: m.Durable, Priority: m.Priority, FirstAcquirer: d.Count <= 1}
	if m.NativeFormat != message.NativeAMQP && m.Priority == 0 {
		h.Priority = encoding.DefaultPriority
	}
	if d.Count > 1 {
		h.DeliveryCount = uint32(d.Count - 1)
	}
	if !m.Expiry.IsZero() {
		h.TTL = uint32(max(time.Until(m.Expiry).Milliseconds(), 1))
	} else if m.TTL > 0 {
		h.TTL = uint32(m.TTL.Milliseconds())
	}
	dst, err := h.MarshalAMQP(dst)
	if err != nil {
		return dst, err
	}
	if m.NativeFormat == message.NativeAMQP {
		return append(dst, m.Native...), nil
	}
	return appendConverted(dst, m)
}

func appendConverted(dst []byte, m *message.Message) ([]byte, error) {
	p := encoding.Properties{
		MessageID: idToAMQP(m.MessageID), CorrelationID: idToAMQP(m.CorrelationID),
		UserID: m.UserID, To: m.To, Subject: m.Subject, ReplyTo: m.ReplyTo,
		ContentType: encoding.Symbol(m.ContentType), ContentEncoding: encoding.Symbol(m.ContentEncoding),
		AbsoluteExpiryTime: m.Expiry, CreationTime: m.CreationTime, GroupID: m.GroupID,
	}
	var err error
	if m.MessageID != nil || m.CorrelationID != nil || m.UserID != nil || m.To != "" || m.Subject != "" ||
		m.ReplyTo != "" || m.ContentType != "" || m.ContentEncoding != "" || !m.Expiry.IsZero() ||
		!m.CreationTime.IsZero() || m.GroupID != "" {
		if dst, err = p.MarshalAMQP(dst); err != nil {
			return dst, err
		}
	}
	if len(m.Properties) > 0 {
		keys := make([]string, 0, len(m.Properties))
		for k := range m.Properties {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		props := make([]encoding.Property, len(keys))
		for i, k := range keys {
			props[i] = encoding.Property{Key: k, Value: m.Properties[k]}
		}
		if dst, err = encoding.AppendApplicationProperties(dst, props); err != nil {
			return dst, err
		}
	}
	switch m.BodyKind {
	case message.BodyAMQPString:
		return encoding.AppendString(encoding.AppendDescriptor(dst, encoding.DescAMQPValue), string(m.Body)), nil
	case message.BodyAMQPValue:
		return append(encoding.AppendDescriptor(dst, encoding.DescAMQPValue), m.Body...), nil
	case message.BodyAMQPSequence:
		return append(dst, m.Body...), nil
	}
	return encoding.AppendBinary(encoding.AppendDescriptor(dst, encoding.DescData), m.Body), nil
}
