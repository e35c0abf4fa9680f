package router

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/message"
	"github.com/throngmq/throng/internal/tenant"
)

type env struct {
	dir   string
	eng   *engine.Engine
	store *tenant.Store
	r     *Router
}

func start(t testing.TB, dir string) *env { return startWith(t, engine.Config{DataDir: dir}) }

// startWith is start with an engine configuration of the test's own.
func startWith(t testing.TB, ec engine.Config) *env {
	t.Helper()
	dir := ec.DataDir
	eng, err := engine.Start(ec)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := eng.Connect(engine.SystemAccount)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	store, err := tenant.Open(ctx, nc, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := New(ctx, Config{Engine: eng, Store: store, AnycastTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{dir: dir, eng: eng, store: store, r: r}
	t.Cleanup(e.stop)
	return e
}

func (e *env) stop() {
	if e.r == nil {
		return
	}
	e.r.Close()
	e.store.Close()
	e.eng.Shutdown()
	e.r = nil
}

func newEnv(t testing.TB) *env { return start(t, t.TempDir()) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// collector gathers deliveries from a consumer.
type collector struct {
	ch chan *Delivery
}

func newCollector() *collector { return &collector{ch: make(chan *Delivery, 100000)} }

func (c *collector) deliver(d *Delivery) { c.ch <- d }

func (c *collector) next(t testing.TB) *Delivery {
	t.Helper()
	select {
	case d := <-c.ch:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
		return nil
	}
}

// none asserts that nothing arrives while the engine has had the time to
// route whatever was in flight.
func (c *collector) none(t testing.TB, wait time.Duration) {
	t.Helper()
	select {
	case d := <-c.ch:
		t.Fatalf("unexpected delivery %q", d.Message.Body)
	case <-time.After(wait):
	}
}

func msg(body string) *message.Message { return &message.Message{Body: []byte(body), Durable: true} }

func publish(t testing.TB, r *Router, ten, name, body string) Outcome {
	t.Helper()
	o, err := r.Publish(ctxT(t), ten, name, msg(body))
	if err != nil {
		t.Fatalf("publish %s/%s: %v", ten, name, err)
	}
	return o
}

func mustAddr(t testing.TB, r *Router, ten string, a *address.Address) {
	t.Helper()
	if err := r.CreateAddress(ctxT(t), ten, a); err != nil {
		t.Fatal(err)
	}
}

func consume(t testing.TB, r *Router, ten, name string, opts ConsumeOptions, credit int) (*Consumer, *collector) {
	t.Helper()
	col := newCollector()
	c, err := r.Consume(ctxT(t), ten, name, opts, col.deliver)
	if err != nil {
		t.Fatalf("consume %s: %v", name, err)
	}
	t.Cleanup(c.Close)
	c.AddCredit(credit)
	return c, col
}

func TestQueueCompetingConsumersAndCredit(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "orders/eu", Type: address.Queue})
	for i := 0; i < 10; i++ {
		if o := publish(t, e.r, "default", "orders/eu", fmt.Sprint(i)); o.Kind != Accepted {
			t.Fatalf("outcome %v", o.Kind)
		}
	}
	_, c1 := consume(t, e.r, "default", "orders/eu", ConsumeOptions{}, 3)
	_, c2 := consume(t, e.r, "default", "orders/eu", ConsumeOptions{}, 7)
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		d := c1.next(t)
		seen[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	for i := 0; i < 7; i++ {
		d := c2.next(t)
		seen[string(d.Message.Body)] = true
		d.Settle(Outcome{Kind: Accepted})
	}
	if len(seen) != 10 {
		t.Fatalf("got %d distinct messages", len(seen))
	}
	// Credit used up: nothing more, even after new messages arrive.
	publish(t, e.r, "default", "orders/eu", "late")
	c1.none(t, 300*time.Millisecond)
	c2.none(t, 0)
	Eventually(t, func() bool {
		st, _ := e.r.AddressStats(ctxT(t), "default", "orders/eu")
		return st.Backlog == 1 && st.Consumers == 2
	})
}

func TestQueueRedeliveryAndDeadLetter(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "jobs", Type: address.Queue, Limits: address.Limits{MaxDeliveries: 3}, DeadLetter: "jobs/dead"})
	mustAddr(t, e.r, "default", &address.Address{Name: "jobs/dead", Type: address.Queue})
	publish(t, e.r, "default", "jobs", "retry-me")
	publish(t, e.r, "default", "jobs", "reject-me")
	_, col := consume(t, e.r, "default", "jobs", ConsumeOptions{}, 100)

	counts := map[string][]uint64{}
	deadline := time.Now().Add(10 * time.Second)
	// Both messages reach the consumer, in any interleaving: retry-me may
	// go through its three attempts (released and modified messages go
	// back to the head of the queue) before reject-me has even arrived.
	for time.Now().Before(deadline) && (len(counts["retry-me"]) < 3 || len(counts["reject-me"]) < 1) {
		d := col.next(t)
		b := string(d.Message.Body)
		counts[b] = append(counts[b], d.Count)
		switch b {
		case "reject-me":
			d.Settle(Outcome{Kind: Rejected, Description: "bad job"})
		case "retry-me":
			if len(counts[b])%2 == 1 {
				d.Settle(Outcome{Kind: Released})
			} else {
				d.Settle(Outcome{Kind: Modified, DeliveryFailed: true})
			}
		}
	}
	if fmt.Sprint(counts["retry-me"]) != "[1 2 3]" {
		t.Fatalf("delivery counts %v", counts["retry-me"])
	}
	col.none(t, 300*time.Millisecond) // the 4th attempt goes to the DLA
	_, dead := consume(t, e.r, "default", "jobs/dead", ConsumeOptions{}, 10)
	got := map[string]string{}
	for i := 0; i < 2; i++ {
		d := dead.next(t)
		got[string(d.Message.Body)] = fmt.Sprint(d.Message.Properties["x-throng-dead-letter-reason"])
		if d.Message.Properties["x-throng-original-address"] != "jobs" {
			t.Fatalf("original address %v", d.Message.Properties)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	if got["reject-me"] != "bad job" || got["retry-me"] != "delivery count exceeded" {
		t.Fatalf("dead letters %v", got)
	}
}

func TestQueueReleaseOnClose(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	publish(t, e.r, "default", "q", "x")
	c1, col1 := consume(t, e.r, "default", "q", ConsumeOptions{}, 1)
	d := col1.next(t)
	if d.Count != 1 {
		t.Fatalf("count %d", d.Count)
	}
	c1.Close() // unsettled → released
	_, col2 := consume(t, e.r, "default", "q", ConsumeOptions{}, 1)
	d2 := col2.next(t)
	if string(d2.Message.Body) != "x" || d2.Count != 2 {
		t.Fatalf("redelivery %q count %d", d2.Message.Body, d2.Count)
	}
}

func TestQueueTTLAndLimits(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "ttl", Type: address.Queue})
	m := msg("short")
	m.TTL = 1 * time.Second
	if _, err := e.r.Publish(ctxT(t), "default", "ttl", m); err != nil {
		t.Fatal(err)
	}
	publish(t, e.r, "default", "ttl", "long")
	Eventually(t, func() bool {
		st, _ := e.r.AddressStats(ctxT(t), "default", "ttl")
		return st.Backlog == 1
	})
	_, col := consume(t, e.r, "default", "ttl", ConsumeOptions{}, 10)
	if d := col.next(t); string(d.Message.Body) != "long" {
		t.Fatalf("got %q", d.Message.Body)
	}

	mustAddr(t, e.r, "default", &address.Address{Name: "small", Type: address.Queue, Limits: address.Limits{MaxMessages: 2}})
	publish(t, e.r, "default", "small", "1")
	publish(t, e.r, "default", "small", "2")
	if _, err := e.r.Publish(ctxT(t), "default", "small", msg("3")); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("third message: %v", err)
	}
	mustAddr(t, e.r, "default", &address.Address{Name: "tiny", Type: address.Queue, Limits: address.Limits{MaxMessageSize: 10}})
	if _, err := e.r.Publish(ctxT(t), "default", "tiny", msg("this is longer than ten bytes")); !errors.Is(err, ErrLimitExceeded) {
		t.Fatalf("oversized: %v", err)
	}
}

