package metrics

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// TestSilentBound measures the silent-device tracker's memory at a
// million devices of one tenant (ids as long as a UUID, Hono's
// generated ids): docs/anomalies.md states the figure.
// The tracker keeps no more than its bound: the devices beyond it are
// counted, not kept.
func TestSilentBound(t *testing.T) {
	const n = 1_000_000
	if testing.Short() {
		t.Skip("a million devices")
	}
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	d := newDevices(n)
	now := time.Now()
	for _, id := range ids {
		d.saw("acme", id, 0, now)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	per := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%d devices: %.1f MiB, %.0f B per device (its id copied included)", n, float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), per)
	if per > 200 {
		t.Errorf("%.0f B per device", per)
	}
	d.saw("acme", "one-too-many", 0, now)
	if d.n != n || d.untracked != 1 {
		t.Errorf("beyond the bound: %d kept, %d untracked", d.n, d.untracked)
	}
	runtime.KeepAlive(ids)
	runtime.KeepAlive(d)

	// The hot path: a known device's sighting, among a thousand.
	for _, k := range []int{1000} {
		r := testing.Benchmark(func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				d.saw("acme", ids[(i*7919)%k], 0, now)
			}
		})
		t.Logf("a sighting among %d: %s", k, r)
	}
}

// A device is silent after factor × its interval (at least the minimum),
// or after its ttd; not before, and not with fewer than three sightings.
func TestSilentRule(t *testing.T) {
	d := newDevices(10)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 3 {
		d.saw("t", "regular", 0, t0.Add(time.Duration(i)*10*time.Second))
	}
	d.saw("t", "twice", 0, t0)
	d.saw("t", "twice", 0, t0.Add(10*time.Second))
	d.saw("t", "waits", 5*time.Minute, t0.Add(20*time.Second))
	th := DefaultThresholds // 3×, at least 60 s
	all := func(string) bool { return true }
	at := func(after time.Duration) []string {
		var out []string
		for _, s := range d.silent(t0.Add(20*time.Second+after), all, func(string) Thresholds { return th }) {
			out = append(out, s.device+"/"+s.reason)
		}
		return out
	}
	if got := fmt.Sprint(at(59 * time.Second)); got != "[]" {
		t.Errorf("silent before the minimum: %s", got)
	}
	if got := fmt.Sprint(at(61 * time.Second)); got != "[regular/interval]" {
		t.Errorf("after 61 s: %s", got)
	}
	if got := fmt.Sprint(at(5*time.Minute + time.Second)); got != "[regular/interval waits/ttd]" {
		t.Errorf("after the ttd: %s", got)
	}
	th.SilentFactor, th.SilentMinSeconds = 10, 1
	if got := fmt.Sprint(at(99 * time.Second)); got != "[]" {
		t.Errorf("10× a 10 s interval, after 99 s: %s", got)
	}
	if got := fmt.Sprint(at(101 * time.Second)); got != "[regular/interval]" {
		t.Errorf("10× a 10 s interval, after 101 s: %s", got)
	}
}

// A device waiting for commands on this node counts as seen now in the
// tally another node asks for (a device that moved here must not stay
// silent on the node it left); once the wait ends, its last sighting is
// the end of the wait.
func TestLastSeenWaiting(t *testing.T) {
	d := newDevices(10)
	t0 := time.Unix(1_000_000, 0)
	d.saw("acme", "dev", 0, t0)
	d.commands("acme", "dev", true, t0.Add(time.Second))
	now := t0.Add(time.Hour)
	if got := d.lastSeen("acme", "dev", now); got != now.UnixMilli() {
		t.Fatalf("waiting device: last seen %d, want now %d", got, now.UnixMilli())
	}
	end := t0.Add(2 * time.Hour)
	d.commands("acme", "dev", false, end)
	if got := d.lastSeen("acme", "dev", end.Add(time.Hour)); got != end.UnixMilli() {
		t.Fatalf("after the wait: last seen %d, want the wait's end %d", got, end.UnixMilli())
	}
	if got := d.lastSeen("acme", "other", now); got != 0 {
		t.Fatalf("untracked device: %d", got)
	}
}
