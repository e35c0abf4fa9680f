package amqp

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/address"
)

func TestQueueSendReceive(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "orders", Type: address.Queue})
	s := e.session(t, nil)
	snd := sender(t, s, "orders", nil)
	for i := range 10 {
		m := dataMsg(fmt.Sprint("m", i))
		m.Properties = &goamqp.MessageProperties{MessageID: fmt.Sprint("id", i), Subject: ptr("subj")}
		m.ApplicationProperties = map[string]any{"n": int32(i), "s": "x"}
		m.Annotations = goamqp.Annotations{"x-opt-k": "v"}
		m.Header = &goamqp.MessageHeader{Durable: true}
		send(t, snd, m)
	}
	rcv := receiver(t, s, "orders", nil)
	for i := range 10 {
		m := recv(t, rcv)
		if got := string(m.GetData()); got != fmt.Sprint("m", i) {
			t.Fatalf("message %d: %q", i, got)
		}
		if m.Properties == nil || m.Properties.MessageID != fmt.Sprint("id", i) || *m.Properties.Subject != "subj" {
			t.Fatalf("properties %+v", m.Properties)
		}
		if m.ApplicationProperties["n"] != int32(i) || m.Annotations["x-opt-k"] != "v" {
			t.Fatalf("app properties %v annotations %v", m.ApplicationProperties, m.Annotations)
		}
		if m.Header == nil || !m.Header.Durable || m.Header.DeliveryCount != 0 {
			t.Fatalf("header %+v", m.Header)
		}
		if err := rcv.AcceptMessage(ctxT(t), m); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, func() bool {
		st, _ := e.r.AddressStats(ctxT(t), "default", "orders")
		return st.Backlog == 0
	})
}

func ptr[T any](v T) *T { return &v }

func TestByteExactForwarding(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "q", Type: address.Queue})
	// A bare message with unusual encodings a re-encoder would normalize:
	// a str32 subject and a footer.
	bare := []byte{
		0x00, 0x53, 0x73, 0xd0, 0, 0, 0, 13, 0, 0, 0, 4, // properties list32, 4 fields
		0x40, 0x40, 0x40, // message-id, user-id, to: null
		0xb1, 0, 0, 0, 1, 's', // subject str32 "s"
		0x00, 0x53, 0x75, 0xa0, 3, 'a', 'b', 'c', // data
		0x00, 0x53, 0x78, 0xc1, 1, 0, // empty footer map8
	}
	s := e.session(t, nil)
	rcv := receiver(t, s, "q", nil)
	// Publish through the raw peer so the exact bytes are ours.
	p := dialRaw(t, e)
	p.openSession()
	p.attachSender(0, "q")
	p.expectFlow()
	p.transfer(0, 0, false, bare)
	if d := p.expectDisposition(); !isAccepted(d.State) {
		t.Fatalf("disposition %+v", d.State)
	}
	m := recv(t, rcv)
	_ = rcv.AcceptMessage(ctxT(t), m)
	_ = rcv.Close(ctxT(t))
	// go-amqp decodes; compare the decoded fields and, via the raw
	// receiver below, the bytes.
	if string(m.GetData()) != "abc" || *m.Properties.Subject != "s" {
		t.Fatalf("decoded %+v", m)
	}
	p.transfer(0, 1, false, bare)
	p.expectDisposition()
	r2 := dialRaw(t, e)
	r2.openSession()
	r2.attachReceiver(0, "q")
	r2.flow(0, 0, 10)
	payload := r2.expectTransfer()
	if !bytes.HasSuffix(payload, bare) {
		t.Fatalf("bare message changed:\n got %x\nwant suffix %x", payload, bare)
	}
}

func TestPreSettledAndUnsettledSend(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "q", Type: address.Queue})
	s := e.session(t, nil)
	pre := sender(t, s, "q", &goamqp.SenderOptions{SettlementMode: goamqp.SenderSettleModeSettled.Ptr()})
	uns := sender(t, s, "q", &goamqp.SenderOptions{SettlementMode: goamqp.SenderSettleModeUnsettled.Ptr()})
	send(t, pre, dataMsg("pre"))
	send(t, uns, dataMsg("uns"))
	rcv := receiver(t, s, "q", nil)
	got := map[string]bool{}
	for range 2 {
		m := recv(t, rcv)
		got[string(m.GetData())] = true
		_ = rcv.AcceptMessage(ctxT(t), m)
	}
	if !got["pre"] || !got["uns"] {
		t.Fatalf("got %v", got)
	}
	// A pre-settled receiver (snd-settle-mode settled) gets settled transfers.
	_ = rcv.Close(ctxT(t))
	send(t, uns, dataMsg("x"))
	r2 := receiver(t, s, "q", &goamqp.ReceiverOptions{RequestedSenderSettleMode: goamqp.SenderSettleModeSettled.Ptr()})
	if m := recv(t, r2); string(m.GetData()) != "x" {
		t.Fatalf("got %q", m.GetData())
	}
	eventually(t, func() bool {
		st, _ := e.r.AddressStats(ctxT(t), "default", "q")
		return st.Backlog == 0
	})
}

