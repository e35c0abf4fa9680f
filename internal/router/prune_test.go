package router

import (
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/throngmq/throng/internal/address"
	"github.com/throngmq/throng/internal/engine"
	"github.com/throngmq/throng/internal/message"
)

// Issue 10.13: nothing grows with the number of distinct names ever used.
// Each test uses many names once and checks the per-name structures are
// back to (about) nothing.

func tenantOf(t *testing.T, e *env) *tenantState {
	t.Helper()
	ts, err := e.r.tenant(ctxT(t), "default")
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func (t *tenantState) counterCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.counters)
}

func (t *tenantState) anycastCount() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.anycast)
}

func (t *tenantState) batcherCount() int {
	n := 0
	t.batchers.Range(func(any, any) bool { n++; return true })
	return n
}

// TestPruneLiveIndex: live subscriptions to distinct topics (a device
// fleet on devices/<id>/cmd, with wildcards beside them) that came and went
// leave no trie nodes behind; one that stays keeps its path and matches.
func TestPruneLiveIndex(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	ts := tenantOf(t, e)
	col := newCollector()
	keep, err := e.r.Consume(ctx, "default", "devices/keep/+", ConsumeOptions{}, col.deliver)
	if err != nil {
		t.Fatal(err)
	}
	keep.AddCredit(10)
	base := ts.index.size()
	const n = 5000
	for i := range n {
		filters := []string{fmt.Sprintf("devices/%d/cmd", i)}
		if i%10 == 0 {
			filters = append(filters, fmt.Sprintf("devices/%d/#", i), fmt.Sprintf("fleet/+/%d", i))
		}
		var cs []*Consumer
		for _, f := range filters {
			c, err := e.r.Consume(ctx, "default", f, ConsumeOptions{}, func(d *Delivery) {})
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
		}
		p, err := e.r.Producer(ctx, "default", fmt.Sprintf("devices/%d/cmd", i))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.PublishSync(ctx, &message.Message{Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			c.Close()
		}
	}
	if got := ts.index.size(); got != base {
		t.Fatalf("live index has %d nodes after %d subscriptions came and went, want %d (the one that stays)", got, n, base)
	}
	if _, err := e.r.Publish(ctx, "default", "devices/keep/cmd", &message.Message{Body: []byte("still")}); err != nil {
		t.Fatal(err)
	}
	if d := col.next(t); string(d.Message.Body) != "still" {
		t.Fatalf("got %q", d.Message.Body)
	}
	keep.Close()
	if got := ts.index.size(); got != 0 {
		t.Fatalf("live index has %d nodes with no subscription", got)
	}
}

// TestPruneLiveIndexUnit exercises the trie alone: shared prefixes stay
// while a filter below them is in use.
func TestPruneLiveIndexUnit(t *testing.T) {
	var x liveIndex
	a, b := &Consumer{}, &Consumer{}
	x.add(a, "t.a.b.c")
	x.add(b, "t.a.*.>")
	x.add(b, "t.a.b")
	x.remove(a)
	if got := len(x.match("t.a.b.c")); got != 1 {
		t.Fatalf("match after removing a: %d consumers, want 1", got)
	}
	// root, t, a, b (t.a.b), * (t.a.*, holding >)
	if got := x.size(); got != 5 {
		t.Fatalf("%d nodes, want 5", got)
	}
	x.remove(b)
	if got := x.size(); got != 0 {
		t.Fatalf("%d nodes left, want 0", got)
	}
	if got := x.match("t.a.b.c"); len(got) != 0 {
		t.Fatalf("match on an empty index: %v", got)
	}
}

// TestPruneCounters: producers and consumers of undefined (topic-space)
// names leave no counters behind; a defined address keeps its counters
// through prunes while it exists and loses them when deleted.
func TestPruneCounters(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	ts := tenantOf(t, e)
	mustAddr(t, e.r, "default", &address.Address{Name: "orders", Type: address.Queue})
	for i := range 10000 {
		name := fmt.Sprintf("sensors/%d/temp", i)
		if _, err := e.r.Publish(ctx, "default", name, &message.Message{Body: []byte("21.5")}); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			c, err := e.r.Consume(ctx, "default", name, ConsumeOptions{}, func(*Delivery) {})
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}
	}
	for range 3 {
		if _, err := e.r.Publish(ctx, "default", "orders", &message.Message{Body: []byte("o")}); err != nil {
			t.Fatal(err)
		}
	}
	if got := ts.counterCount(); got > 1 {
		t.Fatalf("%d address counters after 10000 topic-space names, want at most 1 (orders)", got)
	}
	e.r.prune()
	e.r.prune()
	st, err := e.r.AddressStats(ctx, "default", "orders")
	if err != nil {
		t.Fatal(err)
	}
	if st.MessagesIn != 3 {
		t.Fatalf("orders: messagesIn %d after prunes, want 3", st.MessagesIn)
	}
	if err := e.r.DeleteAddress(ctx, "default", "orders"); err != nil {
		t.Fatal(err)
	}
	if got := ts.counterCount(); got != 0 {
		t.Fatalf("%d address counters after the address was deleted", got)
	}
}

