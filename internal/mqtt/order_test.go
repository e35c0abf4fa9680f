package mqtt

import (
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/router"
)

// TestAckOrder: PUBACKs and PUBRECs go out in the order the PUBLISHes
// came in [MQTT-4.6.0-2..3], although the first one's outcome (an
// anycast consumer that settles late) completes last.
func TestAckOrder(t *testing.T) {
	e := startEnv(t, t.TempDir(), nil)
	ctx := ctxT(t)
	if err := e.r.CreateAddress(ctx, "default", &address.Address{Name: "work", Type: address.Anycast}); err != nil {
		t.Fatal(err)
	}
	rc, err := e.r.Consume(ctx, "default", "work", router.ConsumeOptions{}, func(d *router.Delivery) {
		time.AfterFunc(300*time.Millisecond, func() { d.Settle(router.Outcome{Kind: router.Accepted}) })
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	rc.AddCredit(10)

	for _, v := range []byte{4, 5} {
		r := dialRaw(t, e, v)
		r.connect(nil)
		r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 1, TopicName: "work", Payload: []byte("slow")})
		r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, PacketID: 2, TopicName: "t/fast", Payload: []byte("fast")})
		r.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2}, PacketID: 3, TopicName: "t/fast", Payload: []byte("fast2")})
		r.expect(packets.Puback, 1)
		r.expect(packets.Puback, 2)
		r.expect(packets.Pubrec, 3)
		r.nc.Close()
		eventually(t, "offline", func() bool { return !e.online("raw") })
	}
}