func TestAnycast(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "rpc", Type: address.Anycast})
	p, err := e.r.Producer(ctxT(t), "default", "rpc")
	if err != nil {
		t.Fatal(err)
	}
	if p.HasConsumers(ctxT(t)) {
		t.Fatal("consumers without any")
	}
	if _, err := p.PublishSync(ctxT(t), msg("x")); !errors.Is(err, ErrNoConsumers) {
		t.Fatalf("no consumer: %v", err)
	}
	watch := make(chan bool, 10)
	stop := p.WatchConsumers(func(b bool) { watch <- b })
	defer stop()
	if <-watch {
		t.Fatal("watch says consumers at start")
	}
	c1, col1 := consume(t, e.r, "default", "rpc", ConsumeOptions{}, 100)
	c2, col2 := consume(t, e.r, "default", "rpc", ConsumeOptions{}, 100)
	if !<-watch {
		t.Fatal("watch did not see the consumer")
	}
	// Each message goes to one consumer; the producer gets its outcome.
	type res struct {
		o   Outcome
		err error
	}
	results := make(chan res, 40)
	for i := 0; i < 40; i++ {
		p.Publish(msg(fmt.Sprint(i)), func(o Outcome, err error) { results <- res{o, err} })
	}
	n1, n2 := 0, 0
	for n1+n2 < 40 {
		select {
		case d := <-col1.ch:
			n1++
			d.Settle(Outcome{Kind: Accepted})
		case d := <-col2.ch:
			n2++
			d.Settle(Outcome{Kind: Rejected, Condition: "app:no", Description: "nope"})
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d+%d deliveries", n1, n2)
		}
	}
	if n1 == 0 || n2 == 0 {
		t.Fatalf("not balanced: %d/%d", n1, n2)
	}
	acc, rej := 0, 0
	for i := 0; i < 40; i++ {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		switch r.o.Kind {
		case Accepted:
			acc++
		case Rejected:
			if r.o.Condition != "app:no" || r.o.Description != "nope" {
				t.Fatalf("rejection %+v", r.o)
			}
			rej++
		}
	}
	if acc != n1 || rej != n2 {
		t.Fatalf("outcomes %d/%d, deliveries %d/%d", acc, rej, n1, n2)
	}
	// A consumer that goes away with an unsettled delivery releases it.
	res1 := make(chan res, 1)
	p.Publish(msg("pending"), func(o Outcome, err error) { res1 <- res{o, err} })
	select {
	case <-col1.ch:
		c1.Close()
	case <-col2.ch:
		c2.Close()
	}
	if r := <-res1; r.err != nil || r.o.Kind != Released {
		t.Fatalf("after consumer left: %+v %v", r.o, r.err)
	}
}

