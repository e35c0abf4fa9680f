package conformance

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/tenant"
	"github.com/throngmq/throng/internal/testkit"
)

// AMQP 1.0 scenarios with Debian's Qpid Proton (testdata/amqp_agent.py):
// every role is its own process with its own connection.

func amqpPlatform(t *testing.T, opts ...testkit.Option) *testkit.Platform {
	t.Helper()
	requireProton(t)
	p := testkit.Start(t, opts...)
	if p.AMQPAddr == "" {
		t.Fatal("platform serves no AMQP")
	}
	return p
}

// proton starts a connected Proton agent.
func proton(t *testing.T, p *testkit.Platform, name string) *agent {
	t.Helper()
	a := startAgent(t, name, "amqp_agent.py", "amqp://"+p.AMQPAddr)
	a.do("connect", nil)
	return a
}

func define(t *testing.T, p *testkit.Platform, a *address.Address) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Router.CreateAddress(ctx, tenant.Default, a); err != nil {
		t.Fatalf("define %s %s: %v", a.Type, a.Name, err)
	}
}

func defineQueue(t *testing.T, p *testkit.Platform, names ...string) {
	t.Helper()
	for _, n := range names {
		define(t, p, &address.Address{Name: n, Type: address.Queue})
	}
}

type m = map[string]any

// sendN sends count messages "<prefix><i>" on a new sender and checks
// that each is accepted. pipelined sends them all before waiting for any
// outcome (so the server may store them together).
func sendN(t *testing.T, s *agent, addr, prefix string, count int, pipelined bool) {
	t.Helper()
	link := "s-" + prefix
	s.do("sender", m{"link": link, "address": addr})
	r := s.do("send", m{"link": link, "count": count, "prefix": prefix, "wait": !pipelined})
	if pipelined {
		r = s.do("settled", m{"link": link})
	}
	for i, o := range r.outcomeList() {
		if o != "accepted" {
			t.Fatalf("send %s%d to %s: outcome %s (all: %v)", prefix, i, addr, o, r.outcomeList())
		}
	}
	if n := len(r.outcomeList()); n != count {
		t.Fatalf("%d outcomes for %d messages", n, count)
	}
}

func bodies(ms []amqpMsg) []string {
	var out []string
	for _, x := range ms {
		out = append(out, x.text())
	}
	return out
}

func names(prefix string, from, to int) []string {
	var out []string
	for i := from; i < to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

func sorted(ss []string) []string {
	c := append([]string(nil), ss...)
	sort.Strings(c)
	return c
}

func sameSet(a, b []string) bool {
	return strings.Join(sorted(a), ",") == strings.Join(sorted(b), ",")
}

// TestAMQPLateJoiner: messages sent to a queue before any consumer exists
// wait for the first one, in order; a non-durable topic receiver gets only
// what is published after it attached.
func TestAMQPLateJoiner(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "late/q")
	define(t, p, &address.Address{Name: "late/t", Type: address.Topic})
	s := proton(t, p, "sender")
	sendN(t, s, "late/q", "q", 10, true)
	sendN(t, s, "late/t", "old", 3, false)

	r := proton(t, p, "receiver")
	r.do("receiver", m{"link": "q", "address": "late/q", "credit": 20})
	got := r.do("receive", m{"link": "q", "count": 10})
	if b := bodies(got.Messages); strings.Join(b, ",") != strings.Join(names("q", 0, 10), ",") {
		t.Fatalf("late queue consumer got %v", b)
	}
	r.do("receiver", m{"link": "t", "address": "late/t", "credit": 20})
	sendN(t, s, "late/t", "new", 2, false)
	got = r.do("receive", m{"link": "t", "count": 2, "timeout": 5})
	if b := bodies(got.Messages); !sameSet(b, []string{"new0", "new1"}) {
		t.Fatalf("late topic receiver got %v, want only new0, new1", b)
	}
}

// TestAMQPReleaseOnDetach: a receiver that detaches with unsettled
// deliveries releases them; another receiver gets them.
func TestAMQPReleaseOnDetach(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "detach/q")
	s := proton(t, p, "sender")
	sendN(t, s, "detach/q", "d", 5, true)
	a := proton(t, p, "A")
	a.do("receiver", m{"link": "r", "address": "detach/q", "credit": 5})
	got := a.do("receive", m{"link": "r", "count": 5, "settle": "none"})
	if len(got.Messages) != 5 {
		t.Fatalf("A got %v", bodies(got.Messages))
	}
	a.do("detach", m{"link": "r"})
	b := proton(t, p, "B")
	b.do("receiver", m{"link": "r", "address": "detach/q", "credit": 10})
	got = b.do("receive", m{"link": "r", "count": 5, "timeout": 10})
	if bs := bodies(got.Messages); !sameSet(bs, names("d", 0, 5)) {
		t.Fatalf("B got %v after A detached holding d0..d4 unsettled", bs)
	}
}