func TestReceiverOutcomes(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "jobs", Type: address.Queue, DeadLetter: "jobs/dlq"})
	e.addrDef(t, "default", &address.Address{Name: "jobs/dlq", Type: address.Queue})
	s := e.session(t, nil)
	snd := sender(t, s, "jobs", nil)
	send(t, snd, dataMsg("a"))
	rcv := receiver(t, s, "jobs", &goamqp.ReceiverOptions{Credit: 1})
	m := recv(t, rcv)
	if err := rcv.ReleaseMessage(ctxT(t), m); err != nil {
		t.Fatal(err)
	}
	m = recv(t, rcv)
	if m.Header == nil || m.Header.DeliveryCount != 1 || string(m.GetData()) != "a" {
		t.Fatalf("redelivery header %+v", m.Header)
	}
	if err := rcv.ModifyMessage(ctxT(t), m, &goamqp.ModifyMessageOptions{DeliveryFailed: true}); err != nil {
		t.Fatal(err)
	}
	m = recv(t, rcv)
	if m.Header.DeliveryCount != 2 {
		t.Fatalf("delivery count %d", m.Header.DeliveryCount)
	}
	if err := rcv.RejectMessage(ctxT(t), m, &goamqp.Error{Condition: "app:bad", Description: "no"}); err != nil {
		t.Fatal(err)
	}
	dlq := receiver(t, s, "jobs/dlq", nil)
	d := recv(t, dlq)
	if string(d.GetData()) != "a" {
		t.Fatalf("dead letter %q", d.GetData())
	}
	_ = dlq.AcceptMessage(ctxT(t), d)
}

func TestAnycastEndToEndSettlement(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "svc", Type: address.Anycast})
	s := e.session(t, nil)
	snd := sender(t, s, "svc", nil)
	// No consumer: no credit, the send cannot complete.
	ctx, cancel := contextWithTimeout(300 * time.Millisecond)
	err := snd.Send(ctx, dataMsg("early"), nil)
	cancel()
	if err == nil {
		t.Fatal("send without consumer succeeded")
	}
	rcv := receiver(t, e.session(t, nil), "svc", nil)
	done := make(chan error, 1)
	go func() { done <- snd.Send(ctxT(t), dataMsg("hello"), nil) }()
	m := recv(t, rcv)
	for string(m.GetData()) == "early" {
		_ = rcv.AcceptMessage(ctxT(t), m)
		m = recv(t, rcv)
	}
	select {
	case err := <-done:
		t.Fatalf("send settled before the consumer: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := rcv.RejectMessage(ctxT(t), m, &goamqp.Error{Condition: "app:nope", Description: "refused"}); err != nil {
		t.Fatal(err)
	}
	err = <-done
	var de *goamqp.Error
	if !asErr(err, &de) || de.Condition != "app:nope" {
		t.Fatalf("send error %v, want rejected app:nope", err)
	}
	go func() { done <- snd.Send(ctxT(t), dataMsg("ok"), nil) }()
	m = recv(t, rcv)
	_ = rcv.AcceptMessage(ctxT(t), m)
	if err := <-done; err != nil {
		t.Fatalf("accepted send: %v", err)
	}
}

func TestMulticastFanOut(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "news", Type: address.Multicast})
	s := e.session(t, nil)
	r1 := receiver(t, s, "news", nil)
	r2 := receiver(t, e.session(t, nil), "news", nil)
	snd := sender(t, s, "news", nil)
	// Multicast is at most once: a receiver gets copies once the server
	// has its credit (its flow may still be on the way after attach), so
	// the sender repeats until both have one.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			_ = snd.Send(ctx, dataMsg("n1"), nil)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	for _, r := range []*goamqp.Receiver{r1, r2} {
		m := recv(t, r)
		if string(m.GetData()) != "n1" {
			t.Fatalf("got %q", m.GetData())
		}
	}
}

// go-amqp's default credit of 1, renewed after each settlement: every
// message needs the credit to travel client → server → router and back.
func TestCreditOneAtATime(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "one", Type: address.Queue})
	s := e.session(t, nil)
	snd := sender(t, s, "one", nil)
	rcv := receiver(t, s, "one", &goamqp.ReceiverOptions{Credit: 1})
	for i := range 20 {
		send(t, snd, dataMsg(fmt.Sprint(i)))
		m := recv(t, rcv)
		if string(m.GetData()) != fmt.Sprint(i) {
			t.Fatalf("got %q want %d", m.GetData(), i)
		}
		if err := rcv.AcceptMessage(ctxT(t), m); err != nil {
			t.Fatal(err)
		}
	}
}
