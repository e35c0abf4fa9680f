package hono

import (
	"testing"
	"time"

	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/message"
)

func TestMarkRetain(t *testing.T) {
	now := time.UnixMilli(1700000000000)
	m := &message.Message{
		Body: []byte("payload"), ContentType: "text/plain", CreationTime: now, To: "telemetry/iot", Durable: true,
		Properties: map[string]any{PropDeviceID: "dev1", PropQoS: int32(1), "n": int64(7)},
	}
	if err := MarkRetain(m); err != nil {
		t.Fatal(err)
	}
	if m.NativeFormat != message.NativeAMQP || string(m.Body) != "payload" {
		t.Fatalf("native %v body %q", m.NativeFormat, m.Body)
	}
	if off, ok := m.BodyInNative(); !ok || off+len(m.Body) != len(m.Native) {
		t.Fatalf("the body is not the end of Native: %d %v", off, ok)
	}
	am, err := encoding.DecodeMessage(m.Native)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := am.MessageAnnotations.Get(encoding.Symbol(AnnotationRetain)); !ok || v != true {
		t.Fatalf("annotations %v", am.MessageAnnotations)
	}
	if am.Properties == nil || am.Properties.To != "telemetry/iot" || am.Properties.ContentType != "text/plain" ||
		!am.Properties.CreationTime.Equal(now) {
		t.Fatalf("properties %+v", am.Properties)
	}
	props := map[string]any{}
	for _, p := range am.ApplicationProperties {
		props[p.Key] = p.Value
	}
	if props[PropDeviceID] != "dev1" || props[PropQoS] != int32(1) || props["n"] != int64(7) || len(props) != 3 {
		t.Fatalf("application properties %v", props)
	}
	if am.Body != encoding.BodyData || len(am.Data) != 1 || string(am.Data[0]) != "payload" {
		t.Fatalf("body %v %q", am.Body, am.Data)
	}
	// Once encoded, not again.
	if err := MarkRetain(m); err == nil {
		t.Fatal("encoded twice")
	}
	// An empty body stays a message with an empty data section.
	e := &message.Message{ContentType: ContentTypeEmpty}
	if err := MarkRetain(e); err != nil {
		t.Fatal(err)
	}
	if am, err := encoding.DecodeMessage(e.Native); err != nil || len(am.Data) != 1 || len(am.Data[0]) != 0 {
		t.Fatalf("empty: %v %+v", err, am)
	}
}
