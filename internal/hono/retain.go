package hono

import (
	"fmt"
	"slices"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/message"
)

// AnnotationRetain is the message annotation Hono's MQTT adapter sets on
// a device's telemetry or event published with the MQTT retain flag
// (Hono's MQTT adapter user guide, "Downstream Meta Data"): the adapter
// retains nothing, the application may react to it.
const AnnotationRetain = "x-opt-retain"

// MarkRetain gives a device's telemetry or event message the
// x-opt-retain annotation (boolean true). throng's message model has no
// message annotations, so the message becomes an AMQP one: its Native
// encoding (message annotations, properties, application properties,
// one data section) is built from its fields, which stay the view other
// protocols and the router use; AMQP receivers get the annotation.
// Call it last, once nothing changes the message's properties or body.
func MarkRetain(m *message.Message) error {
	if m.NativeFormat != message.NativeNone {
		return fmt.Errorf("hono: retain: the message is already encoded")
	}
	am := &encoding.Message{
		MessageAnnotations: encoding.Map{{Key: encoding.Symbol(AnnotationRetain), Value: true}},
		Properties: &encoding.Properties{
			To: m.To, Subject: m.Subject, ReplyTo: m.ReplyTo,
			ContentType: encoding.Symbol(m.ContentType), ContentEncoding: encoding.Symbol(m.ContentEncoding),
			AbsoluteExpiryTime: m.Expiry, CreationTime: m.CreationTime, GroupID: m.GroupID,
		},
		Body: encoding.BodyData,
		Data: [][]byte{m.Body},
	}
	if len(m.Properties) > 0 {
		keys := make([]string, 0, len(m.Properties))
		for k := range m.Properties {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		am.ApplicationProperties = make([]encoding.Property, len(keys))
		for i, k := range keys {
			am.ApplicationProperties[i] = encoding.Property{Key: k, Value: m.Properties[k]}
		}
	}
	native, err := am.MarshalAMQP(nil)
	if err != nil {
		return fmt.Errorf("hono: retain: %w", err)
	}
	m.NativeFormat, m.Native = message.NativeAMQP, native
	if n := len(m.Body); n > 0 {
		// The data section ends the encoding: the body is stored once
		// (message.Message.BodyInNative), and counted once against
		// size limits.
		m.Body = native[len(native)-n:]
	}
	return nil
}
