package router

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/tenant"
)

type outcomeErr struct {
	o   Outcome
	err error
}

func publishAsync(p *Producer, body string) chan outcomeErr {
	ch := make(chan outcomeErr, 1)
	p.Publish(msg(body), func(o Outcome, err error) { ch <- outcomeErr{o, err} })
	return ch
}

// A consumer without credit is busy, not gone: messages wait for its
// credit, in order, and settle with its outcome (issue 10 item 4: a
// requester with less credit than replies outstanding). They used to be
// released after ~250 ms of retries.
func TestAnycastWaitsForCredit(t *testing.T) {
	e := newEnv(t) // AnycastTimeout 5 s
	mustAddr(t, e.r, "default", &address.Address{Name: "rpc", Type: address.Anycast})
	c, col := consume(t, e.r, "default", "rpc", ConsumeOptions{}, 0)
	p, err := e.r.Producer(ctxT(t), "default", "rpc")
	if err != nil {
		t.Fatal(err)
	}
	var res []chan outcomeErr
	for i := range 3 {
		res = append(res, publishAsync(p, fmt.Sprint(i)))
	}
	col.none(t, 600*time.Millisecond)
	for i, r := range res {
		select {
		case x := <-r:
			t.Fatalf("message %d settled %v %v while waiting for credit", i, x.o.Kind, x.err)
		default:
		}
	}
	c.AddCredit(3)
	for i := range 3 {
		d := col.next(t)
		if string(d.Message.Body) != fmt.Sprint(i) {
			t.Fatalf("delivery %d is %q: out of order", i, d.Message.Body)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	for i, r := range res {
		if x := <-r; x.err != nil || x.o.Kind != Accepted {
			t.Fatalf("message %d: %v %v, want accepted", i, x.o.Kind, x.err)
		}
	}
}

// A message no consumer grants credit for is released after
// AnycastTimeout, and not delivered later.
func TestAnycastWaitTimesOut(t *testing.T) {
	e := newEnv(t)
	r, err := New(ctxT(t), Config{Engine: e.eng, Store: e.store, AnycastTimeout: 300 * time.Millisecond, TempSweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	mustAddr(t, r, "default", &address.Address{Name: "rpc", Type: address.Anycast})
	c, col := consume(t, r, "default", "rpc", ConsumeOptions{}, 0)
	p, err := r.Producer(ctxT(t), "default", "rpc")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	x := <-publishAsync(p, "late")
	if x.err != nil || x.o.Kind != Released {
		t.Fatalf("%v %v, want released", x.o.Kind, x.err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("released after %v, before the timeout", d)
	}
	c.AddCredit(1)
	col.none(t, 200*time.Millisecond)
}

// Messages waiting for the last consumer's credit when it leaves find no
// consumer (the producer's front-end releases them), and the group is
// dropped.
func TestAnycastConsumerLeavesWhileWaiting(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "rpc", Type: address.Anycast})
	c, _ := consume(t, e.r, "default", "rpc", ConsumeOptions{}, 0)
	p, err := e.r.Producer(ctxT(t), "default", "rpc")
	if err != nil {
		t.Fatal(err)
	}
	r := publishAsync(p, "x")
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case x := <-r:
		if !errors.Is(x.err, ErrNoConsumers) {
			t.Fatalf("%v %v, want ErrNoConsumers", x.o.Kind, x.err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no outcome after the consumer left")
	}
	ts, _ := e.r.tenant(ctxT(t), "default")
	if g := ts.anycastGroup("rpc", false); g != nil {
		t.Fatal("group of a consumer-less address kept")
	}
	// A consumer that comes back is found by the same producer.
	_, col := consume(t, e.r, "default", "rpc", ConsumeOptions{}, 1)
	r = publishAsync(p, "y")
	col.next(t).Settle(Outcome{Kind: Accepted})
	if x := <-r; x.err != nil || x.o.Kind != Accepted {
		t.Fatalf("%v %v", x.o.Kind, x.err)
	}
}

// Anycast groups go with their last consumer: 200 dynamic reply
// addresses that came and went leave nothing behind (issue 10 item 13).
func TestAnycastGroupsDropped(t *testing.T) {
	e := newEnv(t)
	ts, err := e.r.tenant(ctxT(t), "default")
	if err != nil {
		t.Fatal(err)
	}
	for range 200 {
		tmp, err := e.r.CreateTemp(ctxT(t), "default")
		if err != nil {
			t.Fatal(err)
		}
		c, err := e.r.Consume(ctxT(t), "default", tmp.Name(), ConsumeOptions{}, func(*Delivery) {})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := tmp.Delete(ctxT(t)); err != nil {
			t.Fatal(err)
		}
	}
	ts.mu.Lock()
	n := len(ts.anycast)
	ts.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d anycast groups left after their consumers closed", n)
	}
}

// A temporary address is anycast even where this node's copy of the store
// does not (yet, or any longer) hold it: a reply to it finds the
// requester's consumer or is refused for want of one, never accepted into
// the topic space and dropped; on a strict tenant too.
func TestTempNameResolvesAnycast(t *testing.T) {
	e := newEnv(t)
	if err := e.r.CreateTenant(ctxT(t), &tenant.Tenant{Name: "strict", Strict: true}); err != nil {
		t.Fatal(err)
	}
	for _, ten := range []string{"default", "strict"} {
		name := TempPrefix + "not-in-the-store"
		p, err := e.r.Producer(ctxT(t), ten, name)
		if err != nil {
			t.Fatalf("%s: %v", ten, err)
		}
		if p.Type() != address.Anycast || p.TopicSpace() {
			t.Fatalf("%s: %s resolves to %s (topic space %v)", ten, name, p.Type(), p.TopicSpace())
		}
		if _, err := p.PublishSync(ctxT(t), msg("reply")); !errors.Is(err, ErrNoConsumers) {
			t.Fatalf("%s: reply without consumer: %v, want ErrNoConsumers", ten, err)
		}
		_, col := consume(t, e.r, ten, name, ConsumeOptions{}, 1)
		r := publishAsync(p, "reply")
		col.next(t).Settle(Outcome{Kind: Accepted})
		if x := <-r; x.err != nil || x.o.Kind != Accepted {
			t.Fatalf("%s: %v %v", ten, x.o.Kind, x.err)
		}
	}
}

// A waiting message that no consumer with credit accepts (selectors) does
// not hold up the ones behind it.
func TestAnycastWaitingSkipsRefused(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "rpc", Type: address.Anycast})
	only := func(body string) ConsumeOptions {
		return ConsumeOptions{Filter: func(m *message.Message) bool { return string(m.Body) == body }}
	}
	a, colA := consume(t, e.r, "default", "rpc", only("for-a"), 0)
	_, colB := consume(t, e.r, "default", "rpc", only("for-b"), 0)
	p, err := e.r.Producer(ctxT(t), "default", "rpc")
	if err != nil {
		t.Fatal(err)
	}
	rb := publishAsync(p, "for-b")
	ra := publishAsync(p, "for-a")
	a.AddCredit(1)
	var d *Delivery
	select {
	case d = <-colA.ch:
	case <-time.After(time.Second): // B's waits for AnycastTimeout (5 s)
		t.Fatal("A's message held up behind B's")
	}
	if string(d.Message.Body) != "for-a" {
		t.Fatalf("A got %q", d.Message.Body)
	}
	d.Settle(Outcome{Kind: Accepted})
	if x := <-ra; x.err != nil || x.o.Kind != Accepted {
		t.Fatalf("%v %v", x.o.Kind, x.err)
	}
	colB.none(t, 50*time.Millisecond)
	select {
	case x := <-rb:
		t.Fatalf("B's message settled %v %v while waiting", x.o.Kind, x.err)
	default:
	}
}