// TestAMQPCrashRedelivery: a receiver process killed with SIGKILL while it
// holds unsettled deliveries: another receiver gets exactly those (not the
// ones it had accepted before it died), even when they were stored
// together (pipelined sends: one group-commit entry).
func TestAMQPCrashRedelivery(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "crash/q")
	s := proton(t, p, "sender")
	sendN(t, s, "crash/q", "c", 5, true)
	a := proton(t, p, "A")
	a.do("receiver", m{"link": "r", "address": "crash/q", "credit": 5})
	got := a.do("receive", m{"link": "r", "count": 5, "settle": "none"})
	if bs := bodies(got.Messages); strings.Join(bs, ",") != strings.Join(names("c", 0, 5), ",") {
		t.Fatalf("A got %v", bs)
	}
	a.do("settle", m{"link": "r", "n": 2, "outcome": "accept"})
	// The dispositions were written before the kill; the server reads
	// them before it sees the connection end.
	a.kill()
	b := proton(t, p, "B")
	b.do("receiver", m{"link": "r", "address": "crash/q", "credit": 10})
	got = b.do("receive", m{"link": "r", "count": 3, "timeout": 10})
	// Anything more would be an accepted message delivered again.
	more := b.do("receive", m{"link": "r", "quiet": true, "timeout": 1})
	bs := append(bodies(got.Messages), bodies(more.Messages)...)
	if !sameSet(bs, names("c", 2, 5)) {
		t.Fatalf("after A (accepted c0, c1; held c2..c4) was killed, B got %v; want exactly c2, c3, c4", bs)
	}
}

// TestAMQPPresettledAndUnsettled: senders and receivers in either
// settlement mode.
func TestAMQPPresettledAndUnsettled(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "settle/q")
	s := proton(t, p, "sender")
	s.do("sender", m{"link": "pre", "address": "settle/q", "presettled": true})
	if o := s.do("send", m{"link": "pre", "count": 3, "prefix": "pre"}).outcomeList(); len(o) != 3 || o[0] != "presettled" {
		t.Fatalf("presettled sends: %v", o)
	}
	s.do("sender", m{"link": "uns", "address": "settle/q"})
	if o := s.do("send", m{"link": "uns", "count": 3, "prefix": "uns"}).outcomeList(); strings.Join(o, ",") != "accepted,accepted,accepted" {
		t.Fatalf("unsettled sends: %v", o)
	}
	r := proton(t, p, "receiver")
	r.do("receiver", m{"link": "pre", "address": "settle/q", "credit": 3, "presettled": true})
	got := r.do("receive", m{"link": "pre", "count": 3})
	for _, x := range got.Messages {
		if !x.Settled {
			t.Errorf("at-most-once receiver got an unsettled delivery %v", x.Body)
		}
	}
	r.do("receiver", m{"link": "uns", "address": "settle/q", "credit": 3})
	got2 := r.do("receive", m{"link": "uns", "count": 3})
	for _, x := range got2.Messages {
		if x.Settled {
			t.Errorf("at-least-once receiver got a pre-settled delivery %v", x.Body)
		}
	}
	all := append(bodies(got.Messages), bodies(got2.Messages)...)
	if !sameSet(all, append(names("pre", 0, 3), names("uns", 0, 3)...)) {
		t.Fatalf("received %v", all)
	}
}

