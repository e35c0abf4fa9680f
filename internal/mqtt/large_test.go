package mqtt

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/tenant"
)

// TestTenantMaxPacketSize: a tenant's maxMessageSize (1 MiB) replaces the
// node's maximum packet size for its clients: CONNACK tells it (plus room
// for topic and properties), a 2 MiB PUBLISH gets DISCONNECT 0x95 (MQTT 5)
// or a closed connection (3.1.1); the node's own maximum is told to
// clients of other tenants.
func TestTenantMaxPacketSize(t *testing.T) {
	e := startEnv(t, t.TempDir(), func(c *Config) { c.MaxPacketSize = PacketSizeFor(64 << 20) })
	r := dialRaw(t, e, 5)
	if ack := r.connect(nil); ack.Properties.MaximumPacketSize != 64<<20+packetOverhead {
		t.Fatalf("node maximum: CONNACK says %d", ack.Properties.MaximumPacketSize)
	}
	tn, _ := e.store.Tenant(tenant.Default)
	up := *tn
	up.Limits.MaxMessageSize = 1 << 20
	if err := e.store.UpdateTenant(ctxT(t), &up); err != nil {
		t.Fatal(err)
	}
	r = dialRaw(t, e, 5)
	if ack := r.connect(nil); ack.Properties.MaximumPacketSize != 1<<20+packetOverhead {
		t.Fatalf("tenant maximum: CONNACK says %d", ack.Properties.MaximumPacketSize)
	}
	r.mayClose = true
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, TopicName: "big", Payload: make([]byte, 2<<20)})
	// The DISCONNECT may be lost with the connection's reset when the
	// server closed while the client was still writing the packet.
	if d := r.read(); (d == nil && !r.wrFailed) || (d != nil && (d.FixedHeader.Type != packets.Disconnect || d.ReasonCode != 0x95)) {
		t.Fatalf("want DISCONNECT 0x95, got %+v", d)
	}
	r = dialRaw(t, e, 4)
	r.connect(nil)
	r.mayClose = true
	r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, TopicName: "big", Payload: make([]byte, 2<<20)})
	if !r.closed() {
		t.Fatal("3.1.1 connection not closed")
	}
	// Under the limit is fine.
	c := mustV5(t, e, "ok", true, 0)
	sub(t, c, packetsSub("fits", 1))
	pub(t, c, "fits", 1, string(make([]byte, 1<<20-100)))
	if m := c.next(t); len(m.Payload) != 1<<20-100 {
		t.Fatalf("got %d bytes", len(m.Payload))
	}
}
