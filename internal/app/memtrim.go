package app

import (
	"runtime/metrics"
	"time"
)

// Returning memory after a burst (docs/mqtt.md, "Memory per idle
// connection"). A connection storm leaves the heap with as much garbage as
// live data: the collector lets the heap grow to twice what was live at
// its last cycle (GOGC 100), and once the node is quiet nothing allocates,
// so no cycle runs and the garbage of the storm stays resident — for
// idle connections that doubles the node's memory per connection. When
// the node has been quiet for a moment after such a burst, trimMemory
// runs one collection and returns the freed pages to the operating
// system (debug.FreeOSMemory), as Erlang brokers hibernate idle
// connection processes. It never runs while the node is busy: a busy
// node collects on its own, and a forced cycle there would only cost
// CPU.
const (
	trimTick       = time.Second
	trimQuiet      = 2                // ticks in a row with little allocation
	trimQuietMax   = 4 << 20          // bytes allocated per tick that still count as quiet
	trimAfterAlloc = 16 << 20         // bytes allocated since the last trim that make a burst
	trimEvery      = 30 * time.Second // at most one trim this often
)

// trimMemory returns the heap's garbage and free pages to the operating
// system when the node is quiet after a burst (trimAfterAlloc allocated
// since the last trim); it returns when stop is closed. free is
// debug.FreeOSMemory (a test counts its calls).
func trimMemory(stop <-chan struct{}, free func()) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocs := func() uint64 {
		metrics.Read(sample)
		if sample[0].Value.Kind() != metrics.KindUint64 {
			return 0
		}
		return sample[0].Value.Uint64()
	}
	t := time.NewTicker(trimTick)
	defer t.Stop()
	lastTick := allocs()
	lastTrim := lastTick
	quiet := 0
	var last time.Time
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			a := allocs()
			if a-lastTick <= trimQuietMax {
				quiet++
			} else {
				quiet = 0
			}
			lastTick = a
			if quiet >= trimQuiet && a-lastTrim >= trimAfterAlloc && now.Sub(last) >= trimEvery {
				free()
				last = now
				lastTick = allocs() // the collection's own work is not traffic
				lastTrim = lastTick
			}
		}
	}
}