// TestAMQPOutcomes: every outcome a receiver can give, each from its own
// process.
func TestAMQPOutcomes(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "out/accept", "out/reject", "out/release", "out/modified", "out/undeliverable", "DLQ")
	s := proton(t, p, "sender")

	t.Run("accepted", func(t *testing.T) {
		sendN(t, s, "out/accept", "a", 1, false)
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "out/accept", "credit": 5})
		if got := r.do("receive", m{"link": "r"}); len(got.Messages) != 1 {
			t.Fatalf("got %v", got.Messages)
		}
		if again := r.do("receive", m{"link": "r", "quiet": true, "timeout": 1}); len(again.Messages) != 0 {
			t.Fatalf("accepted message delivered again: %v", bodies(again.Messages))
		}
	})
	t.Run("rejected_to_DLQ", func(t *testing.T) {
		sendN(t, s, "out/reject", "r", 1, false)
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "out/reject", "credit": 5})
		if got := r.do("receive", m{"link": "r", "settle": "reject"}); len(got.Messages) != 1 {
			t.Fatalf("got %v", got.Messages)
		}
		d := proton(t, p, "dlq")
		d.do("receiver", m{"link": "d", "address": "DLQ", "credit": 5})
		got := d.do("receive", m{"link": "d"})
		if len(got.Messages) != 1 || got.Messages[0].text() != "r0" {
			t.Fatalf("DLQ got %v", got.Messages)
		}
		if again := r.do("receive", m{"link": "r", "quiet": true, "timeout": 0.5}); len(again.Messages) != 0 {
			t.Fatalf("rejected message delivered again: %v", bodies(again.Messages))
		}
	})
	t.Run("released_redelivered", func(t *testing.T) {
		sendN(t, s, "out/release", "l", 1, false)
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "out/release", "credit": 5})
		first := r.do("receive", m{"link": "r", "settle": "release"})
		got := r.do("receive", m{"link": "r", "timeout": 10})
		if len(first.Messages) != 1 || len(got.Messages) != 1 || got.Messages[0].text() != "l0" {
			t.Fatalf("released message not redelivered: first %v then %v", first.Messages, got.Messages)
		}
	})
	t.Run("modified_delivery_failed", func(t *testing.T) {
		sendN(t, s, "out/modified", "f", 1, false)
		r := proton(t, p, "receiver")
		r.do("receiver", m{"link": "r", "address": "out/modified", "credit": 5})
		first := r.do("receive", m{"link": "r", "settle": "modified"})
		got := r.do("receive", m{"link": "r", "timeout": 10})
		if len(first.Messages) != 1 || len(got.Messages) != 1 {
			t.Fatalf("modified message not redelivered: first %v then %v", first.Messages, got.Messages)
		}
		if c0, c1 := first.Messages[0].DeliveryCount, got.Messages[0].DeliveryCount; c1 != c0+1 {
			t.Fatalf("delivery-count %d then %d after modified(delivery-failed); want +1", c0, c1)
		}
	})
}

// TestAMQPRequestResponse (issue 10 item 4): a service on its own
// connection answers requests on reply senders attached to each request's
// reply-to address, unsettled; every reply is accepted end to end, credit
// keeps flowing with 20 requests outstanding, and each client sees only
// its own replies.
func TestAMQPRequestResponse(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "svc/requests", "replies/named")
	t.Run("dynamic", func(t *testing.T) { requestResponse(t, p, 20, m{"tag": "A"}) })
	t.Run("dynamic_two_clients", func(t *testing.T) { requestResponse(t, p, 20, m{"tag": "A"}, m{"tag": "B"}) })
	t.Run("named", func(t *testing.T) { requestResponse(t, p, 20, m{"tag": "N", "reply_to": "replies/named"}) })
	// A client in the style of Proton's SyncRequestResponse: reply credit
	// 1, taking each reply in its own time, while the service sends all
	// 20 replies at once: every reply is accepted, none released.
	t.Run("dynamic_credit_1_slow", func(t *testing.T) { requestResponse(t, p, 20, m{"tag": "S", "credit": 1, "delay": 0.1}) })
}

