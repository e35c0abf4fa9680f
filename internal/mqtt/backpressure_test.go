package mqtt

import (
	"bytes"
	"strconv"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestQoS1LiveBackPressure: a clean session's QoS 1 subscription is served
// live (nothing stored), and a subscriber slower than its publisher still
// gets every message: the publisher's PUBACKs are held while the
// subscriber is behind, instead of its messages being dropped. The
// subscriber allows only 5 messages in flight, so it is far slower than a
// publisher with 200.
func TestQoS1LiveBackPressure(t *testing.T) {
	const n = 20000
	e := startEnv(t, t.TempDir(), nil)
	s := dialRaw(t, e, 5)
	s.connect(func(p *packets.Packet) {
		p.Connect.ClientIdentifier = "slow"
		p.Properties.ReceiveMaximum = 5
	})
	s.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: packets.Subscriptions{{Filter: "bp/#", Qos: 1}}})
	if ack := s.read(); ack.FixedHeader.Type != packets.Suback || ack.ReasonCodes[0] != 1 {
		t.Fatalf("suback %+v", ack)
	}

	got := make(chan int, 1)
	errc := make(chan string, 1)
	go func() {
		seen := make([]bool, n)
		distinct := 0
		for distinct < n {
			pk := s.readNoFail()
			if pk == nil {
				errc <- "subscriber connection ended after " + strconv.Itoa(distinct)
				return
			}
			if pk.FixedHeader.Type != packets.Publish {
				errc <- "unexpected packet type " + strconv.Itoa(int(pk.FixedHeader.Type))
				return
			}
			i, err := strconv.Atoi(string(pk.Payload))
			if err != nil || i < 0 || i >= n || pk.FixedHeader.Qos != 1 {
				errc <- "bad publish " + string(pk.Payload)
				return
			}
			if !seen[i] {
				seen[i] = true
				distinct++
			}
			var buf bytes.Buffer
			ack := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, PacketID: pk.PacketID, ProtocolVersion: 5}
			if err := ack.PubackEncode(&buf); err != nil {
				errc <- err.Error()
				return
			}
			if _, err := s.nc.Write(buf.Bytes()); err != nil {
				errc <- err.Error()
				return
			}
		}
		got <- distinct
	}()

	p := dialRaw(t, e, 5)
	p.connect(func(pk *packets.Packet) { pk.Connect.ClientIdentifier = "fast" })
	acks := make(chan struct{}, 1024)
	go func() {
		for {
			pk := p.readNoFail()
			if pk == nil {
				return
			}
			if pk.FixedHeader.Type == packets.Puback {
				acks <- struct{}{}
			}
		}
	}()
	inflight := 0
	for i := range n {
		for inflight >= 200 {
			select {
			case <-acks:
				inflight--
			case <-time.After(30 * time.Second):
				t.Fatal("publisher got no PUBACK for 30s")
			}
		}
		inflight++
		p.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: uint16(i%60000 + 1),
			TopicName: "bp/x", Payload: []byte(strconv.Itoa(i))})
	}
	select {
	case d := <-got:
		if d != n {
			t.Fatalf("subscriber got %d of %d", d, n)
		}
	case msg := <-errc:
		t.Fatal(msg)
	case <-time.After(60 * time.Second):
		t.Fatalf("subscriber did not get all %d messages", n)
	}
}
