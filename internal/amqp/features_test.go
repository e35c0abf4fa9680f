package amqp

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	goamqp "github.com/Azure/go-amqp"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/amqp/encoding"
	"github.com/throngmq/throng/internal/tenant"
)

func TestLargeMessageMultiFrame(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.MaxFrameSize = 4096 })
	e.addrDef(t, "default", &address.Address{Name: "big", Type: address.Queue})
	s := e.session(t, &goamqp.ConnOptions{MaxFrameSize: 8192})
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	send(t, sender(t, s, "big", nil), goamqp.NewMessage(body))
	m := recv(t, receiver(t, s, "big", nil))
	if !bytes.Equal(m.GetData(), body) {
		t.Fatalf("body of %d bytes differs", len(m.GetData()))
	}
}

func TestMessageSizeExceeded(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.MaxMessageSize = 1000 })
	s := e.session(t, nil)
	snd := sender(t, s, "anything", &goamqp.SenderOptions{})
	if snd.MaxMessageSize() != 1000+messageOverhead {
		t.Fatalf("max-message-size %d", snd.MaxMessageSize())
	}
	// go-amqp refuses locally what the attach announced; a raw peer
	// ignores it and is detached.
	p := dialRaw(t, e)
	p.openSession()
	p.attachSender(0, "anything")
	p.expectFlow()
	p.sendFrames(0, 0, minimalMessage(strings.Repeat("x", 1000+messageOverhead+1)), 60000)
	d := expect[*framesDetach](p)
	if d.Error == nil || d.Error.Condition != "amqp:link:message-size-exceeded" {
		t.Fatalf("detach %+v", d.Error)
	}
}

func TestDynamicReplyAddress(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "requests", Type: address.Queue})
	// Service side.
	svc := e.session(t, nil)
	reqs := receiver(t, svc, "requests", nil)
	relay := sender(t, svc, "", nil) // anonymous relay
	go func() {
		m, err := reqs.Receive(ctxT(t), nil)
		if err != nil {
			return
		}
		_ = reqs.AcceptMessage(ctxT(t), m)
		resp := dataMsg("re:" + string(m.GetData()))
		resp.Properties = &goamqp.MessageProperties{To: m.Properties.ReplyTo, CorrelationID: m.Properties.MessageID}
		_ = relay.Send(ctxT(t), resp, nil)
	}()
	// Client side.
	cli := e.session(t, nil)
	replies := receiver(t, cli, "", &goamqp.ReceiverOptions{DynamicAddress: true, Credit: 10})
	if !strings.HasPrefix(replies.Address(), tempPrefix) {
		t.Fatalf("dynamic address %q", replies.Address())
	}
	req := dataMsg("ping")
	req.Properties = &goamqp.MessageProperties{MessageID: "r1", ReplyTo: ptr(replies.Address())}
	send(t, sender(t, cli, "requests", nil), req)
	m := recv(t, replies)
	if string(m.GetData()) != "re:ping" || m.Properties.CorrelationID != "r1" {
		t.Fatalf("reply %q %+v", m.GetData(), m.Properties)
	}
	_ = replies.AcceptMessage(ctxT(t), m)
	addr := replies.Address()
	if err := replies.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool { _, ok := e.store.Address("default", addr); return !ok })
}

func TestAnonymousRelayErrors(t *testing.T) {
	e := startEnv(t, nil)
	e.tenant(t, &tenant.Tenant{Name: "strict", Strict: true})
	e.user(t, "strict", "app", "pw")
	s := e.session(t, &goamqp.ConnOptions{SASLType: goamqp.SASLTypePlain("app@strict", "pw")})
	relay := sender(t, s, "", nil)
	m := dataMsg("x")
	m.Properties = &goamqp.MessageProperties{To: ptr("nowhere")}
	if err := relay.Send(ctxT(t), m, nil); condition(err) != "amqp:not-found" {
		t.Fatalf("relay to unknown address: %v", err)
	}
	if err := relay.Send(ctxT(t), dataMsg("no to"), nil); condition(err) != "amqp:precondition-failed" {
		t.Fatalf("relay without to: %v", err)
	}
}

