package amqp

import (
	"bytes"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/amqp/frames"
)

// Link recovery (part 2.6.13). The server keeps no unsettled deliveries
// across attachments, so a peer that resumes a link with an unsettled map
// gets an empty, complete one back; resumed transfers are ignored, as the
// spec requires of a receiver that does not know the delivery.

// expectTransferFrame reads frames until a transfer and returns it with
// its payload.
func (p *rawPeer) expectTransferFrame() (*frames.Transfer, []byte) {
	p.t.Helper()
	for {
		perf, payload, err := p.nextFrame()
		if err != nil {
			p.t.Fatalf("read: %v", err)
		}
		if t, ok := perf.(*frames.Transfer); ok {
			return t, payload
		}
	}
}

func checkEmptyUnsettled(t *testing.T, a *frames.Attach) {
	t.Helper()
	if a.Unsettled == nil || len(a.Unsettled) != 0 || a.IncompleteUnsettled {
		t.Fatalf("attach reply: unsettled %v (nil %t), incomplete-unsettled %t; want an empty, complete map",
			a.Unsettled, a.Unsettled == nil, a.IncompleteUnsettled)
	}
}

func durableSource(addr string) *encoding.Source {
	return &encoding.Source{Address: addr, Durable: encoding.DurableUnsettled, ExpiryPolicy: encoding.ExpiryNever}
}

// A client receiver re-attaches to its durable subscription listing the
// delivery it had not settled: we answer with an empty unsettled map (we
// released it on detach, so it is settled from our side) and the message
// comes again as a new delivery, with a new delivery-id and a tag the
// client did not list.
func TestResumeReceiverDurableUnsettled(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "events", Type: address.Topic})
	p := dialRaw(t, e)
	p.openSession()
	p.send(0, &frames.Attach{Name: "sub1", Handle: 0, Role: frames.RoleReceiver, SndSettleMode: frames.SenderSettleUnsettled,
		Source: durableSource("events"), Target: &encoding.Target{}})
	if a := expect[*frames.Attach](p); a.Unsettled != nil || a.Source == nil {
		t.Fatalf("plain attach: unsettled %v, source %+v; want a null map, as before", a.Unsettled, a.Source)
	}
	pub := sender(t, e.session(t, nil), "events", nil)
	send(t, pub, dataMsg("e1"))
	p.flow(0, 0, 10)
	t1, payload := p.expectTransferFrame()
	if !bytes.Contains(payload, []byte("e1")) || t1.Settled {
		t.Fatalf("first delivery %+v %q", t1, payload)
	}
	// Suspend the link without settling: the subscription stays, the
	// delivery goes back to it.
	p.send(0, &frames.Detach{Handle: 0})
	if d := expect[*frames.Detach](p); d.Closed || d.Error != nil {
		t.Fatalf("detach %+v", d)
	}

	p.send(0, &frames.Attach{Name: "sub1", Handle: 1, Role: frames.RoleReceiver, SndSettleMode: frames.SenderSettleUnsettled,
		Source: durableSource("events"), Target: &encoding.Target{},
		Unsettled: encoding.Map{{Key: t1.DeliveryTag, Value: nil}}})
	a := expect[*frames.Attach](p)
	checkEmptyUnsettled(t, a)
	if a.Source == nil || a.Source.Address != "events" {
		t.Fatalf("resumed attach source %+v", a.Source)
	}
	p.flow(1, 0, 10)
	t2, payload := p.expectTransferFrame()
	if !bytes.Contains(payload, []byte("e1")) {
		t.Fatalf("redelivery %q", payload)
	}
	if t2.Resume || t2.DeliveryID == t1.DeliveryID || bytes.Equal(t2.DeliveryTag, t1.DeliveryTag) {
		t.Fatalf("redelivery resume=%t id %d tag %x; want a new delivery (first: id %d tag %x)",
			t2.Resume, t2.DeliveryID, t2.DeliveryTag, t1.DeliveryID, t1.DeliveryTag)
	}
	if m, err := encoding.DecodeMessage(payload); err != nil || m.Header == nil || m.Header.DeliveryCount != 1 {
		t.Fatalf("redelivered header %+v (%v); want delivery-count 1", m, err)
	}
	p.send(0, &frames.Disposition{Role: frames.RoleReceiver, First: t2.DeliveryID, Last: t2.DeliveryID, Settled: true, State: &encoding.Accepted{}})
	send(t, pub, dataMsg("e2"))
	if _, payload := p.expectTransferFrame(); !bytes.Contains(payload, []byte("e2")) {
		t.Fatalf("next delivery %q; e1 was accepted", payload)
	}
}

