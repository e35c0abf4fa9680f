package router

import (
	"errors"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
)

// TestStatsCountAcceptedOnly: messagesIn and bytesIn count only messages the
// address accepted; refused publishes (address full, too large, anycast
// without consumer) count in messagesRejected (issue 11.7: messagesIn
// counted them too).
func TestStatsCountAcceptedOnly(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "small", Type: address.Queue,
		Limits: address.Limits{MaxMessages: 2, MaxMessageSize: 100}})
	publish(t, e.r, "default", "small", "12345")
	publish(t, e.r, "default", "small", "1234567")
	if _, err := e.r.Publish(ctxT(t), "default", "small", msg("full")); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("third message: %v", err)
	}
	big := make([]byte, 200)
	if _, err := e.r.Publish(ctxT(t), "default", "small", msg(string(big))); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("oversized: %v", err)
	}
	st, err := e.r.AddressStats(ctxT(t), "default", "small")
	if err != nil {
		t.Fatal(err)
	}
	if st.MessagesIn != 2 || st.BytesIn != 12 || st.MessagesRejected != 2 || st.Backlog != 2 {
		t.Fatalf("queue stats = %+v; want in 2 (12 bytes), rejected 2, backlog 2", st)
	}

	// Live fan-out: accepted at once, with or without consumers.
	mustAddr(t, e.r, "default", &address.Address{Name: "news", Type: address.Multicast})
	publish(t, e.r, "default", "news", "abc")
	if st, _ := e.r.AddressStats(ctxT(t), "default", "news"); st.MessagesIn != 1 || st.BytesIn != 3 || st.MessagesRejected != 0 {
		t.Fatalf("multicast stats = %+v", st)
	}

	// Anycast without a consumer: refused, not in.
	mustAddr(t, e.r, "default", &address.Address{Name: "rpc", Type: address.Anycast})
	if _, err := e.r.Publish(ctxT(t), "default", "rpc", msg("x")); err == nil {
		t.Fatal("anycast without consumers accepted")
	}
	if st, _ := e.r.AddressStats(ctxT(t), "default", "rpc"); st.MessagesIn != 0 || st.BytesIn != 0 || st.MessagesRejected != 1 {
		t.Fatalf("anycast stats = %+v", st)
	}
}

// Delivered messages count in messagesOut and bytesOut (body bytes).
func TestStatsCountDelivered(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "out", Type: address.Queue})
	publish(t, e.r, "default", "out", "hello")
	publish(t, e.r, "default", "out", "abc")
	_, col := consume(t, e.r, "default", "out", ConsumeOptions{}, 10)
	for range 2 {
		col.next(t).Settle(Outcome{Kind: Accepted})
	}
	st, err := e.r.AddressStats(ctxT(t), "default", "out")
	if err != nil || st.MessagesOut != 2 || st.BytesOut != 8 {
		t.Fatalf("messagesOut %d bytesOut %d (%v), want 2 and 8", st.MessagesOut, st.BytesOut, err)
	}
}

// TestStatsCountTopicSpaceDurable: a durable topic-space publish that goes
// out live is counted in (with its bytes) when its outcome is Accepted:
// at once without a subscriber behind, only once a subscriber that took
// it without credit has caught up (the publish is held until then), and
// a stored one once stored. The live path counts without the counted
// wrapper (session 15): this pins that it counts the same.
func TestStatsCountTopicSpaceDurable(t *testing.T) {
	e := newEnv(t)
	p, err := e.r.Producer(ctxT(t), "default", "ts/a")
	if err != nil {
		t.Fatal(err)
	}
	ctr := p.ctr // a topic-space name's counters are its producer's (the metric and the stats API count defined addresses)
	pub := func(body string) chan Outcome {
		ch := make(chan Outcome, 1)
		p.Publish(&message.Message{Body: []byte(body), Durable: true}, func(o Outcome, err error) {
			if err != nil {
				t.Errorf("publish %q: %v", body, err)
			}
			ch <- o
		})
		return ch
	}
	wait := func(ch chan Outcome) {
		t.Helper()
		select {
		case o := <-ch:
			if o.Kind != Accepted {
				t.Fatalf("outcome %v, want accepted", o.Kind)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no outcome within 10s")
		}
	}
	// No subscriber: live, accepted at once.
	wait(pub("abc"))
	if in, b := ctr.in.Load(), ctr.bytesIn.Load(); in != 1 || b != 3 {
		t.Fatalf("after a live publish: in %d bytes %d, want 1 and 3", in, b)
	}
	// A live subscriber without credit: the message waits in its queue
	// and the publish is held, not counted, until it has caught up.
	c, col := consume(t, e.r, "default", "ts/a", ConsumeOptions{}, 0)
	held := pub("hello")
	select {
	case o := <-held:
		t.Fatalf("publish completed (%v) while the subscriber had no credit", o.Kind)
	case <-time.After(200 * time.Millisecond):
	}
	if in := ctr.in.Load(); in != 1 {
		t.Fatalf("held publish counted: in %d, want 1", in)
	}
	c.AddCredit(10)
	col.next(t).Settle(Outcome{Kind: Accepted})
	wait(held)
	if in, b := ctr.in.Load(), ctr.bytesIn.Load(); in != 2 || b != 8 {
		t.Fatalf("after the held publish: in %d bytes %d, want 2 and 8", in, b)
	}
	c.Close()
	// A stored consumer's interest: stored, counted once stored.
	_, scol := consume(t, e.r, "default", "ts/#", ConsumeOptions{Durable: "s1"}, 10)
	Eventually(t, func() bool { return p.storedInterest() })
	wait(pub("wxyz"))
	if in, b, rej := ctr.in.Load(), ctr.bytesIn.Load(), ctr.rejected.Load(); in != 3 || b != 12 || rej != 0 {
		t.Fatalf("after a stored publish: in %d bytes %d rejected %d, want 3, 12, 0", in, b, rej)
	}
	if d := scol.next(t); string(d.Message.Body) != "wxyz" {
		t.Fatalf("stored consumer got %q", d.Message.Body)
	}
}
