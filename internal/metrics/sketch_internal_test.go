package metrics

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// The error makers' memory is bounded whatever the number of devices:
// SketchSize keys per sketch, two windows, three kinds. Measured with
// keys as long as a tenant, a device's auth-id and a source address, and
// the guarantee of the space-saving sketch checked: a client id that
// connects often stays counted among 5,000 that connect once, and its
// guaranteed count never exceeds its true one.
func TestSketchBound(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	fill := func(w *windowed, n int) {
		for i := range n {
			w.add(fmt.Sprintf("tenant-%04d\x00device-%012d@tenant-%04d\x00192.168.%d.%d", i%100, i, i%100, i/256%256, i%256), "bad_credentials", now, time.Minute)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ws := make([]windowed, kindSketchCount*2) // full current and previous windows
	for i := range ws {
		ws[i] = windowed{cur: newSketch(), prev: newSketch()}
		fill(&ws[i], SketchSize)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / float64(len(ws))
	t.Logf("one full sketch (%d keys): %.0f KiB; the finder's six: %.2f MiB", SketchSize, per/1024, 6*per/(1<<20))
	if 6*per > 4<<20 {
		t.Errorf("the sketches take %.1f MiB", 6*per/(1<<20))
	}
	runtime.KeepAlive(ws)

	w := windowed{cur: newSketch(), prev: newSketch()}
	for i := range 5_000 {
		w.add(fmt.Sprint("once-", i), "", now, time.Minute)
		if i%250 == 0 {
			w.add("looper", "", now, time.Minute)
		}
	}
	var got uint64
	w.each(func(key string, n uint64, _ string, _ time.Time) {
		if key == "looper" {
			got = n
		}
	})
	if got == 0 || got > 20 {
		t.Errorf("looper's guaranteed count %d (true 20)", got)
	}
	if len(w.cur.m) > SketchSize {
		t.Errorf("%d keys kept", len(w.cur.m))
	}
}