// A client sender resumes its link listing two unsettled deliveries. We
// know neither: empty map. A resumed transfer of one of them is ignored
// (part 2.7.5: not in our unsettled map) and uses no credit; the client
// resends it as a new delivery, which is stored once.
func TestResumeSenderUnsettled(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "q", Type: address.Queue})
	rcv := receiver(t, e.session(t, nil), "q", nil)
	p := dialRaw(t, e)
	p.openSession()
	p.send(0, &frames.Attach{Name: "snd", Handle: 0, Role: frames.RoleSender, SndSettleMode: frames.SenderSettleUnsettled,
		Source: &encoding.Source{}, Target: &encoding.Target{Address: "q"}, HasInitialDeliveryCount: true,
		Unsettled: encoding.Map{{Key: []byte("A"), Value: nil}, {Key: []byte("B"), Value: &encoding.Accepted{}}}})
	checkEmptyUnsettled(t, expect[*frames.Attach](p))
	f0 := p.expectFlow()
	if f0.LinkCredit == 0 {
		t.Fatalf("no credit: %+v", f0)
	}

	p.sendPayload(0, &frames.Transfer{Handle: 0, DeliveryID: 0, HasDeliveryID: true, DeliveryTag: []byte("A"),
		MessageFormat: 0, HasMessageFormat: true, Resume: true}, minimalMessage("resumed"))
	p.sendPayload(0, &frames.Transfer{Handle: 0, DeliveryID: 1, HasDeliveryID: true, DeliveryTag: []byte("C"),
		MessageFormat: 0, HasMessageFormat: true}, minimalMessage("resent"))
	d := p.expectDisposition()
	if d.First != 1 || d.Last != 1 || !d.Settled || !isAccepted(d.State) {
		t.Fatalf("disposition %+v; want only the resent delivery (id 1) accepted", d)
	}
	// The resumed transfer used neither delivery-count nor credit.
	p.send(0, &frames.Flow{NextIncomingID: 0, HasNextIncomingID: true, IncomingWindow: 1000, NextOutgoingID: 2, OutgoingWindow: 1000,
		Handle: 0, HasHandle: true, DeliveryCount: 1, HasDeliveryCount: true, LinkCredit: 0, HasLinkCredit: true, Echo: true})
	f := p.expectFlow()
	if !f.HasHandle || f.DeliveryCount != f0.DeliveryCount+1 || f.LinkCredit != f0.LinkCredit-1 {
		t.Fatalf("flow %+v after one new delivery (initial %+v)", f, f0)
	}

	if got := string(recv(t, rcv).GetData()); got != "resent" {
		t.Fatalf("consumer got %q, want resent", got)
	}
	noMessage(t, rcv, 300*time.Millisecond)
}

