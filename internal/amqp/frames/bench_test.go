package frames

import (
	"testing"

	"github.com/throngmq/throng/internal/amqp/encoding"
)

// message64 is a typical small message: properties (message-id, to) and a
// 64-byte data section.
func message64(b *testing.B) []byte {
	m := encoding.NewDataMessage(nil, &encoding.Properties{MessageID: "msg-0001", To: "queue/orders"}, nil, make([]byte, 64))
	payload, err := m.MarshalAMQP(nil)
	if err != nil {
		b.Fatal(err)
	}
	return payload
}

func BenchmarkTransfer(b *testing.B) {
	payload := message64(b)
	tr := &Transfer{Handle: 1, HasDeliveryID: true, DeliveryID: 12345, DeliveryTag: []byte{0, 0, 0, 1},
		HasMessageFormat: true}
	b.Run("encode/msg=64", func(b *testing.B) {
		buf := make([]byte, 0, 512)
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = AppendFrame(buf[:0], TypeAMQP, 0, tr, payload)
		}
		b.SetBytes(int64(len(buf)))
	})
	frame, _ := AppendFrame(nil, TypeAMQP, 0, tr, payload)
	b.Run("decode/msg=64", func(b *testing.B) {
		var d Decoder
		b.ReportAllocs()
		b.SetBytes(int64(len(frame)))
		for b.Loop() {
			f, _, err := ReadFrame(frame, 1<<16)
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := d.Decode(f.Body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode+message/msg=64", func(b *testing.B) {
		var d Decoder
		var m encoding.Message
		b.ReportAllocs()
		for b.Loop() {
			f, _, _ := ReadFrame(frame, 1<<16)
			_, body, _ := d.Decode(f.Body)
			if err := m.Decode(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkFlow(b *testing.B) {
	fl := &Flow{HasNextIncomingID: true, NextIncomingID: 100, IncomingWindow: 5000, NextOutgoingID: 7, OutgoingWindow: 5000,
		HasHandle: true, Handle: 1, HasDeliveryCount: true, DeliveryCount: 100000, HasLinkCredit: true, LinkCredit: 500}
	benchPerformative(b, fl)
}

func BenchmarkDisposition(b *testing.B) {
	d := &Disposition{Role: RoleReceiver, First: 1000, Last: 1063, Settled: true, State: &encoding.Accepted{}}
	benchPerformative(b, d)
}

func benchPerformative(b *testing.B, p Performative) {
	b.Run("encode", func(b *testing.B) {
		buf := make([]byte, 0, 256)
		b.ReportAllocs()
		for b.Loop() {
			buf, _ = AppendFrame(buf[:0], TypeAMQP, 0, p, nil)
		}
	})
	frame, _ := AppendFrame(nil, TypeAMQP, 0, p, nil)
	b.Run("decode", func(b *testing.B) {
		var d Decoder
		b.ReportAllocs()
		for b.Loop() {
			f, _, _ := ReadFrame(frame, 1<<16)
			if _, _, err := d.Decode(f.Body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
