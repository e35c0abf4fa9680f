package router

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/throngmq/throng/internal/address"
)

// node starts another router on e's engine and store: to the engine it is
// another node of the cluster (its own connections, subscriptions and
// presence answers).
func (e *env) node(t testing.TB, interval, grace time.Duration, reg prometheus.Registerer) *Router {
	t.Helper()
	r, err := New(ctxT(t), Config{Engine: e.eng, Store: e.store, AnycastTimeout: 5 * time.Second,
		TempSweepInterval: interval, TempGrace: grace, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// waitUntil polls cond until it holds or 10 s pass.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counterValue sums a counter's series in reg.
func counterValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func (e *env) defined(name string) bool {
	_, ok := e.store.Address("default", name)
	return ok
}

// A node dies with temporary addresses (one with a consumer, as an AMQP
// dynamic source has; one without, as a dynamic target has); another
// node's background sweeper deletes them and nothing else.
func TestTempSweepDeletesAddressesOfCrashedNode(t *testing.T) {
	e := newEnv(t) // e.r: a node that stays up
	reg := prometheus.NewRegistry()
	crashed := e.node(t, -1, 0, nil)
	sweeper := e.node(t, 20*time.Millisecond, 200*time.Millisecond, reg)
	ctx := ctxT(t)

	src, err := crashed.CreateTemp(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	consume(t, crashed, "default", src.Name(), ConsumeOptions{}, 10)
	tgt, err := crashed.CreateTemp(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	// Left over by a node without owner probes (an older version).
	mustAddr(t, e.r, "default", &address.Address{Name: TempPrefix + "legacy", Type: address.Anycast})

	// Kept: owners alive on e.r (with and without a consumer), an old-style
	// temporary address in use, and what is not a temporary address.
	liveSrc, err := e.r.CreateTemp(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	consume(t, e.r, "default", liveSrc.Name(), ConsumeOptions{}, 10)
	liveTgt, err := e.r.CreateTemp(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, e.r, "default", &address.Address{Name: TempPrefix + "in-use", Type: address.Anycast})
	consume(t, e.r, "default", TempPrefix+"in-use", ConsumeOptions{}, 10)
	mustAddr(t, e.r, "default", &address.Address{Name: "plain", Type: address.Anycast})
	mustAddr(t, e.r, "default", &address.Address{Name: TempPrefix + "queue", Type: address.Queue})
	mustAddr(t, e.r, "default", &address.Address{Name: TempPrefix + "multicast", Type: address.Multicast})

	// The crash: the node's engine connections go, nothing is deleted.
	crashed.Close()
	if !e.defined(src.Name()) || !e.defined(tgt.Name()) {
		t.Fatal("closing a router deleted its temporary addresses")
	}

	waitUntil(t, "abandoned temporary addresses deleted", func() bool {
		return !e.defined(src.Name()) && !e.defined(tgt.Name()) && !e.defined(TempPrefix+"legacy")
	})
	// The kept ones were found absent no later than the crashed ones, so
	// they would have gone in the same sweep; let it and one more finish.
	n := sweeper.temps.sweeps.Load()
	waitUntil(t, "two more sweeps", func() bool { return sweeper.temps.sweeps.Load() >= n+2 })
	for _, name := range []string{liveSrc.Name(), liveTgt.Name(), TempPrefix + "in-use", "plain", TempPrefix + "queue", TempPrefix + "multicast"} {
		if !e.defined(name) {
			t.Errorf("%s was deleted", name)
		}
	}
	if got := counterValue(t, reg, "throng_router_temp_addresses_deleted_total"); got != 3 {
		t.Errorf("deleted counter %v, want 3", got)
	}

	// The owner deleting its address after a sweeper did is not an error.
	if err := src.Delete(ctx); err != nil {
		t.Fatalf("delete of a swept temporary address: %v", err)
	}
	if err := liveTgt.Delete(ctx); err != nil || e.defined(liveTgt.Name()) {
		t.Fatalf("delete: %v (defined %v)", err, e.defined(liveTgt.Name()))
	}
}

// The grace period: an address without owner and consumer goes only once
// it has been found so for TempGrace, and a consumer in between restarts
// the count. A clock under the test's control, sweeps by hand.
func TestTempSweepGrace(t *testing.T) {
	e := newEnv(t)
	r := e.node(t, -1, time.Minute, nil)
	now := time.Now()
	r.temps.now = func() time.Time { return now }
	ctx := ctxT(t)
	name := TempPrefix + "g"
	key := "default\x00" + name

	// Brand new and owned: present at once, on any node.
	owned, err := e.r.CreateTemp(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	mustAddr(t, e.r, "default", &address.Address{Name: name, Type: address.Anycast})
	if n := r.SweepTemps(ctx); n != 0 {
		t.Fatalf("first sweep deleted %d", n)
	}
	if _, ok := r.temps.absent["default\x00"+owned.Name()]; ok {
		t.Fatal("a new temporary address with its owner alive was found absent")
	}
	if _, ok := r.temps.absent[key]; !ok {
		t.Fatal("an ownerless temporary address was not found absent")
	}
	now = now.Add(time.Minute - time.Millisecond)
	if n := r.SweepTemps(ctx); n != 0 || !e.defined(name) {
		t.Fatalf("deleted before the grace period (%d)", n)
	}

	// A consumer comes: the count starts again once it has gone.
	c, _ := consume(t, e.r, "default", name, ConsumeOptions{}, 1)
	now = now.Add(time.Hour)
	if n := r.SweepTemps(ctx); n != 0 || !e.defined(name) {
		t.Fatalf("deleted while it had a consumer (%d)", n)
	}
	if _, ok := r.temps.absent[key]; ok {
		t.Fatal("still counted absent with a consumer")
	}
	c.Close()
	waitUntil(t, "found absent again", func() bool {
		r.SweepTemps(ctx)
		_, ok := r.temps.absent[key]
		return ok
	})
	now = now.Add(time.Minute - time.Millisecond)
	if n := r.SweepTemps(ctx); n != 0 || !e.defined(name) {
		t.Fatalf("deleted before the grace period after the consumer left (%d)", n)
	}
	now = now.Add(time.Millisecond)
	if n := r.SweepTemps(ctx); n != 1 || e.defined(name) {
		t.Fatalf("sweep after the grace period deleted %d", n)
	}
	if _, ok := r.temps.absent[key]; ok {
		t.Fatal("deleted address still tracked")
	}

	// The owned one stays however long.
	now = now.Add(24 * time.Hour)
	r.SweepTemps(ctx)
	now = now.Add(24 * time.Hour)
	if n := r.SweepTemps(ctx); n != 0 || !e.defined(owned.Name()) {
		t.Fatalf("an owned temporary address was deleted (%d)", n)
	}
}

// Two nodes sweeping the same abandoned addresses at once: they are
// deleted (by one or, in a race, both), neither fails, nothing else goes.
func TestTempSweepConcurrentNodes(t *testing.T) {
	e := newEnv(t)
	a := e.node(t, -1, time.Minute, nil)
	b := e.node(t, -1, time.Minute, nil)
	now := time.Now()
	a.temps.now = func() time.Time { return now }
	b.temps.now = func() time.Time { return now }
	ctx := ctxT(t)
	for _, n := range []string{"x", "y", "z"} {
		mustAddr(t, e.r, "default", &address.Address{Name: TempPrefix + n, Type: address.Anycast})
	}
	mustAddr(t, e.r, "default", &address.Address{Name: "keep", Type: address.Anycast})
	a.SweepTemps(ctx)
	b.SweepTemps(ctx)
	now = now.Add(time.Minute)
	done := make(chan int)
	go func() { done <- a.SweepTemps(ctx) }()
	nb := b.SweepTemps(ctx)
	na := <-done
	if na+nb < 3 {
		t.Fatalf("deleted %d + %d, want all 3", na, nb)
	}
	for _, n := range []string{"x", "y", "z"} {
		if e.defined(TempPrefix + n) {
			t.Errorf("%s still defined", n)
		}
	}
	if !e.defined("keep") {
		t.Error("a non-temporary address was deleted")
	}
	if n := a.SweepTemps(ctx) + b.SweepTemps(ctx); n != 0 {
		t.Errorf("later sweeps deleted %d", n)
	}
}