// TestPruneCountersDeletedElsewhere: counters of an address deleted by
// another node (only the store changed here) go at the next prune.
func TestPruneCountersDeletedElsewhere(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	ts := tenantOf(t, e)
	mustAddr(t, e.r, "default", &address.Address{Name: "gone", Type: address.Multicast})
	if _, err := e.r.Publish(ctx, "default", "gone", &message.Message{Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if got := ts.counterCount(); got != 1 {
		t.Fatalf("%d counters, want 1", got)
	}
	if err := e.store.DeleteAddress(ctx, "default", "gone"); err != nil {
		t.Fatal(err)
	}
	e.r.prune()
	if got := ts.counterCount(); got != 0 {
		t.Fatalf("%d counters after prune, want 0", got)
	}
}

// TestPruneBatchers: the batchers of queues published to once are dropped
// when idle; a publisher that holds a pruned batcher (looked up just
// before) goes to the current one; a queue in use keeps its batcher.
func TestPruneBatchers(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	ts := tenantOf(t, e)
	const n = 50
	for i := range n {
		name := fmt.Sprintf("jobs/%d", i)
		mustAddr(t, e.r, "default", &address.Address{Name: name, Type: address.Queue})
		if _, err := e.r.Publish(ctx, "default", name, &message.Message{Body: []byte("j")}); err != nil {
			t.Fatal(err)
		}
		if err := e.r.DeleteAddress(ctx, "default", name); err != nil {
			t.Fatal(err)
		}
	}
	if got := ts.batcherCount(); got != n {
		t.Fatalf("%d batchers before pruning, want %d", got, n)
	}
	e.r.prune() // clears "used"
	e.r.prune() // idle since the previous prune: dropped
	if got := ts.batcherCount(); got != 0 {
		t.Fatalf("%d batchers after pruning, want 0", got)
	}

	mustAddr(t, e.r, "default", &address.Address{Name: "work", Type: address.Queue})
	p, err := e.r.Producer(ctx, "default", "work")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishSync(ctx, &message.Message{Body: []byte("1")}); err != nil {
		t.Fatal(err)
	}
	stale := ts.batcher(p.subject)
	e.r.prune()
	e.r.prune()
	stale.mu.Lock()
	gone := stale.gone
	stale.mu.Unlock()
	if !gone {
		t.Fatal("the idle batcher of work was not pruned")
	}
	ch := make(chan error, 1)
	m2 := &message.Message{Body: []byte("2")}
	stale.publish(p, m2, "", p.counted(m2, func(o Outcome, err error) { ch <- err })) // as Publish does
	if err := <-ch; err != nil {
		t.Fatal(err)
	}
	if _, err := p.PublishSync(ctx, &message.Message{Body: []byte("3")}); err != nil {
		t.Fatal(err)
	}
	e.r.prune() // used since the last prune: kept
	if got := ts.batcherCount(); got != 1 {
		t.Fatalf("%d batchers with work in use, want 1", got)
	}
	col := newCollector()
	c, err := e.r.Consume(ctx, "default", "work", ConsumeOptions{}, col.deliver)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.AddCredit(3)
	for _, want := range []string{"1", "2", "3"} {
		d := col.next(t)
		if string(d.Message.Body) != want {
			t.Fatalf("got %q, want %q", d.Message.Body, want)
		}
		d.Settle(Outcome{Kind: Accepted})
	}
	st, err := e.r.AddressStats(ctx, "default", "work")
	if err != nil {
		t.Fatal(err)
	}
	if st.MessagesIn != 3 {
		t.Fatalf("work: messagesIn %d, want 3", st.MessagesIn)
	}
}

// TestPruneTempAddresses: dynamic reply addresses that came and went (with
// a consumer, a reply through a producer) leave no anycast group, counter
// or sweeper record behind.
func TestPruneTempAddresses(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	ts := tenantOf(t, e)
	const n = 300
	for range n {
		tmp, err := e.r.CreateTemp(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		col := newCollector()
		c, err := e.r.Consume(ctx, "default", tmp.Name(), ConsumeOptions{}, col.deliver)
		if err != nil {
			t.Fatal(err)
		}
		c.AddCredit(1)
		p, err := e.r.Producer(ctx, "default", tmp.Name())
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan error, 1)
		p.Publish(&message.Message{Body: []byte("reply")}, func(o Outcome, err error) { ch <- err })
		col.next(t).Settle(Outcome{Kind: Accepted})
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
		c.Close()
		if err := tmp.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := ts.anycastCount(); got != 0 {
		t.Fatalf("%d anycast groups after %d temporary addresses came and went", got, n)
	}
	if got := ts.counterCount(); got != 0 {
		t.Fatalf("%d counters after %d temporary addresses came and went", got, n)
	}
	e.r.SweepTemps(ctx)
	e.r.temps.mu.Lock()
	absent := len(e.r.temps.absent)
	e.r.temps.mu.Unlock()
	if absent != 0 {
		t.Fatalf("sweeper remembers %d addresses", absent)
	}
}

// TestPruneStreamsCache: the cache of streams known to exist forgets those
// of addresses no longer defined.
func TestPruneStreamsCache(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	ts := tenantOf(t, e)
	mustAddr(t, e.r, "default", &address.Address{Name: "stay", Type: address.Queue})
	mustAddr(t, e.r, "default", &address.Address{Name: "go", Type: address.Topic})
	if err := e.store.DeleteAddress(ctx, "default", "go"); err != nil { // as another node would
		t.Fatal(err)
	}
	e.r.prune()
	ts.mu.Lock()
	_, stay := ts.streams[address.StreamName("Q", "stay")]
	_, gone := ts.streams[address.StreamName("T", "go")]
	ts.mu.Unlock()
	if !stay || gone {
		t.Fatalf("streams cache after prune: stay %v (want true), go %v (want false)", stay, gone)
	}
}

// TestPruneStoreDeleteMarkers: the delete markers temporary addresses
// leave in the store's bucket (and the engine's per-subject state with
// them) are purged; a name defined again after its deletion keeps its
// definition.
func TestPruneStoreDeleteMarkers(t *testing.T) {
	e := newEnv(t)
	ctx := ctxT(t)
	nc, err := e.eng.Connect(engine.SystemAccount)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 {
		st, err := js.Stream(ctx, "KV_throng_addresses")
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	before := msgs()
	for range 200 {
		tmp, err := e.r.CreateTemp(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		if err := tmp.Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mustAddr(t, e.r, "default", &address.Address{Name: "again", Type: address.Multicast})
	if err := e.r.DeleteAddress(ctx, "default", "again"); err != nil {
		t.Fatal(err)
	}
	mustAddr(t, e.r, "default", &address.Address{Name: "again", Type: address.Multicast})
	if got := msgs(); got < before+200 {
		t.Fatalf("%d messages in the bucket after 200 deletes, expected markers", got)
	}
	// A marker newer than the age limit stays.
	if n, err := e.store.PurgeDeleted(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("purge of markers older than an hour: %d, %v", n, err)
	}
	n, err := e.store.PurgeDeleted(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n != 200 {
		t.Fatalf("purged %d markers, want 200", n)
	}
	if got := msgs(); got != before+1 {
		t.Fatalf("%d messages in the bucket after the purge, want %d (again)", got, before+1)
	}
	if _, ok := e.store.Address("default", "again"); !ok {
		t.Fatal("the address defined again is gone from the store")
	}
	kv, err := js.KeyValue(ctx, "throng_addresses")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for k := range keys.Keys() {
		found = found || k == "default."+base64.RawURLEncoding.EncodeToString([]byte("again"))
	}
	if !found {
		t.Fatal("the definition of again is gone from the bucket")
	}
}
