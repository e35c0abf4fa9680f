package app

import (
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// TestTrimMemoryAfterBurst: once the process is quiet after a burst of
// allocation, trimMemory returns the garbage to the operating system
// (memtrim.go) — once, not while the burst goes on, and not again while
// nothing more is allocated. Without it the burst's garbage stays
// resident until the next collection, which an idle process never
// reaches.
func TestTrimMemoryAfterBurst(t *testing.T) {
	released := func() int64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return int64(s[0].Value.Uint64())
	}
	var trims atomic.Int32
	var most atomic.Int64 // the most released right after a trim
	stop := make(chan struct{})
	defer close(stop)
	go trimMemory(stop, func() {
		trims.Add(1)
		debug.FreeOSMemory()
		most.Store(released())
	})

	// A burst: 64 MiB of small objects, live for a moment, then garbage
	// (as a connection storm's parsing and session look-ups).
	keep := make([][]byte, 0, 64<<10)
	for range 64 << 10 {
		keep = append(keep, make([]byte, 1024))
	}
	if n := trims.Load(); n != 0 {
		t.Fatalf("%d trims during the burst", n)
	}
	before := released()
	keep = nil
	_ = keep

	deadline := time.Now().Add(20 * time.Second)
	for trims.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no trim within 20 s of the burst")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := most.Load() - before; got < 32<<20 {
		t.Fatalf("the trim released %d MiB of the burst's 64 MiB", got>>20)
	}
	t.Logf("released %d MiB after the burst", (most.Load()-before)>>20)
	time.Sleep(3 * trimTick)
	if n := trims.Load(); n != 1 {
		t.Fatalf("%d trims while nothing more was allocated", n)
	}
}
