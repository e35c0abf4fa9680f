package history

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

func TestCode16(t *testing.T) {
	for _, v := range []uint64{0, 1, 2047, 2048, 2049, 4095, 10_000, 123_456, 1 << 30, 1<<42 - 1} {
		got := decode16(code16(v))
		diff := float64(got) - float64(v)
		if v < 2048 && diff != 0 || v >= 2048 && (diff < 0 && -diff > float64(v)/1000 || diff > float64(v)/1000) {
			t.Errorf("%d: decoded %d", v, got)
		}
	}
	if decode16(code16(1<<50)) < 1<<41 {
		t.Error("a huge value does not saturate high")
	}
}

func TestRing(t *testing.T) {
	r := New()
	t0 := time.Unix(1_700_000_000, 0)
	// 200 rounds: the ring keeps the last 180. Address: 10 in, 5 out per
	// round; backlog grows by 5.
	for i := range 200 {
		rd := r.Begin(t0.Add(time.Duration(i) * Step))
		rd.Stored(AddressSeries("acme", "orders/eu"), uint64(10*(i+1)), uint64(5*(i+1)), int64(5*(i+1)))
		if i < 100 {
			rd.Counters(ConnectionSeries("n1-1"), 0, 0) // idle: no ring
		} else {
			rd.Counters(ConnectionSeries("n1-2"), uint64(i-99), 0)
		}
		rd.End()
	}
	v := r.Series(AddressSeries("acme", "orders/eu"))
	if len(v.Time) != Points || len(v.In) != Points || len(v.Backlog) != Points || v.Step != 5 {
		t.Fatalf("%d points, step %d", len(v.Time), v.Step)
	}
	if v.In[Points-1] != 2 || v.Out[Points-1] != 1 || v.Backlog[Points-1] != 1000 || v.Backlog[0] != 5*21 {
		t.Fatalf("last in %v out %v backlog %v, first backlog %v", v.In[Points-1], v.Out[Points-1], v.Backlog[Points-1], v.Backlog[0])
	}
	if v.Time[Points-1] != t0.Add(199*Step).Unix() || v.Time[0] != t0.Add(20*Step).Unix() {
		t.Fatalf("times %d..%d", v.Time[0], v.Time[Points-1])
	}
	if v := r.Series(ConnectionSeries("n1-1")); len(v.Time) != 0 {
		t.Fatalf("an idle connection has %d points", len(v.Time))
	}
	if v := r.Series(ConnectionSeries("n1-2")); len(v.Time) != 100 || v.In[99] != 0.2 || v.Backlog != nil {
		t.Fatalf("connection: %d points, last %v, backlog %v", len(v.Time), v.In, v.Backlog)
	}
	// A series not given in a round is gone; counters that went down
	// count from zero.
	rd := r.Begin(t0.Add(200 * Step))
	rd.Stored(AddressSeries("acme", "orders/eu"), 7, 0, 0)
	rd.End()
	if r.Len() != 1 {
		t.Fatalf("%d series after a round with one", r.Len())
	}
	if v := r.Series(AddressSeries("acme", "orders/eu")); v.In[Points-1] != 7.0/5 {
		t.Fatalf("after a restart of the counters: %v", v.In[Points-1])
	}
}

// TestBytesPerSeries measures the heap a series costs, for the bound in
// docs/console.md: 10,000 addresses and 100,000 busy connections.
func TestBytesPerSeries(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	measure := func(n int, stored bool) float64 {
		r := New()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		rd := r.Begin(time.Unix(1_700_000_000, 0))
		for i := range n {
			if stored {
				rd.Stored(AddressSeries("tenant-1", fmt.Sprintf("sensors/%06d/telemetry", i)), 1, 1, 1)
			} else {
				rd.Counters(ConnectionSeries(fmt.Sprintf("node-1-%d", i)), 1, 1)
			}
		}
		rd.End()
		runtime.GC()
		runtime.ReadMemStats(&after)
		runtime.KeepAlive(r)
		return float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	}
	a := measure(10_000, true)
	c := measure(100_000, false)
	t.Logf("address series: %.0f bytes each, 10,000: %.1f MiB", a, a*10_000/(1<<20))
	t.Logf("connection series: %.0f bytes each, 100,000: %.1f MiB", c, c*100_000/(1<<20))
	if a > 1600 || c > 1100 {
		t.Errorf("a series costs more than documented (docs/console.md): address %.0f, connection %.0f bytes", a, c)
	}
}
