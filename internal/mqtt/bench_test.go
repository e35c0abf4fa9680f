package mqtt

import (
	"fmt"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// BenchmarkPublish measures the publish path through a real server: a raw
// client publishes 64-byte messages to a topic-space name that one
// subscriber receives.
func BenchmarkPublish(b *testing.B) {
	for _, qos := range []byte{0, 1} {
		b.Run(fmt.Sprintf("qos=%d", qos), func(b *testing.B) {
			e := startEnv(b, b.TempDir(), nil)
			s := dialRaw(b, e, 5)
			s.connect(func(p *packets.Packet) { p.Connect.ClientIdentifier = "s" })
			s.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: packets.Subscriptions{{Filter: "bench/#", Qos: qos}}})
			s.read()
			p := dialRaw(b, e, 5)
			p.connect(func(pk *packets.Packet) { pk.Connect.ClientIdentifier = "p" })
			payload := make([]byte, 64)
			received := make(chan int, 1)
			go func() {
				n := 0
				for {
					pk := s.readNoFail()
					if pk == nil {
						return
					}
					if pk.FixedHeader.Type == packets.Publish {
						n++
						if pk.FixedHeader.Qos == 1 {
							s.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID})
						}
						if n == b.N {
							received <- n
						}
					}
				}
			}()
			acks := make(chan struct{}, 1024)
			if qos == 1 {
				go func() {
					for {
						pk := p.readNoFail()
						if pk == nil {
							return
						}
						acks <- struct{}{}
					}
				}()
			}
			b.ResetTimer()
			inflight := 0
			for i := 0; i < b.N; i++ {
				pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: "bench/x", Payload: payload}
				if qos == 1 {
					pk.PacketID = uint16(i%60000 + 1)
					for inflight >= 500 {
						<-acks
						inflight--
					}
					inflight++
				} else if i%1000 == 999 {
					time.Sleep(time.Millisecond) // QoS 0 is dropped when the subscriber lags: pace it
				}
				p.write(pk)
			}
			select {
			case <-received:
			case <-time.After(60 * time.Second):
				b.Fatal("not all messages delivered")
			}
			b.StopTimer()
		})
	}
}

func (r *raw) readNoFail() *packets.Packet {
	_ = r.nc.SetReadDeadline(time.Now().Add(60 * time.Second))
	fh, body, err := r.pr.readPacket(0)
	if err != nil {
		return nil
	}
	pk := &packets.Packet{FixedHeader: fh, ProtocolVersion: r.v}
	if fh.Type == packets.Publish {
		if pk.PublishDecode(body) != nil {
			return nil
		}
	} else if fh.Type == packets.Puback {
		_ = pk.PubackDecode(body)
	}
	return pk
}