// Resumed transfers we ignore whatever they carry: aborted (fe2o3-amqp
// aborts without a delivery-id), several frames, a state and settled.
// None is answered or published; the link and session carry on.
func TestResumeAbortedAndOthersDropped(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "q", Type: address.Queue})
	rcv := receiver(t, e.session(t, nil), "q", nil)
	p := dialRaw(t, e)
	p.openSession()
	p.send(0, &frames.Attach{Name: "snd", Handle: 0, Role: frames.RoleSender, SndSettleMode: frames.SenderSettleMixed,
		Source: &encoding.Source{}, Target: &encoding.Target{Address: "q"}, HasInitialDeliveryCount: true,
		Unsettled: encoding.Map{{Key: []byte("A"), Value: nil}, {Key: []byte("B"), Value: nil}, {Key: []byte("D"), Value: nil}}})
	checkEmptyUnsettled(t, expect[*frames.Attach](p))
	p.expectFlow()

	// resume + aborted, no delivery-id, no payload.
	p.sendPayload(0, &frames.Transfer{Handle: 0, DeliveryTag: []byte("A"), MessageFormat: 0, HasMessageFormat: true,
		Resume: true, Aborted: true}, nil)
	// A resumed delivery over two frames; the second omits resume.
	msg := minimalMessage("two frames")
	p.sendPayload(0, &frames.Transfer{Handle: 0, DeliveryID: 0, HasDeliveryID: true, DeliveryTag: []byte("B"),
		MessageFormat: 0, HasMessageFormat: true, Resume: true, More: true}, msg[:4])
	p.sendPayload(0, &frames.Transfer{Handle: 0}, msg[4:])
	// resume with the sender's terminal state, settled.
	p.sendPayload(0, &frames.Transfer{Handle: 0, DeliveryID: 1, HasDeliveryID: true, DeliveryTag: []byte("D"),
		MessageFormat: 0, HasMessageFormat: true, Resume: true, Settled: true, State: &encoding.Accepted{}}, minimalMessage("settled"))
	// A new delivery goes through normally.
	p.transfer(0, 2, false, minimalMessage("after"))
	d := p.expectDisposition()
	if d.First != 2 || d.Last != 2 || !isAccepted(d.State) {
		t.Fatalf("disposition %+v; want only the new delivery (id 2)", d)
	}
	if got := string(recv(t, rcv).GetData()); got != "after" {
		t.Fatalf("consumer got %q, want after", got)
	}
	noMessage(t, rcv, 300*time.Millisecond)
}

// A receiver whose unsettled map is incomplete gets no new deliveries on
// that attachment (part 2.7.3): credit is not used, a drain completes at
// once. Attached again with a complete map, it receives.
func TestResumeIncompleteUnsettled(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "q", Type: address.Queue})
	send(t, sender(t, e.session(t, nil), "q", nil), dataMsg("m1"))
	p := dialRaw(t, e)
	p.openSession()
	p.send(0, &frames.Attach{Name: "r", Handle: 0, Role: frames.RoleReceiver, SndSettleMode: frames.SenderSettleUnsettled,
		Source: &encoding.Source{Address: "q"}, Target: &encoding.Target{},
		Unsettled: encoding.Map{{Key: []byte{0, 0, 0, 0, 0, 0, 0, 1}, Value: nil}}, IncompleteUnsettled: true})
	checkEmptyUnsettled(t, expect[*frames.Attach](p))
	p.flow(0, 0, 10)
	time.Sleep(300 * time.Millisecond) // m1 would be on its way by now
	p.send(0, &frames.Flow{NextIncomingID: 0, HasNextIncomingID: true, IncomingWindow: 1000, NextOutgoingID: 0, OutgoingWindow: 1000,
		Handle: 0, HasHandle: true, DeliveryCount: 0, HasDeliveryCount: true, LinkCredit: 10, HasLinkCredit: true, Drain: true})
	for {
		switch f := p.next().(type) {
		case *frames.Transfer:
			t.Fatalf("transfer %+v after an incomplete unsettled map", f)
		case *frames.Flow:
			if !f.Drain {
				continue
			}
			if f.DeliveryCount != 10 || f.LinkCredit != 0 {
				t.Fatalf("drain answer %+v; want the credit used up", f)
			}
		default:
			continue
		}
		break
	}
	p.send(0, &frames.Detach{Handle: 0})
	expect[*frames.Detach](p)
	p.send(0, &frames.Attach{Name: "r", Handle: 1, Role: frames.RoleReceiver, SndSettleMode: frames.SenderSettleUnsettled,
		Source: &encoding.Source{Address: "q"}, Target: &encoding.Target{}, Unsettled: encoding.Map{}})
	checkEmptyUnsettled(t, expect[*frames.Attach](p))
	p.flow(1, 0, 10)
	if tr, payload := p.expectTransferFrame(); !bytes.Contains(payload, []byte("m1")) {
		t.Fatalf("transfer %+v %q", tr, payload)
	}
}