func TestAnycastNoCreditRetries(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "rpc", Type: address.Anycast})
	c, col := consume(t, e.r, "default", "rpc", ConsumeOptions{}, 0)
	p, _ := e.r.Producer(ctxT(t), "default", "rpc")
	done := make(chan Outcome, 1)
	p.Publish(msg("wait"), func(o Outcome, err error) { done <- o })
	c.AddCredit(1) // credit arrives while the producer retries
	d := col.next(t)
	d.Settle(Outcome{Kind: Accepted})
	if o := <-done; o.Kind != Accepted {
		t.Fatalf("outcome %v", o.Kind)
	}
}

func TestMulticast(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "news", Type: address.Multicast})
	if o := publish(t, e.r, "default", "news", "nobody"); o.Kind != Accepted {
		t.Fatal("multicast without consumers not accepted (dropped)")
	}
	_, a := consume(t, e.r, "default", "news", ConsumeOptions{}, 10)
	_, b := consume(t, e.r, "default", "news", ConsumeOptions{}, 1)
	publish(t, e.r, "default", "news", "one")
	publish(t, e.r, "default", "news", "two")
	for _, want := range []string{"one", "two"} {
		d := a.next(t)
		if string(d.Message.Body) != want || !d.PreSettled() {
			t.Fatalf("a got %q", d.Message.Body)
		}
	}
	if d := b.next(t); string(d.Message.Body) != "one" {
		t.Fatalf("b got %q", d.Message.Body)
	}
	b.none(t, 200*time.Millisecond) // no credit: dropped
}

