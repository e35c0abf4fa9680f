package app

import (
	"runtime/debug"
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
	trimTick     = time.Second
	trimQuiet    = 2                // ticks in a row with little allocation
	trimQuietMax = 4 << 20          // bytes allocated per tick that still count as quiet
	trimMinWaste = 4 << 20          // garbage + free retained pages worth a trim
	trimEvery    = 30 * time.Second // at most one trim this often
)

// trimMemory returns the heap's garbage and free pages to the operating
// system when the node is quiet after a burst; it returns when stop is
// closed.
func trimMemory(stop <-chan struct{}) {
	samples := []metrics.Sample{
		{Name: "/gc/heap/allocs:bytes"},
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
	}
	read := func() (allocs, live, objects, free uint64) {
		metrics.Read(samples)
		v := func(i int) uint64 {
			if samples[i].Value.Kind() != metrics.KindUint64 {
				return 0
			}
			return samples[i].Value.Uint64()
		}
		return v(0), v(1), v(2), v(3)
	}
	t := time.NewTicker(trimTick)
	defer t.Stop()
	lastAllocs, _, _, _ := read()
	quiet := 0
	var last time.Time
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			allocs, live, objects, free := read()
			if allocs-lastAllocs <= trimQuietMax {
				quiet++
			} else {
				quiet = 0
			}
			lastAllocs = allocs
			waste := free
			if objects > live {
				waste += objects - live
			}
			if quiet >= trimQuiet && waste >= max(trimMinWaste, live/4) && now.Sub(last) >= trimEvery {
				debug.FreeOSMemory()
				last = now
				lastAllocs, _, _, _ = read() // the collection's own work is not traffic
			}
		}
	}
}
