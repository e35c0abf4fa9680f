package app

import (
	"runtime/metrics"
	"testing"
	"time"
)

// TestTrimMemoryAfterBurst: garbage of a burst is returned to the
// operating system once the process is quiet (memtrim.go); without the
// trim it stays resident until the next collection, which an idle process
// never reaches.
func TestTrimMemoryAfterBurst(t *testing.T) {
	released := func() uint64 {
		s := []metrics.Sample{{Name: "/memory/classes/heap/released:bytes"}}
		metrics.Read(s)
		return s[0].Value.Uint64()
	}
	stop := make(chan struct{})
	defer close(stop)
	go trimMemory(stop)

	// A burst: 64 MiB of small objects, live for a moment, then garbage
	// (as a connection storm's parsing and session look-ups).
	keep := make([][]byte, 0, 64<<10)
	for range 64 << 10 {
		keep = append(keep, make([]byte, 1024))
	}
	before := released()
	keep = nil
	_ = keep

	deadline := time.Now().Add(20 * time.Second)
	for released() < before+32<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("released %d MiB of the burst's 64 MiB in 20 s", (released()-before)>>20)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("released %d MiB after the burst", (released()-before)>>20)
}