// requestResponse runs one service and the given requesters (agent
// "request" arguments: tag, reply_to, credit, delay), each in its own
// process, against the queue svc/requests.
func requestResponse(t *testing.T, p *testkit.Platform, requests int, clients ...m) {
	t.Helper()
	svc := proton(t, p, "service")
	type out struct {
		r   result
		err error
	}
	served := make(chan out, 1)
	go func() {
		r, err := svc.try("serve", m{"address": "svc/requests", "count": requests * len(clients), "timeout": 30})
		served <- out{r, err}
	}()
	results := make([]chan out, len(clients))
	for i, c := range clients {
		results[i] = make(chan out, 1)
		a := proton(t, p, fmt.Sprint("requester-", c["tag"]))
		args := m{"address": "svc/requests", "count": requests, "credit": 5, "timeout": 30}
		for k, v := range c {
			args[k] = v
		}
		go func(ch chan out) {
			r, err := a.try("request", args)
			ch <- out{r, err}
		}(results[i])
	}
	for i, c := range clients {
		o := <-results[i]
		if o.err != nil {
			t.Fatalf("requester %v: %v", c["tag"], o.err)
		}
		want := names(fmt.Sprint(c["tag"], "-"), 0, requests)
		if !sameSet(o.r.CorrelationIDs, want) || len(o.r.CorrelationIDs) != requests {
			t.Errorf("requester %v (reply-to %s) saw replies %v; want exactly its own %d", c["tag"], o.r.ReplyTo, o.r.CorrelationIDs, requests)
		}
		if _, named := c["reply_to"]; !named && !strings.HasPrefix(o.r.ReplyTo, "$temp/") {
			t.Errorf("dynamic reply address %q", o.r.ReplyTo)
		}
	}
	o := <-served
	if o.err != nil {
		t.Fatalf("service: %v", o.err)
	}
	if oc := o.r.outcomeCounts(); oc["accepted"] != requests*len(clients) || len(oc) != 1 {
		t.Errorf("service's reply outcomes %v; want all %d accepted (reply sender credit %v)", oc, requests*len(clients), o.r.ReplyCredit)
	}
}

// TestAMQPReleasedKeepsPlace (issue 10 item 7): a released message stays
// at the head of the queue: the next delivery is that message again, also
// when it was stored together with the messages behind it (pipelined
// sends: the first goes alone, the rest may share a group-commit entry).
func TestAMQPReleasedKeepsPlace(t *testing.T) {
	p := amqpPlatform(t)
	defineQueue(t, p, "order/q")
	s := proton(t, p, "sender")
	sendN(t, s, "order/q", "o", 20, true)
	r := proton(t, p, "receiver")
	r.do("receiver", m{"link": "r", "address": "order/q", "credit": 2})
	first := r.do("receive", m{"link": "r", "count": 2, "settle": "none"})
	if bs := bodies(first.Messages); strings.Join(bs, ",") != "o0,o1" {
		t.Fatalf("first two %v", bs)
	}
	r.do("settle", m{"link": "r", "n": 1, "outcome": "accept"})
	r.do("settle", m{"link": "r", "n": 1, "outcome": "release"})
	r.do("flow", m{"link": "r", "credit": 19})
	rest := r.do("receive", m{"link": "r", "count": 19, "timeout": 10})
	want := names("o", 1, 20)
	if got := bodies(rest.Messages); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("after accepting o0 and releasing o1: %v; want o1 (released, at the head) then o1..o19", got)
	}
}

// largeMessage sends one message with a random body of size bytes (its
// SHA-256 in a property) and checks the consumer's copy.
func largeMessage(t *testing.T, size int) {
	t.Helper()
	const limit = 64 << 20
	p := amqpPlatform(t)
	defineQueue(t, p, "big/q")
	s := proton(t, p, "sender")
	att := s.do("sender", m{"link": "s", "address": "big/q"})
	if att.MaxMessageSize < limit {
		t.Errorf("sender attach advertises max-message-size %d; want at least %d", att.MaxMessageSize, limit)
	}
	res, err := s.try("send", m{"link": "s", "messages": []m{{"random_bytes": size, "seed": 7}}, "timeout": 120})
	if err != nil {
		t.Fatalf("%d-byte send: %v", size, err)
	}
	if o := res.outcomeList(); len(o) != 1 || o[0] != "accepted" {
		t.Fatalf("%d-byte send outcome %v", size, o)
	}
	r := proton(t, p, "receiver")
	ra := r.do("receiver", m{"link": "r", "address": "big/q", "credit": 1})
	if ra.MaxMessageSize != 0 && ra.MaxMessageSize < limit {
		t.Errorf("receiver attach advertises max-message-size %d; want at least %d (or none)", ra.MaxMessageSize, limit)
	}
	got := r.do("receive", m{"link": "r", "timeout": 120})
	if len(got.Messages) != 1 {
		t.Fatalf("%d-byte message not received", size)
	}
	b, _ := got.Messages[0].Body.(map[string]any)
	if b == nil || b["len"] != float64(size) || b["sha256"] != got.Messages[0].Properties["sha256"] {
		t.Fatalf("%d-byte message body %v, sent sha256 %v", size, got.Messages[0].Body, got.Messages[0].Properties["sha256"])
	}
}
