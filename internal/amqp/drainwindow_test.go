package amqp

import (
	"testing"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/amqp/frames"
	"github.com/throngmq/throng/internal/message"
)

// TestDrainWaitsForSessionWindow: a drain covers the messages the router
// gave the link, also those the session's window holds back: the drain's
// flow comes after them, not before (a receiver would otherwise see the
// drain complete while a message is still to come, and that message would
// wait for new credit).
func TestDrainWaitsForSessionWindow(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "dw", Type: address.Queue})
	for _, b := range []string{"m0", "m1"} {
		if _, err := e.r.Publish(ctxT(t), "default", "dw", &message.Message{Body: []byte(b), Durable: true}); err != nil {
			t.Fatal(err)
		}
	}
	p := dialRaw(t, e)
	p.send(0, &frames.Begin{NextOutgoingID: 0, IncomingWindow: 1, OutgoingWindow: 1000, HandleMax: 100})
	expect[*frames.Begin](p)
	p.attachReceiver(0, "dw")
	p.send(0, &frames.Flow{NextIncomingID: 0, HasNextIncomingID: true, IncomingWindow: 1, NextOutgoingID: 0, OutgoingWindow: 1000,
		Handle: 0, HasHandle: true, DeliveryCount: 0, HasDeliveryCount: true, LinkCredit: 5, HasLinkCredit: true, Drain: true})
	first := expect[*frames.Transfer](p)
	if first.DeliveryID != 0 {
		t.Fatalf("first transfer %d", first.DeliveryID)
	}
	// Open the window for the second message.
	p.send(0, &frames.Flow{NextIncomingID: 1, HasNextIncomingID: true, IncomingWindow: 1000, NextOutgoingID: 0, OutgoingWindow: 1000})
	var order []string
	for len(order) < 3 {
		switch f := p.next().(type) {
		case *frames.Transfer:
			order = append(order, "transfer")
		case *frames.Flow:
			if f.HasHandle && f.Drain {
				order = append(order, "drained")
				if f.DeliveryCount != 5 || f.LinkCredit != 0 {
					t.Fatalf("drain answered delivery-count %d credit %d", f.DeliveryCount, f.LinkCredit)
				}
				if len(order) < 2 {
					t.Fatalf("drain completed before the held message: %v", order)
				}
				order = append(order, "end")
			}
		}
	}
	if order[0] != "transfer" || order[1] != "drained" {
		t.Fatalf("frames after the window opened: %v", order)
	}
}
