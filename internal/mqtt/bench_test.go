package mqtt

import (
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
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

// TestIdleConnectionMemory measures the broker heap and stack per idle
// connection (client sockets are in the same process, without goroutines,
// and are counted too, so the figure is an upper bound).
// THRONG_MQTT_IDLE=n sets the number of connections (default 1000).
func TestIdleConnectionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	n := 1000
	if v, err := strconv.Atoi(os.Getenv("THRONG_MQTT_IDLE")); err == nil {
		n = v
	}
	e := startEnv(t, t.TempDir(), nil)
	measure := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse + ms.StackInuse
	}
	// Warm up pools and the tenant's state buckets.
	w := dialRaw(t, e, 5)
	w.connect(func(p *packets.Packet) { p.Connect.ClientIdentifier = "warm" })
	before := measure()
	conns := make([]net.Conn, 0, n)
	for i := range n {
		r := dialRaw(t, e, 4)
		r.connect(func(p *packets.Packet) { p.Connect.ClientIdentifier = "idle-" + strconv.Itoa(i) })
		conns = append(conns, r.nc)
	}
	after := measure()
	per := float64(after-before) / float64(n)
	t.Logf("idle connections: %d, broker+client memory per connection: %.0f bytes (%.2f KiB)", n, per, per/1024)
	if per > 64*1024 { // gross regressions only: -race inflates the figure
		t.Fatalf("%.0f bytes per idle connection", per)
	}
	for _, c := range conns {
		c.Close()
	}
}
