package mqtt

import (
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/auth"
)

// node is another Server on the same router (a second node sharing the
// engine), as an env whose helpers dial it.
func (e *env) node(t testing.TB, mod func(*Config)) *env {
	t.Helper()
	cfg := Config{Router: e.r, Auth: auth.New(e.store), Store: e.store, AllowAnonymous: true, SweepInterval: 100 * time.Millisecond, SysInterval: -1}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.halt() }) // before e.stop (cleanups run last first)
	n := *e
	n.srv, n.addr = srv, l.Addr().String()
	return &n
}

func shortLease(c *Config) { c.NodeLease = time.Second }

// ack writes PUBACK/PUBREC/PUBREL/PUBCOMP.
func (r *raw) ack(typ byte, id uint16) {
	r.t.Helper()
	if _, err := r.nc.Write(encodeAck(typ, r.v, id, 0, "")); err != nil {
		r.t.Fatal(err)
	}
}

// persistentV5 connects a raw v5 client with a session that lasts an hour.
func persistentV5(e *env, r *raw, id string, clean bool) *packets.Packet {
	return r.connect(func(p *packets.Packet) {
		p.Connect.ClientIdentifier = id
		p.Connect.Clean = clean
		p.Properties.SessionExpiryInterval, p.Properties.SessionExpiryIntervalFlag = 3600, true
	})
}

func (r *raw) expect(typ byte, id uint16) *packets.Packet {
	r.t.Helper()
	pk := r.read()
	if pk == nil || pk.FixedHeader.Type != typ || (id != 0 && pk.PacketID != id) {
		if pk == nil {
			r.t.Fatalf("want packet type %d id %d, connection closed", typ, id)
		}
		r.t.Fatalf("want packet type %d id %d, got type %d id %d", typ, id, pk.FixedHeader.Type, pk.PacketID)
	}
	return pk
}

// TestQoS2InboundSurvivesCrash: the id of a QoS 2 PUBLISH is in the
// engine once PUBREC is sent, so when the node dies before PUBREL and the
// client resends the PUBLISH (DUP) to another node, it is not routed
// twice.
func TestQoS2InboundSurvivesCrash(t *testing.T) {
	a := startEnv(t, t.TempDir(), shortLease)
	b := a.node(t, shortLease)
	w := mustV5(t, b, "watch", true, 0)
	sub(t, w, paho.SubscribeOptions{Topic: "q2", QoS: 2})

	r := dialRaw(t, a, 5)
	persistentV5(a, r, "pub2", true)
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 7, TopicName: "q2", Payload: []byte("once")})
	r.expect(packets.Pubrec, 7)
	if m := w.next(t); string(m.Payload) != "once" {
		t.Fatalf("got %q", m.Payload)
	}
	a.srv.halt() // dies between PUBREC and PUBREL

	r = dialRaw(t, b, 5)
	if ack := persistentV5(b, r, "pub2", false); !ack.SessionPresent {
		t.Fatal("session lost")
	}
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Dup: true}, PacketID: 7, TopicName: "q2", Payload: []byte("once")})
	r.expect(packets.Pubrec, 7)
	r.ack(packets.Pubrel, 7)
	if pc := r.expect(packets.Pubcomp, 7); pc.ReasonCode != 0 {
		t.Fatalf("pubcomp %#x", pc.ReasonCode)
	}
	w.none(t, 500*time.Millisecond)
	// The id is free again: a new message with it is routed.
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 7, TopicName: "q2", Payload: []byte("next")})
	r.expect(packets.Pubrec, 7)
	if m := w.next(t); string(m.Payload) != "next" {
		t.Fatalf("got %q", m.Payload)
	}
}

// TestQoS2OutboundPubrelResent: a message the client PUBRECed before it
// went away is finished with PUBREL on resume, not sent again.
func TestQoS2OutboundPubrelResent(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	r := dialRaw(t, e, 5)
	persistentV5(e, r, "sub2", true)
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: packets.Subscriptions{{Filter: "o2", Qos: 2}}})
	r.expect(packets.Suback, 1)
	p := mustV5(t, e, "p", true, 0)
	pub(t, p, "o2", 2, "m")
	m := r.expect(packets.Publish, 0)
	if m.FixedHeader.Qos != 2 || string(m.Payload) != "m" {
		t.Fatalf("got %+v", m)
	}
	r.ack(packets.Pubrec, m.PacketID)
	r.expect(packets.Pubrel, m.PacketID)
	r.nc.Close() // no PUBCOMP
	eventually(t, "offline", func() bool { return !e.online("sub2") })

	r = dialRaw(t, e, 5)
	if ack := persistentV5(e, r, "sub2", false); !ack.SessionPresent {
		t.Fatal("session lost")
	}
	r.expect(packets.Pubrel, m.PacketID)
	r.ack(packets.Pubcomp, m.PacketID)
	_ = r.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, _, err := r.pr.readPacket(0); err == nil || !isTimeout(err) {
		t.Fatalf("unexpected packet or error after PUBCOMP: %v", err)
	}
}

// TestResumeKeepsPacketID: an unacknowledged PUBLISH is resent on resume
// with its packet id and DUP [MQTT-4.4.0-1].
func TestResumeKeepsPacketID(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	r := dialRaw(t, e, 5)
	persistentV5(e, r, "sub1", true)
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe}, PacketID: 1, Filters: packets.Subscriptions{{Filter: "o1", Qos: 1}}})
	r.expect(packets.Suback, 1)
	p := mustV5(t, e, "p", true, 0)
	pub(t, p, "o1", 1, "a")
	pub(t, p, "o1", 1, "b")
	m1 := r.expect(packets.Publish, 0)
	m2 := r.expect(packets.Publish, 0)
	if string(m1.Payload) != "a" || string(m2.Payload) != "b" || m1.PacketID == m2.PacketID {
		t.Fatalf("got %q/%d %q/%d", m1.Payload, m1.PacketID, m2.Payload, m2.PacketID)
	}
	r.ack(packets.Puback, m1.PacketID)
	time.Sleep(100 * time.Millisecond) // the PUBACK is handled before the close
	r.nc.Close()
	eventually(t, "offline", func() bool { return !e.online("sub1") })

	r = dialRaw(t, e, 5)
	persistentV5(e, r, "sub1", false)
	m := r.expect(packets.Publish, 0)
	if string(m.Payload) != "b" || m.PacketID != m2.PacketID || !m.FixedHeader.Dup {
		t.Fatalf("resent %q id %d dup %v, want %q id %d dup", m.Payload, m.PacketID, m.FixedHeader.Dup, "b", m2.PacketID)
	}
	r.ack(packets.Puback, m.PacketID)
}
