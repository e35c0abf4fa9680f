package router

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/message"
)

// A message published again under its name (an MQTT QoS 2 PUBLISH resent
// after the node that routed it died) reaches each live topic-space
// consumer once, whether it went out live or was stored because a
// durable subscription wanted it; other names and unnamed messages are
// untouched.
func TestPublishOnceLiveDuplicate(t *testing.T) {
	e := newEnv(t)
	_, live := consume(t, e.r, "default", "once/#", ConsumeOptions{}, 1000)
	_, other := consume(t, e.r, "default", "once/live", ConsumeOptions{}, 1000)
	p, err := e.r.Producer(ctxT(t), "default", "once/live")
	if err != nil {
		t.Fatal(err)
	}
	send := func(p *Producer, body, once string) {
		t.Helper()
		done := make(chan error, 1)
		p.PublishOnce(&message.Message{Body: []byte(body), Durable: true}, once, func(o Outcome, err error) {
			if err == nil && o.Kind != Accepted {
				err = fmt.Errorf("outcome %v", o.Kind)
			}
			done <- err
		})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	expect := func(c *collector, bodies ...string) {
		t.Helper()
		for _, b := range bodies {
			if d := c.next(t); string(d.Message.Body) != b {
				t.Fatalf("got %q, want %q", d.Message.Body, b)
			}
		}
		c.none(t, 200*time.Millisecond)
	}
	send(p, "a", "q2.seqA.1")
	send(p, "b", "q2.seqA.2")
	send(p, "a", "q2.seqA.1") // the resend
	send(p, "c", "q2.seqB.1") // another connection's first
	send(p, "d", "")          // not named
	send(p, "d", "")
	expect(live, "a", "b", "c", "d", "d")
	expect(other, "a", "b", "c", "d", "d")

	// Stored: a durable subscription wants the name; live consumers get
	// the engine's core copy of each attempt.
	_, dur := consume(t, e.r, "default", "once/live", ConsumeOptions{Durable: "keep"}, 1000)
	send(p, "b", "q2.seqA.2") // resent after the switch from live to stored
	send(p, "e", "q2.seqA.3")
	send(p, "e", "q2.seqA.3")
	expect(live, "e")
	expect(other, "e")
	expect(dur, "b", "e") // b: new to it (and to the engine's store)
}

// The window: numbers out of order within it are each taken once, a
// number below it is not known (delivered), and forgotten sequences do
// not grow the memory.
func TestOnceSeenWindow(t *testing.T) {
	var o onceSeen
	name := func(s string, n uint64) string { return fmt.Sprintf("%s.%s", s, strconv.FormatUint(n, 36)) }
	for _, n := range []uint64{5, 3, 4, 1, 2} {
		if o.seen(name("s", n)) {
			t.Fatalf("%d: first copy taken for a duplicate", n)
		}
	}
	for n := uint64(1); n <= 5; n++ {
		if !o.seen(name("s", n)) {
			t.Fatalf("%d: duplicate not caught", n)
		}
	}
	if o.seen(name("s", 5+onceWindow+10)) {
		t.Fatal("far ahead: taken for a duplicate")
	}
	if o.seen(name("s", 5)) {
		t.Fatal("below the window: should be delivered (not known)")
	}
	if o.seen("unparsable") || o.seen("unparsable") || o.seen("x.!") || o.seen("x.!") {
		t.Fatal("a name of another form is never a duplicate")
	}
	for i := range 3 * onceSequences {
		o.seen(name(fmt.Sprint("p", i), 1))
	}
	if len(o.seqs) > onceSequences {
		t.Fatalf("%d sequences remembered, at most %d", len(o.seqs), onceSequences)
	}
	if !o.seen(name(fmt.Sprint("p", 3*onceSequences-1), 1)) {
		t.Fatal("the most recent sequence was forgotten")
	}
}

func BenchmarkOnceSeen(b *testing.B) {
	var o onceSeen
	names := make([]string, 4096)
	for i := range names {
		names[i] = "q2.benchsequence0123456789." + strconv.FormatUint(uint64(i+1), 36)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		o.seen(names[i%len(names)])
	}
}