func TestDurableSubscriptionResume(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "events", Type: address.Topic})
	opts := &goamqp.ReceiverOptions{Name: "sub1", SourceDurability: goamqp.DurabilityUnsettledState, SourceExpiryPolicy: goamqp.ExpiryPolicyNever, Credit: 10}
	c1 := e.dial(t, &goamqp.ConnOptions{ContainerID: "app-1"})
	s1, _ := c1.NewSession(ctxT(t), nil)
	r1 := receiver(t, s1, "events", opts)
	pub := sender(t, e.session(t, nil), "events", nil)
	send(t, pub, dataMsg("e1"))
	m := recv(t, r1)
	_ = r1.AcceptMessage(ctxT(t), m)
	c1.Close() // leaves the durable terminus in place
	eventually(t, func() bool { st, _ := e.r.AddressStats(ctxT(t), "default", "events"); return st.Consumers == 0 })
	send(t, pub, dataMsg("e2"))
	send(t, pub, dataMsg("e3"))
	c2 := e.dial(t, &goamqp.ConnOptions{ContainerID: "app-1"})
	s2, _ := c2.NewSession(ctxT(t), nil)
	r2 := receiver(t, s2, "events", opts)
	got := map[string]bool{}
	for range 2 {
		m := recv(t, r2)
		got[string(m.GetData())] = true
		_ = r2.AcceptMessage(ctxT(t), m)
	}
	if !got["e2"] || !got["e3"] {
		t.Fatalf("resumed subscription got %v", got)
	}
}

func TestSelectorAndReplayFilters(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "metrics", Type: address.Topic})
	s := e.session(t, nil)
	pub := sender(t, s, "metrics", nil)
	for i := 1; i <= 5; i++ {
		m := dataMsg(fmt.Sprint(i))
		m.ApplicationProperties = map[string]any{"n": int64(i), "color": []string{"red", "blue"}[i%2]}
		send(t, pub, m)
	}
	// Replay from sequence 3.
	r := receiver(t, s, "metrics", &goamqp.ReceiverOptions{Credit: 10, Filters: []goamqp.LinkFilter{
		goamqp.NewLinkFilter(string(encoding.StartAtSequenceFilter), 0, uint64(3))}})
	for _, want := range []string{"3", "4", "5"} {
		if m := recv(t, r); string(m.GetData()) != want {
			t.Fatalf("replay: got %q want %q", m.GetData(), want)
		}
	}
	// Replay from the start with a selector.
	sel := receiver(t, s, "metrics", &goamqp.ReceiverOptions{Credit: 10, Filters: []goamqp.LinkFilter{
		goamqp.NewLinkFilter(string(encoding.StartAtTimeFilter), 0, time.Now().Add(-time.Hour)),
		goamqp.NewSelectorFilter("color = 'blue' AND n > 1")}})
	if sel.LinkSourceFilterValue(string(encoding.SelectorFilter)) == nil {
		t.Fatal("selector not echoed in the attach")
	}
	for _, want := range []string{"3", "5"} {
		if m := recv(t, sel); string(m.GetData()) != want {
			t.Fatalf("selector: got %q want %q", m.GetData(), want)
		}
	}
	_, err := s.NewReceiver(ctxT(t), "metrics", &goamqp.ReceiverOptions{Filters: []goamqp.LinkFilter{goamqp.NewSelectorFilter("n >")}})
	if condition(err) != "amqp:invalid-field" {
		t.Fatalf("bad selector: %v", err)
	}
}

func TestDrainCredit(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "dq", Type: address.Queue})
	s := e.session(t, nil)
	snd := sender(t, s, "dq", nil)
	send(t, snd, dataMsg("a"))
	send(t, snd, dataMsg("b"))
	r := receiver(t, s, "dq", &goamqp.ReceiverOptions{Credit: -1})
	if err := r.IssueCredit(5); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		_ = r.AcceptMessage(ctxT(t), recv(t, r))
	}
	// Three credits left: drain uses them up.
	if err := r.DrainCredit(ctxT(t), nil); err != nil {
		t.Fatalf("drain: %v", err)
	}
	send(t, snd, dataMsg("c"))
	noMessage(t, r, 300*time.Millisecond)
	// Drain with nothing available answers at once.
	if err := r.IssueCredit(3); err != nil {
		t.Fatal(err)
	}
	if err := r.DrainCredit(ctxT(t), nil); err != nil {
		t.Fatalf("empty drain: %v", err)
	}
}

func TestLimitRejected(t *testing.T) {
	e := startEnv(t, nil)
	e.addrDef(t, "default", &address.Address{Name: "small", Type: address.Queue, Limits: address.Limits{MaxMessages: 1, Overflow: address.RejectNew}})
	snd := sender(t, e.session(t, nil), "small", nil)
	send(t, snd, dataMsg("1"))
	err := snd.Send(ctxT(t), dataMsg("2"), nil)
	if condition(err) != "amqp:resource-limit-exceeded" {
		t.Fatalf("over the limit: %v", err)
	}
}