func TestTopicDurableSubscriptionAndReplay(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "events", Type: address.Topic})
	c, col := consume(t, e.r, "default", "events", ConsumeOptions{Durable: "audit"}, 10)
	_, live := consume(t, e.r, "default", "events", ConsumeOptions{}, 10)
	publish(t, e.r, "default", "events", "1")
	for _, cl := range []*collector{col, live} {
		d := cl.next(t)
		if string(d.Message.Body) != "1" {
			t.Fatalf("got %q", d.Message.Body)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	c.Close()
	publish(t, e.r, "default", "events", "2") // while the durable is away
	publish(t, e.r, "default", "events", "3")
	_, col = consume(t, e.r, "default", "events", ConsumeOptions{Durable: "audit"}, 10)
	for _, want := range []string{"2", "3"} {
		d := col.next(t)
		if string(d.Message.Body) != want {
			t.Fatalf("durable got %q want %q", d.Message.Body, want)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	// Replay from sequence 2 and from a time before everything.
	_, rp := consume(t, e.r, "default", "events", ConsumeOptions{StartSequence: 2}, 10)
	for _, want := range []string{"2", "3"} {
		if d := rp.next(t); string(d.Message.Body) != want || d.Sequence == 0 {
			t.Fatalf("replay got %q (seq %d) want %q", d.Message.Body, d.Sequence, want)
		}
	}
	_, rt := consume(t, e.r, "default", "events", ConsumeOptions{StartTime: time.Now().Add(-time.Hour)}, 10)
	if d := rt.next(t); string(d.Message.Body) != "1" {
		t.Fatalf("time replay got %q", d.Message.Body)
	}
	st, err := e.r.AddressStats(ctxT(t), "default", "events")
	if err != nil || st.Backlog != 3 || len(st.Subscriptions) != 1 || st.Subscriptions[0] != "events::audit" {
		t.Fatalf("stats %+v %v", st, err)
	}
}

func TestSubscriptionAddress(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "metrics", Type: address.Topic})
	mustAddr(t, e.r, "default", &address.Address{Name: "metrics-billing", Type: address.Subscription, Topic: "metrics"})
	// Collects from its creation, before any consumer.
	for i := 0; i < 6; i++ {
		publish(t, e.r, "default", "metrics", fmt.Sprint(i))
	}
	_, a := consume(t, e.r, "default", "metrics-billing", ConsumeOptions{}, 3)
	_, b := consume(t, e.r, "default", "metrics-billing", ConsumeOptions{}, 3)
	seen := map[string]bool{}
	for _, cl := range []*collector{a, b} {
		for i := 0; i < 3; i++ {
			d := cl.next(t)
			seen[string(d.Message.Body)] = true
			d.Settle(Outcome{Kind: Accepted})
		}
	}
	if len(seen) != 6 {
		t.Fatalf("competing consumers saw %d distinct", len(seen))
	}
	// topic::name works without a definition, too.
	_, c := consume(t, e.r, "default", "metrics::adhoc", ConsumeOptions{}, 5)
	publish(t, e.r, "default", "metrics", "x")
	if d := c.next(t); string(d.Message.Body) != "x" {
		t.Fatalf("adhoc got %q", d.Message.Body)
	}
}

func TestTopicSpaceWildcards(t *testing.T) {
	e := newEnv(t)
	_, plus := consume(t, e.r, "default", "sensors/+/temp", ConsumeOptions{}, 100)
	_, hash := consume(t, e.r, "default", "sensors/#", ConsumeOptions{}, 100)
	_, all := consume(t, e.r, "default", "#", ConsumeOptions{}, 100)
	for _, n := range []string{"sensors/a/temp", "sensors", "sensors/b/hum", "other", "$SYS/x"} {
		m := msg(n)
		m.Durable = n == "sensors/b/hum" // stored and live alike
		if _, err := e.r.Publish(ctxT(t), "default", n, m); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(c *collector, names ...string) {
		t.Helper()
		got := map[string]bool{}
		for range names {
			d := c.next(t)
			got[d.Address] = true
			if d.Address != string(d.Message.Body) {
				t.Fatalf("address %q body %q", d.Address, d.Message.Body)
			}
		}
		for _, n := range names {
			if !got[n] {
				t.Fatalf("missing %q in %v", n, got)
			}
		}
		c.none(t, 100*time.Millisecond)
	}
	expect(plus, "sensors/a/temp")
	expect(hash, "sensors/a/temp", "sensors", "sensors/b/hum")
	expect(all, "sensors/a/temp", "sensors", "sensors/b/hum", "other")
}

func TestSpecialCharacterNames(t *testing.T) {
	e := newEnv(t)
	names := []string{"a.b", "a*b", "a>b", "with space", "tab\tx", "100%", "a//b", "日本/語", "x.y/*/>"}
	for _, n := range names {
		mustAddr(t, e.r, "default", &address.Address{Name: n, Type: address.Queue})
	}
	for _, n := range names {
		publish(t, e.r, "default", n, n)
	}
	for _, n := range names {
		_, col := consume(t, e.r, "default", n, ConsumeOptions{}, 10)
		d := col.next(t)
		if string(d.Message.Body) != n {
			t.Fatalf("queue %q delivered %q", n, d.Message.Body)
		}
		col.none(t, 50*time.Millisecond)
	}
	// Topic space: a subscriber to "a.b" must not see "a/b" and vice versa.
	_, dot := consume(t, e.r, "default", "x.y", ConsumeOptions{}, 10)
	_, slash := consume(t, e.r, "default", "x/y", ConsumeOptions{}, 10)
	publish(t, e.r, "default", "x/y", "slash")
	publish(t, e.r, "default", "x.y", "dot")
	if d := dot.next(t); string(d.Message.Body) != "dot" {
		t.Fatalf("dot got %q", d.Message.Body)
	}
	if d := slash.next(t); string(d.Message.Body) != "slash" {
		t.Fatalf("slash got %q", d.Message.Body)
	}
	dot.none(t, 100*time.Millisecond)
}

func TestStrictAndAutoCreate(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	if err := e.r.CreateTenant(ctx, &tenant.Tenant{Name: "acme", Strict: true,
		AutoCreate: []tenant.AutoCreateRule{{Pattern: "jobs/#", Type: address.Queue}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.r.Publish(ctx, "acme", "unknown", msg("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("strict publish: %v", err)
	}
	if _, err := e.r.Consume(ctx, "acme", "unknown/#", ConsumeOptions{}, func(*Delivery) {}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("strict wildcard: %v", err)
	}
	publish(t, e.r, "acme", "jobs/build", "b1")
	a, ok := e.store.Address("acme", "jobs/build")
	if !ok || a.Type != address.Queue || !a.AutoCreated {
		t.Fatalf("auto-created: %+v %v", a, ok)
	}
	_, col := consume(t, e.r, "acme", "jobs/build", ConsumeOptions{}, 1)
	if d := col.next(t); string(d.Message.Body) != "b1" {
		t.Fatalf("got %q", d.Message.Body)
	}
	if _, err := e.r.Publish(ctx, "nosuch", "x", msg("x")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	for _, n := range []string{"a", "b"} {
		if err := e.r.CreateTenant(ctx, &tenant.Tenant{Name: n}); err != nil {
			t.Fatal(err)
		}
		mustAddr(t, e.r, n, &address.Address{Name: "orders", Type: address.Queue})
	}
	_, ball := consume(t, e.r, "b", "#", ConsumeOptions{}, 100)
	publish(t, e.r, "a", "orders", "for a")
	publish(t, e.r, "a", "news", "live a")
	_, bq := consume(t, e.r, "b", "orders", ConsumeOptions{}, 10)
	bq.none(t, 200*time.Millisecond)
	ball.none(t, 0)
	if st, _ := e.r.AddressStats(ctx, "b", "orders"); st.Backlog != 0 {
		t.Fatalf("b backlog %d", st.Backlog)
	}
	if _, ok := e.store.Address("b", "news"); ok {
		t.Fatal("address leaked")
	}
	_, aq := consume(t, e.r, "a", "orders", ConsumeOptions{}, 10)
	if d := aq.next(t); string(d.Message.Body) != "for a" {
		t.Fatalf("a got %q", d.Message.Body)
	}
	// Crafted names cannot reach the other tenant either.
	for _, n := range []string{"../b/orders", "b.orders", "$JS.API.STREAM.LIST", "tenant-b/orders"} {
		_, _ = e.r.Publish(ctx, "a", n, msg("crafted"))
	}
	bq.none(t, 200*time.Millisecond)
	if err := e.r.DeleteTenant(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := e.r.DeleteTenant(ctx, "default"); !errors.Is(err, tenant.ErrInvalid) {
		t.Fatalf("delete default: %v", err)
	}
}

func TestDrain(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	publish(t, e.r, "default", "q", "1")
	publish(t, e.r, "default", "q", "2")
	c, col := consume(t, e.r, "default", "q", ConsumeOptions{}, 0)
	c.AddCredit(5)
	// Wait until both are delivered, then drain: credit goes to zero.
	col.next(t)
	col.next(t)
	drainWait(t, c)
	if c.Credit() != 0 {
		t.Fatalf("credit after drain %d", c.Credit())
	}
	publish(t, e.r, "default", "q", "3")
	col.none(t, 200*time.Millisecond)
}

func TestRestartKeepsData(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir)
	ctx := ctxT(t)
	if err := e.r.CreateTenant(ctx, &tenant.Tenant{Name: "acme"}); err != nil {
		t.Fatal(err)
	}
	mustAddr(t, e.r, "acme", &address.Address{Name: "q", Type: address.Queue})
	mustAddr(t, e.r, "acme", &address.Address{Name: "t", Type: address.Topic})
	c, col := consume(t, e.r, "acme", "t", ConsumeOptions{Durable: "d"}, 1)
	col.none(t, 0)
	c.Close()
	publish(t, e.r, "acme", "q", "kept")
	publish(t, e.r, "acme", "t", "collected")
	e.stop()

	e = start(t, dir)
	if _, ok := e.store.Tenant("acme"); !ok {
		t.Fatal("tenant lost")
	}
	_, qc := consume(t, e.r, "acme", "q", ConsumeOptions{}, 1)
	if d := qc.next(t); string(d.Message.Body) != "kept" {
		t.Fatalf("queue after restart %q", d.Message.Body)
	}
	_, tc := consume(t, e.r, "acme", "t", ConsumeOptions{Durable: "d"}, 1)
	if d := tc.next(t); string(d.Message.Body) != "collected" {
		t.Fatalf("durable after restart %q", d.Message.Body)
	}
}

// Eventually polls cond until it holds or 10 seconds pass.
func Eventually(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestEngineConnectionLoss: the engine closes the router's connection (as
// it does to a slow consumer); the router reconnects and its consumers,
// stored and live, go on receiving.
func TestEngineConnectionLoss(t *testing.T) {
	e := newEnv(t)
	mustAddr(t, e.r, "default", &address.Address{Name: "q", Type: address.Queue})
	_, qc := consume(t, e.r, "default", "q", ConsumeOptions{}, 100)
	_, live := consume(t, e.r, "default", "live/#", ConsumeOptions{}, 100)
	publish(t, e.r, "default", "q", "before")
	if d := qc.next(t); string(d.Message.Body) != "before" {
		t.Fatalf("got %q", d.Message.Body)
	} else {
		d.Settle(Outcome{Kind: Accepted})
	}
	n, err := e.eng.DisconnectClients(engine.AccountFor("default"))
	if err != nil || n == 0 {
		t.Fatalf("disconnected %d: %v", n, err)
	}
	// Publishing may fail while the connection is down; retry until the
	// router is back.
	Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := e.r.Publish(ctx, "default", "q", msg("after"))
		return err == nil
	})
	if d := qc.next(t); string(d.Message.Body) != "after" {
		t.Fatalf("queue after reconnect got %q", d.Message.Body)
	}
	Eventually(t, func() bool {
		publish(t, e.r, "default", "live/x", "live")
		select {
		case d := <-live.ch:
			return string(d.Message.Body) == "live"
		case <-time.After(200 * time.Millisecond):
			return false
		}
	})
}
