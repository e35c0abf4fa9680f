package app

import (
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"
)

// TestTrimMemoryAfterBurst: once the process is quiet after a burst of
// allocation, trimMemory collects the burst's garbage and returns the
// free pages to the operating system (memtrim.go) — once, not while the
// burst goes on, and not again while nothing more is allocated. Without
// it the garbage stays resident until the next collection, which an idle
// process never reaches.
func TestTrimMemoryAfterBurst(t *testing.T) {
	read := func(name string) int64 {
		s := []metrics.Sample{{Name: name}}
		metrics.Read(s)
		return int64(s[0].Value.Uint64())
	}
	objects := func() int64 { return read("/memory/classes/heap/objects:bytes") }
	free := func() int64 { return read("/memory/classes/heap/free:bytes") }
	var trims atomic.Int32
	var objAfter, freeAfter atomic.Int64 // right after the first trim
	stop := make(chan struct{})
	defer close(stop)
	go trimMemory(stop, func() {
		debug.FreeOSMemory()
		if trims.Add(1) == 1 {
			objAfter.Store(objects())
			freeAfter.Store(free())
		}
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
	objBefore := objects()
	keep = nil
	_ = keep

	deadline := time.Now().Add(20 * time.Second)
	for trims.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no trim within 20 s of the burst")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The burst's garbage is collected and its pages are not kept: the
	// heap's free (unreleased) pages are few (not the 64 MiB).
	if got := objBefore - objAfter.Load(); got < 32<<20 {
		t.Fatalf("the trim collected %d MiB of the burst's 64 MiB", got>>20)
	}
	if f := freeAfter.Load(); f > 16<<20 {
		t.Fatalf("%d MiB of free pages kept after the trim", f>>20)
	}
	t.Logf("collected %d MiB, %d KiB of free pages kept", (objBefore-objAfter.Load())>>20, freeAfter.Load()>>10)
	time.Sleep(3 * trimTick)
	if n := trims.Load(); n != 1 {
		t.Fatalf("%d trims while nothing more was allocated", n)
	}
}
