package bridge

import (
	"bytes"
	"testing"
	"time"

	amqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/router"
)

func TestKafkaKeyAndHeaders(t *testing.T) {
	m := &message.Message{Body: []byte("b"), Durable: true, ContentType: "text/plain", Origin: "dev-7",
		CreationTime: time.UnixMilli(1700000000123), TTL: 5 * time.Second,
		Properties: map[string]any{"site": "north", "n": int64(3), "x-mqtt-retain": true}}
	d := &router.Delivery{Message: m, Address: "tele/dev-7"}
	for key, want := range map[string]string{"": "dev-7", "device": "dev-7", "address": "tele/dev-7", "property:site": "north", "property:n": "3", "none": ""} {
		if got := kafkaKey(d, key); string(got) != want {
			t.Errorf("key %q: %q, want %q", key, got, want)
		}
	}
	m.Properties["device_id"] = "4711"
	if got := kafkaKey(d, "device"); string(got) != "4711" {
		t.Errorf("device key with device_id: %q", got)
	}
	bridged := &router.Delivery{Message: &message.Message{Origin: origin("other")}, Address: "a"}
	if got := kafkaKey(bridged, "device"); got != nil {
		t.Errorf("a bridge's origin as a key: %q", got)
	}
	rec := kafkaRecord(d, Mapping{Topic: "t"})
	h := map[string]string{}
	for _, x := range rec.Headers {
		h[x.Key] = string(x.Value)
	}
	want := map[string]string{"address": "tele/dev-7", "content-type": "text/plain", "creation-time": "1700000000123",
		"ttl": "5000", "qos": "1", "site": "north", "n": "3", "device_id": "4711"}
	for k, v := range want {
		if h[k] != v {
			t.Errorf("header %s = %q, want %q (all %v)", k, h[k], v, h)
		}
	}
	if _, ok := h["x-mqtt-retain"]; ok || rec.Topic != "t" || !bytes.Equal(rec.Value, []byte("b")) {
		t.Errorf("record %+v", rec)
	}
}

// Messages from other protocols become AMQP sections and back.
func TestAMQPConversionRoundTrip(t *testing.T) {
	val, err := (&amqp.Message{Value: int64(42)}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []*message.Message{
		{Body: []byte("data"), ContentType: "application/json", Subject: "s", CorrelationID: "c1", Durable: true,
			Properties: map[string]any{"k": "v", "i": int64(-3)}},
		{BodyKind: message.BodyAMQPString, Body: []byte("text")},
		{BodyKind: message.BodyAMQPValue, Body: val[3:]},
	} {
		am, err := toGoAMQP(&router.Delivery{Message: m})
		if err != nil {
			t.Fatal(err)
		}
		if am.Header == nil || am.Header.Durable != m.Durable || am.Header.Priority != 4 {
			t.Errorf("header %+v", am.Header)
		}
		back, err := fromGoAMQP(am)
		if err != nil {
			t.Fatal(err)
		}
		if back.BodyKind != m.BodyKind || !bytes.Equal(back.Body, m.Body) || back.ContentType != m.ContentType ||
			back.Subject != m.Subject || back.CorrelationID != m.CorrelationID || back.Durable != m.Durable {
			t.Errorf("round trip of %+v: %+v", m, back)
		}
		for k, v := range m.Properties {
			if back.Properties[k] != v {
				t.Errorf("property %s: %v, want %v", k, back.Properties[k], v)
			}
		}
		if back.NativeFormat != message.NativeAMQP || len(back.Native) == 0 {
			t.Errorf("no native sections")
		}
		// And the native form goes out as it came.
		again, err := toGoAMQP(&router.Delivery{Message: back})
		if err != nil {
			t.Fatal(err)
		}
		if again.Value != am.Value || len(again.Data) != len(am.Data) {
			t.Errorf("native again: %+v vs %+v", again, am)
		}
	}
}
