package conns

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

type fakeConn struct {
	closed atomic.Int32
	info   Info
}

func (f *fakeConn) CloseByAdmin(string) { f.closed.Add(1) }
func (f *fakeConn) Links() []Link       { return []Link{{Kind: "subscription", Address: "a/#"}} }
func (f *fakeConn) LinkCount() int      { return 1 }
func (f *fakeConn) Info() Info          { return f.info }

func TestRegistry(t *testing.T) {
	r := New("n1")
	now := time.Unix(1_700_000_000, 0)
	r.now = func() time.Time { return now }
	var es []*Entry
	for i := range 5 {
		proto := MQTT5
		if i%2 == 1 {
			proto = AMQP
		}
		es = append(es, r.Register(&fakeConn{info: Info{Tenant: []string{"acme", "other"}[i%2], Protocol: proto, ClientID: fmt.Sprint("c", i), User: "u"}}))
	}
	if r.ID(es[0]) != "n1-1" || r.ID(es[4]) != "n1-5" {
		t.Fatalf("ids %s %s", r.ID(es[0]), r.ID(es[4]))
	}
	if e, ok := r.Get("n1-3"); !ok || e != es[2] {
		t.Fatal("Get n1-3")
	}
	for _, bad := range []string{"n2-3", "n1-0", "n1-x", "3", "", "-3", "n1-99"} {
		if _, ok := r.Get(bad); ok {
			t.Errorf("Get(%q) found one", bad)
		}
	}
	// Paging, oldest first, with a filter.
	page, next := r.List(Filter{}, "", 2)
	if len(page) != 2 || page[0] != es[0] || page[1] != es[1] || next != "n1-2" {
		t.Fatalf("page 1: %v %q", page, next)
	}
	page, next = r.List(Filter{}, next, 2)
	if len(page) != 2 || page[0] != es[2] || next != "n1-4" {
		t.Fatalf("page 2: %v %q", page, next)
	}
	page, next = r.List(Filter{}, next, 2)
	if len(page) != 1 || page[0] != es[4] || next != "" {
		t.Fatalf("page 3: %v %q", page, next)
	}
	if page, _ := r.List(Filter{Tenant: "acme", Protocol: MQTT5}, "", 0); len(page) != 3 {
		t.Fatalf("acme mqtt5: %d", len(page))
	}
	if page, _ := r.List(Filter{ClientID: "c3"}, "", 0); len(page) != 1 || page[0] != es[3] {
		t.Fatal("client id filter")
	}

	// Counters and rates.
	for range 10 {
		es[0].In(100)
	}
	es[0].Out(7)
	now = now.Add(5 * time.Second)
	r.Sample(now)
	s := r.Snapshot(es[0], true)
	if s.MessagesIn != 10 || s.BytesIn != 1000 || s.MessagesOut != 1 || s.BytesOut != 7 || s.RateIn != 2 || s.RateOut != 0.2 || s.Links != 1 || len(s.LinkList) != 1 {
		t.Fatalf("snapshot %+v", s)
	}
	now = now.Add(5 * time.Second)
	r.Sample(now)
	if s := r.Snapshot(es[0], false); s.RateIn != 0 || s.LinkList != nil {
		t.Fatalf("idle: %+v", s)
	}
	r.Unregister(es[0])
	r.Unregister(es[0])
	if r.Len() != 4 {
		t.Fatalf("len %d", r.Len())
	}
	es[1].Close("x")
	if es[1].conn.(*fakeConn).closed.Load() != 1 {
		t.Fatal("Close did not reach the connection")
	}
	// A nil registry and entry do nothing.
	var nr *Registry
	var ne *Entry
	ne.In(1)
	ne.Out(1)
	nr.Unregister(nr.Register(nil))
	if _, ok := nr.Get("n1-1"); ok || nr.Len() != 0 {
		t.Fatal("nil registry")
	}
}

// TestCountersDoNotAllocate: the front-ends' per-message cost is two
// atomic adds.
func TestCountersDoNotAllocate(t *testing.T) {
	e := New("n1").Register(&fakeConn{})
	if n := testing.AllocsPerRun(1000, func() { e.In(10); e.Out(10) }); n != 0 {
		t.Fatalf("%v allocations per message", n)
	}
}

// TestBytesPerConnection measures what the registry costs per connection
// (docs/console.md): the entry and the map's share; the Info is the
// front-end's (Conn.Info), ids are made when asked for.
func TestBytesPerConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	const n = 100_000
	r := New("node-1")
	c := &fakeConn{}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		r.Register(c)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per registered connection; 100,000: %.1f MiB", per, per*n/(1<<20))
	if per > 200 {
		t.Errorf("%.0f bytes per connection, more than documented (docs/console.md)", per)
	}
	runtime.KeepAlive(r)
}

// BenchmarkCounters is the front-ends' per-message cost: In and Out on a
// connection's entry (docs/console.md).
func BenchmarkCounters(b *testing.B) {
	e := New("n1").Register(&fakeConn{})
	for b.Loop() {
		e.In(64)
		e.Out(64)
	}
}
